"""Watermarks, partition windows and per-series plans of the incremental loads (plain Python)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from crypto_pipelines.domain.incremental import (
    FUNDING,
    OHLCV,
    TRADES,
    Series,
    SeriesState,
    partition_date_key,
    partition_end,
    partition_start,
    partition_starts,
    plan_series,
)

MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp() * 1000)


JAN1 = ms(2024, 1, 1)


def candles(tf: str = "1m", step: int = MIN, monthly: bool = False, **kw: object) -> Series:
    fields: dict[str, object] = {"first_ms": JAN1, **kw}
    return Series(
        asset=f"ohlcv_{tf}",
        dataset=OHLCV,
        symbol="BTC/USDT",
        monthly=monthly,
        cadence_ms=step,
        timeframe=tf,
        **fields,  # type: ignore[arg-type]
    )


def test_partition_windows_daily_and_monthly() -> None:
    assert partition_start(ms(2024, 2, 29, 13, 5), monthly=False) == ms(2024, 2, 29)
    assert partition_start(ms(2024, 2, 29, 13, 5), monthly=True) == ms(2024, 2, 1)
    assert partition_end(ms(2024, 2, 1), monthly=True) == ms(2024, 3, 1)  # leap February
    assert partition_end(ms(2024, 12, 1), monthly=True) == ms(2025, 1, 1)
    assert partition_date_key(ms(2024, 3, 1)) == "2024-03-01"
    assert partition_starts(ms(2024, 1, 30, 5), ms(2024, 2, 1, 1), monthly=False) == [
        ms(2024, 1, 30),
        ms(2024, 1, 31),
        ms(2024, 2, 1),
    ]


@pytest.mark.parametrize(
    ("series", "now", "mark"),
    [
        (candles(), ms(2024, 1, 2, 0, 0, 30), ms(2024, 1, 1, 23, 59)),  # 23:59 closed at 00:00
        (candles(), ms(2024, 1, 2), ms(2024, 1, 1, 23, 59)),
        (candles("1h", HOUR, True), ms(2024, 1, 2, 0, 59, 59), ms(2024, 1, 1, 23)),
        # weekly candles open on Mondays: 2024-01-01 was one, 2024-01-08 the next
        (candles("1w", 7 * DAY, True), ms(2024, 1, 15, 0, 0, 1), ms(2024, 1, 8)),
        (candles("1w", 7 * DAY, True), ms(2024, 1, 14, 23), ms(2024, 1, 1)),
        (
            Series("trades", TRADES, "BTC/USDT", False, 300_000, JAN1),
            ms(2024, 1, 2, 3, 7),
            ms(2024, 1, 2, 3, 5) - 1,
        ),
        (
            Series("funding_rates", FUNDING, "BTC/USDT:USDT", True, 8 * HOUR, JAN1),
            ms(2024, 1, 2, 15, 59),
            ms(2024, 1, 2, 8),
        ),
        (candles(end_ms=ms(2024, 1, 1, 12)), ms(2024, 1, 5), ms(2024, 1, 1, 12) - 1),  # delisted
        (candles(), ms(2024, 1, 1, 0, 0, 59), None),  # nothing closed yet
    ],
)
def test_watermark_is_the_newest_closed_data(series: Series, now: int, mark: int | None) -> None:
    assert series.watermark(now) == mark


def test_catch_up_is_chunked_and_continues_from_what_was_requested() -> None:
    series = candles()
    now = ms(2024, 1, 10, 12)
    first = plan_series(series, now, None, None, max_partitions=4, finalize_after_ms=0)
    assert first.load == (ms(2024, 1, 1), ms(2024, 1, 4))
    assert first.watermark == ms(2024, 1, 5) - 1
    state = first.state_after(loaded=True, finalized=False)
    second = plan_series(series, now, None, state, max_partitions=4, finalize_after_ms=0)
    assert second.load == (ms(2024, 1, 5), ms(2024, 1, 8))  # nothing stored yet: not again
    state = second.state_after(loaded=True, finalized=False)
    third = plan_series(
        series, now, ms(2024, 1, 8, 23, 59), state, max_partitions=4, finalize_after_ms=0
    )
    assert third.load == (ms(2024, 1, 9), ms(2024, 1, 10))
    assert third.watermark == ms(2024, 1, 10, 11, 59)
    done = third.state_after(loaded=True, finalized=False)
    assert not plan_series(series, now, None, done, max_partitions=4, finalize_after_ms=0).wants_run


def test_deferred_load_is_not_remembered() -> None:
    plan = plan_series(
        candles(), ms(2024, 1, 2, 5), None, None, max_partitions=9, finalize_after_ms=0
    )
    assert plan.state_after(loaded=False, finalized=False).requested_to is None


def test_trades_without_history_start_at_the_current_day() -> None:
    series = Series("trades", TRADES, "BTC/USDT", False, 300_000, JAN1, catch_up=False)
    plan = plan_series(
        series, ms(2024, 3, 5, 10), None, None, max_partitions=31, finalize_after_ms=0
    )
    assert plan.load == (ms(2024, 3, 5), ms(2024, 3, 5))


def test_listing_and_delisting_bound_the_requests() -> None:
    series = candles(first_ms=ms(2024, 1, 3, 10), end_ms=ms(2024, 1, 5))
    plan = plan_series(series, ms(2024, 2, 1), None, None, max_partitions=31, finalize_after_ms=0)
    assert plan.load == (ms(2024, 1, 3), ms(2024, 1, 4))
    after = plan.state_after(loaded=True, finalized=True)
    later = plan_series(series, ms(2024, 3, 1), None, after, max_partitions=31, finalize_after_ms=0)
    assert not later.wants_run
    assert not series.lives_in(ms(2024, 1, 5)) and series.lives_in(ms(2024, 1, 4))
    assert not series.lives_in(ms(2024, 1, 2))


def test_previous_partition_is_finalized_once_after_it_closed() -> None:
    series = candles()
    delay = 2 * MIN
    seen = plan_series(
        series,
        ms(2024, 1, 2, 23, 50),
        ms(2024, 1, 2, 23, 48),
        None,
        max_partitions=31,
        finalize_after_ms=delay,
    )
    assert seen.finalize is None  # first sight: earlier rollovers are not the sensor's
    state = seen.state_after(loaded=True, finalized=False)
    assert state.finalized == ms(2024, 1, 1)

    at_close = plan_series(
        series,
        ms(2024, 1, 3, 0, 0, 30),
        ms(2024, 1, 2, 23, 49),
        state,
        max_partitions=31,
        finalize_after_ms=delay,
    )
    assert at_close.load == (ms(2024, 1, 2), ms(2024, 1, 2)) and at_close.finalize is None
    state = at_close.state_after(loaded=True, finalized=False)

    later = plan_series(
        series,
        ms(2024, 1, 3, 0, 2, 30),
        ms(2024, 1, 2, 23, 59),
        state,
        max_partitions=31,
        finalize_after_ms=delay,
    )
    assert later.finalize == ms(2024, 1, 2)
    assert later.load == (ms(2024, 1, 3), ms(2024, 1, 3))
    # Deferred by the tick's bound: still due at the next tick.
    assert later.state_after(loaded=True, finalized=False).finalized == ms(2024, 1, 1)
    state = later.state_after(loaded=True, finalized=True)
    again = plan_series(
        series,
        ms(2024, 1, 3, 0, 5),
        ms(2024, 1, 3, 0, 1),
        state,
        max_partitions=31,
        finalize_after_ms=delay,
    )
    assert again.finalize is None


def test_a_load_reaching_a_closed_partition_is_its_finalization() -> None:
    series = candles()
    state = SeriesState(requested_to=ms(2024, 1, 2, 10), finalized=ms(2024, 1, 1))
    # The daemon was down over the rollover: the load covers the closed day after its close.
    plan = plan_series(
        series,
        ms(2024, 1, 3, 6),
        ms(2024, 1, 2, 10),
        state,
        max_partitions=31,
        finalize_after_ms=2 * MIN,
    )
    assert plan.finalize is None and plan.load == (ms(2024, 1, 2), ms(2024, 1, 3))
    assert plan.state_after(loaded=True, finalized=False).finalized == ms(2024, 1, 2)
    assert plan.state_after(loaded=False, finalized=False).finalized == ms(2024, 1, 1)


def test_cursor_entries_round_trip_and_tolerate_garbage() -> None:
    state = SeriesState(5, 7)
    assert SeriesState.from_json(state.as_json()) == state
    assert SeriesState.from_json({"w": "x"}) == SeriesState()
    assert SeriesState.from_json(None) == SeriesState()
