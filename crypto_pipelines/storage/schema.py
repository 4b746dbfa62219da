"""The SQL tables, derived from the Pandera models so the two cannot drift apart.

Each dataset of ``DATASETS`` becomes a table of the same name: its model's columns in model
order with types mapped by ``sql_type`` (strings -> VARCHAR, int64 -> BIGINT, float64 ->
DOUBLE PRECISION, bool -> BOOLEAN), nullability from the model, the registry's key as the
primary key and its indexes as secondary indexes. ``ts`` columns hold epoch milliseconds.

Market tables (datasets with a time column) carry one column beyond their model: ``source``,
who last wrote the row's values (``rest``, ``stream``, ``api:<key name>``; NULL for rows
stored before it was recorded). It is provenance, not data: reads return the model's columns
and a re-write of the same values keeps the first writer (``writers.upsert_rows``).

SQLite tables are ``WITHOUT ROWID``: rows then live in the primary-key B-tree itself, which
saves the second index a rowid table needs for a composite key (about half the write work
and space) and keeps each series' rows together for range reads.
"""

from __future__ import annotations

from typing import Any

import pandera.dtypes as pa_dtypes
import sqlalchemy as sa

from crypto_pipelines.domain.datasets import SeriesKey
from crypto_pipelines.domain.schemas import DATASETS, Dataset


def sql_type(dtype: pa_dtypes.DataType) -> sa.types.TypeEngine[Any]:
    """The SQL column type of a Pandera dtype; a TypeError for one the store cannot hold."""
    if pa_dtypes.is_bool(dtype):
        return sa.Boolean()
    if pa_dtypes.is_int(dtype):
        return sa.BigInteger()
    if pa_dtypes.is_float(dtype):
        return sa.Double()
    if pa_dtypes.is_string(dtype):
        return sa.String()
    raise TypeError(f"no SQL type for Pandera dtype {dtype}")


SOURCE_COLUMN = "source"
"""The provenance column of every market table (see the module docstring)."""


def has_source(dataset: Dataset) -> bool:
    """Whether ``dataset``'s table records each row's source (the market datasets do)."""
    return dataset.time_column is not None


def _table(dataset: Dataset, meta: sa.MetaData) -> sa.Table:
    columns = [
        sa.Column(
            name,
            sql_type(column.dtype),
            nullable=bool(column.nullable) and name not in dataset.key,
            autoincrement=False,
        )
        for name, column in dataset.schema.columns.items()
    ]
    if has_source(dataset):
        columns.append(sa.Column(SOURCE_COLUMN, sa.String(), nullable=True))
    # An explicit constraint: the key's column order (the B-tree order) is the registry's,
    # which is not always the column order.
    primary_key = sa.PrimaryKeyConstraint(*dataset.key, name=f"pk_{dataset.name}")
    table = sa.Table(dataset.name, meta, *columns, primary_key, sqlite_with_rowid=False)
    for index_columns in dataset.indexes:
        sa.Index(
            f"ix_{dataset.name}_{'_'.join(index_columns)}", *(table.c[c] for c in index_columns)
        )
    return table


def _gaps_table(meta: sa.MetaData) -> sa.Table:
    """Gap bookkeeping (not a dataset): one row per run of missing candles (``dataset``
    ``ohlcv``; ``start``/``end`` are the first and last missing open time in ms, inclusive)
    or of missing sequential trade ids (``trades``; ``timeframe`` is ''; ids, inclusive),
    found in the window ``[window_start, window_end)`` (a partition) it was checked in.
    ``status``: ``open`` (ours to refetch), ``confirmed`` (a refetch returned nothing: the
    exchange has no such rows; never refetched again) or ``filled`` (no longer missing)."""
    big = sa.BigInteger
    return sa.Table(
        "gaps",
        meta,
        sa.Column("exchange", sa.String(), nullable=False),
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("dataset", sa.String(), nullable=False),
        sa.Column("timeframe", sa.String(), nullable=False),
        sa.Column("start", big(), nullable=False, autoincrement=False),
        sa.Column("end", big(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("window_start", big(), nullable=False),
        sa.Column("window_end", big(), nullable=False),
        sa.Column("detected_at", big(), nullable=False),
        sa.Column("checked_at", big(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_attempt_at", big(), nullable=True),
        sa.Column("reason", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint(
            "exchange", "symbol", "dataset", "timeframe", "start", name="pk_gaps"
        ),
        sa.Index("ix_gaps_status", "status"),
        sqlite_with_rowid=False,
    )


def _rejected_rows_table(meta: sa.MetaData) -> sa.Table:
    """Quarantine (not a dataset): rows a source sent that break their dataset's rules, one
    per series and row key (``key``: the row's key columns beyond the series', e.g. its
    ``ts`` or trade id, joined by ``|``). ``raw`` is the row as received (JSON), ``rules``
    the rules it failed (JSON list). A later valid row for the same key sets
    ``resolved_at``; receiving the same key invalid again replaces the row and reopens it."""
    big = sa.BigInteger
    return sa.Table(
        "rejected_rows",
        meta,
        sa.Column("dataset", sa.String(), nullable=False),
        sa.Column("exchange", sa.String(), nullable=False),
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("timeframe", sa.String(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("ts", big(), nullable=True),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column("received_at", big(), nullable=False),
        sa.Column("resolved_at", big(), nullable=True),
        sa.PrimaryKeyConstraint(
            "dataset", "exchange", "symbol", "timeframe", "key", name="pk_rejected_rows"
        ),
        sqlite_with_rowid=False,
    )


def _coverage_table(meta: sa.MetaData) -> sa.Table:
    """Coverage (not a dataset): per series, the time ranges ``[start, end)`` (ms) the
    exchange was asked for and answered, merged so that ranges of one series never touch.
    What a load still has to fetch, and where a gap check's expected grid ends, come from
    here rather than from the newest stored row."""
    big = sa.BigInteger
    return sa.Table(
        "coverage",
        meta,
        sa.Column("exchange", sa.String(), nullable=False),
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("dataset", sa.String(), nullable=False),
        sa.Column("timeframe", sa.String(), nullable=False),
        sa.Column("start", big(), nullable=False, autoincrement=False),
        sa.Column("end", big(), nullable=False),
        sa.Column("updated_at", big(), nullable=False),
        sa.PrimaryKeyConstraint(
            "exchange", "symbol", "dataset", "timeframe", "start", name="pk_coverage"
        ),
        sqlite_with_rowid=False,
    )


def _universe_changes_table(meta: sa.MetaData) -> sa.Table:
    """Symbols added to or removed from an exchange's universe at run time (the API), on top
    of the universe file, which stays the base and is never rewritten. One row per exchange
    and symbol: its latest change (``action`` ``add`` or ``remove``), when (ms) and by whom."""
    return sa.Table(
        "universe_changes",
        meta,
        sa.Column("exchange", sa.String(), nullable=False),
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("changed_at", sa.BigInteger(), nullable=False),
        sa.Column("changed_by", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("exchange", "symbol", name="pk_universe_changes"),
        sqlite_with_rowid=False,
    )


def build_metadata() -> sa.MetaData:
    """A fresh MetaData holding every dataset's table and the bookkeeping tables (``gaps``,
    ``rejected_rows``, ``coverage``, ``universe_changes``)."""
    meta = sa.MetaData()
    for dataset in DATASETS.values():
        _table(dataset, meta)
    _gaps_table(meta)
    _rejected_rows_table(meta)
    _coverage_table(meta)
    _universe_changes_table(meta)
    return meta


metadata = build_metadata()
"""The tables of all datasets and the bookkeeping: what the Alembic migrations must produce."""


def table_for(dataset: str) -> sa.Table:
    """The table of ``dataset``; a ValueError naming the known datasets otherwise."""
    try:
        return metadata.tables[dataset]
    except KeyError:
        raise ValueError(
            f"unknown dataset {dataset!r}; known: {', '.join(metadata.tables)}"
        ) from None


def series_where(table: sa.Table, series: SeriesKey) -> list[sa.ColumnElement[bool]]:
    """Conditions selecting one series' rows of a bookkeeping table (``gaps``, ``coverage``,
    ``rejected_rows``: all keyed by exchange, symbol, dataset and timeframe)."""
    return [
        table.c.exchange == series.exchange,
        table.c.symbol == series.symbol,
        table.c.dataset == series.dataset,
        table.c.timeframe == series.timeframe,
    ]
