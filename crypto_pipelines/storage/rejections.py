"""The ``rejected_rows`` quarantine: rows a source sent that broke their dataset's rules.

Written by the ingestion sink in the same transaction as the valid rows of the batch, so a
batch is never half stored. A row is identified by its series and its row key (``ts``, or a
trade id); receiving it invalid again replaces the entry (new raw row, rules and time) and
reopens it, receiving it valid resolves it (``resolved_at``), which is how a corrected
refetch clears a quarantined candle.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from crypto_pipelines.domain.datasets import SeriesKey
from crypto_pipelines.storage.schema import series_where, table_for


@dataclass(frozen=True, slots=True)
class Rejection:
    """One quarantined row. ``raw`` is the row as received, ``rules`` what it failed."""

    series: SeriesKey
    key: str
    ts: int | None
    source: str
    raw: dict[str, Any]
    rules: tuple[str, ...]
    received_at: int
    resolved_at: int | None = None

    def as_json(self) -> dict[str, Any]:
        """Plain values for metadata and API answers."""
        return {
            "exchange": self.series.exchange,
            "symbol": self.series.symbol,
            "dataset": self.series.dataset,
            "timeframe": self.series.timeframe,
            "key": self.key,
            "ts": self.ts,
            "source": self.source,
            "rules": list(self.rules),
            "raw": self.raw,
            "received_at": self.received_at,
            "resolved_at": self.resolved_at,
        }


def quarantine(connection: Connection, rejections: Sequence[Rejection]) -> int:
    """Insert or replace ``rejections`` inside the caller's transaction (reopening any that
    were resolved). Returns how many were written."""
    if not rejections:
        return 0
    t = table_for("rejected_rows")
    values = [
        {
            "dataset": r.series.dataset,
            "exchange": r.series.exchange,
            "symbol": r.series.symbol,
            "timeframe": r.series.timeframe,
            "key": r.key,
            "ts": r.ts,
            "source": r.source,
            "raw": json.dumps(r.raw, default=str, allow_nan=False),
            "rules": json.dumps(list(r.rules)),
            "received_at": r.received_at,
            "resolved_at": None,
        }
        for r in rejections
    ]
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    insert = dialect.insert(t)
    keys = ("dataset", "exchange", "symbol", "timeframe", "key")
    statement = insert.on_conflict_do_update(
        index_elements=list(keys),
        set_={c: insert.excluded[c] for c in ("ts", "source", "raw", "rules", "received_at")}
        | {"resolved_at": sa.null()},
    )
    connection.execute(statement, values)
    return len(values)


def open_keys(connection: Connection, series: SeriesKey) -> set[str]:
    """The row keys of the series' unresolved rejections (usually none: one index probe)."""
    t = table_for("rejected_rows")
    query = sa.select(t.c.key).where(*series_where(t, series), t.c.resolved_at.is_(None))
    return {str(k) for k in connection.execute(query).scalars()}


def resolve(connection: Connection, series: SeriesKey, keys: Iterable[str], now_ms: int) -> int:
    """Mark the series' open rejections of ``keys`` resolved (a valid row was stored)."""
    wanted = sorted(set(keys))
    if not wanted:
        return 0
    t = table_for("rejected_rows")
    result = connection.execute(
        sa.update(t)
        .where(*series_where(t, series), t.c.key.in_(wanted), t.c.resolved_at.is_(None))
        .values(resolved_at=now_ms)
    )
    return int(result.rowcount)


def rejections(
    engine: Engine,
    *,
    series: SeriesKey | None = None,
    dataset: str | None = None,
    exchange: str | None = None,
    start_ts: int | None = None,
    end_ts: int | None = None,
    open_only: bool = True,
) -> list[Rejection]:
    """Quarantined rows matching the filters (``start_ts <= ts < end_ts``), by series and ts."""
    t = table_for("rejected_rows")
    where: list[sa.ColumnElement[bool]] = []
    if series is not None:
        where += series_where(t, series)
    if dataset is not None:
        where.append(t.c.dataset == dataset)
    if exchange is not None:
        where.append(t.c.exchange == exchange)
    if start_ts is not None:
        where.append(t.c.ts >= start_ts)
    if end_ts is not None:
        where.append(t.c.ts < end_ts)
    if open_only:
        where.append(t.c.resolved_at.is_(None))
    query = (
        sa.select(*t.columns)
        .where(*where)
        .order_by(t.c.dataset, t.c.exchange, t.c.symbol, t.c.timeframe, t.c.ts, t.c.key)
    )
    with engine.connect() as connection:
        return [
            Rejection(
                series=SeriesKey(row.exchange, row.symbol, row.dataset, row.timeframe),
                key=row.key,
                ts=None if row.ts is None else int(row.ts),
                source=row.source,
                raw=json.loads(row.raw),
                rules=tuple(json.loads(row.rules)),
                received_at=int(row.received_at),
                resolved_at=None if row.resolved_at is None else int(row.resolved_at),
            )
            for row in connection.execute(query)
        ]
