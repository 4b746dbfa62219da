"""Gap detection on candle grids and sequential ids, against a slot-by-slot reference, and on
the real tapes' known gaps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crypto_pipelines.domain.gaps import (
    candle_gaps,
    id_gaps,
    merge_adjacent,
    slots_in,
    split_ranges,
)
from crypto_pipelines.domain.timeframes import DAY_MS, MINUTE_MS
from crypto_pipelines_tests.conftest import REAL_TAPES, require_shared

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def _reference(present: set[int], first: int, last: int, step: int) -> list[tuple[int, int]]:
    """Slot by slot: the obvious algorithm the vectorized one must agree with."""
    runs: list[tuple[int, int]] = []
    for slot in range(first, last + 1, step):
        if slot in present:
            continue
        if runs and runs[-1][1] == slot - step:
            runs[-1] = (runs[-1][0], slot)
        else:
            runs.append((slot, slot))
    return runs


def test_candle_gaps_runs_and_counts() -> None:
    ts = [T0, T0 + MINUTE_MS, T0 + 4 * MINUTE_MS, T0 + 5 * MINUTE_MS, T0 + 8 * MINUTE_MS]
    gaps = candle_gaps(ts, "1m", T0, T0 + 10 * MINUTE_MS)
    assert gaps.ranges == (
        (T0 + 2 * MINUTE_MS, T0 + 3 * MINUTE_MS),
        (T0 + 6 * MINUTE_MS, T0 + 7 * MINUTE_MS),
        (T0 + 9 * MINUTE_MS, T0 + 9 * MINUTE_MS),
    )
    assert (gaps.expected, gaps.present, gaps.missing, gaps.runs) == (10, 5, 5, 3)


def test_candle_gaps_edges_duplicates_misaligned_and_outside() -> None:
    ts = [T0 + 30_000, T0 - MINUTE_MS, T0 + MINUTE_MS, T0 + MINUTE_MS, T0 + 99 * MINUTE_MS]
    gaps = candle_gaps(ts, "1m", T0, T0 + 3 * MINUTE_MS)
    # the misaligned, the earlier and the later row are ignored; the duplicate counts once
    assert gaps.ranges == ((T0, T0), (T0 + 2 * MINUTE_MS, T0 + 2 * MINUTE_MS))
    assert gaps.present == 1
    nothing = candle_gaps([], "1m", T0, T0 + 3 * MINUTE_MS)
    assert nothing.ranges == ((T0, T0 + 2 * MINUTE_MS),) and nothing.missing == 3
    assert candle_gaps([], "1m", T0, T0).expected == 0


def test_candle_gaps_start_off_grid_and_only_closed_candles() -> None:
    # start inside a candle: the first expected candle is the next one
    gaps = candle_gaps([T0 + MINUTE_MS], "1m", T0 + 1, T0 + 5 * MINUTE_MS)
    assert gaps.expected == 4 and gaps.ranges[0][0] == T0 + 2 * MINUTE_MS
    # "now" inside the 4th minute: 3 candles are closed, the 4th is still open
    now = T0 + 3 * MINUTE_MS + 10_000
    gaps = candle_gaps([T0], "1m", T0, T0 + 10 * MINUTE_MS, now_ms=now)
    assert gaps.expected == 3 and gaps.ranges == ((T0 + MINUTE_MS, T0 + 2 * MINUTE_MS),)
    # closed exactly at its end
    assert candle_gaps([T0], "1m", T0, T0 + 10 * MINUTE_MS, now_ms=T0 + MINUTE_MS).expected == 1


def test_weekly_grid_opens_on_mondays() -> None:
    monday = 1_704_067_200_000  # 2024-01-01 was a Monday
    week = 7 * DAY_MS
    gaps = candle_gaps([monday, monday + 2 * week], "1w", monday - 3 * DAY_MS, monday + 3 * week)
    assert gaps.ranges == ((monday + week, monday + week),)


@pytest.mark.parametrize("seed", range(5))
def test_vectorized_equals_slot_by_slot_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    step = 5 * MINUTE_MS
    count = 3000
    keep = rng.random(count) > rng.uniform(0.01, 0.5)
    ts = T0 + np.flatnonzero(keep) * step
    first, end = T0 + 17 * step, T0 + (count - 9) * step
    gaps = candle_gaps(rng.permutation(ts), "5m", first, end)
    assert list(gaps.ranges) == _reference(set(ts.tolist()), first, end - step, step)
    assert gaps.missing == slots_in(gaps.ranges, step)


def test_a_year_of_minutes() -> None:
    count = 525_600
    ts = T0 + np.arange(count, dtype=np.int64) * MINUTE_MS
    holes = np.array([0, 1, 2, 1000, 400_000, count - 1])
    gaps = candle_gaps(np.delete(ts, holes), "1m", T0, T0 + count * MINUTE_MS)
    assert gaps.expected == count and gaps.missing == len(holes)
    assert gaps.ranges == (
        (T0, T0 + 2 * MINUTE_MS),
        (ts[1000], ts[1000]),
        (ts[400_000], ts[400_000]),
        (ts[-1], ts[-1]),
    )


def test_id_gaps() -> None:
    gaps = id_gaps([10, 11, 14, 15, 19])
    assert gaps.ranges == ((12, 13), (16, 18)) and gaps.missing == 5
    # a run straddling the window's start: the last id before the window was 6
    assert id_gaps([10, 11], first_id=7).ranges == ((7, 9),)
    assert id_gaps([], first_id=1, last_id=3).ranges == ((1, 3),)
    assert id_gaps([]).expected == 0
    assert id_gaps(pd.Series([3, 1, 2, 2], dtype="int64")).ranges == ()


def test_split_ranges_and_merge() -> None:
    missing = [(0, 10), (20, 30), (40, 50), (60, 61)]
    known = [(5, 22), (28, 45), (61, 70)]
    confirmed, unconfirmed = split_ranges(missing, known, 1)
    assert confirmed == [(5, 10), (20, 22), (28, 30), (40, 45), (61, 61)]
    assert unconfirmed == [(0, 4), (23, 27), (46, 50), (60, 60)]
    assert slots_in(confirmed, 1) + slots_in(unconfirmed, 1) == slots_in(missing, 1)
    assert split_ranges(missing, [], 1) == ([], missing)
    assert split_ranges(missing, [(-5, 100)], 1) == (missing, [])
    assert merge_adjacent([(5, 6), (0, 2), (3, 4), (8, 9)], 1) == [(0, 6), (8, 9)]


@pytest.mark.parametrize(
    ("path", "timeframe", "runs"),
    [("okx/BTC_USDT/ohlcv_1m.csv", "1m", 538), ("binance/ADA_BTC/ohlcv_5m.csv", "5m", 5)],
)
def test_real_tapes_known_gaps(path: str, timeframe: str, runs: int) -> None:
    ts = pd.read_csv(require_shared(REAL_TAPES / path))["ts"].to_numpy()
    step = MINUTE_MS if timeframe == "1m" else 5 * MINUTE_MS
    gaps = candle_gaps(ts, timeframe, int(ts[0]), int(ts[-1]) + step)
    assert gaps.runs == runs
    assert gaps.present == len(ts)
    assert list(gaps.ranges) == _reference(set(ts.tolist()), int(ts[0]), int(ts[-1]), step)
