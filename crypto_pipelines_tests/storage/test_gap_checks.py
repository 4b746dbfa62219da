"""Checking many windows of a series at once (a backfill's partitions) finds exactly what
checking them one at a time finds, and records the same rows; on SQLite and PostgreSQL."""

from __future__ import annotations

import pandas as pd

from crypto_pipelines.domain.datasets import SeriesKey
from crypto_pipelines.storage.coverage import add_coverage
from crypto_pipelines.storage.engine import write_transaction
from crypto_pipelines.storage.gap_checks import (
    candle_window_gaps,
    candle_windows_gaps,
    check_candle_window,
    check_candle_windows,
)
from crypto_pipelines.storage.gaps import GapStore, Series
from crypto_pipelines.storage.store import MarketStore

M = 60_000
DAY = 1440 * M
T0 = 1_704_067_200_000  # 2024-01-01


def _series(store: MarketStore, minutes: list[int], symbol: str = "BTC/USDT") -> None:
    frame = pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": symbol,
            "timeframe": "1m",
            "ts": [T0 + m * M for m in minutes],
            "open": 1.0,
            "high": 2.0,
            "low": 0.5,
            "close": 1.5,
            "volume": 3.0,
        }
    )
    store.upsert("ohlcv", frame)
    # what a load records with its rows: the exchange answered from the first to the newest
    with write_transaction(store.engine) as connection:
        span = (T0 + min(minutes) * M, T0 + (max(minutes) + 1) * M)
        add_coverage(connection, SeriesKey("binance", symbol, "ohlcv", "1m"), span, 0)


def _minutes() -> list[int]:
    """Four days: day 0 empty (before the first candle), holes in days 1 and 2 (one
    straddling their boundary), day 3 ends early (the newest candle), nothing after."""
    holes = {*range(1440 + 100, 1440 + 110), *range(2 * 1440 - 5, 2 * 1440 + 7), 2 * 1440 + 500}
    return [m for m in range(1440 + 30, 3 * 1440 + 900) if m not in holes]


WINDOWS = [(T0 + d * DAY, T0 + (d + 1) * DAY) for d in range(5)]


def test_many_windows_equal_one_at_a_time(db_url: str) -> None:
    with MarketStore.open(db_url) as store:
        _series(store, _minutes())
        _series(store, list(range(0, 5 * 1440, 7)), symbol="ETH/USDT")  # another series
        together = candle_windows_gaps(store, "binance", "BTC/USDT", "1m", WINDOWS)
        alone = [candle_window_gaps(store, "binance", "BTC/USDT", "1m", s, e) for s, e in WINDOWS]
        # a middle slice too: its neighbours outside the slice still bound its windows
        middle = candle_windows_gaps(store, "binance", "BTC/USDT", "1m", WINDOWS[1:3])
    assert together == alone
    assert middle == alone[1:3]
    assert [g.missing for g in together] == [0, 10 + 5, 7 + 1, 0, 0]
    assert together[1].ranges[-1] == (T0 + (2 * 1440 - 5) * M, T0 + (2 * 1440 - 1) * M)
    assert together[2].ranges[0] == (T0 + 2 * DAY, T0 + (2 * 1440 + 6) * M)


def test_recorded_rows_equal_one_at_a_time(db_url: str) -> None:
    series = Series("binance", "BTC/USDT", "ohlcv", "1m")
    with MarketStore.open(db_url) as store:
        _series(store, _minutes())
        gaps = GapStore(store.engine)
        checks = check_candle_windows(
            store, gaps, "binance", "BTC/USDT", "1m", WINDOWS, now_ms=1, refetched=False
        )
        together = gaps.records(series=series)
        # the same windows again, one at a time, after a refetch: rows are replaced per window
        singles = [
            check_candle_window(
                store, gaps, "binance", "BTC/USDT", "1m", s, e, now_ms=2, refetched=True
            )
            for s, e in WINDOWS
        ]
        confirmed = gaps.records(series=series)
        again = check_candle_windows(
            store, gaps, "binance", "BTC/USDT", "1m", WINDOWS, now_ms=3, refetched=False
        )
    assert [c.passed for c in checks] == [True, False, False, True, True]
    assert {(r.start, r.end, r.status) for r in together} == {
        (s, e, "open") for c in checks for s, e in c.missing_ranges
    }
    assert [c.verdict.newly_confirmed for c in singles] == [tuple(c.missing_ranges) for c in checks]
    assert {r.status for r in confirmed} == {"confirmed"}
    # checked together again: the confirmed gaps stay confirmed, one row per gap, none added
    assert all(c.passed and not c.verdict.unconfirmed for c in again)
    assert sorted((r.start, r.end) for r in confirmed) == sorted(
        (s, e) for c in again for s, e in c.verdict.confirmed
    )
