"""The universe sensor and ``sync_symbol_partitions`` with run-time universe changes, on a
real Dagster instance and a real store (SQLite and PostgreSQL): symbols added or removed
through the API (``universe_changes``) join or leave the dynamic partitions within a tick,
the partition sets stay those the file's definitions declare, and a tick that cannot read
the changes leaves the partitions as they are."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from crypto_pipelines.api import ApiServices, ApiSettings
from crypto_pipelines.defs.partitions import perps_partitions_name, symbols_partitions_name
from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.defs.universe_sync import (
    plan_symbol_partitions,
    sync_symbol_partitions,
    universe_partitions_sensor,
)
from crypto_pipelines.domain.universe import Universe
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines.storage.universe_changes import UniverseChange, record_change
from crypto_pipelines_tests.api.conftest import DESK, serve_api
from crypto_pipelines_tests.conftest import free_port
from crypto_pipelines_tests.defs.automation import write_universe

SYMBOLS = symbols_partitions_name("binance")
PERPS = perps_partitions_name("binance")
OKX = symbols_partitions_name("okx")
NOW_MS = 1_718_000_000_000

Requests = dict[str, tuple[set[str], set[str]]]


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def universe(tmp_path: Path) -> Universe:
    """binance with a perpetual swap (so ``binance_perps`` exists), okx spot only."""
    return write_universe(
        tmp_path / "universe.yaml",
        {
            "binance": "symbols: [BTC/USDT, BTC/USDT:USDT]\ntimeframes: [1h]\nstart: 2024-01-01",
            "okx": "symbols: [BTC/USDT]\ntimeframes: [1h]\nstart: 2024-01-01",
        },
    )


@pytest.fixture
def store(db_url: str) -> Iterator[MarketStore]:
    with MarketStore.open(db_url) as opened:
        yield opened


def _resources(db_url: str) -> dict[str, object]:
    # No filters: the exchanges are never asked (a closed port proves it).
    return {
        "exchanges": ExchangesResource(
            source="replay", replay_url=f"http://127.0.0.1:{free_port()}"
        ),
        "market_store": MarketStoreResource(db_url=db_url, source="replay"),
    }


def _tick(
    universe: Universe, instance: dg.DagsterInstance, run_resources: dict[str, object]
) -> Requests | str:
    """One evaluation, its requests applied as the daemon applies them: per partition set,
    (added, removed); or the skip message."""
    sensor = universe_partitions_sensor(universe)
    with dg.build_sensor_context(instance=instance, resources=run_resources) as context:
        result = sensor(context)
    if isinstance(result, dg.SkipReason):
        return str(result.skip_message)
    assert isinstance(result, dg.SensorResult)
    requests: Requests = {}
    for request in result.dynamic_partitions_requests or []:
        name = request.partitions_def_name
        added, removed = requests.setdefault(name, (set(), set()))
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(name, list(request.partition_keys))
            added.update(request.partition_keys)
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(name, key)
            removed.update(request.partition_keys)
    return requests


def _change(store: MarketStore, exchange: str, symbol: str, action: str) -> None:
    record_change(store.engine, exchange, symbol, action, by="desk", now_ms=NOW_MS)  # type: ignore[arg-type]


def test_the_sensor_follows_symbols_added_and_removed(
    universe: Universe, instance: dg.DagsterInstance, store: MarketStore, db_url: str
) -> None:
    run = _resources(db_url)
    assert _tick(universe, instance, run) == {
        SYMBOLS: ({"BTC/USDT", "BTC/USDT:USDT"}, set()),
        PERPS: ({"BTC/USDT:USDT"}, set()),
        OKX: ({"BTC/USDT"}, set()),
    }

    _change(store, "binance", "ETH/USDT", "add")
    _change(store, "binance", "ETH/USDT:USDT", "add")
    assert _tick(universe, instance, run) == {
        SYMBOLS: ({"ETH/USDT", "ETH/USDT:USDT"}, set()),
        PERPS: ({"ETH/USDT:USDT"}, set()),
    }

    # A file symbol removed through the API leaves both sets; the file is not rewritten.
    _change(store, "binance", "BTC/USDT:USDT", "remove")
    assert _tick(universe, instance, run) == {
        SYMBOLS: (set(), {"BTC/USDT:USDT"}),
        PERPS: (set(), {"BTC/USDT:USDT"}),
    }
    assert universe.exchanges["binance"].symbols == ("BTC/USDT", "BTC/USDT:USDT")
    assert set(instance.get_dynamic_partitions(SYMBOLS)) == {
        "BTC/USDT",
        "ETH/USDT",
        "ETH/USDT:USDT",
    }

    # Added again, it comes back; an added symbol removed again leaves.
    _change(store, "binance", "BTC/USDT:USDT", "add")
    _change(store, "binance", "ETH/USDT", "remove")
    assert _tick(universe, instance, run) == {
        SYMBOLS: ({"BTC/USDT:USDT"}, {"ETH/USDT"}),
        PERPS: ({"BTC/USDT:USDT"}, set()),
    }
    assert isinstance(_tick(universe, instance, run), str)  # nothing left to do


def test_a_swap_added_where_the_file_has_none_joins_the_symbols_set_only(
    universe: Universe, instance: dg.DagsterInstance, store: MarketStore, db_url: str
) -> None:
    """okx's definitions (from the file) have no perps asset, so no ``okx_perps`` set."""
    run = _resources(db_url)
    _tick(universe, instance, run)
    _change(store, "okx", "BTC/USDT:USDT", "add")
    _change(store, "kraken", "BTC/USD", "add")  # not in the file: ignored
    assert _tick(universe, instance, run) == {OKX: ({"BTC/USDT:USDT"}, set())}
    assert instance.get_dynamic_partitions(perps_partitions_name("okx")) == []


def test_a_tick_without_the_store_changes_nothing(
    universe: Universe, instance: dg.DagsterInstance, store: MarketStore, db_url: str
) -> None:
    """Planning from the file alone would drop every symbol the API added."""
    _change(store, "binance", "ETH/USDT", "add")
    _tick(universe, instance, _resources(db_url))
    unreachable = {
        **_resources(db_url),
        "market_store": MarketStoreResource(
            db_url=f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/market",
            source="replay",
        ),
    }
    message = _tick(universe, instance, unreachable)
    assert isinstance(message, str)
    assert message.startswith("market store unavailable, universe changes unknown: "), message
    assert "ETH/USDT" in instance.get_dynamic_partitions(SYMBOLS)


def test_sync_applies_the_changes_of_the_store_it_is_given(
    universe: Universe, instance: dg.DagsterInstance, store: MarketStore
) -> None:
    _change(store, "binance", "SOL/USDT", "add")
    _change(store, "binance", "BTC/USDT", "remove")
    sync_symbol_partitions(instance, universe)  # no store: the file alone
    assert instance.get_dynamic_partitions(SYMBOLS) == ["BTC/USDT", "BTC/USDT:USDT"]
    results = sync_symbol_partitions(instance, universe, store=store)
    by_set = {r.partitions: (r.added, r.removed) for r in results}
    assert by_set[SYMBOLS] == (("SOL/USDT",), ("BTC/USDT",))
    assert by_set[PERPS] == ((), ())
    assert instance.get_dynamic_partitions(SYMBOLS) == ["BTC/USDT:USDT", "SOL/USDT"]


def test_a_removed_symbol_is_kept_out_of_the_filter_selection(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    filtered = write_universe(
        tmp_path / "f.yaml",
        {"binance": "symbols: [BTC/USDT]\nfilters:\n  quote: [USDT]\n  types: [spot]"},
    )
    changes = [UniverseChange("binance", "SOL/USDT", "remove", NOW_MS, "desk")]
    selected = {"binance": ("BTC/USDT", "ETH/USDT", "SOL/USDT")}
    plans = plan_symbol_partitions(instance, filtered, selected=selected, changes=changes)
    assert [(p.partitions, p.added) for p in plans] == [(SYMBOLS, ("BTC/USDT", "ETH/USDT"))]
    plans = plan_symbol_partitions(instance, filtered, selected=selected)
    assert plans[0].added == ("BTC/USDT", "ETH/USDT", "SOL/USDT")


def test_a_symbol_added_through_the_api_becomes_a_partition(
    universe: Universe, instance: dg.DagsterInstance, store: MarketStore, db_url: str
) -> None:
    """From the HTTP request to the dynamic partition, with nothing in between but the
    store both sides use."""
    run = _resources(db_url)
    _tick(universe, instance, run)
    services = ApiServices(store=store, universe=universe)
    with serve_api(ApiSettings(keys=(DESK,)), services) as api, api.client() as client:
        added = client.post("/v1/universe/binance/symbols", json={"symbol": "DOGE/USDT"})
        removed = client.delete("/v1/universe/okx/symbols/BTC/USDT")
    assert (added.status_code, removed.status_code) == (201, 200)
    assert _tick(universe, instance, run) == {
        SYMBOLS: ({"DOGE/USDT"}, set()),
        OKX: (set(), {"BTC/USDT"}),
    }
