"""Gaps: which slots of an expected grid a stored series lacks, as runs of consecutive slots.

A candle series is expected to hold one candle per timeframe step; a trade series whose venue
numbers trades sequentially (Binance aggTrades) is expected to hold every id between two it
holds. Both are the same problem on an integer grid, solved here once and vectorized: the
present slots are sorted, and every jump of more than one slot between neighbours (or from
the grid's edges) is a run of missing slots. The cost follows the number of stored rows, not
the grid's size, and nothing per slot is allocated (a year of 1m candles is 525,600 slots).

Ranges are ``(first, last)`` pairs, both inclusive: the first and last missing candle open
time in ms (or trade id), one pair per run. ``split_ranges`` tells which parts of missing
ranges are already known to be empty at the exchange (*confirmed*) and which are ours to fill.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from crypto_pipelines.domain.timeframes import grid_offset_ms, timeframe_ms

Range = tuple[int, int]
"""An inclusive ``(first, last)`` run of missing slots (ms open times, or trade ids)."""


@dataclass(frozen=True, slots=True)
class Gaps:
    """What a series lacks on its grid: ``expected`` slots, ``present`` of them stored,
    ``missing`` = expected - present, and the missing ``ranges`` (inclusive, ascending)."""

    expected: int
    present: int
    ranges: tuple[Range, ...]

    @property
    def missing(self) -> int:
        return self.expected - self.present

    @property
    def runs(self) -> int:
        return len(self.ranges)


NO_GAPS = Gaps(0, 0, ())


def _as_int64(values: Iterable[int] | npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Arrays, Series and lists convert in one step; other iterables are drained."""
    if isinstance(values, list | tuple | np.ndarray) or hasattr(values, "__array__"):
        return np.asarray(values, dtype=np.int64)
    return np.fromiter(values, dtype=np.int64)  # type: ignore[arg-type]


def _missing_runs(
    slots: npt.NDArray[np.int64], count: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Runs of ``[0, count)`` absent from ``slots`` (sorted, unique, inside the grid), as
    arrays of first and last slot index (inclusive)."""
    bounded = np.concatenate(([-1], slots, [count]))
    step = np.diff(bounded)
    at = np.flatnonzero(step > 1)
    return bounded[at] + 1, bounded[at + 1] - 1


def _grid_gaps(slots: npt.NDArray[np.int64], count: int, origin: int, step: int) -> Gaps:
    if count <= 0:
        return NO_GAPS
    slots = np.unique(slots[(slots >= 0) & (slots < count)])
    firsts, lasts = _missing_runs(slots, count)
    ranges = tuple(
        (origin + int(a) * step, origin + int(b) * step)
        for a, b in zip(firsts.tolist(), lasts.tolist(), strict=True)
    )
    return Gaps(expected=count, present=int(slots.size), ranges=ranges)


def candle_gaps(
    ts: Iterable[int] | npt.ArrayLike,
    timeframe: str,
    start_ms: int,
    end_ms: int,
    *,
    now_ms: int | None = None,
) -> Gaps:
    """The candles of ``timeframe`` that open in ``[start_ms, end_ms)`` (and, with
    ``now_ms``, are closed by then) and are absent from ``ts``.

    ``ts`` are stored open times in any order, duplicates allowed; times off the grid or
    outside the range are ignored here (the ``schema`` check reports misaligned rows)."""
    step = timeframe_ms(timeframe)
    origin = grid_offset_ms(timeframe)
    if now_ms is not None:
        end_ms = min(end_ms, now_ms - step + 1)  # a candle is closed once open + step <= now
    first = origin + -(-(start_ms - origin) // step) * step
    count = 0 if end_ms <= first else (end_ms - 1 - first) // step + 1
    offsets = _as_int64(ts) - first
    on_grid = offsets % step == 0
    return _grid_gaps(offsets[on_grid] // step, count, first, step)


def id_gaps(
    ids: Iterable[int] | npt.ArrayLike, *, first_id: int | None = None, last_id: int | None = None
) -> Gaps:
    """Sequential ids absent from ``ids`` between ``first_id`` and ``last_id`` (inclusive;
    default: the smallest and largest id present). Pass ``first_id`` = the id after the last
    one known before the window to catch a run that straddles the window's start."""
    values = _as_int64(ids)
    if values.size == 0 and (first_id is None or last_id is None):
        return NO_GAPS
    low = int(values.min()) if first_id is None else first_id
    high = int(values.max()) if last_id is None else last_id
    return _grid_gaps(values - low, high - low + 1, low, 1)


def merge_adjacent(ranges: Iterable[Range], step: int) -> list[Range]:
    """Sorted ranges with runs that touch (``last + step == next first``) or overlap joined:
    ranges found window by window become the runs of the whole series."""
    merged: list[Range] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + step:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def split_ranges(
    missing: Sequence[Range], known: Sequence[Range], step: int
) -> tuple[list[Range], list[Range]]:
    """Split ``missing`` ranges into the parts covered by ``known`` ranges and the rest, both
    sorted and inclusive on the ``step`` grid: (confirmed parts, unconfirmed parts)."""
    cover = merge_adjacent(known, step)
    inside: list[Range] = []
    outside: list[Range] = []
    j = 0
    for first, last in sorted(missing):
        cursor = first
        while j < len(cover) and cover[j][1] < first:
            j += 1
        k = j
        while cursor <= last and k < len(cover) and cover[k][0] <= last:
            lo, hi = cover[k]
            if lo > cursor:
                outside.append((cursor, lo - step))
                cursor = lo
            top = min(hi, last)
            if top >= cursor:
                inside.append((cursor, top))
                cursor = top + step
            k += 1
        if cursor <= last:
            outside.append((cursor, last))
    return inside, outside


def slots_in(ranges: Iterable[Range], step: int) -> int:
    """How many grid slots the inclusive ranges hold."""
    return sum((last - first) // step + 1 for first, last in ranges)
