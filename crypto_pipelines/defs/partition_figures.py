"""What a load did to each partition of a range run, for one materialization per partition.

A range run (a backfill, ``BackfillPolicy.single_run``) loads each symbol's contiguous run of
partitions with one ``load_series`` call, whose ``LoadReport`` holds figures of the whole
range. Dagster records one materialization per partition; each should show its own figures,
not the range's. They come from three places, none of which changes how data is loaded:

- the batches, as the sink writes them: ``PartitionTally`` is the ingestion ``Sink`` (same
  validation, same one transaction per batch) that also counts each batch's rows per partition
  window. A batch inside one partition is attributed whole; a batch across a partition
  boundary has its fetched rows, rejections (they carry their ``ts``) and in-batch duplicates
  counted per window, and its written/unchanged split only when it is unambiguous (every
  valid row written, or none). A batch that mixed new and already stored rows across a
  boundary leaves those two figures out for the partitions it touched rather than guess
  (splitting batches at boundaries would make them exact but costs a transaction and a
  validation per boundary: about 75% more write time for daily 1m candles).
- the store: rows present, first and last ``ts`` per partition, one grouped query per range.
- the grid: candles (samples) expected per partition, the range's expectation cut at the
  partition boundaries exactly as ``load_series`` bounds it (closed data, venue history).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import sqlalchemy as sa

from crypto_pipelines.defs.partitions import SymbolRange, partition_window
from crypto_pipelines.domain.datasets import SeriesKey, get_market_dataset
from crypto_pipelines.exchanges.venues import VenueSpec
from crypto_pipelines.ingest import BatchReport, Sink, grid_slots
from crypto_pipelines.ingest.load import KEPT_FROM
from crypto_pipelines.ingest.sink import KEPT_REJECTIONS
from crypto_pipelines.storage.rejections import Rejection
from crypto_pipelines.storage.schema import table_for
from crypto_pipelines.storage.store import MarketStore

WRITE_SPLIT = ("written", "unchanged")
"""The figures a batch across partitions may leave unattributed (see the module docstring)."""


@dataclass
class PartitionFigures:
    """One partition's figures in one run. ``unattributed`` names the batch figures
    (``written``, ``unchanged``, ``rejected``, ``resolved``) that could not be split
    exactly to this partition; they are then left out of its metadata."""

    key: str
    window: tuple[int, int]
    fetched: int = 0
    written: int = 0
    unchanged: int = 0
    rejected: int = 0
    resolved: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    unattributed: set[str] = field(default_factory=set)
    present: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    expected: int | None = None
    notes: list[str] = field(default_factory=list)


class PartitionTally(Sink):
    """The ingestion sink for one symbol range of a run, tallying each batch per partition."""

    def __init__(self, store: MarketStore, span: SymbolRange, *, monthly: bool) -> None:
        super().__init__(store, source="rest")
        self.figures = [
            PartitionFigures(key, partition_window(key, monthly=monthly))
            for key in span.partition_keys
        ]
        self._starts = np.array([f.window[0] for f in self.figures], dtype=np.int64)
        self._ends = np.array([f.window[1] for f in self.figures], dtype=np.int64)

    def write(
        self,
        dataset: str,
        frame: pd.DataFrame,
        *,
        series: SeriesKey | None = None,
        coverage: tuple[int, int] | None = None,
        now_ms: int | None = None,
    ) -> BatchReport:
        report = super().write(dataset, frame, series=series, coverage=coverage, now_ms=now_ms)
        self._tally(dataset, frame, report)
        return report

    def _window_of(self, ts: pd.Series | list[int | None]) -> np.ndarray:
        """The index of each ``ts``'s window (-1: none, or not a number)."""
        values = pd.to_numeric(pd.Series(ts, dtype=object), errors="coerce").to_numpy(dtype=float)
        index = np.searchsorted(self._starts, np.nan_to_num(values, nan=-1.0), side="right") - 1
        inside = (index >= 0) & ~np.isnan(values)
        inside[inside] = values[inside] < self._ends[index[inside]]
        return np.where(inside, index, -1)

    def _tally(self, dataset: str, frame: pd.DataFrame, report: BatchReport) -> None:
        if frame.empty:
            return
        rows = self._window_of(frame["ts"].tolist())
        touched = sorted({int(i) for i in rows if i >= 0})
        if len(touched) == 1 and (rows >= 0).all():
            one = self.figures[touched[0]]
            one.fetched += report.fetched
            one.written += report.written
            one.unchanged += report.unchanged
            one.rejected += report.rejected
            one.resolved += report.resolved
            one.rejections.extend(
                report.rejections[: max(KEPT_REJECTIONS - len(one.rejections), 0)]
            )
            return
        fetched = np.bincount(rows[rows >= 0], minlength=len(self.figures))
        rejected = np.zeros(len(self.figures), dtype=np.int64)
        unknown: set[str] = set()
        by_window = self._window_of([r.ts for r in report.rejections])
        if len(report.rejections) == report.rejected and (by_window >= 0).all():
            rejected = np.bincount(by_window, minlength=len(self.figures))
        else:
            unknown |= {"rejected", *WRITE_SPLIT}
        duplicates = np.zeros(len(self.figures), dtype=np.int64)
        if report.duplicates:
            key = list(get_market_dataset(dataset).table.key)
            dropped = frame.reset_index(drop=True).duplicated(subset=key, keep="last").to_numpy()
            duplicates = np.bincount(rows[dropped & (rows >= 0)], minlength=len(self.figures))
            if int(duplicates.sum()) != report.duplicates:
                unknown |= set(WRITE_SPLIT)
        valid = fetched - rejected - duplicates
        if report.written == int(valid.sum()):
            written = valid
        elif report.written == 0:
            written = np.zeros(len(self.figures), dtype=np.int64)
        else:
            unknown |= set(WRITE_SPLIT)
            written = np.zeros(len(self.figures), dtype=np.int64)
        if report.resolved:
            unknown.add("resolved")
        for index in touched:
            one = self.figures[index]
            one.fetched += int(fetched[index])
            one.rejected += int(rejected[index])
            one.written += int(written[index])
            one.unchanged += int(valid[index] - written[index])
            one.unattributed |= unknown
            room = max(KEPT_REJECTIONS - len(one.rejections), 0)
            one.rejections.extend(
                [r for r, w in zip(report.rejections, by_window, strict=False) if w == index][:room]
            )


def stored_by_window(
    store: MarketStore, series: SeriesKey, windows: Sequence[tuple[int, int]]
) -> list[tuple[int, int | None, int | None]]:
    """``(rows, first ts, last ts)`` stored in each of ``windows`` (contiguous, ascending), in
    one grouped query: daily windows are numbered by integer division, others (months) by a
    CASE over their ends."""
    if not windows:
        return []
    spec = series.spec
    table = table_for(spec.name)
    ts = table.c.ts
    start, end = windows[0][0], windows[-1][1]
    lengths = {e - s for s, e in windows}
    bucket: sa.ColumnElement[int]
    if len(lengths) == 1:
        bucket = (ts - start) // lengths.pop()
    else:
        bucket = sa.case(*((ts < e, i) for i, (_s, e) in enumerate(windows)), else_=len(windows))
    filters = [table.c[c] == v for c, v in series.filters().items() if c in table.c and v]
    inner = sa.select(bucket.label("bucket"), ts.label("ts")).where(*filters, ts >= start, ts < end)
    rows = inner.subquery()
    query = sa.select(
        rows.c.bucket, sa.func.count(), sa.func.min(rows.c.ts), sa.func.max(rows.c.ts)
    ).group_by(rows.c.bucket)
    found: list[tuple[int, int | None, int | None]] = [(0, None, None)] * len(windows)
    with store.engine.connect() as connection:
        for index, count, first, last in connection.execute(query):
            if 0 <= int(index) < len(windows):
                found[int(index)] = (int(count), int(first), int(last))
    return found


def expected_by_window(
    series: SeriesKey,
    venue: VenueSpec,
    span: SymbolRange,
    windows: Sequence[tuple[int, int]],
    now_ms: int,
) -> list[int | None]:
    """Grid slots expected per window: the part of the range ``load_series`` asks for (up to
    the newest closed slot at ``now_ms``, from the oldest time the venue still publishes),
    cut at the window boundaries, so the windows add up to the report's ``expected``."""
    spec = series.spec
    timeframe = series.timeframe_or_none
    step = spec.step_ms(timeframe)
    if step is None:
        return [None] * len(windows)
    bound = max(span.start_ms, min(span.end_ms, spec.open_bound(now_ms, timeframe)))
    kept = KEPT_FROM[spec.name](venue, now_ms) if spec.name in KEPT_FROM else None
    low = max(span.start_ms, min(kept or span.start_ms, bound))
    return [grid_slots(max(s, low), min(e, bound), step) for s, e in windows]


def range_figures(
    tally: PartitionTally,
    store: MarketStore,
    series: SeriesKey,
    venue: VenueSpec,
    span: SymbolRange,
    now_ms: int,
    notes: Sequence[str] = (),
) -> list[PartitionFigures]:
    """The range's partitions with their batch figures, stored rows and expectations."""
    windows = [f.window for f in tally.figures]
    stored = stored_by_window(store, series, windows)
    expected = expected_by_window(series, venue, span, windows, now_ms)
    for figures, (present, first, last), slots in zip(tally.figures, stored, expected, strict=True):
        figures.present, figures.first_ts, figures.last_ts = present, first, last
        figures.expected = slots
        figures.notes.extend(notes)
    return tally.figures
