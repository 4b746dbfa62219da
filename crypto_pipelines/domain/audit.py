"""Auditing stored rows against their dataset's model: every rule, every failing row.

The store validates each batch before writing it, so rows that break a rule can only reach a
table from outside (direct SQL, another tool, an older version of this code). An audit reads
them back *as stored* and reports, per rule, how many rows fail it and which ones, so a
Dagster check can show the failures without failing itself. It adds to the model:

- ``<column>:dtype``: a value the column's type cannot hold (SQLite keeps the text ``'abc'``
  written into a REAL column). Such rows are reported once, under this rule, and left out of
  the value rules, which cannot judge a value that is not a number.
- ``inside_partition`` (rows with ``ts``): ``start <= ts < end`` for the audited window, whose
  end the caller caps at the time of the audit (``open_bound``): a candle that had not closed
  yet, or a trade from the future, belongs to no complete partition.
- ``unique_trade_id`` (trades): the same trade stored twice under two spellings of its id
  (``"123"``, ``"0123"``, ``"123.0"`` after a float round trip, ``"ABC"``/``"abc"``). The
  primary key compares ids literally and cannot see it. Identical content under two different
  ids is *not* a duplicate: real tapes hold distinct trades with the same time, side, price and
  amount (2 of 12,477 Binance XRP/ETH aggTrades).

The model's ``unique_key`` rule stays: a table recreated without its primary key (another
tool, a manual restore) can hold the same key twice, and then every copy fails it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pandera.dtypes as pa_dtypes
import pandera.errors as pa_errors
import pandera.pandas as pa

from crypto_pipelines.domain.checks import unique_key
from crypto_pipelines.domain.datasets import MARKET_DATASETS
from crypto_pipelines.domain.schemas import Dataset, get_dataset
from crypto_pipelines.domain.validation import failure_counts, rule_keys

INSIDE_PARTITION = "inside_partition"
UNIQUE_TRADE_ID = "unique_trade_id"
SAMPLE_ROWS = 20


@dataclass(frozen=True)
class Audit:
    """One audited unit (a partition, a table): rows read, failing rows per rule, and the
    first failing rows (raw values plus a ``rules`` column), at most ``keep`` of them."""

    label: str
    dataset: str
    rows_checked: int
    counts: dict[str, int]
    rows_failed: int
    failing: pd.DataFrame

    @property
    def passed(self) -> bool:
        return not self.counts


def open_bound(dataset: str, now_ms: int, timeframe: str | None = None) -> int:
    """The exclusive upper bound of ``ts`` for rows complete at ``now_ms``: a candle must have
    closed (``ts + timeframe <= now``), any other row must not be in the future."""
    if dataset in MARKET_DATASETS:
        return MARKET_DATASETS[dataset].open_bound(now_ms, timeframe)
    return now_ms + 1


def canonical_trade_ids(ids: pd.Series) -> pd.Series:
    """Trade ids as one spelling: digits without leading zeros or a ``.0`` tail, anything else
    trimmed and lower-cased."""
    text = ids.astype(str).str.strip()
    numeric = text.str.fullmatch(r"\d+(?:\.0+)?")
    digits = text.str.replace(r"\.0+$", "", regex=True).str.lstrip("0").replace("", "0")
    return digits.where(numeric, text.str.lower())


def audit_frame(
    dataset: Dataset | str,
    raw: pd.DataFrame,
    *,
    label: str = "",
    window: tuple[int | None, int | None] | None = None,
    keep: int = SAMPLE_ROWS,
) -> Audit:
    """Validate ``raw`` (rows as stored, any dtypes) lazily against the dataset's model plus
    the audit rules above; ``window`` is ``(start, end)`` for ``inside_partition``."""
    ds = get_dataset(dataset) if isinstance(dataset, str) else dataset
    frame = raw.reset_index(drop=True)
    typed, type_failures = _typed(ds, frame)
    extra = _extra_checks(ds, window)
    cases = _failure_cases(ds, typed.drop(index=type_failures.index.unique()), extra)
    extra_names = [check.name for check in extra if check.name]
    counts = failure_counts(ds, cases, extra_names) if len(cases) else {}
    for rule, rows in type_failures.groupby("rule"):
        counts[str(rule)] = int(rows.index.nunique())
    rules_by_row = _rules_by_row(ds, cases, extra_names, type_failures)
    failing = frame.loc[_first_rows(ds, typed, rules_by_row, keep)].copy()
    failing["rules"] = [rules_by_row[row] for row in failing.index]
    return Audit(
        label=label,
        dataset=ds.name,
        rows_checked=len(frame),
        counts=dict(sorted(counts.items())),
        rows_failed=len(rules_by_row),
        failing=failing.reset_index(drop=True),
    )


def summarize(audits: Iterable[Audit], *, sample: int = SAMPLE_ROWS) -> dict[str, Any]:
    """Plain, JSON-ready totals over several audits: ``rows_checked``, ``rows_failed``,
    ``failures_by_rule`` (rule -> rows), ``failures_by_partition`` (label -> rule -> rows,
    failing units only), ``units_checked`` and ``sample`` (the first failing rows, each with its
    unit ``partition``, its ``rules`` and its stored values)."""
    totals: dict[str, int] = {}
    by_unit: dict[str, dict[str, int]] = {}
    rows = failed = units = 0
    rows_out: list[dict[str, Any]] = []
    for audit in audits:
        units += 1
        rows += audit.rows_checked
        failed += audit.rows_failed
        for rule, count in audit.counts.items():
            totals[rule] = totals.get(rule, 0) + count
        if audit.counts:
            by_unit[audit.label] = dict(audit.counts)
        for record in audit.failing.to_dict("records"):
            if len(rows_out) < sample:
                rows_out.append({"partition": audit.label, **_json_ready(record)})
    return {
        "units_checked": units,
        "rows_checked": rows,
        "rows_failed": failed,
        "failures_by_rule": dict(sorted(totals.items())),
        "failures_by_partition": by_unit,
        "sample": rows_out,
    }


# --- the pieces ------------------------------------------------------------------------------


def _typed(ds: Dataset, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Columns converted to the model's kinds, and the cells that could not be (index = row,
    column ``rule`` = ``<column>:dtype``). Nulls stay null: ``not_nullable`` judges them."""
    typed = frame.copy()
    bad: list[tuple[int, str]] = []
    for name, column in ds.schema.columns.items():
        if name not in frame.columns:
            continue  # Pandera reports the missing column
        values = frame[name]
        present = values.notna().to_numpy()
        dtype = column.dtype
        if pa_dtypes.is_float(dtype) or pa_dtypes.is_int(dtype):
            numbers = pd.to_numeric(values, errors="coerce")
            ok = numbers.notna().to_numpy() | ~present
            if pa_dtypes.is_int(dtype):
                ok &= ~present | (
                    np.floor(numbers.to_numpy(dtype=float)) == numbers.to_numpy(dtype=float)
                )
            typed[name] = numbers.where(ok)
        elif pa_dtypes.is_bool(dtype):
            ok = (
                values.map(lambda v: isinstance(v, bool | np.bool_) or v in (0, 1)).to_numpy()
                | ~present
            )
            typed[name] = values.where(ok)
        else:
            ok = _strings(values) | ~present
            typed[name] = values.where(ok)
        bad.extend((int(row), f"{name}:dtype") for row in np.flatnonzero(~ok))
    failures = pd.DataFrame({"rule": [rule for _, rule in bad]}, index=[row for row, _ in bad])
    return typed, failures


def _strings(values: pd.Series) -> np.ndarray:
    """Which cells are strings: pandas' C-level type inference answers a column of strings
    (the usual case: a million rows in milliseconds) without a Python call per cell."""
    if pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
        return np.ones(len(values), dtype=bool)
    return values.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)


def _extra_checks(ds: Dataset, window: tuple[int | None, int | None] | None) -> list[pa.Check]:
    checks: list[pa.Check] = []
    if window is not None and ds.time_column is not None:
        start, end = window
        ts = ds.time_column

        def inside(df: pd.DataFrame) -> pd.Series:
            values = df[ts]
            ok = pd.Series(True, index=df.index)
            if start is not None:
                ok &= ~(values < start)
            if end is not None:
                ok &= ~(values >= end)
            return ok

        checks.append(pa.Check(inside, name=INSIDE_PARTITION))
    if ds.name == "trades":

        def unique_id(df: pd.DataFrame) -> pd.Series:
            literal = ~unique_key(df, ds.key)
            canonical = df.assign(trade_id=canonical_trade_ids(df["trade_id"]))
            return ~(~unique_key(canonical, ds.key) & ~literal)

        checks.append(pa.Check(unique_id, name=UNIQUE_TRADE_ID))
    return checks


def _failure_cases(ds: Dataset, frame: pd.DataFrame, extra: Sequence[pa.Check]) -> pd.DataFrame:
    schema = copy.copy(ds.schema)
    schema.checks = [*ds.schema.checks, *extra]
    try:
        schema.validate(frame, lazy=True)
    except pa_errors.SchemaErrors as exc:
        return exc.failure_cases
    return pd.DataFrame(columns=["schema_context", "column", "check", "failure_case", "index"])


def _rules_by_row(
    ds: Dataset, cases: pd.DataFrame, extra: Sequence[str], type_failures: pd.DataFrame
) -> dict[int, list[str]]:
    rules: dict[int, set[str]] = {}
    if len(cases):
        keyed = cases.assign(_rule=rule_keys(ds, cases, extra)).dropna(subset=["index"])
        for row, rule in zip(keyed["index"], keyed["_rule"], strict=True):
            rules.setdefault(int(row), set()).add(str(rule))
    for row, rule in zip(type_failures.index, type_failures["rule"], strict=True):
        rules.setdefault(int(row), set()).add(str(rule))
    return {row: sorted(names) for row, names in rules.items()}


def _first_rows(ds: Dataset, typed: pd.DataFrame, rows: Iterable[int], keep: int) -> list[int]:
    """The first ``keep`` failing rows in time order (key order for reference data)."""
    if ds.time_column is None or ds.time_column not in typed.columns:
        return sorted(rows)[:keep]
    times = pd.to_numeric(typed[ds.time_column], errors="coerce")
    return sorted(rows, key=lambda row: (math.inf if pd.isna(times[row]) else times[row], row))[
        :keep
    ]


def _json_ready(record: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None if math.isnan(value) else str(value)
        elif value is pd.NA or value is pd.NaT:
            value = None
        elif not isinstance(value, str | int | float | bool | list | type(None)):
            value = str(value)
        out[str(key)] = value
    return out
