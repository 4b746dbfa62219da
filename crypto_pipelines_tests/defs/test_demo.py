"""The offline demo's pieces, driven as ``make demo`` drives them: its tape, the replay
exchange with the clock near the tape's end, its universe, and the incremental sensors on a
real Dagster instance. The first ticks ask for each exchange's catalog before anything else;
after it, only partitions that hold data in the tape are requested, and they load."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pytest

from crypto_pipelines.defs.partitions import partition_window
from crypto_pipelines.defs.sensors.incremental import INCREMENTAL_TAG, incremental_sensor
from crypto_pipelines.defs.universe_sync import sync_symbol_partitions
from crypto_pipelines.domain.datasets import get_market_dataset
from crypto_pipelines.domain.universe import Universe, load_universe
from crypto_pipelines.replay.demo import DEMO_SYMBOLS, DemoSetup, prepare, serve
from crypto_pipelines.replay.server import ReplayServer
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.defs.automation import all_partitions, execute, resources

TODAY = date(2026, 11, 10)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoSetup:
    return prepare(tmp_path_factory.mktemp("demo"), days=2, today=TODAY)


@pytest.fixture
def server(demo: DemoSetup) -> Iterator[ReplayServer]:
    with serve(demo) as running:
        yield running


def test_the_demo_is_prepared_once_and_matches_its_tape(demo: DemoSetup) -> None:
    universe = load_universe(demo.universe)
    assert universe.source == "replay"
    assert {e: tuple(c.symbols) for e, c in universe.exchanges.items()} == dict(DEMO_SYMBOLS)
    assert all(c.start == date(2026, 11, 8) for c in universe.exchanges.values())
    tape_end = int(datetime(2026, 11, 10, tzinfo=UTC).timestamp() * 1000)
    assert demo.tape_end_ms == tape_end and demo.clock_start_ms == tape_end - 2 * 3_600_000
    candles = demo.tape / "binance" / "BTC_USDT" / "ohlcv_1m.csv"
    written = candles.stat().st_mtime_ns
    again = prepare(demo.home.parent, days=2, today=TODAY)
    assert again == demo and candles.stat().st_mtime_ns == written  # reused, not rewritten
    assert demo.environment("http://x")["DAGSTER_HOME"] == str(demo.home)


def test_first_ticks_ask_for_markets_then_only_partitions_with_data(
    demo: DemoSetup, server: ReplayServer, tmp_path: Path
) -> None:
    requested = _first_ticks(load_universe(demo.universe), server, tmp_path)
    _assert_all_hold_data(requested, server)
    names = {asset.split("/")[1] for asset, _ in requested}
    assert {"ohlcv_1m", "ohlcv_1h", "trades", "funding_rates", "open_interest"} <= names


def test_a_universe_starting_before_the_markets_asks_nothing_before_them(
    demo: DemoSetup, server: ReplayServer, tmp_path: Path
) -> None:
    """Months before the tape: Binance's catalog has no listing date for spot markets, so
    the markets asset reads it from the first candle; nothing before it is requested."""
    text = demo.universe.read_text().replace("start: 2026-11-08", "start: 2026-09-01")
    assert text != demo.universe.read_text()
    path = tmp_path / "universe.yaml"
    path.write_text(text)
    requested = _first_ticks(load_universe(path), server, tmp_path)
    _assert_all_hold_data(requested, server)
    with MarketStore.open(f"sqlite:///{tmp_path / 'market.db'}") as store:
        pairs = store.read("crypto_pairs", exchange="binance")
    listed = dict(zip(pairs["symbol"], pairs["listed_ms"], strict=True))
    first = server.tape.exchanges["binance"].symbols["BTC/USDT"].ohlcv["1m"].first_ts
    assert listed["BTC/USDT"] == first


def _first_ticks(universe: Universe, server: ReplayServer, tmp_path: Path) -> set[tuple[str, str]]:
    """Each exchange's incremental sensor ticked twice on a new instance, running what it
    asks for: the catalog first, then the loads. The (asset, partition) pairs requested."""
    run_resources = resources(server, f"sqlite:///{tmp_path / 'market.db'}")
    with dg.instance_for_test() as instance:
        sync_symbol_partitions(instance, universe)
        requested: set[tuple[str, str]] = set()
        for exchange, config in universe.exchanges.items():
            sensor = incremental_sensor(exchange, config)

            def tick(cursor: str | None, sensor: dg.SensorDefinition = sensor) -> dg.SensorResult:
                with dg.build_sensor_context(
                    instance=instance, cursor=cursor, resources=run_resources
                ) as context:
                    result = sensor(context)
                assert isinstance(result, dg.SensorResult)
                return result

            first = tick(None)
            (markets,) = first.run_requests or []
            assert markets.asset_selection == [dg.AssetKey([exchange, "markets"])]
            assert markets.tags[INCREMENTAL_TAG] == "markets"
            execute(markets, universe, instance, run_resources)

            second = tick(first.cursor)
            loads = list(second.run_requests or [])
            assert loads and all(r.tags[INCREMENTAL_TAG] == "load" for r in loads)
            for request in loads:
                execute(request, universe, instance, run_resources)
            requested |= all_partitions(loads, universe, instance)
    return requested


def _assert_all_hold_data(requested: set[tuple[str, str]], server: ReplayServer) -> None:
    tape = server.tape
    for asset, key in requested:
        exchange, name = asset.split("/")
        dataset = "ohlcv" if name.startswith("ohlcv_") else name
        spec = get_market_dataset(dataset)
        timeframe = name.removeprefix("ohlcv_") if dataset == "ohlcv" else None
        start, end = partition_window(key, monthly=spec.is_monthly(timeframe))
        symbol_tape = tape.exchanges[exchange].symbols[key.split("|")[1]]
        series = {
            "ohlcv": symbol_tape.ohlcv.get(timeframe or ""),
            "trades": symbol_tape.trades,
            "funding_rates": symbol_tape.funding,
            "open_interest": symbol_tape.open_interest,
        }[spec.name]
        assert series is not None and series.first_ts is not None, (asset, key)
        assert series.last_ts is not None
        assert series.first_ts < end and series.last_ts >= start, f"{asset} {key} holds no data"
