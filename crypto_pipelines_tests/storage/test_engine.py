"""Default locations, URL normalisation and the SQLite connection settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crypto_pipelines.storage.engine import (
    SQLITE_BUSY_TIMEOUT_MS,
    default_db_url,
    hide_password,
    make_engine,
    normalize_url,
    write_transaction,
)


def test_default_url_live_and_replay_under_dagster_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CRYPTO_PIPELINES_DB_URL", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    assert default_db_url("live") == f"sqlite:///{tmp_path / 'market.db'}"
    assert default_db_url("replay") == f"sqlite:///{tmp_path / 'market-replay.db'}"
    assert default_db_url() == default_db_url("live")
    with pytest.raises(ValueError, match="'live' or 'replay'"):
        default_db_url("paper")  # type: ignore[arg-type]


def test_default_url_without_dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRYPTO_PIPELINES_DB_URL", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert (
        default_db_url("replay")
        == f"sqlite:///{tmp_path / '.crypto_pipelines' / 'market-replay.db'}"
    )


def test_env_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYPTO_PIPELINES_DB_URL", "postgresql://u@h/db")
    assert default_db_url("live") == default_db_url("replay") == "postgresql://u@h/db"


def test_postgres_urls_use_psycopg3() -> None:
    assert normalize_url("postgresql://u@h:5432/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    engine = make_engine("postgresql://u@127.0.0.1:1/db")  # nothing connects yet
    assert engine.dialect.driver == "psycopg"
    with pytest.raises(ValueError, match="unsupported database"):
        make_engine("mysql://u@h/db")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://u:s3cret@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:////data/market.db", "sqlite:////data/market.db"),
        # SQLAlchemy cannot parse these (port) or misreads them (unencoded '@', '/' too):
        ("postgresql://u:s3cret@h:port/db", "postgresql://u:***@h:port/db"),
        ("postgresql://u:p@s3cret@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://u:p/w@s3cret@h:1/db?sslmode=require",
            "postgresql://u:***@h:1/db?sslmode=require",
        ),
    ],
)
def test_hide_password(url: str, shown: str) -> None:
    assert hide_password(url) == shown
    assert (
        hide_password(sa.engine.make_url("postgresql://u:s3cret@h/db")) == "postgresql://u:***@h/db"
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql://u:s3cret@h:port/db", "postgresql://u:***@h:port/db: port is not a number"),
        (
            "postgresql://u:p@s3cret@h/db",
            "postgresql://u:***@h/db: its user or password holds an '@': percent-encode it as %40",
        ),
    ],
)
def test_urls_sqlalchemy_would_misread_are_refused_without_the_password(
    url: str, problem: str
) -> None:
    with pytest.raises(ValueError) as info:
        normalize_url(url)
    assert str(info.value) == f"database URL {problem}"
    assert normalize_url("postgresql://u:p%40s3cret@h/db").password == "p@s3cret"  # encoded: fine


def test_sqlite_connections_are_tuned_and_file_folder_created(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'new' / 'dir' / 'm.db'}")
    try:
        with engine.connect() as connection:
            pragma = lambda name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
            assert pragma("journal_mode") == "wal"
            assert pragma("busy_timeout") == SQLITE_BUSY_TIMEOUT_MS
            assert pragma("foreign_keys") == 1
            assert pragma("synchronous") == 1  # NORMAL
    finally:
        engine.dispose()
    assert (tmp_path / "new" / "dir" / "m.db").exists()


def test_write_transaction_commits_or_rolls_back(engine: Engine) -> None:
    with write_transaction(engine) as connection:
        connection.execute(sa.text("CREATE TABLE t (x INTEGER)"))
    with write_transaction(engine) as connection:
        connection.execute(sa.text("INSERT INTO t VALUES (1)"))
    with pytest.raises(RuntimeError), write_transaction(engine) as connection:
        connection.execute(sa.text("INSERT INTO t VALUES (2)"))
        raise RuntimeError("boom")
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT x FROM t")).scalars().all() == [1]


def test_store_open_uses_the_default_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crypto_pipelines.storage import MarketStore

    monkeypatch.delenv("CRYPTO_PIPELINES_DB_URL", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with MarketStore.open(source="replay") as store:
        assert store.count("ohlcv") == 0
    assert (tmp_path / "market-replay.db").exists()
    assert not (tmp_path / "market.db").exists()
