"""The incremental sensor on a real Dagster instance, a real store and the replay exchange
whose clock the test moves: exactly the partitions with new closed data are requested, run
keys never repeat, the cursor advances, the per-tick bound holds, a rollover finalizes the
previous partition once, and nothing after a delisting is requested."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.defs.sensors.incremental import (
    INCREMENTAL_TAG,
    incremental_sensor,
    partition_orders,
    plan_tick,
)
from crypto_pipelines.defs.universe_sync import sync_symbol_partitions
from crypto_pipelines.domain.instruments import CryptoPair
from crypto_pipelines.domain.universe import Universe
from crypto_pipelines.replay import FaultConfig, Tape
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.defs.automation import (
    Exchange,
    all_partitions,
    at,
    execute,
    replay_exchange,
    resources,
    write_universe,
)

SPOT, PERP = "BTC/USDT", "BTC/USDT:USDT"
OHLCV_1M, OHLCV_1H = "binance/ohlcv_1m", "binance/ohlcv_1h"
TRADES, FUNDING = "binance/trades", "binance/funding_rates"


def _universe(
    tmp_path: Path,
    *,
    symbols: str = f"{SPOT}, {PERP}",
    timeframes: str = "1m, 1h",
    start: str = "2024-01-01",
    funding: bool = True,
    open_interest: bool = False,
    **incremental: int,
) -> Universe:
    settings = "".join(f"\n  {k}: {v}" for k, v in incremental.items())
    return write_universe(
        tmp_path / "universe.yaml",
        {
            "binance": f"""
symbols: [{symbols}]
timeframes: [{timeframes}]
start: {start}
trades: true
funding: {str(funding).lower()}
open_interest: {str(open_interest).lower()}
incremental:
  interval_seconds: 30{settings}
"""
        },
    )


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """For the tests whose subject is the sensor's timing, not the database (the others run
    on both)."""
    return f"sqlite:///{tmp_path / 'market.db'}"


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def exchange(synth_tape: Tape) -> Iterator[Exchange]:
    with replay_exchange(synth_tape, at(2, 3, 0, 30)) as ex:
        yield ex


class Ticker:
    """Evaluates the sensor tick after tick, carrying its cursor, as the daemon does."""

    def __init__(
        self, universe: Universe, instance: dg.DagsterInstance, exchange: Exchange, db_url: str
    ) -> None:
        self.universe, self.instance, self.exchange = universe, instance, exchange
        self.resources = resources(exchange.server, db_url)
        self.sensor = incremental_sensor("binance", universe.exchanges["binance"])
        self.cursor: str | None = None
        self.keys: list[str] = []
        sync_symbol_partitions(instance, universe)

    def tick(self) -> list[dg.RunRequest]:
        with dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources=self.resources
        ) as context:
            result = self.sensor(context)
        assert isinstance(result, dg.SensorResult)
        assert result.cursor is not None
        self.cursor = result.cursor
        requests = list(result.run_requests or [])
        self.keys += [str(r.run_key) for r in requests]
        return requests

    def partitions(self, requests: list[dg.RunRequest]) -> set[tuple[str, str]]:
        return all_partitions(requests, self.universe, self.instance)

    def run(self, requests: list[dg.RunRequest]) -> None:
        for request in requests:
            execute(request, self.universe, self.instance, self.resources)

    def state(self) -> dict[str, dict[str, int]]:
        assert self.cursor is not None
        series = json.loads(self.cursor)["series"]
        assert isinstance(series, dict)
        return series


def test_requests_exactly_new_closed_data_and_never_twice(
    tmp_path: Path, instance: dg.DagsterInstance, exchange: Exchange, db_url: str
) -> None:
    universe = _universe(tmp_path)
    ticker = Ticker(universe, instance, exchange, db_url)
    # 2024-01-01 of the spot pair is already stored, complete (the tape has its 23:59 candle).
    stored = dg.RunRequest(
        asset_selection=[dg.AssetKey(["binance", "ohlcv_1m"])], partition_key=f"2024-01-01|{SPOT}"
    )
    ticker.run([stored])

    first = ticker.tick()
    assert ticker.partitions(first) == {
        (OHLCV_1M, f"2024-01-02|{SPOT}"),
        (OHLCV_1M, f"2024-01-01|{PERP}"),
        (OHLCV_1M, f"2024-01-02|{PERP}"),
        (OHLCV_1H, f"2024-01-01|{SPOT}"),  # monthly
        (OHLCV_1H, f"2024-01-01|{PERP}"),
        (TRADES, f"2024-01-02|{SPOT}"),  # trades start at the current day
        (TRADES, f"2024-01-02|{PERP}"),
        (FUNDING, f"2024-01-01|{PERP}"),  # the spot pair has no funding
    }
    # Symbols needing the same dates share a run: one per asset and date span.
    assert len(first) == 5
    assert all(r.tags[INCREMENTAL_TAG] == "load" for r in first)
    ticker.run(first)
    with MarketStore.open(db_url) as store:
        newest = store.latest_ts("ohlcv", exchange="binance", symbol=PERP, timeframe="1m")
    assert newest == at(2, 2, 59)  # the newest candle closed by 03:00:30

    assert ticker.tick() == []  # everything closed is stored
    state = ticker.state()
    assert state[f"ohlcv_1m|{SPOT}"]["w"] == at(2, 2, 59)

    exchange.move_to(at(2, 3, 10, 30))
    later = ticker.tick()
    assert ticker.partitions(later) == {
        (OHLCV_1M, f"2024-01-02|{SPOT}"),
        (OHLCV_1M, f"2024-01-02|{PERP}"),
        (TRADES, f"2024-01-02|{SPOT}"),  # a new 5-minute trade bucket finished
        (TRADES, f"2024-01-02|{PERP}"),
    }  # no new 1h candle closed, no funding time passed
    assert ticker.state()[f"ohlcv_1m|{SPOT}"]["w"] == at(2, 3, 9)
    assert ticker.state()[f"ohlcv_1h|{SPOT}"]["w"] == at(2, 2)
    assert ticker.tick() == []  # requested, not yet run: not requested again
    ticker.run(later)
    assert ticker.tick() == []
    with MarketStore.open(db_url) as store:
        assert store.latest_ts("ohlcv", exchange="binance", symbol=SPOT, timeframe="1m") == at(
            2, 3, 9
        )
    assert len(later) == 2  # both symbols need the same day: one run per asset
    assert len(ticker.keys) == len(set(ticker.keys)) == 7


def test_open_interest_is_loaded_for_the_perpetual_as_samples_close(
    tmp_path: Path, instance: dg.DagsterInstance, exchange: Exchange, db_url: str
) -> None:
    """The descriptor is all the sensor needs: daily partitions, perpetuals only, a 5-minute
    grid (a new sample every 5 minutes is new closed data)."""
    universe = _universe(tmp_path, timeframes="1h", funding=False, open_interest=True)
    ticker = Ticker(universe, instance, exchange, db_url)
    interest = "binance/open_interest"
    first = ticker.tick()
    requested = {p for p in ticker.partitions(first) if p[0] == interest}
    assert requested == {(interest, f"2024-01-01|{PERP}"), (interest, f"2024-01-02|{PERP}")}
    ticker.run(first)
    with MarketStore.open(db_url) as store:
        newest = store.latest_ts("open_interest", exchange="binance", symbol=PERP)
    assert newest == at(2, 3, 0)  # the newest 5-minute sample at 03:00:30
    assert ticker.state()[f"open_interest|{PERP}"]["w"] == at(2, 3, 0)
    assert not {p for p in ticker.partitions(ticker.tick()) if p[0] == interest}
    exchange.move_to(at(2, 3, 5, 1))
    later = {p for p in ticker.partitions(ticker.tick()) if p[0] == interest}
    assert later == {(interest, f"2024-01-02|{PERP}")}


def test_per_tick_bound_defers_without_losing_or_repeating(
    tmp_path: Path, instance: dg.DagsterInstance, exchange: Exchange, db_url: str
) -> None:
    bounded = Ticker(_universe(tmp_path / "a", max_runs_per_tick=3), instance, exchange, db_url)
    ticks = [bounded.tick() for _ in range(4)]
    assert [len(t) for t in ticks] == [3, 1, 0, 0]  # 4 runs are due; the 4th waits a tick
    assert len(bounded.keys) == len(set(bounded.keys))

    unbounded = Ticker(_universe(tmp_path / "b"), instance, exchange, db_url)
    everything = unbounded.tick()
    assert len(everything) > 2
    deferred = [request for tick in ticks for request in tick]
    assert bounded.partitions(deferred) == unbounded.partitions(everything)
    assert sorted(str(r.run_key) for r in deferred) == sorted(str(r.run_key) for r in everything)


def test_rollover_finalizes_the_previous_day_once(
    tmp_path: Path, instance: dg.DagsterInstance, exchange: Exchange, sqlite_url: str
) -> None:
    universe = _universe(
        tmp_path,
        symbols=SPOT,
        timeframes="1m",
        start="2024-01-02",
        funding=False,
        finalize_after_seconds=120,
    )
    ticker = Ticker(universe, instance, exchange, sqlite_url)
    exchange.move_to(at(2, 23, 50, 30))
    ticker.run(ticker.tick())

    exchange.move_to(at(3, 0, 0, 30))  # 01-02's last candle and trades bucket closed
    rollover = ticker.tick()
    assert {r.tags[INCREMENTAL_TAG] for r in rollover} == {"load"}
    assert ticker.partitions(rollover) == {
        (OHLCV_1M, f"2024-01-02|{SPOT}"),
        (TRADES, f"2024-01-02|{SPOT}"),
    }
    ticker.run(rollover)

    exchange.move_to(at(3, 0, 3))  # two minutes after the close: finalize once more
    after = ticker.tick()
    finals = [r for r in after if r.tags[INCREMENTAL_TAG] == "finalize"]
    assert ticker.partitions(finals) == {
        (OHLCV_1M, f"2024-01-02|{SPOT}"),
        (TRADES, f"2024-01-02|{SPOT}"),
    }
    assert all(str(r.run_key).endswith(":final") for r in finals)
    loads = [r for r in after if r.tags[INCREMENTAL_TAG] == "load"]
    assert ticker.partitions(loads) == {(OHLCV_1M, f"2024-01-03|{SPOT}")}
    ticker.run(after)

    for minute in (6, 30):
        exchange.move_to(at(3, 0, minute))
        again = ticker.tick()
        assert all(r.tags[INCREMENTAL_TAG] == "load" for r in again)
        assert all("2024-01-02" not in key for _, key in ticker.partitions(again))
        ticker.run(again)
    assert len(ticker.keys) == len(set(ticker.keys))
    assert sum(key.endswith(":final") for key in ticker.keys) == 2


def test_nothing_is_requested_after_delisting(
    tmp_path: Path, instance: dg.DagsterInstance, exchange: Exchange, db_url: str
) -> None:
    with MarketStore.open(db_url) as store:
        store.upsert_instruments(
            pairs=[
                CryptoPair(
                    exchange="binance", symbol=SPOT, base="BTC", quote="USDT", delisted_ms=at(2)
                )
            ]
        )
    ticker = Ticker(_universe(tmp_path), instance, exchange, db_url)
    requested = ticker.partitions(ticker.tick())
    spot = {(asset, key) for asset, key in requested if key.endswith(f"|{SPOT}")}
    assert spot == {
        (OHLCV_1M, f"2024-01-01|{SPOT}"),  # up to its last candle before the delisting
        (OHLCV_1H, f"2024-01-01|{SPOT}"),  # January holds the delisting
        (TRADES, f"2024-01-01|{SPOT}"),
    }
    assert (OHLCV_1M, f"2024-01-02|{PERP}") in requested

    for day in (2, 3):
        exchange.move_to(at(day, 23, 59))
        later = ticker.partitions(ticker.tick())
        assert later and not any(key.endswith(f"|{SPOT}") for _, key in later)


def test_a_date_partition_dagster_does_not_have_yet_waits(
    tmp_path: Path, instance: dg.DagsterInstance, sqlite_url: str
) -> None:
    """At midnight the exchange's clock may run ahead of the daemon's, whose clock decides
    which date partitions exist; one unknown partition would fail the whole tick."""
    universe = _universe(tmp_path, timeframes="1m", start="2024-01-02", funding=False)
    config = universe.exchanges["binance"]
    sync_symbol_partitions(instance, universe)
    orders = partition_orders(instance, "binance", config)
    assert orders == {"binance_symbols": [SPOT, PERP]}  # no perpetuals-only dataset here
    now = at(2, 3, 0, 30)
    with MarketStore.open(sqlite_url) as store:
        held = plan_tick(
            "binance", config, store, orders, now, None, lambda key, _m: key < "2024-01-02"
        )
        assert held.run_requests == [] and held.deferred == 2
        later = plan_tick("binance", config, store, orders, now, held.cursor)
    assert all_partitions(later.run_requests, universe, instance) == {
        (OHLCV_1M, f"2024-01-02|{SPOT}"),
        (OHLCV_1M, f"2024-01-02|{PERP}"),
        (TRADES, f"2024-01-02|{SPOT}"),
        (TRADES, f"2024-01-02|{PERP}"),
    }


def test_an_unreachable_exchange_skips_the_tick_and_keeps_the_cursor(
    tmp_path: Path, instance: dg.DagsterInstance, exchange: Exchange, sqlite_url: str
) -> None:
    ticker = Ticker(_universe(tmp_path), instance, exchange, sqlite_url)
    exchange.server.set_faults(FaultConfig(server_error=1.0))
    try:
        with dg.build_sensor_context(instance=instance, resources=ticker.resources) as context:
            result = ticker.sensor(context)
    finally:
        exchange.server.set_faults(FaultConfig())
    assert isinstance(result, dg.SkipReason)  # no runs, the cursor kept
    assert "binance clock unavailable" in str(result.skip_message)
    assert ticker.tick()  # reachable again: the tick proceeds


def _closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_closed_exchange_url_skips_with_the_reason(
    tmp_path: Path, instance: dg.DagsterInstance, sqlite_url: str
) -> None:
    universe = _universe(tmp_path)
    sync_symbol_partitions(instance, universe)
    sensor = incremental_sensor("binance", universe.exchanges["binance"])
    closed = {
        "exchanges": ExchangesResource(
            source="replay", replay_url=f"http://127.0.0.1:{_closed_port()}"
        ),
        "market_store": MarketStoreResource(db_url=sqlite_url, source="replay"),
    }
    with dg.build_sensor_context(instance=instance, resources=closed, cursor="{}") as context:
        result = sensor(context)
    assert isinstance(result, dg.SkipReason)
    message = str(result.skip_message)
    assert message.startswith("binance clock unavailable: "), message
    assert len(message) > len("binance clock unavailable: ")  # the error itself follows
