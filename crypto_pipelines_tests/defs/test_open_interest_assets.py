"""``<exchange>/open_interest`` end to end: the Dagster asset loads the replay exchange's
open-interest history (a synthetic tape, 5-minute snapshots) for Binance, OKX and Bybit into
SQLite and PostgreSQL, exactly; its ``schema`` check passes per partition; a second run finds
everything covered and asks the exchange for nothing."""

from __future__ import annotations

import math
from collections.abc import Iterator

import dagster as dg
import pytest

from crypto_pipelines.defs.build import build_assets
from crypto_pipelines.defs.checks.schema import schema_checks
from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.defs.universe_sync import sync_symbol_partitions
from crypto_pipelines.domain.universe import Universe
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.defs.conftest import DAY_MS, START_MS, ReplayWorld

PERP = "BTC/USDT:USDT"
VENUES = ("binance", "okx", "bybit")


@pytest.fixture
def universe(replay_world: ReplayWorld) -> Universe:
    """The replay world's universe with open interest enabled where perpetuals are."""
    exchanges = {
        name: config.model_copy(update={"open_interest": name in VENUES})
        for name, config in replay_world.universe.exchanges.items()
    }
    return Universe(source="replay", exchanges=exchanges)


@pytest.fixture
def instance(universe: Universe) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        sync_symbol_partitions(inst, universe)
        yield inst


def _run(
    world: ReplayWorld, universe: Universe, instance: dg.DagsterInstance, db_url: str, venue: str
) -> dg.ExecuteInProcessResult:
    key = dg.AssetKey([venue, "open_interest"])
    asset = next(a for a in build_assets(universe) if a.key == key)
    checks = [c for c in schema_checks(universe) if any(k.asset_key == key for k in c.check_keys)]
    return dg.materialize(
        [asset, *checks],
        instance=instance,
        resources={
            "exchanges": ExchangesResource(source="replay", replay_url=world.server.url),
            "market_store": MarketStoreResource(db_url=db_url, source="replay"),
        },
        tags={
            "dagster/asset_partition_range_start": f"2024-01-01|{PERP}",
            "dagster/asset_partition_range_end": f"2024-01-03|{PERP}",
        },
    )


@pytest.mark.parametrize("venue", VENUES)
def test_open_interest_asset_stores_the_tape(
    replay_world: ReplayWorld,
    universe: Universe,
    instance: dg.DagsterInstance,
    db_url: str,
    venue: str,
) -> None:
    series = replay_world.tape.exchanges[venue].symbols[PERP].open_interest
    assert series is not None, "the synthetic tape has open interest for perpetuals"
    tape = [r for r in series.rows(0, len(series)) if START_MS <= r.ts < START_MS + 3 * DAY_MS]
    assert len(tape) > 2 * 288

    result = _run(replay_world, universe, instance, db_url, venue)
    assert result.success
    with MarketStore.open(db_url) as store:
        stored = store.read("open_interest", exchange=venue, symbol=PERP)
    assert stored["ts"].tolist() == [r.ts for r in tape]
    assert stored["open_interest"].tolist() == [float(r.open_interest) for r in tape]
    values = stored["open_interest_value"].tolist()
    if venue == "bybit":  # Bybit's history reports contracts only
        assert all(math.isnan(v) for v in values)
    else:
        assert values == [float(r.open_interest_value) for r in tape]
    schema = [e for e in result.get_asset_check_evaluations() if e.check_name == "schema"]
    assert len(schema) == 3 and all(e.passed for e in schema)
    metas = [e.materialization.metadata for e in result.get_asset_materialization_events()]
    assert [m["samples_expected"].value for m in metas] == [288] * 3  # each day its own
    assert all(m["rows_rejected"].value == 0 for m in metas)

    again = _run(replay_world, universe, instance, db_url, venue)
    metas = [e.materialization.metadata for e in again.get_asset_materialization_events()]
    (totals,) = [m for m in metas if "run_partitions" in m]  # once, on the first partition
    assert totals["exchange_requests"].value == 0 and totals["run_rows_fetched"].value == 0
    assert all(m["rows_fetched"].value == 0 for m in metas)


def test_open_interest_partitions_are_the_perpetuals(
    universe: Universe, instance: dg.DagsterInstance
) -> None:
    """Open interest exists for perpetual swaps only: its symbols are ``<exchange>_perps``,
    so no spot partition waits for data that can never come."""
    asset = next(
        a for a in build_assets(universe) if a.key == dg.AssetKey(["binance", "open_interest"])
    )
    partitions = asset.partitions_def
    assert isinstance(partitions, dg.MultiPartitionsDefinition)
    symbols = {
        str(k).split("|")[1]
        for k in partitions.get_partition_keys(dynamic_partitions_store=instance)
    }
    assert symbols == {PERP}
