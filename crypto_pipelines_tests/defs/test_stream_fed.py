"""``bybit/trades``: a stream-fed asset. Bybit keeps no REST trade history, so the asset has
no REST body, no load job, sensor or schedule asks for it, and ``market_stream`` fills it,
reports its partitions and evaluates their ``schema`` check once each has closed (on the
exchange's clock), all against the replay exchange on a real instance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from crypto_pipelines.defs.build import build_definitions
from crypto_pipelines.defs.jobs import exchange_load_jobs
from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.defs.sensors.incremental import series_assets
from crypto_pipelines.defs.stream import stream_job
from crypto_pipelines.domain.timeframes import DAY_MS
from crypto_pipelines.domain.universe import Universe, load_universe
from crypto_pipelines.replay import ReplayClock, ReplayServer
from crypto_pipelines.replay.tape.writer import write_ohlcv, write_trades
from crypto_pipelines.storage.store import MarketStore

T0 = 1_704_067_200_000  # 2024-01-01
BYBIT_TRADES = dg.AssetKey(["bybit", "trades"])
UNIVERSE = """source: replay
exchanges:
  binance:
    symbols: [BTC/USDT]
    timeframes: [1m]
    start: 2024-01-01
    trades: true
  bybit:
    symbols: [BTC/USDT]
    timeframes: [1m]
    start: 2024-01-01
    trades: true
"""


@pytest.fixture
def universe(tmp_path: Path) -> Universe:
    path = tmp_path / "universe.yaml"
    path.write_text(UNIVERSE)
    return load_universe(path)


def test_bybit_trades_is_stream_fed_and_no_rest_path_asks_for_it(universe: Universe) -> None:
    defs = build_definitions(universe)
    bybit = defs.resolve_assets_def(BYBIT_TRADES)
    binance = defs.resolve_assets_def(dg.AssetKey(["binance", "trades"]))
    assert not bybit.is_executable and binance.is_executable
    assert bybit.partitions_def is not None
    assert bybit.specs_by_key[BYBIT_TRADES].tags["fed_by"] == "stream"
    assert "market_stream" in (bybit.descriptions_by_key[BYBIT_TRADES] or "")
    checks = {
        key.name
        for checks_def in defs.asset_checks or []
        if isinstance(checks_def, dg.AssetChecksDefinition)
        for key in checks_def.check_keys
        if key.asset_key == BYBIT_TRADES
    }
    assert checks == {"schema"}
    # No load job (nor the re-check schedules, which run those jobs) and no incremental
    # sensor requests it; Binance's trades are loaded as before.
    graph = defs.resolve_asset_graph()
    selected = {key for job in exchange_load_jobs(universe) for key in job.selection.resolve(graph)}
    assert BYBIT_TRADES not in selected
    assert dg.AssetKey(["binance", "trades"]) in selected
    assert "trades" not in {a.name for a in series_assets("bybit", universe.exchanges["bybit"])}
    assert "trades" in {a.name for a in series_assets("binance", universe.exchanges["binance"])}


@pytest.fixture
def midnight(tmp_path: Path) -> Iterator[ReplayServer]:
    """Bybit trades every 500 ms around the first midnight of 2024, the replay clock starting
    two seconds before it."""
    tape = tmp_path / "tape"
    start = T0 + DAY_MS - 30_000
    trades = [(start + i * 500, 1000 + i, "buy", "42000.5", "0.01") for i in range(200)]
    write_trades(tape, "bybit", "BTC/USDT", trades)
    write_ohlcv(tape, "bybit", "BTC/USDT", "1m", [(T0, "1", "1", "1", "1", "1")])
    clock = ReplayClock(start_ms=T0 + DAY_MS - 2_000, speed=1)
    with ReplayServer(tape, clock=clock) as server:
        yield server


def test_the_stream_fills_bybit_trades_and_checks_each_closed_day(
    universe: Universe, midnight: ReplayServer, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'market.db'}"
    with dg.instance_for_test() as instance:
        result = stream_job(universe).execute_in_process(
            instance=instance,
            resources={
                "exchanges": ExchangesResource(source="replay", replay_url=midnight.url),
                "market_store": MarketStoreResource(db_url=db_url, source="replay"),
            },
            run_config={
                "ops": {
                    "run_market_stream": {
                        "config": {
                            "exchanges": ["bybit"],
                            "stop_after_s": 16,
                            "report_every_s": 1,
                        }
                    }
                }
            },
        )
        assert result.success
        events = [e for e in result.all_events if e.step_key == "run_market_stream"]
    with MarketStore.open(db_url) as store:
        stored = store.read("trades", exchange="bybit")
    day1, day2 = "2024-01-01|BTC/USDT", "2024-01-02|BTC/USDT"
    midnight_ms = T0 + DAY_MS
    # Trades of both days stored (the newest 60 before the start caught up over REST).
    assert (stored["ts"] < midnight_ms).any() and (stored["ts"] >= midnight_ms).any()
    reported = [e.materialization for e in events if e.is_step_materialization]
    assert {m.asset_key for m in reported} == {BYBIT_TRADES}
    assert {m.partition for m in reported} == {day1, day2}
    evaluations = [
        (i, e.asset_check_evaluation_data)
        for i, e in enumerate(events)
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ]
    by_partition = {ev.partition: (i, ev) for i, ev in evaluations}
    assert [ev.partition for _i, ev in evaluations].count(day1) == 1  # once, not every report
    assert set(by_partition) == {day1, day2}
    for partition, (_i, ev) in by_partition.items():
        assert ev.asset_key == BYBIT_TRADES and ev.check_name == "schema" and ev.passed
        day_start = T0 if partition == day1 else midnight_ms
        in_day = stored[(stored["ts"] >= day_start) & (stored["ts"] < day_start + DAY_MS)]
        assert ev.metadata["rows_checked"].value == len(in_day)
    # Day one was checked when it closed (the stream's clock 10 s past midnight), while the
    # stream went on reporting day two; day two, still open, when the run ended.
    day1_at = by_partition[day1][0]
    later_day2 = [
        i
        for i, e in enumerate(events)
        if e.is_step_materialization and e.materialization.partition == day2 and i > day1_at
    ]
    assert later_day2 and by_partition[day2][0] > later_day2[-1]
    newest_before = max(
        float(e.materialization.metadata["newest"].value)  # type: ignore[arg-type]
        for e in events[:day1_at]
        if e.is_step_materialization
    )
    assert newest_before * 1000 >= midnight_ms + 10_000  # not before the day had closed
