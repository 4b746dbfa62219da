"""One launched run per venue completes, exact, under the fault profile an operator reported
needing seven manual runs for: 30% 5xx, 20% 429, 5% requests hanging past the client's
timeout, 20 ms latency. The loader's request retries and the step retries on transient
failures (resuming from coverage) carry it without a person."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.defs.universe_sync import sync_symbol_partitions
from crypto_pipelines.replay import FaultConfig, ReplayClock, ReplayServer, Tape
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.defs.automation import asset_of
from crypto_pipelines_tests.defs.conftest import DAY_MS, DAYS, START_MS, SYMBOLS, ReplayWorld

PROFILE = FaultConfig(
    server_error=0.3, rate_limit=0.2, timeout=0.05, timeout_s=3.0, latency_ms=20, seed=11
)


@pytest.fixture
def faulty(synth_tape: Tape) -> Iterator[ReplayServer]:
    clock = ReplayClock(start_ms=START_MS + (DAYS + 1) * DAY_MS, speed=0)
    with ReplayServer(synth_tape, clock=clock, faults=PROFILE) as server:
        yield server


@pytest.mark.parametrize("exchange", sorted(SYMBOLS))
def test_one_run_completes_exactly_under_the_fault_profile(
    replay_world: ReplayWorld, faulty: ReplayServer, tmp_path: Path, exchange: str
) -> None:
    symbol = SYMBOLS[exchange][0]
    db_url = f"sqlite:///{tmp_path / 'market.db'}"
    run_resources = {
        # a client timeout of 1 s: the hung requests cost the test seconds, not minutes
        "exchanges": ExchangesResource(source="replay", replay_url=faulty.url, timeout_ms=1000),
        "market_store": MarketStoreResource(db_url=db_url, source="replay"),
    }
    with dg.instance_for_test() as instance:
        sync_symbol_partitions(instance, replay_world.universe)
        result = dg.materialize(
            [asset_of(replay_world.universe, dg.AssetKey([exchange, "ohlcv_1m"]))],
            instance=instance,
            resources=run_resources,
            partition_key=f"2024-01-01|{symbol}",
        )
    assert result.success
    totals = faulty.app.stats.snapshot()["totals"]
    assert totals["server_errors"] > 0 and totals["rate_limited"] > 0, totals
    with MarketStore.open(db_url) as store:
        stored = store.read("ohlcv", exchange=exchange, symbol=symbol, timeframe="1m")
    tape = replay_world.tape.exchanges[exchange].symbols[symbol].ohlcv["1m"]
    assert stored["ts"].tolist() == tape.file.ts.tolist()
