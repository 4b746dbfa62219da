"""Loading a range of one series from an exchange through the sink, chunk by chunk.

The glue between ``exchanges`` (what the exchange has) and the ``Sink`` (what we keep). What
a run fetches is decided by *coverage*, not by the newest stored row: every part of the range
that the exchange has not yet been asked for and answered is fetched, wherever it lies, so
loading a later day first never hides the days before it. Each chunk is stored together with
the coverage it answers (from the part's start to just past its last row) in one transaction,
so a run killed at any point leaves complete, covered prefixes and the next run fetches only
what is left. ``refetch=True`` ignores coverage and asks for the whole range again (gap
repair, a manual correction).

The report carries what a Dagster materialization shows: rows fetched, written, unchanged
and rejected, first and last ts, grid slots expected against present, the spans fetched,
requests, retries and duration.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import pandas as pd

from crypto_pipelines.domain.datasets import (
    FUNDING_RATES,
    OHLCV,
    OPEN_INTEREST,
    TRADES,
    SeriesKey,
)
from crypto_pipelines.exchanges.loader import (
    FetchStats,
    exchange_time_ms,
    iter_funding_rates,
    iter_ohlcv,
    iter_trades,
)
from crypto_pipelines.exchanges.open_interest import iter_open_interest, kept_from
from crypto_pipelines.exchanges.venues import VenueSpec
from crypto_pipelines.ingest.sink import BatchReport, Sink
from crypto_pipelines.storage.coverage import Span, add_coverage, covered, uncovered
from crypto_pipelines.storage.engine import write_transaction
from crypto_pipelines.storage.store import MarketStore

Fetch = Callable[[Any, VenueSpec, SeriesKey, int, int, FetchStats, int], Iterator[pd.DataFrame]]
"""``(client, venue, series, start_ms, end_ms, stats, now_ms)`` -> chunks, oldest first."""

FETCHERS: Final[dict[str, Fetch]] = {
    OHLCV: lambda client, venue, s, a, b, stats, now: iter_ohlcv(
        client, venue, s.symbol, s.timeframe, a, b, stats=stats, now_ms=now
    ),
    TRADES: lambda client, venue, s, a, b, stats, now: iter_trades(
        client, venue, s.symbol, a, b, stats=stats, now_ms=now
    ),
    FUNDING_RATES: lambda client, venue, s, a, b, stats, now: iter_funding_rates(
        client, venue, s.symbol, a, b, stats=stats, now_ms=now
    ),
    OPEN_INTEREST: lambda client, venue, s, a, b, stats, now: iter_open_interest(
        client, venue, s.symbol, a, b, stats=stats, now_ms=now
    ),
}
"""Each market dataset's fetcher in ``exchanges`` (the one per-dataset table of this layer)."""


KEPT_FROM: Final[dict[str, Callable[[VenueSpec, int], int | None]]] = {
    OPEN_INTEREST: kept_from,
}
"""Datasets a venue publishes only recent history of (Binance: 30 days of open interest):
the oldest time it still answers for. Older parts are neither asked for nor covered."""


@dataclass
class LoadReport:
    """What loading ``[start_ms, end_ms)`` of one series did."""

    series: SeriesKey
    start_ms: int
    end_ms: int
    spans: list[Span] = field(default_factory=list)
    """The parts that were fetched: what coverage did not hold yet (or all, on refetch)."""
    batches: BatchReport = field(default_factory=BatchReport)
    first_ts: int | None = None
    last_ts: int | None = None
    present: int = 0
    expected: int | None = None
    requests: int = 0
    retries: int = 0
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def dataset(self) -> str:
        return self.series.dataset

    @property
    def exchange(self) -> str:
        return self.series.exchange

    @property
    def symbol(self) -> str:
        return self.series.symbol

    @property
    def timeframe(self) -> str | None:
        return self.series.timeframe_or_none

    @property
    def rows_fetched(self) -> int:
        return self.batches.fetched

    @property
    def rows_written(self) -> int:
        return self.batches.written

    @property
    def rows_rejected(self) -> int:
        return self.batches.rejected

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Writer:
    """Writes chunks through the sink in a thread of its own while the next pages are fetched,
    so a load takes about as long as the slower of fetching and writing, not their sum (the
    HTTP wait, SQLite's and psycopg's commits release the GIL). At most ``DEPTH`` chunks wait,
    so memory stays flat when the database is the slower side.

    Chunks are written in order, each with the coverage it answers; ``None`` marks a part
    answered whole (its coverage to the part's end). A failed write stops the fetching at the
    next chunk and is raised; a failed fetch first lets the chunks already fetched be written
    (they are valid and covered: a re-run does not fetch them again), then is raised."""

    DEPTH: Final = 2

    def __init__(self, sink: Sink, store: MarketStore, report: LoadReport) -> None:
        self.sink, self.store, self.report = sink, store, report
        self._queue: queue.Queue[tuple[pd.DataFrame | None, Span] | None] = queue.Queue(self.DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="load-writer", daemon=True)

    def __enter__(self) -> _Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and exc[0] is None:
            raise self._error

    def put(self, chunk: pd.DataFrame | None, span: Span) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((chunk, span))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._write(*item)
                except BaseException as exc:  # raised in the fetching thread
                    self._error = exc

    def _write(self, chunk: pd.DataFrame | None, span: Span) -> None:
        series, report = self.report.series, self.report
        if chunk is None:
            with write_transaction(self.store.engine) as connection:
                add_coverage(connection, series, span, int(time.time() * 1000))
            return
        first, last = int(chunk["ts"].iloc[0]), int(chunk["ts"].iloc[-1])
        report.batches.add(self.sink.write(series.dataset, chunk, series=series, coverage=span))
        report.first_ts = first if report.first_ts is None else min(report.first_ts, first)
        report.last_ts = last if report.last_ts is None else max(report.last_ts, last)


def grid_slots(start_ms: int, end_ms: int, step: int) -> int:
    """How many multiples of ``step`` lie in ``[start_ms, end_ms)``."""
    first = -(-start_ms // step) * step
    return 0 if end_ms <= first else (end_ms - 1 - first) // step + 1


def load_series(
    client: Any,
    venue: VenueSpec,
    store: MarketStore,
    series: SeriesKey,
    start_ms: int,
    end_ms: int,
    *,
    now_ms: int | None = None,
    refetch: bool = False,
    sink: Sink | None = None,
) -> LoadReport:
    """Fetch what coverage lacks of ``[start_ms, end_ms)`` (everything with ``refetch``) and
    write it through the sink, chunk by chunk; ``now_ms`` is the exchange's clock (asked for
    when None): only data complete by then is fetched and covered."""
    t0 = time.monotonic()
    spec = series.spec
    fetch = FETCHERS[spec.name]
    now = exchange_time_ms(client) if now_ms is None else now_ms
    tf = series.timeframe_or_none
    bound = max(start_ms, min(end_ms, spec.open_bound(now, tf)))
    report = LoadReport(series, start_ms, end_ms)
    step = spec.step_ms(tf)
    kept = KEPT_FROM[spec.name](venue, now) if spec.name in KEPT_FROM else None
    if kept is not None and kept > start_ms:
        report.notes.append(
            f"{venue.id} publishes {spec.name} after {kept} only; older parts not requested"
        )
    target = (max(start_ms, min(kept or start_ms, bound)), bound)
    if step is not None:
        report.expected = grid_slots(*target, step)
    if refetch:
        report.spans = [target] if target[1] > target[0] else []
    else:
        report.spans = uncovered(target, covered(store.engine, series, *target))
    resume = spec.resume_step(tf)
    stats = FetchStats()
    with _Writer(sink or Sink(store, source="rest"), store, report) as writer:
        for begin, finish in report.spans:
            for chunk in fetch(client, venue, series, begin, finish, stats, now):
                if chunk.empty:
                    continue
                last = int(chunk["ts"].iloc[-1])
                writer.put(chunk, (begin, min(finish, last + resume)))
            writer.put(None, (begin, finish))  # the part was answered whole
    report.present = store.count(spec.name, **series.filters(), start_ts=start_ms, end_ts=end_ms)
    report.requests, report.retries = stats.requests, stats.retries
    report.notes += [n for n in stats.notes if n not in report.notes]
    report.duration_s = time.monotonic() - t0
    return report
