"""The daily schedules, evaluated with ``dg.build_schedule_context`` on a real instance and
store; their requests are run the way the daemon would run them.

Candles and funding rates are partitioned monthly, trades daily: the daily re-check runs
yesterday's partition of the daily assets and the month holding yesterday of the monthly
ones (so each day's candles are re-checked once final, and a month once more after it
closed)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from crypto_pipelines.defs.partitions import perps_partitions_name, symbols_partitions_name
from crypto_pipelines.defs.schedules import (
    CATALOG_KEYS,
    RECHECK_TAG,
    daily_schedules,
    markets_refresh_schedule,
    previous_day_recheck_schedule,
)
from crypto_pipelines.domain.instruments import CryptoPair
from crypto_pipelines.domain.universe import Universe
from crypto_pipelines.replay import Tape
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

SPOT, PERP, DELISTED = "BTC/USDT", "BTC/USDT:USDT", "ETH/USDT"
SYMBOLS = (SPOT, DELISTED, PERP)  # binance's, in its symbol partitions' order


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def exchange(synth_tape: Tape) -> Iterator[Exchange]:
    with replay_exchange(synth_tape, at(4)) as ex:  # the whole tape is closed
        yield ex


@pytest.fixture
def universe(tmp_path: Path) -> Universe:
    return write_universe(
        tmp_path / "universe.yaml",
        {
            "binance": f"""
symbols: [{SPOT}, {DELISTED}, {PERP}]
timeframes: [1m, 1h]
start: 2024-01-01
trades: true
funding: true
""",
            "okx": f"symbols: [{SPOT}]\ntimeframes: [1m]\nstart: 2024-01-01\nfunding: false",
        },
    )


def _context(
    instance: dg.DagsterInstance, when: datetime, run_resources: dict[str, object] | None = None
) -> dg.ScheduleEvaluationContext:
    return dg.build_schedule_context(
        instance=instance, scheduled_execution_time=when, resources=run_resources
    )


def test_markets_refresh_requests_every_markets_asset_and_the_catalog(
    universe: Universe, instance: dg.DagsterInstance, exchange: Exchange, db_url: str
) -> None:
    schedule = markets_refresh_schedule(universe)
    assert schedule.cron_schedule == "5 0 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    request = schedule(_context(instance, datetime(2024, 1, 3, 0, 5, tzinfo=UTC)))
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == "markets:2024-01-03"
    assert set(request.asset_selection or []) == {
        dg.AssetKey(["binance", "markets"]),
        dg.AssetKey(["okx", "markets"]),
        *CATALOG_KEYS,
    }
    execute(request, universe, instance, resources(exchange.server, db_url))
    with MarketStore.open(db_url) as store:
        assert set(store.read("crypto_pairs")["exchange"]) == {"binance", "okx"}


def _store_delisted(db_url: str) -> None:
    """The catalog's ``DELISTED`` pair, delisted at noon of 2024-01-01."""
    with MarketStore.open(db_url) as store:
        store.upsert_instruments(
            pairs=[
                CryptoPair(
                    exchange="binance",
                    symbol=DELISTED,
                    base="ETH",
                    quote="USDT",
                    delisted_ms=at(1, 12),
                )
            ]
        )


def test_recheck_requests_yesterday_of_every_live_series(
    universe: Universe, instance: dg.DagsterInstance, exchange: Exchange, db_url: str
) -> None:
    name = symbols_partitions_name("binance")
    instance.add_dynamic_partitions(name, [SPOT, DELISTED, PERP])
    instance.add_dynamic_partitions(perps_partitions_name("binance"), [PERP])  # funding's
    instance.add_dynamic_partitions(symbols_partitions_name("okx"), [SPOT])
    _store_delisted(db_url)
    run_resources = resources(exchange.server, db_url)
    # A schedule runs one job, a job has one partitioning: daily or monthly, over the
    # exchange's symbols or its perpetuals (funding rates). Candles are monthly: okx, with
    # 1m candles and no trades, has only a monthly re-check.
    assert [s.name for s in daily_schedules(universe)] == [
        "daily_markets_refresh",
        "binance_daily_recheck",
        "binance_monthly_recheck",
        "binance_perps_monthly_recheck",
        "okx_monthly_recheck",
    ]
    requests: list[dg.RunRequest] = []
    for exchange_id, monthly, symbols in (
        ("binance", False, None),
        ("binance", True, None),
        ("binance", True, perps_partitions_name("binance")),
        ("okx", True, None),
    ):
        schedule = previous_day_recheck_schedule(
            universe, exchange_id, monthly=monthly, symbols=symbols
        )
        assert schedule is not None
        assert schedule.cron_schedule == "30 0 * * *"
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
        when = datetime(2024, 1, 3, 0, 30, tzinfo=UTC)
        with _context(instance, when, run_resources) as context:
            result = schedule(context)
        assert isinstance(result, list)
        requests += result
    assert previous_day_recheck_schedule(universe, "okx", monthly=False) is None
    assert all_partitions(requests, universe, instance) == {
        ("binance/ohlcv_1m", f"2024-01-01|{SPOT}"),  # monthly: the month holding yesterday,
        ("binance/ohlcv_1m", f"2024-01-01|{DELISTED}"),  # which the delisted pair lived in
        ("binance/ohlcv_1m", f"2024-01-01|{PERP}"),
        ("binance/ohlcv_1h", f"2024-01-01|{SPOT}"),
        ("binance/ohlcv_1h", f"2024-01-01|{DELISTED}"),
        ("binance/ohlcv_1h", f"2024-01-01|{PERP}"),
        ("binance/trades", f"2024-01-02|{SPOT}"),  # daily: yesterday; the delisted pair
        ("binance/trades", f"2024-01-02|{PERP}"),  # did not live then and is skipped
        ("binance/funding_rates", f"2024-01-01|{PERP}"),  # over binance_perps: the swap only
        ("okx/ohlcv_1m", f"2024-01-01|{SPOT}"),
    }
    # Contiguous symbols share a run; the delisted pair splits the trades range.
    assert len(requests) == 6
    funding = [
        r for r in requests if r.asset_selection == [dg.AssetKey(["binance", "funding_rates"])]
    ]
    assert [r.partition_key for r in funding] == [f"2024-01-01|{PERP}"]
    assert all(r.tags[RECHECK_TAG] == "2024-01-02" for r in requests)
    keys = [r.run_key for r in requests]
    assert len(set(keys)) == len(keys)

    # Run the okx re-check (binance's 1m run holds the delisted pair, which the tape lacks):
    # its month, January, is loaded up to the exchange's clock, yesterday complete.
    (okx,) = [r for r in requests if r.asset_selection == [dg.AssetKey(["okx", "ohlcv_1m"])]]
    execute(okx, universe, instance, run_resources)
    candles = exchange.server.tape.exchanges["okx"].symbols[SPOT].ohlcv["1m"]
    with MarketStore.open(db_url) as store:
        stored = store.count(
            "ohlcv",
            exchange="okx",
            symbol=SPOT,
            timeframe="1m",
            start_ts=at(2),
            end_ts=at(3),
        )
    assert stored == len(candles.between(at(2), at(3) - 1, 10**6)) > 0  # yesterday is complete


def test_the_monthly_recheck_follows_the_month_holding_yesterday(
    universe: Universe, instance: dg.DagsterInstance, exchange: Exchange, db_url: str
) -> None:
    """On the 1st the month that just closed is re-checked once more (final now); from the
    2nd on, the new month. Symbols delisted before the month are left out."""
    instance.add_dynamic_partitions(symbols_partitions_name("binance"), [SPOT, DELISTED, PERP])
    _store_delisted(db_url)
    schedule = previous_day_recheck_schedule(universe, "binance", monthly=True)
    assert schedule is not None
    run_resources = resources(exchange.server, db_url)
    found: dict[str, tuple[set[tuple[str, str]], set[str], int]] = {}
    for when in (datetime(2024, 2, 1, 0, 30, tzinfo=UTC), datetime(2024, 2, 2, 0, 30, tzinfo=UTC)):
        with _context(instance, when, run_resources) as context:
            result = schedule(context)
        assert isinstance(result, list)
        found[when.date().isoformat()] = (
            all_partitions(result, universe, instance),
            {r.tags[RECHECK_TAG] for r in result},
            len(result),
        )
    assert found["2024-02-01"] == (
        {(f"binance/ohlcv_{tf}", f"2024-01-01|{s}") for tf in ("1m", "1h") for s in SYMBOLS},
        {"2024-01-31"},
        2,  # one run per asset: the three symbols are contiguous
    )
    assert found["2024-02-02"] == (
        {(f"binance/ohlcv_{tf}", f"2024-02-01|{s}") for tf in ("1m", "1h") for s in (SPOT, PERP)},
        {"2024-02-01"},
        4,  # the delisted pair, gone before February, splits each asset's range
    )


@pytest.mark.parametrize("monthly", [False, True])
def test_recheck_before_the_universe_start_skips(
    universe: Universe,
    instance: dg.DagsterInstance,
    exchange: Exchange,
    db_url: str,
    monthly: bool,
) -> None:
    instance.add_dynamic_partitions(symbols_partitions_name("binance"), [SPOT])
    schedule = previous_day_recheck_schedule(universe, "binance", monthly=monthly)
    assert schedule is not None
    run_resources = resources(exchange.server, db_url)
    when = datetime(2024, 1, 1, 0, 30, tzinfo=UTC)  # yesterday, and its month, precede it
    with _context(instance, when, run_resources) as context:
        assert isinstance(schedule(context), dg.SkipReason)
    with _context(instance, datetime(2024, 1, 2, 0, 30, tzinfo=UTC), run_resources) as context:
        assert isinstance(schedule(context), list)  # the first day: its re-check runs
