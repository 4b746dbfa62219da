"""The ``gaps`` table: every run of missing candles (or sequential trade ids) we found, and
whether it is ours to fill (``open``), known empty at the exchange (``confirmed``) or gone
(``filled``).

A gap is *confirmed* once a refetch of its range from the exchange returned nothing (an
old outage, a minute without trades; Coinbase omits empty candles by design): it is then
reported but never refetched again. Rows are kept per checked window (a partition) and
replaced as a whole each time that window is checked, in one transaction, so the table always
says what the latest check saw. Repair attempts are counted here, not in a sensor cursor, so
they survive a sensor reset and are visible to anyone reading the table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from crypto_pipelines.domain.datasets import SeriesKey
from crypto_pipelines.domain.gaps import Range, split_ranges
from crypto_pipelines.storage.engine import write_transaction
from crypto_pipelines.storage.schema import series_where, table_for

GapStatus = Literal["open", "confirmed", "filled"]


Series = SeriesKey
"""One checked series: candles of a timeframe, or trades (``timeframe`` '')."""


@dataclass(frozen=True, slots=True)
class GapRecord:
    """One row of ``gaps``; ``start``/``end`` are inclusive (ms open times, or trade ids)."""

    exchange: str
    symbol: str
    dataset: str
    timeframe: str
    start: int
    end: int
    status: str
    window_start: int
    window_end: int
    detected_at: int
    checked_at: int
    attempts: int
    last_attempt_at: int | None
    reason: str | None = None
    """Why a confirmed gap is confirmed: the refetch returned nothing, or only rows that
    broke the dataset's rules (``rejected_rows``)."""

    @property
    def series(self) -> SeriesKey:
        return SeriesKey(self.exchange, self.symbol, self.dataset, self.timeframe)


@dataclass(frozen=True, slots=True)
class WindowVerdict:
    """What checking one window found, split by what the table already knew."""

    series: Series
    window_start: int
    window_end: int
    confirmed: tuple[Range, ...]  # known empty at the exchange
    unconfirmed: tuple[Range, ...]  # ours: to be refetched
    newly_confirmed: tuple[Range, ...]  # confirmed by this check (it followed a refetch)


@dataclass(frozen=True, slots=True)
class RepairTarget:
    """A window with open gaps whose next repair attempt is due."""

    series: Series
    window_start: int
    window_end: int
    attempt: int  # the attempt this repair would be (1 for the first)
    gaps: int  # open gap rows in the window


class GapStore:
    """Reads and writes ``gaps`` on an engine whose database is migrated (``MarketStore``
    migrates on creation; pass ``store.engine``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.table = table_for("gaps")

    # --- reads ---------------------------------------------------------------------------

    def records(
        self,
        *,
        status: GapStatus | Sequence[GapStatus] | None = None,
        series: Series | None = None,
        window_start: int | None = None,
    ) -> list[GapRecord]:
        """Rows matching the filters, ordered by series and start."""
        t = self.table
        where: list[sa.ColumnElement[bool]] = []
        if status is not None:
            where.append(t.c.status.in_([status] if isinstance(status, str) else list(status)))
        if series is not None:
            where += series_where(t, series)
        if window_start is not None:
            where.append(t.c.window_start == window_start)
        query = (
            sa.select(*t.columns)
            .where(*where)
            .order_by(t.c.exchange, t.c.symbol, t.c.dataset, t.c.timeframe, t.c.start)
        )
        with self.engine.connect() as connection:
            return [GapRecord(**row._asdict()) for row in connection.execute(query)]

    def due(
        self,
        now_ms: int,
        *,
        max_attempts: int,
        backoff_ms: int,
        limit: int | None = None,
    ) -> list[RepairTarget]:
        """Windows with open gaps that may be refetched now: fewer than ``max_attempts``
        attempts so far, and the last one at least ``backoff_ms * 2**(attempts - 1)`` ago
        (exponential backoff). Fewest attempts first (a window never tried does not wait
        behind retries), then oldest; at most ``limit``."""
        t = self.table
        # every open row of a window carries the window's attempts (``mark_attempt``)
        query = sa.select(*t.columns).where(t.c.status == "open", t.c.attempts < max_attempts)
        with self.engine.connect() as connection:
            rows = [GapRecord(**row._asdict()) for row in connection.execute(query)]
        windows: dict[tuple[Series, int, int], list[GapRecord]] = {}
        for record in rows:
            windows.setdefault((record.series, record.window_start, record.window_end), []).append(
                record
            )
        targets = []
        for (series, start, end), records in windows.items():
            attempts = max(r.attempts for r in records)
            last = max((r.last_attempt_at or 0) for r in records)
            if attempts >= max_attempts:
                continue
            if attempts and now_ms < last + backoff_ms * 2 ** (attempts - 1):
                continue
            targets.append(RepairTarget(series, start, end, attempts + 1, len(records)))
        targets.sort(key=lambda t: (t.attempt, t.window_start, _series_key(t.series)))
        return targets if limit is None else targets[:limit]

    # --- writes --------------------------------------------------------------------------

    def record_window(
        self,
        series: Series,
        window_start: int,
        window_end: int,
        missing: Iterable[Range],
        *,
        step: int,
        now_ms: int,
        refetched: bool,
        reason: Callable[[Range], str | None] | None = None,
    ) -> WindowVerdict:
        """Replace what the table says about one window with what a check just found.

        Missing ranges inside confirmed rows stay confirmed; the rest are open, except right
        after a refetch of the window (``refetched``), when every range still missing has
        just been asked of the exchange again and came back empty: it becomes confirmed.
        Rows no longer missing become ``filled``. Open rows keep their attempt count."""
        return self.record_windows(
            series,
            [(window_start, window_end, missing)],
            step=step,
            now_ms=now_ms,
            refetched=refetched,
            reason=reason,
        )[0]

    def record_windows(
        self,
        series: Series,
        windows: Sequence[tuple[int, int, Iterable[Range]]],
        *,
        step: int,
        now_ms: int,
        refetched: bool,
        reason: Callable[[Range], str | None] | None = None,
    ) -> list[WindowVerdict]:
        """``record_window`` for several windows of one series (a backfill's partitions) in
        one transaction: one commit instead of one per partition, all or nothing."""
        t = self.table
        verdicts = []
        with write_transaction(self.engine) as connection:
            existing_by_window: dict[int, list[GapRecord]] = {}
            starts = [start for start, _end, _missing in windows]
            for start in sorted(set(starts)):  # one order for every writer: no deadlock
                _lock_window(connection, series, start)
            for record in _window_rows(connection, t, series, starts):
                existing_by_window.setdefault(record.window_start, []).append(record)
            inserts: list[dict[str, Any]] = []
            for window_start, window_end, missing in windows:
                verdict, rows = _replace_window(
                    series,
                    window_start,
                    window_end,
                    sorted(missing),
                    existing_by_window.get(window_start, []),
                    step=step,
                    now_ms=now_ms,
                    refetched=refetched,
                    reason=reason,
                )
                verdicts.append(verdict)
                inserts += [asdict(r) for r in rows]
            for chunk in _chunks(starts, 500):
                connection.execute(
                    sa.delete(t).where(*series_where(t, series), t.c.window_start.in_(chunk))
                )
            if inserts:
                connection.execute(sa.insert(t), inserts)
        return verdicts

    def record_unrecoverable(
        self, series: Series, start: int, end: int, *, now_ms: int, reason: str
    ) -> None:
        """Record a hole no refetch can fill as ``confirmed`` (never repaired), with why:
        e.g. trades a stream missed beyond what the venue's REST history still holds.
        ``start``/``end`` are ms, inclusive; the window is the hole itself."""
        row = GapRecord(
            exchange=series.exchange,
            symbol=series.symbol,
            dataset=series.dataset,
            timeframe=series.timeframe,
            start=start,
            end=end,
            status="confirmed",
            window_start=start,
            window_end=end + 1,
            detected_at=now_ms,
            checked_at=now_ms,
            attempts=0,
            last_attempt_at=None,
            reason=reason,
        )
        t = self.table
        with write_transaction(self.engine) as connection:
            connection.execute(sa.delete(t).where(*series_where(t, series), t.c.start == start))
            connection.execute(sa.insert(t), [asdict(row)])

    def mark_attempt(self, target: RepairTarget, now_ms: int) -> int:
        """Count a repair attempt on the target window's open gaps; returns rows updated."""
        t = self.table
        with write_transaction(self.engine) as connection:
            result = connection.execute(
                sa.update(t)
                .where(
                    *series_where(t, target.series),
                    _in_window(t, target.window_start),
                    t.c.status == "open",
                )
                .values(attempts=target.attempt, last_attempt_at=now_ms)
            )
            return int(result.rowcount)


def _replace_window(
    series: Series,
    window_start: int,
    window_end: int,
    missing: list[Range],
    existing_rows: Sequence[GapRecord],
    *,
    step: int,
    now_ms: int,
    refetched: bool,
    reason: Callable[[Range], str | None] | None = None,
) -> tuple[WindowVerdict, list[GapRecord]]:
    """A window's verdict and the rows that replace ``existing_rows`` (see ``record_window``)."""
    existing = {r.start: r for r in existing_rows}
    known = [(r.start, r.end) for r in existing.values() if r.status == "confirmed"]
    confirmed, unconfirmed = split_ranges(missing, known, step)
    newly: list[Range] = []
    if refetched:
        newly, unconfirmed = unconfirmed, []
        confirmed = sorted(confirmed + newly)
    wanted: dict[int, GapRecord] = {}
    for status, ranges in (("confirmed", confirmed), ("open", unconfirmed)):
        for first, last in ranges:
            old = existing.get(first)
            row = _row(series, window_start, window_end, first, last, status, now_ms, old)
            if status == "confirmed" and row.reason is None:
                why = reason((first, last)) if reason is not None else None
                row = replace(row, reason=why or "a refetch from the exchange returned no rows")
            wanted[first] = row
    for start, old in existing.items():
        if start not in wanted:
            wanted[start] = replace(old, status="filled", checked_at=now_ms)
    verdict = WindowVerdict(
        series, window_start, window_end, tuple(confirmed), tuple(unconfirmed), tuple(newly)
    )
    return verdict, list(wanted.values())


def _chunks(values: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for index in range(0, len(values), size):
        yield values[index : index + size]


def _row(
    series: Series,
    window_start: int,
    window_end: int,
    first: int,
    last: int,
    status: str,
    now_ms: int,
    old: GapRecord | None,
) -> GapRecord:
    """A row for a range seen now; an open row that stays open keeps its history."""
    keep = old is not None and old.status == status == "open"
    return GapRecord(
        exchange=series.exchange,
        symbol=series.symbol,
        dataset=series.dataset,
        timeframe=series.timeframe,
        start=first,
        end=last,
        status=status,
        window_start=window_start,
        window_end=window_end,
        detected_at=old.detected_at if old is not None and old.status != "filled" else now_ms,
        checked_at=now_ms,
        attempts=old.attempts if keep and old is not None else 0,
        last_attempt_at=old.last_attempt_at if keep and old is not None else None,
        reason=old.reason if old is not None and old.status == status == "confirmed" else None,
    )


def _lock_window(connection: Connection, series: Series, window_start: int) -> None:
    """Serialise checks of one window on PostgreSQL (two runs checking the same partition at
    once would otherwise both delete, then both insert); SQLite's write transaction already
    holds the database lock."""
    if connection.dialect.name != "postgresql":
        return
    name = "|".join((*_series_key(series), str(window_start))).encode()
    key = int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "big", signed=True)
    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _series_key(series: Series) -> tuple[str, str, str, str]:
    return (series.exchange, series.symbol, series.dataset, series.timeframe)


def _in_window(t: sa.Table, window_start: int) -> sa.ColumnElement[bool]:
    return t.c.window_start == window_start


def _window_rows(
    connection: Connection, t: sa.Table, series: Series, window_starts: Sequence[int]
) -> list[GapRecord]:
    rows: list[GapRecord] = []
    for chunk in _chunks(window_starts, 500):
        query = sa.select(*t.columns).where(*series_where(t, series), t.c.window_start.in_(chunk))
        rows += [GapRecord(**row._asdict()) for row in connection.execute(query)]
    return rows


def records_as_json(records: Iterable[GapRecord]) -> list[dict[str, Any]]:
    """Rows as plain dicts (for metadata and logs)."""
    return [asdict(r) for r in records]
