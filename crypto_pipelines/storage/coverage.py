"""Coverage: which time ranges of each series the exchange was asked for and answered.

A load records a range as covered in the same transaction as the rows it stored for it, so
coverage never claims rows that a crash lost. Ranges are half-open ``[start, end)`` in ms and
merged per series on every write (touching or overlapping ranges become one), so a series
holds a handful of rows however many loads made it. Readers get the merged ranges sorted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from crypto_pipelines.domain.datasets import SeriesKey
from crypto_pipelines.storage.schema import series_where, table_for

Span = tuple[int, int]
"""A half-open ``[start, end)`` range in ms."""


def add_coverage(connection: Connection, series: SeriesKey, span: Span, now_ms: int) -> None:
    """Record ``span`` as covered for ``series`` inside the caller's transaction, merged with
    the ranges it touches or overlaps."""
    start, end = span
    if end <= start:
        return
    t = table_for("coverage")
    where = series_where(t, series)
    touching = connection.execute(
        sa.select(t.c.start, t.c.end).where(*where, t.c.start <= end, t.c.end >= start)
    ).all()
    if touching:
        start = min(start, *(int(r.start) for r in touching))
        end = max(end, *(int(r.end) for r in touching))
        connection.execute(
            sa.delete(t).where(*where, t.c.start.in_([int(r.start) for r in touching]))
        )
    connection.execute(
        sa.insert(t).values(
            exchange=series.exchange,
            symbol=series.symbol,
            dataset=series.dataset,
            timeframe=series.timeframe,
            start=start,
            end=end,
            updated_at=now_ms,
        )
    )


def covered(
    engine: Engine | Connection,
    series: SeriesKey,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> list[Span]:
    """The series' covered ranges that overlap ``[start_ms, end_ms)``, sorted, unclipped."""
    t = table_for("coverage")
    where = series_where(t, series)
    if start_ms is not None:
        where.append(t.c.end > start_ms)
    if end_ms is not None:
        where.append(t.c.start < end_ms)
    query = sa.select(t.c.start, t.c.end).where(*where).order_by(t.c.start)
    if isinstance(engine, Connection):
        return [(int(a), int(b)) for a, b in engine.execute(query)]
    with engine.connect() as connection:
        return [(int(a), int(b)) for a, b in connection.execute(query)]


def uncovered(span: Span, cover: Iterable[Span]) -> list[Span]:
    """The parts of ``span`` that no range of ``cover`` holds, in order."""
    start, end = span
    parts: list[Span] = []
    cursor = start
    for lo, hi in sorted(cover):
        if hi <= cursor:
            continue
        if lo >= end:
            break
        if lo > cursor:
            parts.append((cursor, lo))
        cursor = max(cursor, hi)
        if cursor >= end:
            break
    if cursor < end:
        parts.append((cursor, end))
    return parts


def clip(cover: Sequence[Span], span: Span) -> list[Span]:
    """``cover`` restricted to ``span`` (empty pieces dropped)."""
    start, end = span
    return [(max(lo, start), min(hi, end)) for lo, hi in cover if min(hi, end) > max(lo, start)]
