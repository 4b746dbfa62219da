"""The stream's statistics: what an operator needs to see it is healthy.

Counters per exchange and channel (messages, rows), receive-to-commit lag (p50/p99 over a
bounded window of the latest commits, so memory stays flat), reconnects, failovers to REST,
REST catch-up rows, id jumps repaired, settled funding rates fetched, order books resynchronised, the last message time,
buffer depth, malformed and dropped messages.
One object per service, mutated from the event loop only (and from the writer's flushes,
which report back on the loop), so no locks are needed.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

LAG_WINDOW = 20_000
"""Lags kept for the percentiles: the latest commits only (bounded memory)."""


@dataclass
class StreamStats:
    started: float = field(default_factory=time.time)
    messages: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rows_received: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rows_written: int = 0
    rows_rejected: int = 0
    flushes: int = 0
    reconnects: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failovers: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    catch_up_rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    polled_rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    id_jumps: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Holes the stream saw in a venue's sequential trade ids (each repaired over REST)."""
    repaired_rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    funding_rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Settled funding rates fetched over REST after the stream saw a settlement pass."""
    book_resyncs: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Order books found inconsistent (a sequence gap, a failed checksum) and taken afresh."""
    malformed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    last_message: dict[str, float] = field(default_factory=dict)
    buffer_depth: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    lags_s: deque[float] = field(default_factory=lambda: deque(maxlen=LAG_WINDOW))
    touched: dict[tuple[str, str, str, str, int], list[int]] = field(default_factory=dict)
    """Rows committed since the last ``drain_touched``, per (dataset, exchange, symbol,
    timeframe, UTC day start): ``[rows, newest ts]``; what the Dagster layer reports as
    materializations of the stream-fed partitions."""
    track_partitions: bool = True
    """Whether ``touched`` is kept: only a consumer that drains it wants it (the Dagster job);
    without one (the CLI) it would keep an entry per series and day for as long as it runs."""

    def message(self, exchange: str, channel: str, rows: int) -> None:
        key = f"{exchange}:{channel}"
        self.messages[key] += 1
        self.rows_received[key] += rows
        self.last_message[exchange] = time.time()

    def committed(self, lags_s: list[float], written: int, rejected: int) -> None:
        self.flushes += 1
        self.rows_written += written
        self.rows_rejected += rejected
        self.lags_s.extend(lags_s)

    def touch(self, key: tuple[str, str, str, str, int], rows: int, newest_ts: int) -> None:
        if not self.track_partitions:
            return
        found = self.touched.setdefault(key, [0, newest_ts])
        found[0] += rows
        found[1] = max(found[1], newest_ts)

    def drain_touched(self) -> dict[tuple[str, str, str, str, int], list[int]]:
        touched, self.touched = self.touched, {}
        return touched

    def lag_ms(self, quantile: float) -> float | None:
        if not self.lags_s:
            return None
        ordered = sorted(self.lags_s)
        index = min(len(ordered) - 1, int(quantile * len(ordered)))
        return round(ordered[index] * 1000, 2)

    def as_json(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "messages": dict(self.messages),
            "rows_received": dict(self.rows_received),
            "rows_written": self.rows_written,
            "rows_rejected": self.rows_rejected,
            "flushes": self.flushes,
            "lag_ms_p50": self.lag_ms(0.5),
            "lag_ms_p99": self.lag_ms(0.99),
            "reconnects": dict(self.reconnects),
            "failovers": dict(self.failovers),
            "catch_up_rows": dict(self.catch_up_rows),
            "polled_rows": dict(self.polled_rows),
            "id_jumps": dict(self.id_jumps),
            "repaired_rows": dict(self.repaired_rows),
            "funding_rows": dict(self.funding_rows),
            "book_resyncs": dict(self.book_resyncs),
            "malformed": dict(self.malformed),
            "last_message": {k: round(v, 3) for k, v in self.last_message.items()},
            "buffer_depth": self.buffer_depth,
            "errors": dict(self.errors),
        }
