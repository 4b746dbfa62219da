"""A schema audit's first pass, in SQL: which windows of a series hold no row that could
break a rule, so only the others are read back into pandas and audited row by row.

Reading a year of candles back and running the Pandera model over them costs seconds; asking
the database, per partition window, "how many rows, and how many *suspicious* rows" costs a
scan of the primary-key range. The screen is a superset of the audit: every row the audit
(``crypto_pipelines.domain.audit``) would fail matches it, so a window with no suspicious
row and no repeated key is clean, and a window with any is audited exactly as before (some
suspicious rows pass the audit: a NaN in PostgreSQL, an integral REAL ``ts`` in SQLite).

The predicates below are written against the models' rule *names*. A rule without one makes
its dataset unscreenable (``screen_windows`` returns None and every window is audited in
pandas), so a rule added to a model is never silently skipped; a test keeps every rule of
the partitioned datasets covered. Columns the series filter fixes (exchange, symbol,
timeframe) hold the filter's value in every selected row: their rules are run once, through
the model's own checks, on that value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import pandas as pd
import pandera.dtypes as pa_dtypes
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crypto_pipelines.domain.checks import TS_MAX_MS, TS_MIN_MS, is_timeframe
from crypto_pipelines.domain.schemas import Dataset, get_dataset
from crypto_pipelines.domain.timeframes import TimeframeError, grid_offset_ms, timeframe_ms
from crypto_pipelines.storage.schema import table_for

Column = sa.ColumnElement[float]
Predicate = sa.ColumnElement[bool]

_INF: Final[sa.ColumnElement[float]] = sa.literal(math.inf, sa.Double())


def _not_finite_positive(column: Column) -> Predicate:
    return sa.not_(sa.and_(column > 0, column < _INF))


def _not_finite_non_negative(column: Column) -> Predicate:
    return sa.not_(sa.and_(column >= 0, column < _INF))


# Failing condition of each column rule, on a non-null value (Pandera's checks ignore nulls;
# ``not_nullable`` is screened separately).
COLUMN_SCREENS: Final[Mapping[str, Callable[[Column], Predicate]]] = {
    "ts_epoch_ms": lambda c: sa.or_(c < TS_MIN_MS, c >= TS_MAX_MS),
    "price_positive": _not_finite_positive,
    "amount_positive": _not_finite_positive,
    "volume_non_negative": _not_finite_non_negative,
    "amount_non_negative": _not_finite_non_negative,
    "level_non_negative": lambda c: c < 0,
    "rate_finite": lambda c: sa.not_(sa.and_(c > -_INF, c < _INF)),
    "rate_bounded": lambda c: sa.not_(sa.and_(c > -1.0, c < 1.0)),
    "open_interest_non_negative": lambda c: sa.or_(c < 0, c >= _INF),
    "side_buy_sell": lambda c: c.not_in(("buy", "sell")),
    "side_bid_ask": lambda c: c.not_in(("bid", "ask")),
}

# Failing condition of each dataframe rule over the table's columns. ``unique_key`` and
# ``ts_aligned`` are not here: the first is counted per window, the second needs the step.
FRAME_SCREENS: Final[Mapping[str, Callable[[sa.Table], Predicate]]] = {
    "high_ge_open_close": lambda t: sa.or_(t.c.high < t.c.open, t.c.high < t.c.close),
    "low_le_open_close": lambda t: sa.or_(t.c.low > t.c.open, t.c.low > t.c.close),
    "some_value": lambda t: sa.and_(t.c.open_interest.is_(None), t.c.open_interest_value.is_(None)),
}
_COUNTED: Final = frozenset({"unique_key", "ts_aligned"})

# Stored value types SQLite may hold in a column of each kind (PostgreSQL enforces its types).
_SQLITE_TYPES: Final = {
    "float": ("real", "integer", "null"),
    "int": ("integer", "null"),
    "bool": ("integer", "null"),
    "str": ("text", "null"),
}


@dataclass(frozen=True, slots=True)
class WindowScreen:
    """One window's rows, and whether none of them could fail the audit."""

    start_ms: int
    end_ms: int
    rows: int
    clean: bool


def unscreened_rules(dataset: Dataset | str) -> list[str]:
    """The dataset's rules the screen has no SQL for (none for a screenable dataset)."""
    ds = get_dataset(dataset) if isinstance(dataset, str) else dataset
    missing = [
        check.name
        for column in ds.schema.columns.values()
        for check in column.checks
        if check.name not in COLUMN_SCREENS and column.name not in _FIXED
    ]
    missing += [
        check.name
        for check in ds.schema.checks
        if check.name not in FRAME_SCREENS and check.name not in _COUNTED
    ]
    return sorted({str(name) for name in missing})


_FIXED: Final = ("exchange", "symbol", "timeframe")


def screen_windows(
    engine: Engine,
    dataset: str,
    *,
    exchange: str,
    symbol: str,
    timeframe: str | None,
    windows: Sequence[tuple[int, int]],
    open_bound: int,
) -> list[WindowScreen] | None:
    """Rows and cleanliness of each of ``windows`` (contiguous ``[start, end)`` ms windows,
    in order) of one series; None when the dataset or timeframe cannot be screened in SQL.

    ``open_bound`` is the audit's cap on ``ts`` (``inside_partition``): rows at or after it
    are suspicious."""
    ds = get_dataset(dataset)
    if not windows or unscreened_rules(ds) or ds.time_column != "ts":
        return None
    table = table_for(ds.name)
    fixed = {"exchange": exchange, "symbol": symbol, "timeframe": timeframe}
    fixed = {name: value for name, value in fixed.items() if name in ds.columns}
    if any(value is None for value in fixed.values()):
        return None
    key = [name for name in ds.key if name not in fixed]
    if len(key) != 1:
        return None
    suspicious = _suspicious(ds, table, engine.dialect.name, timeframe, open_bound)
    if suspicious is None:
        return None
    fixed_ok = _fixed_values_pass(ds, fixed)
    where = [table.c[name] == value for name, value in fixed.items()]
    key_column = table.c[key[0]]
    counted = [
        sa.func.count().label("n"),
        sa.func.coalesce(sa.func.sum(sa.case((suspicious, 1), else_=0)), 0).label("bad"),
        sa.func.count(sa.distinct(key_column)).label("keys"),
    ]
    if ds.name == "trades":
        counted.append(sa.func.count(sa.distinct(_canonical_id(key_column))).label("ids"))
    ts = table.c.ts
    lengths = {end - start for start, end in windows}
    found: dict[int, tuple[int, bool]] = {}
    with engine.connect() as connection:
        if len(lengths) == 1:  # equal windows (days): one scan, bucketed by division
            first, length = windows[0][0], lengths.pop()
            # CAST: a REAL ts (SQLite) must land in its integer bucket, not a group of its own
            bucket = sa.cast((ts - first) // length, sa.BigInteger).label("bucket")
            query = (
                sa.select(bucket, *counted)
                .where(*where, ts >= first, ts < windows[-1][1])
                .group_by(bucket)
            )
            for row in connection.execute(query):
                found[int(row.bucket)] = (int(row.n), _row_clean(row))
        else:  # months: one range scan each
            for index, (start, end) in enumerate(windows):
                row = connection.execute(
                    sa.select(*counted).where(*where, ts >= start, ts < end)
                ).one()
                found[index] = (int(row.n), _row_clean(row))
    out = []
    for index, (start, end) in enumerate(windows):
        rows, clean = found.get(index, (0, True))
        out.append(WindowScreen(start, end, rows, clean and (fixed_ok or rows == 0)))
    return out


def _row_clean(row: sa.Row[tuple[object, ...]]) -> bool:
    n = int(row.n)
    ids = int(getattr(row, "ids", n))
    return int(row.bad) == 0 and int(row.keys) == n and ids == n


def _suspicious(
    ds: Dataset, table: sa.Table, dialect: str, timeframe: str | None, open_bound: int
) -> Predicate | None:
    """One row's "could fail some rule" condition, or None when a rule has no SQL."""
    parts: list[Predicate] = [table.c.ts >= open_bound]  # inside_partition, capped at now
    for name, column_schema in ds.schema.columns.items():
        if name in _FIXED:
            continue
        column = table.c[name]
        nullable = bool(column.nullable)  # the table's NOT NULL already refuses the rest
        if nullable and not column_schema.nullable:
            parts.append(column.is_(None))
        kind = _kind(column_schema.dtype)
        if dialect == "sqlite" and (kind != "float" or not column_schema.checks):
            # SQLite keeps any value in any column. In a REAL column a text or blob sorts
            # above every number, so each float rule's upper bound (``< inf``) flags it
            # already: ``typeof`` (a sixth of the screen's cost per column) only where not.
            parts.append(sa.func.typeof(column).not_in(_SQLITE_TYPES[kind]))
        for check in column_schema.checks:
            failing = COLUMN_SCREENS[str(check.name)](column)
            parts.append(sa.and_(column.is_not(None), failing) if nullable else failing)
    for check in ds.schema.checks:
        if check.name in FRAME_SCREENS:
            parts.append(FRAME_SCREENS[str(check.name)](table))
        elif check.name == "ts_aligned":
            aligned = _misaligned(table, timeframe)
            if aligned is None:
                return None
            parts.append(aligned)
    return sa.or_(*parts)


def _misaligned(table: sa.Table, timeframe: str | None) -> Predicate | None:
    if timeframe is None or not is_timeframe(timeframe):
        return None
    try:
        step = timeframe_ms(timeframe)
    except TimeframeError:  # calendar months: not on a fixed grid
        return None
    return ((table.c.ts - grid_offset_ms(timeframe)) % step) != 0


def _canonical_id(column: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
    """Trade ids folded at least as far as ``audit.canonical_trade_ids`` folds them (it may
    fold further: ``1.50`` and ``1.5`` meet here), so two spellings of one id always meet."""
    text = sa.func.lower(sa.func.trim(column))
    no_tail = sa.case((text.like("%.%"), sa.func.rtrim(sa.func.rtrim(text, "0"), ".")), else_=text)
    return sa.func.ltrim(no_tail, "0")


def _kind(dtype: pa_dtypes.DataType) -> str:
    if pa_dtypes.is_float(dtype):
        return "float"
    if pa_dtypes.is_int(dtype):
        return "int"
    if pa_dtypes.is_bool(dtype):
        return "bool"
    return "str"


def _fixed_values_pass(ds: Dataset, fixed: Mapping[str, str | None]) -> bool:
    """Whether the filter's values pass their columns' rules (the model's own checks)."""
    for name, value in fixed.items():
        values = pd.Series([value], dtype=object)
        for check in ds.schema.columns[name].checks:
            if not bool(check(values).check_passed):
                return False
    return True


__all__ = [
    "COLUMN_SCREENS",
    "FRAME_SCREENS",
    "WindowScreen",
    "screen_windows",
    "unscreened_rules",
]
