"""The one write path of market data: every source's batches go through ``Sink.write``.

A batch (REST loader chunk, WebSocket flush, API request body) is validated lazily by its
dataset's Pandera model. Rows that break a rule are *quarantined*: they go to
``rejected_rows`` with the rules they failed, and the rest of the batch is stored, so one bad
candle from an exchange no longer throws away a whole partition. A batch whose columns are
wrong (a missing column, a frame of something else) is refused whole with
``DatasetValidationError``: that is a bug of the source, not a bad row.

Everything a batch does happens in one transaction: the upsert of its valid rows, the
quarantine of its invalid ones, the resolution of earlier rejections that a valid row now
replaces, and the coverage the caller claims for it. A crash leaves either all of it or none.

Duplicated keys inside one batch (a trade seen twice by a stream) are not errors: the last
row of each key is kept, as an upsert of the rows one after another would.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd
import pandera.errors as pa_errors
from sqlalchemy.engine import Connection

from crypto_pipelines.domain.datasets import MarketDataset, SeriesKey, get_stored_dataset
from crypto_pipelines.domain.validation import DatasetValidationError, rule_keys, validate_frame
from crypto_pipelines.storage import changes
from crypto_pipelines.storage.coverage import Span, add_coverage
from crypto_pipelines.storage.engine import write_transaction
from crypto_pipelines.storage.rejections import Rejection, open_keys, quarantine, resolve
from crypto_pipelines.storage.schema import table_for
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines.storage.writers import upsert_rows

log = logging.getLogger(__name__)

KEPT_REJECTIONS: Final = 100
"""Rejections a report keeps in full (for metadata); counts always cover all of them."""


@dataclass
class BatchReport:
    """What writing one or more batches did. ``unchanged``: valid rows already stored with
    the same values; ``duplicates``: rows dropped because a later row of the batch had the
    same key; ``resolved``: earlier rejections a valid row now replaces."""

    fetched: int = 0
    written: int = 0
    inserted: int | None = None
    """Rows whose key was new (counted only when asked: ``Sink.write_in(classify=True)``);
    the rest of ``written`` were updated."""
    outcomes: np.ndarray | None = None
    """Per valid row, ``storage.changes`` INSERTED/UPDATED/UNCHANGED (when classified)."""
    unchanged: int = 0
    rejected: int = 0
    duplicates: int = 0
    resolved: int = 0
    rejections: list[Rejection] = field(default_factory=list)

    def add(self, other: BatchReport) -> None:
        self.fetched += other.fetched
        self.written += other.written
        self.unchanged += other.unchanged
        self.rejected += other.rejected
        self.duplicates += other.duplicates
        self.resolved += other.resolved
        room = KEPT_REJECTIONS - len(self.rejections)
        self.rejections.extend(other.rejections[: max(room, 0)])

    def rejected_by_rule(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for rejection in self.rejections:
            for rule in rejection.rules:
                counts[rule] = counts.get(rule, 0) + 1
        return dict(sorted(counts.items()))


class Sink:
    """Writes batches of market datasets into a ``MarketStore`` on behalf of one ``source``
    (``rest``, ``stream``, ``api``: recorded with each rejection)."""

    def __init__(self, store: MarketStore, *, source: str) -> None:
        self.store = store
        self.source = source

    def write(
        self,
        dataset: str,
        frame: pd.DataFrame,
        *,
        series: SeriesKey | None = None,
        coverage: Span | None = None,
        now_ms: int | None = None,
    ) -> BatchReport:
        """Validate ``frame`` as ``dataset``, store its valid rows, quarantine the rest.

        ``series``: the one series every row belongs to, when the caller knows it (the REST
        loader); required with ``coverage``, the span of that series the batch answers."""
        with write_transaction(self.store.engine) as connection:
            report = self.write_in(
                connection, dataset, frame, series=series, coverage=coverage, now_ms=now_ms
            )
        if report.rejected:
            log.warning(
                "%s %s: %d of %d rows rejected (%s); kept in rejected_rows",
                self.source,
                dataset,
                report.rejected,
                report.fetched,
                ", ".join(f"{r}: {n}" for r, n in report.rejected_by_rule().items()),
            )
        return report

    def write_in(
        self,
        connection: Connection,
        dataset: str,
        frame: pd.DataFrame,
        *,
        series: SeriesKey | None = None,
        coverage: Span | None = None,
        now_ms: int | None = None,
        validated: bool = False,
        classify: bool = False,
    ) -> BatchReport:
        """``write`` inside the caller's open transaction, so that several batches (an API
        group commit) share one commit; nothing is logged.

        ``validated``: ``frame`` already passed the model (coerced, the model's columns, no
        duplicate keys; a ``source`` column may name each row's source): it is stored as is.
        ``classify``: first find each valid row's outcome (``BatchReport.outcomes``, see
        ``storage.changes``; one indexed read per series) and write only the rows that
        change."""
        spec = get_stored_dataset(dataset)
        if coverage is not None and series is None:
            raise ValueError("coverage needs the series it covers")
        now = int(time.time() * 1000) if now_ms is None else now_ms
        report = BatchReport(fetched=len(frame))
        rejected: list[Rejection]
        if validated:
            valid, rejected = frame, []
        else:
            valid, rejected = _split(spec, frame, self.source, now)
        report.duplicates = len(frame) - len(valid) - len(rejected)
        report.rejected = len(rejected)
        report.rejections = rejected[:KEPT_REJECTIONS]
        table = table_for(spec.name)
        if classify:
            report.outcomes = changes.classify(connection, spec.table, valid)
            report.inserted = int((report.outcomes == changes.INSERTED).sum())
            written = valid[report.outcomes != changes.UNCHANGED]
        else:
            written = valid
        report.written = upsert_rows(connection, table, spec.table.key, written, source=self.source)
        quarantine(connection, rejected)
        if len(valid):
            for one, part in _series_frames(spec, valid, series):
                stale = open_keys(connection, one)
                if stale:
                    fixed = stale & row_keys(spec, part)
                    report.resolved += resolve(connection, one, fixed, now)
        if coverage is not None and series is not None:
            add_coverage(connection, series, coverage, now)
        report.unchanged = len(valid) - report.written
        return report


def _split(
    spec: MarketDataset, frame: pd.DataFrame, source: str, now_ms: int
) -> tuple[pd.DataFrame, list[Rejection]]:
    """(valid rows, coerced to the model; rejections of the invalid ones)."""
    ds = spec.table
    missing = [c for c in ds.columns if c not in frame.columns]
    if missing:
        validate_frame(ds, frame)  # raises, naming the missing columns
    frame = frame.reset_index(drop=True)
    try:
        return ds.schema.validate(frame, lazy=True)[list(ds.columns)], []
    except pa_errors.SchemaErrors as exc:
        cases = exc.failure_cases
    if cases["index"].isna().any():
        validate_frame(ds, frame)  # a failure not tied to rows: refuse the batch, named
    rules = rule_keys(ds, cases)
    if "unique_key" in rules:
        deduped = frame.drop_duplicates(subset=list(ds.key), keep="last")
        if len(deduped) < len(frame):
            return _split(spec, deduped, source, now_ms)
    by_row: dict[Any, list[str]] = {}
    for index, rule in zip(cases["index"], rules, strict=True):
        by_row.setdefault(index, [])
        if rule not in by_row[index]:
            by_row[index].append(rule)
    bad = list(by_row)
    rejections = [
        _rejection(spec, frame.loc[index], tuple(sorted(by_row[index])), source, now_ms)
        for index in bad
    ]
    rest = frame.drop(index=bad)
    if rest.empty:
        return rest[list(ds.columns)], rejections
    valid, more = _split(spec, rest, source, now_ms)  # dataframe-wide rules may now pass
    return valid, rejections + more


def _plain(value: Any) -> Any:
    """A cell as a JSON-ready Python value (NaN and NA as None, numpy scalars unwrapped)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    return value


def key_text(values: Sequence[Any]) -> str:
    """A row key as text: integral numbers without a decimal tail, joined by ``|``, so the
    rejected ``1704067200000.0`` and the later valid ``1704067200000`` are the same key."""
    parts = []
    for value in values:
        plain = _plain(value)
        if isinstance(plain, float) and plain.is_integer():
            plain = int(plain)
        parts.append("" if plain is None else str(plain))
    return "|".join(parts)


def _ts(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number.is_integer() else None


def _rejection(
    spec: MarketDataset, row: pd.Series, rules: tuple[str, ...], source: str, now_ms: int
) -> Rejection:
    raw = {str(name): _plain(value) for name, value in row.items()}
    text = {c: "" if raw.get(c) is None else str(raw.get(c)) for c in spec.series_columns}
    series = SeriesKey(text["exchange"], text["symbol"], spec.name, text.get("timeframe", ""))
    return Rejection(
        series=series,
        key=key_text([row.get(c) for c in spec.row_key]),
        ts=_ts(row.get("ts")) if "ts" in row.index else None,
        source=source,
        raw=raw,
        rules=rules,
        received_at=now_ms,
    )


def _series_frames(
    spec: MarketDataset, valid: pd.DataFrame, series: SeriesKey | None
) -> list[tuple[SeriesKey, pd.DataFrame]]:
    """The valid rows split by series (one part when the caller named the series)."""
    if series is not None:
        return [(series, valid)]
    columns = list(spec.series_columns)
    parts = []
    for values, part in valid.groupby(columns, sort=False):
        names = values if isinstance(values, tuple) else (values,)
        text = {c: str(v) for c, v in zip(columns, names, strict=True)}
        one = SeriesKey(text["exchange"], text["symbol"], spec.name, text.get("timeframe", ""))
        parts.append((one, part))
    return parts


def row_keys(spec: MarketDataset, frame: pd.DataFrame) -> set[str]:
    """The rows' keys within their series, as ``rejected_rows.key`` spells them."""
    columns = [frame[c].tolist() for c in spec.row_key]
    return {key_text(values) for values in zip(*columns, strict=True)}


__all__ = [
    "BatchReport",
    "DatasetValidationError",
    "Sink",
    "key_text",
    "row_keys",
]
