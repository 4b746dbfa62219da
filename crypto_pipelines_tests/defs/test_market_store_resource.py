"""The market store resource resolves ``CRYPTO_PIPELINES_DB_URL`` when a run uses it, not when
the definitions are built, and a database it cannot open fails naming that variable and the
URL with its password hidden."""

from __future__ import annotations

import traceback
from pathlib import Path

import dagster as dg
import pytest

from crypto_pipelines.defs.build import build_definitions
from crypto_pipelines.defs.resources import MarketStoreResource
from crypto_pipelines.defs.universe_check import load_checked_universe
from crypto_pipelines.domain.universe import load_universe
from crypto_pipelines.storage.engine import DB_URL_ENV

CLOSED_PORT_URL = "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/x"


@dg.asset
def database_in_use(market_store: MarketStoreResource) -> str:
    """What a run's step sees: the database its store opened."""
    return str(market_store.store().engine.url.database)


def _definitions(tmp_path: Path) -> dg.Definitions:
    path = tmp_path / "universe.yaml"
    path.write_text("exchanges:\n  binance:\n    symbols: [BTC/USDT]\n    timeframes: [1h]\n")
    return build_definitions(load_universe(path))


def _materialized_database(defs: dg.Definitions) -> str:
    result = dg.materialize(
        [database_in_use], resources={"market_store": defs.resources["market_store"]}
    )
    assert result.success
    return str(result.output_for_node("database_in_use"))


def test_the_url_is_the_runs_not_the_one_set_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DB_URL_ENV, raising=False)
    defs = _definitions(tmp_path)
    assert defs.resources["market_store"].db_url is None  # nothing baked in
    first, second = tmp_path / "first.db", tmp_path / "second.db"
    monkeypatch.setenv(DB_URL_ENV, f"sqlite:///{first}")
    assert _materialized_database(defs) == str(first)
    with dg.build_resources({"market_store": defs.resources["market_store"]}) as resources:
        assert resources.market_store.store().engine.url.database == str(first)
    # definitions built while one URL was set still follow the variable to the next run
    monkeypatch.setenv(DB_URL_ENV, f"sqlite:///{second}")
    loaded_with_second = _definitions(tmp_path)
    monkeypatch.setenv(DB_URL_ENV, f"sqlite:///{first}")
    assert _materialized_database(loaded_with_second) == str(first)
    assert first.exists() and not second.exists()


def test_an_unreachable_database_names_the_variable_and_hides_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(DB_URL_ENV, CLOSED_PORT_URL)
    with pytest.raises(dg.Failure) as info:
        MarketStoreResource(source="live").store()
    message = info.value.description or ""
    assert f"(from ${DB_URL_ENV})" in message, message
    assert "postgresql+psycopg://postgres:***@127.0.0.1:1/x" in message, message
    assert "OperationalError" in message and "s3cret" not in message, message


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("not a url", "ArgumentError"),
        ("mysql://root:s3cret@127.0.0.1/x", "unsupported database 'mysql://root:***@127.0.0.1/x'"),
        ("foo://x", "cannot open the market database foo://x (from $CRYPTO_PIPELINES_DB_URL)"),
        (
            "postgresql+nodriver://u:s3cret@127.0.0.1/x",
            "NoSuchModuleError: Can't load plugin: sqlalchemy.dialects:postgresql.nodriver",
        ),
        (
            "postgresql+psycopg://u:s3cret@127.0.0.1:port/x",
            "database URL postgresql+psycopg://u:***@127.0.0.1:port/x: port is not a number",
        ),
        # An unencoded '@' in the password: SQLAlchemy reads "s3cret@127.0.0.1" as the host,
        # which the driver's "cannot resolve host" error then quoted.
        (
            "postgresql+psycopg://u:p@s3cret@127.0.0.1:1/x",
            "database URL postgresql+psycopg://u:***@127.0.0.1:1/x: its user or password holds "
            "an '@': percent-encode it as %40",
        ),
    ],
)
def test_an_invalid_url_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, url: str, problem: str
) -> None:
    monkeypatch.setenv(DB_URL_ENV, url)
    with pytest.raises(dg.Failure) as info:
        MarketStoreResource(source="replay").store()
    message = info.value.description or ""
    assert DB_URL_ENV in message and problem in message and "s3cret" not in message, message
    assert info.value.__cause__ is not None  # the driver's own error stays as the cause
    assert "s3cret" not in "".join(traceback.format_exception(info.value))


def test_a_run_on_an_unreachable_database_fails_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a run shows: the code location loads with the URL set (it does not touch the
    database), and the run's first step to use the store fails naming the variable and the
    URL with its password hidden, SQLAlchemy's error kept as the cause."""
    monkeypatch.setenv(DB_URL_ENV, CLOSED_PORT_URL)
    path = tmp_path / "universe.yaml"
    path.write_text("exchanges:\n  binance:\n    symbols: [BTC/USDT]\n    timeframes: [1h]\n")
    universe = load_checked_universe(path)
    defs = build_definitions(universe)
    pairs = next(
        a
        for a in defs.assets or ()
        if isinstance(a, dg.AssetsDefinition) and a.key == dg.AssetKey("crypto_pairs")
    )
    result = dg.materialize(
        [pairs], resources={"market_store": defs.resources["market_store"]}, raise_on_error=False
    )
    assert not result.success
    [failure] = result.get_step_failure_events()
    data = failure.step_failure_data
    assert data.user_failure_data is not None
    description = data.user_failure_data.description or ""
    assert description.startswith(
        "cannot open the market database postgresql+psycopg://postgres:***@127.0.0.1:1/x "
        f"(from ${DB_URL_ENV}); set {DB_URL_ENV} to a reachable SQLite or PostgreSQL URL "
        "(postgresql+psycopg://USER:PASSWORD@HOST/DB). OperationalError: connection failed: "
    ), description
    assert "Connection refused" in description, description
    assert data.error is not None and data.error.cause is not None
    assert data.error.cause.cls_name == "OperationalError"
    assert "s3cret" not in data.error.to_string()


def test_a_configured_db_url_is_named_as_the_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DB_URL_ENV, raising=False)
    with pytest.raises(dg.Failure) as info:
        MarketStoreResource(db_url=CLOSED_PORT_URL).store()
    message = info.value.description or ""
    assert "the market_store resource's db_url" in message and DB_URL_ENV in message, message
