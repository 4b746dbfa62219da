"""Per-partition figures of a range load, on a real store through the real sink: a batch
across a partition boundary is split exactly where it can be (fetched rows, rejections, all
rows new), and left unattributed where it cannot (new and unchanged rows mixed); stored rows
are counted per window with one grouped query, daily or monthly."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest

from crypto_pipelines.defs.partition_figures import PartitionTally, stored_by_window
from crypto_pipelines.defs.partitions import partition_window, symbol_ranges
from crypto_pipelines.domain.datasets import get_market_dataset
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.defs.conftest import DAY_MS, START_MS

M = 60_000
SERIES = get_market_dataset("ohlcv").series("binance", "BTC/USDT", "1m")
KEYS = ["2024-01-01|BTC/USDT", "2024-01-02|BTC/USDT"]


@pytest.fixture
def store(db_url: str) -> Iterator[MarketStore]:
    with MarketStore.open(db_url) as opened:
        yield opened


def _candles(first_ms: int, count: int, *, bad: tuple[int, ...] = ()) -> pd.DataFrame:
    """``count`` 1m candles from ``first_ms``; the candles at ``bad`` have high < low."""
    ts = [first_ms + i * M for i in range(count)]
    return pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": "BTC/USDT",
            "timeframe": "1m",
            "ts": ts,
            "open": 100.0,
            "high": [90.0 if t in bad else 110.0 for t in ts],
            "low": 95.0,
            "close": 105.0,
            "volume": 1.0,
        }
    )


def _tally(store: MarketStore) -> PartitionTally:
    (span,) = symbol_ranges(KEYS, monthly=False)
    return PartitionTally(store, span, monthly=False)


def test_a_batch_across_midnight_of_new_rows_is_split_exactly(store: MarketStore) -> None:
    midnight = START_MS + DAY_MS
    bad = midnight + 5 * M
    tally = _tally(store)
    report = tally.write("ohlcv", _candles(midnight - 10 * M, 30, bad=(bad,)), series=SERIES)
    assert (report.fetched, report.written, report.rejected) == (30, 29, 1)
    first, second = tally.figures
    assert (first.fetched, first.written, first.unchanged, first.rejected) == (10, 10, 0, 0)
    assert (second.fetched, second.written, second.unchanged, second.rejected) == (20, 19, 0, 1)
    assert [r.ts for r in second.rejections] == [bad]
    assert not first.unattributed and not second.unattributed


def test_new_and_stored_rows_mixed_across_midnight_are_not_guessed(store: MarketStore) -> None:
    midnight = START_MS + DAY_MS
    store.upsert("ohlcv", _candles(midnight - 10 * M, 5))  # stored by other means before
    tally = _tally(store)
    report = tally.write("ohlcv", _candles(midnight - 10 * M, 30), series=SERIES)
    assert (report.written, report.unchanged) == (25, 5)
    first, second = tally.figures
    assert (first.fetched, second.fetched) == (10, 20)  # still exact
    assert first.unattributed == second.unattributed == {"written", "unchanged"}
    # A later batch inside one partition is exact again, but the partition stays marked.
    tally.write("ohlcv", _candles(midnight + 20 * M, 10), series=SERIES)
    assert second.fetched == 30 and second.unattributed == {"written", "unchanged"}


def test_a_batch_inside_one_partition_is_attributed_whole(store: MarketStore) -> None:
    tally = _tally(store)
    tally.write("ohlcv", _candles(START_MS, 60), series=SERIES)
    tally.write("ohlcv", _candles(START_MS, 60), series=SERIES)  # the same again: unchanged
    first, second = tally.figures
    assert (first.fetched, first.written, first.unchanged) == (120, 60, 60)
    assert (second.fetched, second.written) == (0, 0)


@pytest.mark.parametrize("monthly", [False, True])
def test_stored_rows_per_window_in_one_query(store: MarketStore, monthly: bool) -> None:
    keys = (
        ["2024-01-01|BTC/USDT", "2024-02-01|BTC/USDT", "2024-03-01|BTC/USDT"]
        if monthly
        else ["2024-01-01|BTC/USDT", "2024-01-02|BTC/USDT", "2024-01-03|BTC/USDT"]
    )
    windows = [partition_window(k, monthly=monthly) for k in keys]
    first_start, last_start = windows[0][0], windows[2][0]
    store.upsert("ohlcv", _candles(first_start, 3))  # 3 rows in the first window
    store.upsert("ohlcv", _candles(last_start - 2 * M, 4))  # 2 before the third, 2 in it
    assert stored_by_window(store, SERIES, windows) == [
        (3, first_start, first_start + 2 * M),
        (2, last_start - 2 * M, last_start - M),
        (2, last_start, last_start + M),
    ]
