"""The incremental sensor on a real Dagster instance, a real store and the replay exchange
whose clock the test moves: exactly the partitions with new closed data are requested, run
keys never repeat, the cursor advances, the per-tick bound holds, a rollover finalizes the
previous partition once, and nothing after a delisting is requested.

Candles and funding rates are partitioned monthly (``2024-01-01|BTC/USDT``; the current month
is a partition too), trades and open interest daily: the current month of candles is
requested whenever new candles closed, a day's rollover finalizes that day of trades and
leaves the candles' month open, and the month's rollover finalizes both."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.defs.sensors.incremental import (
    INCREMENTAL_TAG,
    catalog_stored,
    incremental_sensor,
    partition_orders,
    plan_tick,
)
from crypto_pipelines.defs.universe_sync import sync_symbol_partitions
from crypto_pipelines.domain.instruments import CryptoPair
from crypto_pipelines.domain.universe import Universe
from crypto_pipelines.replay import FaultConfig, Tape
from crypto_pipelines.replay.synth import SynthSpec, write_synthetic_tape
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.conftest import free_port
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
JAN, FEB = "2024-01-01", "2024-02-01"  # month partitions' date keys (a month's first day)
FEB_1 = 32  # at(FEB_1, h, m) is 2024-02-01 hh:mm (``at`` counts days from 2024-01-01)


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


@pytest.fixture(scope="module")
def month_end_tape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tape]:
    """Binance BTC/USDT candles and trades from 2024-01-31 to 2024-02-01: a month rollover."""
    root = tmp_path_factory.mktemp("month_end")
    write_synthetic_tape(
        root,
        SynthSpec(
            exchanges=("binance",),
            symbols={"binance": (SPOT,)},
            timeframes=("1m",),
            start=datetime(2024, 1, 31, tzinfo=UTC),
            days=2,
            seed=5,
            books=False,
            funding=False,
            open_interest=False,
        ),
    )
    tape = Tape.load(root)
    yield tape
    tape.close()


@pytest.fixture
def month_end(month_end_tape: Tape) -> Iterator[Exchange]:
    with replay_exchange(month_end_tape, at(31, 23, 50, 30)) as ex:
        yield ex


class Ticker:
    """Evaluates the sensor tick after tick, carrying its cursor, as the daemon does."""

    def __init__(
        self,
        universe: Universe,
        instance: dg.DagsterInstance,
        exchange: Exchange,
        db_url: str,
        *,
        catalog: bool = True,
    ) -> None:
        self.universe, self.instance, self.exchange = universe, instance, exchange
        self.resources = resources(exchange.server, db_url)
        self.sensor = incremental_sensor("binance", universe.exchanges["binance"])
        self.cursor: str | None = None
        self.keys: list[str] = []
        sync_symbol_partitions(instance, universe)
        with MarketStore.open(db_url) as store:
            stored = catalog_stored(store, "binance")
        if catalog and not stored:  # as on a new install: the sensor asks for the catalog first
            (first,) = self.tick()
            assert first.asset_selection == [dg.AssetKey(["binance", "markets"])]
            self.run([first])
            self.keys.clear()

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
    # January of the spot pair's 1m candles is already stored, up to the newest closed candle.
    stored = dg.RunRequest(
        asset_selection=[dg.AssetKey(["binance", "ohlcv_1m"])], partition_key=f"{JAN}|{SPOT}"
    )
    ticker.run([stored])
    with MarketStore.open(db_url) as store:
        newest = store.latest_ts("ohlcv", exchange="binance", symbol=SPOT, timeframe="1m")
    assert newest == at(2, 2, 59)  # the newest candle closed by 03:00:30

    first = ticker.tick()
    assert ticker.partitions(first) == {
        (OHLCV_1M, f"{JAN}|{PERP}"),  # the spot pair's month holds every closed candle
        (OHLCV_1H, f"{JAN}|{SPOT}"),
        (OHLCV_1H, f"{JAN}|{PERP}"),
        (TRADES, f"2024-01-02|{SPOT}"),  # daily; trades start at the current day
        (TRADES, f"2024-01-02|{PERP}"),
        (FUNDING, f"{JAN}|{PERP}"),  # the spot pair has no funding
    }
    # Symbols needing the same dates share a run: one per asset and date span.
    assert len(first) == 4
    assert all(r.tags[INCREMENTAL_TAG] == "load" for r in first)
    ticker.run(first)
    with MarketStore.open(db_url) as store:
        newest = store.latest_ts("ohlcv", exchange="binance", symbol=PERP, timeframe="1m")
    assert newest == at(2, 2, 59)

    assert ticker.tick() == []  # everything closed is stored
    state = ticker.state()
    assert state[f"ohlcv_1m|{PERP}"]["w"] == at(2, 2, 59)
    assert "w" not in state[f"ohlcv_1m|{SPOT}"]  # never requested: the store had it all

    exchange.move_to(at(2, 3, 10, 30))
    later = ticker.tick()
    assert ticker.partitions(later) == {
        (OHLCV_1M, f"{JAN}|{SPOT}"),  # ten new candles closed: the current month again
        (OHLCV_1M, f"{JAN}|{PERP}"),
        (TRADES, f"2024-01-02|{SPOT}"),  # a new 5-minute trade bucket finished
        (TRADES, f"2024-01-02|{PERP}"),
    }  # no new 1h candle closed, no funding time passed
    assert ticker.state()[f"ohlcv_1m|{SPOT}"]["w"] == at(2, 3, 9)
    assert ticker.state()[f"ohlcv_1h|{SPOT}"]["w"] == at(2, 2)
    assert ticker.tick() == []  # requested, not yet run: not requested again
    exchange.move_to(at(2, 3, 10, 59))
    assert ticker.tick() == []  # the clock moved, but no candle nor trade bucket closed
    ticker.run(later)
    assert ticker.tick() == []
    with MarketStore.open(db_url) as store:
        assert store.latest_ts("ohlcv", exchange="binance", symbol=SPOT, timeframe="1m") == at(
            2, 3, 9
        )
    assert len(later) == 2  # both symbols need the same dates: one run per asset

    exchange.move_to(at(2, 3, 11))  # the 03:10 candle closed: the month once more, a new key
    again = ticker.tick()
    assert ticker.partitions(again) == {(OHLCV_1M, f"{JAN}|{SPOT}"), (OHLCV_1M, f"{JAN}|{PERP}")}
    assert [str(r.run_key).rsplit(":", 1)[-1] for r in again] == [f"w{at(2, 3, 10)}"]
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


def _roll_over(
    ticker: Ticker, exchange: Exchange, day: int
) -> tuple[list[dg.RunRequest], list[dg.RunRequest]]:
    """Ticks and runs as the daemon would around midnight before 2024-01-``day``: the
    requests of the tick after the last candle and trade bucket of ``day - 1`` closed, and
    of the tick two minutes after the close (``finalize_after_seconds: 120``)."""
    exchange.move_to(at(day - 1, 23, 50, 30))
    ticker.run(ticker.tick())
    exchange.move_to(at(day, 0, 0, 30))  # the previous day's last candle and bucket closed
    rollover = ticker.tick()
    ticker.run(rollover)
    exchange.move_to(at(day, 0, 3))  # two minutes after the close: finalize once more
    after = ticker.tick()
    ticker.run(after)
    return rollover, after


def _rollover_universe(tmp_path: Path, start: str) -> Universe:
    return _universe(
        tmp_path,
        symbols=SPOT,
        timeframes="1m",
        start=start,
        funding=False,
        finalize_after_seconds=120,
    )


def test_a_day_rollover_finalizes_the_day_of_trades_once_and_leaves_the_month_open(
    tmp_path: Path, instance: dg.DagsterInstance, exchange: Exchange, sqlite_url: str
) -> None:
    universe = _rollover_universe(tmp_path, "2024-01-02")
    ticker = Ticker(universe, instance, exchange, sqlite_url)
    rollover, after = _roll_over(ticker, exchange, 3)

    assert {r.tags[INCREMENTAL_TAG] for r in rollover} == {"load"}
    assert ticker.partitions(rollover) == {
        (OHLCV_1M, f"{JAN}|{SPOT}"),
        (TRADES, f"2024-01-02|{SPOT}"),
    }
    finals = [r for r in after if r.tags[INCREMENTAL_TAG] == "finalize"]
    # 01-02's trades partition closed; the candles' month did not: nothing of it is final.
    assert ticker.partitions(finals) == {(TRADES, f"2024-01-02|{SPOT}")}
    assert all(str(r.run_key).endswith(":final") for r in finals)
    loads = [r for r in after if r.tags[INCREMENTAL_TAG] == "load"]
    assert ticker.partitions(loads) == {(OHLCV_1M, f"{JAN}|{SPOT}")}  # 00:00..00:02 closed

    for minute in (6, 30):
        exchange.move_to(at(3, 0, minute))
        again = ticker.tick()
        assert all(r.tags[INCREMENTAL_TAG] == "load" for r in again)
        assert ticker.partitions(again) == {
            (OHLCV_1M, f"{JAN}|{SPOT}"),
            (TRADES, f"2024-01-03|{SPOT}"),
        }
        ticker.run(again)
    assert len(ticker.keys) == len(set(ticker.keys))
    assert sum(key.endswith(":final") for key in ticker.keys) == 1


def test_a_month_rollover_finalizes_the_previous_month_once(
    tmp_path: Path, instance: dg.DagsterInstance, month_end: Exchange, sqlite_url: str
) -> None:
    universe = _rollover_universe(tmp_path, "2024-01-31")
    ticker = Ticker(universe, instance, month_end, sqlite_url)
    rollover, after = _roll_over(ticker, month_end, FEB_1)

    assert {r.tags[INCREMENTAL_TAG] for r in rollover} == {"load"}
    assert ticker.partitions(rollover) == {
        (OHLCV_1M, f"{JAN}|{SPOT}"),  # January's last candle, 01-31 23:59
        (TRADES, f"2024-01-31|{SPOT}"),
    }
    with MarketStore.open(sqlite_url) as store:
        january = store.timestamps(
            "ohlcv", exchange="binance", symbol=SPOT, timeframe="1m", end_ts=at(FEB_1)
        )
        newest = store.latest_ts("ohlcv", exchange="binance", symbol=SPOT, timeframe="1m")
    assert january[-1] == at(31, 23, 59)  # January is complete,
    assert newest == at(FEB_1, 0, 2)  # and February's first closed candles are loaded

    finals = [r for r in after if r.tags[INCREMENTAL_TAG] == "finalize"]
    assert ticker.partitions(finals) == {
        (OHLCV_1M, f"{JAN}|{SPOT}"),
        (TRADES, f"2024-01-31|{SPOT}"),
    }
    assert all(str(r.run_key).endswith(":final") for r in finals)
    loads = [r for r in after if r.tags[INCREMENTAL_TAG] == "load"]
    assert ticker.partitions(loads) == {(OHLCV_1M, f"{FEB}|{SPOT}")}

    for minute in (6, 30):
        month_end.move_to(at(FEB_1, 0, minute))
        again = ticker.tick()
        assert all(r.tags[INCREMENTAL_TAG] == "load" for r in again)
        assert ticker.partitions(again) == {(OHLCV_1M, f"{FEB}|{SPOT}"), (TRADES, f"{FEB}|{SPOT}")}
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
        (OHLCV_1M, f"{JAN}|{SPOT}"),  # January holds the delisting
        (OHLCV_1H, f"{JAN}|{SPOT}"),
        (TRADES, f"2024-01-01|{SPOT}"),  # daily: its last day
    }
    assert (TRADES, f"2024-01-02|{PERP}") in requested  # the perpetual goes on
    state = ticker.state()
    # Requested up to its last candle before the delisting, and no further; the perpetual's
    # load of the same month runs up to now.
    assert at(1, 23, 59) <= state[f"ohlcv_1m|{SPOT}"]["w"] < at(2)
    assert at(1, 23) <= state[f"ohlcv_1h|{SPOT}"]["w"] < at(2)
    assert state[f"ohlcv_1m|{PERP}"]["w"] == at(2, 2, 59)

    for day in (2, 3):
        exchange.move_to(at(day, 23, 59))
        later = ticker.partitions(ticker.tick())
        assert later and not any(key.endswith(f"|{SPOT}") for _, key in later)


def test_a_date_partition_dagster_does_not_have_yet_waits(
    tmp_path: Path, instance: dg.DagsterInstance, sqlite_url: str
) -> None:
    """At midnight the exchange's clock may run ahead of the daemon's, whose clock decides
    which date partitions exist; one unknown partition would fail the whole tick. At a
    month's end both grains roll over: the new month of candles, the new day of trades."""
    universe = _universe(tmp_path, timeframes="1m", start="2024-01-31", funding=False)
    config = universe.exchanges["binance"]
    sync_symbol_partitions(instance, universe)
    orders = partition_orders(instance, "binance", config)
    assert orders == {"binance_symbols": [SPOT, PERP]}  # no perpetuals-only dataset here
    now = at(FEB_1, 0, 5, 30)  # the exchange's clock; the daemon's is still on 01-31
    with MarketStore.open(sqlite_url) as store:
        held = plan_tick("binance", config, store, orders, now, None, lambda key, _m: key < FEB)
        assert held.run_requests == [] and held.deferred == 2
        later = plan_tick("binance", config, store, orders, now, held.cursor)
    assert all_partitions(later.run_requests, universe, instance) == {
        (OHLCV_1M, f"{JAN}|{SPOT}"),  # catching up from the start (2024-01-31)
        (OHLCV_1M, f"{JAN}|{PERP}"),
        (OHLCV_1M, f"{FEB}|{SPOT}"),
        (OHLCV_1M, f"{FEB}|{PERP}"),
        (TRADES, f"{FEB}|{SPOT}"),  # trades start at the current day
        (TRADES, f"{FEB}|{PERP}"),
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


def test_a_closed_exchange_url_skips_with_the_reason(
    tmp_path: Path, instance: dg.DagsterInstance, sqlite_url: str
) -> None:
    universe = _universe(tmp_path)
    sync_symbol_partitions(instance, universe)
    sensor = incremental_sensor("binance", universe.exchanges["binance"])
    closed = {
        "exchanges": ExchangesResource(
            source="replay", replay_url=f"http://127.0.0.1:{free_port()}"
        ),
        "market_store": MarketStoreResource(db_url=sqlite_url, source="replay"),
    }
    with dg.build_sensor_context(instance=instance, resources=closed, cursor="{}") as context:
        result = sensor(context)
    assert isinstance(result, dg.SkipReason)
    message = str(result.skip_message)
    assert message.startswith("binance clock unavailable: "), message
    assert len(message) > len("binance clock unavailable: ")  # the error itself follows
