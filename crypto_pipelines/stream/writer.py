"""Handlers: what the stream does with each batch. The store writer is one of them.

``StoreWriter`` buffers rows per dataset and writes them through the ingestion core's sink
(``crypto_pipelines.ingest.Sink``, source ``stream``) every ``flush_ms`` milliseconds or
``flush_rows`` rows, whichever comes first: the same validation, quarantine and upserts as
every other source, so a trade seen twice (by the stream and by a REST catch-up) is stored
once. Writes run in a worker thread, one flush at a time, so the event loop keeps reading
sockets while the database commits; closing flushes everything still buffered.

``inline`` writes on the event loop instead. A flush is mostly Python (the frame, the
model's checks, SQLAlchemy), so in a thread it holds the GIL turn about with the busy event
loop and takes several times its own CPU time; inline it runs at once, the sockets wait
that long, and the next messages come in bigger, cheaper batches (on this project's
2-core machine at 10-20k trades/s: flushes about 3x shorter, receive-to-commit p99 about
half, less CPU; see ``benchmarks/stream.py``). The price: while the database makes a flush
wait (another process holding SQLite's write lock, a slow PostgreSQL), nothing is read,
and a wait longer than the venue's keep-alive drops the connection (a reconnect and a
REST catch-up: nothing is lost, but it is not free). Off by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import defaultdict
from typing import Any, Protocol

import pandas as pd

from crypto_pipelines.domain.datasets import MARKET_DATASETS
from crypto_pipelines.domain.timeframes import DAY_MS
from crypto_pipelines.ingest import Sink
from crypto_pipelines.ingest.sink import BatchReport
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines.stream.events import StreamBatch
from crypto_pipelines.stream.stats import StreamStats

log = logging.getLogger(__name__)

Touched = dict[tuple[str, str, str, str, int], tuple[int, int]]
"""(dataset, exchange, symbol, timeframe, UTC day start) -> (rows, newest ts)."""


def _ts(value: Any) -> int | None:
    if type(value) is int:
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) else None


def touched_partitions(dataset: str, rows: list[dict[str, Any]]) -> Touched:
    """The rows per series and UTC day, for partition reports (of the datasets that have
    partitions: order book snapshots have none); rows without a numeric ``ts`` are left
    out. A plain loop: a batch is a few series, and a pandas group-by per flush cost more."""
    if dataset not in MARKET_DATASETS:
        return {}
    out: dict[tuple[str, str, str, str, int], list[int]] = {}
    for row in rows:
        ts = _ts(row.get("ts"))
        if ts is None:
            continue
        key = (
            dataset,
            str(row.get("exchange")),
            str(row.get("symbol")),
            str(row.get("timeframe", "")),
            ts - ts % DAY_MS,
        )
        found = out.get(key)
        if found is None:
            out[key] = [1, ts]
        else:
            found[0] += 1
            if ts > found[1]:
                found[1] = ts
    return {key: (count, newest) for key, (count, newest) in out.items()}


class Handler(Protocol):
    """Receives every batch the stream produces; ``close`` is awaited once at shutdown."""

    async def handle(self, batch: StreamBatch) -> None: ...

    async def close(self) -> None: ...


class StoreWriter:
    """Batches rows into the market store (see the module docstring)."""

    def __init__(
        self,
        store: MarketStore,
        stats: StreamStats,
        *,
        flush_ms: int = 250,
        flush_rows: int = 5_000,
        source: str = "stream",
        inline: bool = False,
    ) -> None:
        self.sink = Sink(store, source=source)
        self.stats = stats
        self.inline = inline
        self.flush_s = flush_ms / 1000
        self.flush_rows = flush_rows
        self._rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._received: dict[str, list[float]] = defaultdict(list)
        self._lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        return sum(len(rows) for rows in self._rows.values())

    async def handle(self, batch: StreamBatch) -> None:
        if not batch.rows or batch.dataset is None:
            return
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick(), name="store-writer-flush")
        dataset = batch.dataset
        self._rows[dataset].extend(batch.rows)
        self._received[dataset].append(batch.received)
        self.stats.buffer_depth = self.depth
        if len(self._rows[dataset]) >= self.flush_rows:
            await self.flush(dataset)

    async def _tick(self) -> None:
        """Flush any dataset whose oldest buffered message is ``flush_ms`` old."""
        while True:
            await asyncio.sleep(self.flush_s / 4)
            now = time.monotonic()
            for dataset, received in list(self._received.items()):
                if received and now - received[0] >= self.flush_s:
                    try:
                        await self.flush(dataset)
                    except Exception as exc:  # the database is away: keep the rows, retry
                        self.stats.errors["store"] = f"{type(exc).__name__}: {exc}"[:500]
                        log.warning("stream flush of %s failed, will retry: %s", dataset, exc)

    async def flush(self, dataset: str | None = None) -> None:
        """Write what is buffered (of ``dataset``, or of every dataset) now."""
        async with self._lock:
            for name in [dataset] if dataset else list(self._rows):
                rows, received = self._rows.pop(name, []), self._received.pop(name, [])
                if not rows:
                    continue
                try:
                    if self.inline:
                        report, touched = self._write(name, rows)
                    else:
                        report, touched = await asyncio.to_thread(self._write, name, rows)
                except Exception:
                    # kept, in order, before anything received since: the next flush retries
                    self._rows[name][:0] = rows
                    self._received[name][:0] = received
                    raise
                done = time.monotonic()
                self.stats.committed([done - t for t in received], report.written, report.rejected)
                for key, (count, newest) in touched.items():
                    self.stats.touch(key, count, newest)
            self.stats.buffer_depth = self.depth

    def _write(self, dataset: str, rows: list[dict[str, Any]]) -> tuple[BatchReport, Touched]:
        """The frame, the sink's write, and what it touched (in the worker thread, unless
        ``inline``)."""
        report = self.sink.write(dataset, pd.DataFrame(rows))
        return report, touched_partitions(dataset, rows)

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        await self.flush()
        self.stats.buffer_depth = self.depth
