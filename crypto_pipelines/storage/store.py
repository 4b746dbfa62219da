"""``MarketStore``: validated, atomic, idempotent upserts of the datasets, and typed reads.

Every write is one transaction: a batch is validated against its Pandera model first (a
bad batch raises ``DatasetValidationError`` naming the dataset, rules, columns and rows,
and nothing is written), then upserted on the dataset's key, so loading the same data twice
leaves the table as it was and overlapping fetches need no de-duplication downstream.

Reads return frames sorted by the dataset's key with the model's dtypes (``ts`` int64
milliseconds, prices float64, nullable integers as ``Int64``). Time ranges are half-open,
``start_ts <= ts < end_ts``, so consecutive windows never share a row.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pandera.dtypes as pa_dtypes
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crypto_pipelines.domain.instruments import CryptoAsset, CryptoPair, CryptoPerp, assets_of
from crypto_pipelines.domain.listings import Listing, listings_from_frames
from crypto_pipelines.domain.schemas import Dataset, get_dataset
from crypto_pipelines.domain.validation import validate_frame
from crypto_pipelines.storage.engine import Source, default_db_url, make_engine, write_transaction
from crypto_pipelines.storage.migrate import upgrade
from crypto_pipelines.storage.schema import table_for
from crypto_pipelines.storage.writers import insert_new_rows, upsert_rows

log = logging.getLogger(__name__)


class MarketStore:
    """The market datasets in one SQL database (SQLite or PostgreSQL).

    Creating a store migrates the database to the current schema (idempotent, and safe when
    several processes start at once); pass ``migrate=False`` to skip that for a database
    known to be current."""

    def __init__(self, engine: Engine, *, migrate: bool = True) -> None:
        self.engine = engine
        self._owns_engine = False
        if migrate:
            upgrade(engine)

    @classmethod
    def open(cls, url: str | None = None, *, source: Source = "live") -> MarketStore:
        """A store on ``url`` (default: ``default_db_url(source)``) that owns its engine."""
        engine = make_engine(url or default_db_url(source))
        try:
            store = cls(engine)
        except BaseException:
            engine.dispose()
            raise
        store._owns_engine = True
        return store

    def close(self) -> None:
        """Dispose of the engine if this store created it (``MarketStore.open``)."""
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> MarketStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MarketStore({self.engine.url.render_as_string(hide_password=True)!r})"

    # --- writes --------------------------------------------------------------------------

    def upsert(
        self,
        dataset: str,
        frame: pd.DataFrame,
        *,
        validate: bool = True,
        source: str | None = None,
    ) -> int:
        """Insert or update ``frame``'s rows of ``dataset`` on its key, all or nothing.

        Returns the number of rows inserted or changed (0 when every row was already stored
        with the same values). ``validate=False`` skips the model check for batches that
        were just validated; the database constraints still apply. ``source``: recorded as
        the rows' provenance in market tables (sources normally write through
        ``crypto_pipelines.ingest.Sink``, which names itself)."""
        ds = get_dataset(dataset)
        rows = self._prepare(ds, frame, validate)
        with write_transaction(self.engine) as connection:
            written = upsert_rows(connection, table_for(ds.name), ds.key, rows, source=source)
        log.debug("upserted %s: %d rows in, %d inserted or changed", ds.name, len(rows), written)
        return written

    def upsert_instruments(
        self,
        assets: Iterable[CryptoAsset] = (),
        pairs: Iterable[CryptoPair] = (),
        perps: Iterable[CryptoPerp] = (),
    ) -> dict[str, int]:
        """Upsert instruments in one transaction; every currency the pairs and perps
        reference is added to ``crypto_assets`` as well. Returns rows inserted or changed
        per table."""
        frames = self._instrument_frames(assets, pairs, perps)
        with write_transaction(self.engine) as connection:
            return {
                name: upsert_rows(connection, table_for(name), get_dataset(name).key, frame)
                for name, frame in frames.items()
            }

    def put_instrument(self, item: CryptoAsset | CryptoPair | CryptoPerp) -> bool:
        """Create or replace one catalog record (and add the currencies it names); True when
        its key was not stored before. Decided in the same transaction as the write (an insert
        that does nothing on conflict, then the upsert), so two first writes of one record
        cannot both be told it was new."""
        name = (
            "crypto_assets"
            if isinstance(item, CryptoAsset)
            else "crypto_pairs"
            if isinstance(item, CryptoPair)
            else "crypto_perps"
        )
        frames = self._instrument_frames(
            [item] if isinstance(item, CryptoAsset) else [],
            [item] if isinstance(item, CryptoPair) else [],
            [item] if isinstance(item, CryptoPerp) else [],
        )
        own = self._prepare(get_dataset(name), _frame_of(get_dataset(name), [item]), False)
        with write_transaction(self.engine) as connection:
            created = insert_new_rows(connection, table_for(name), get_dataset(name).key, own) > 0
            for table, frame in frames.items():
                upsert_rows(connection, table_for(table), get_dataset(table).key, frame)
        return created

    def _instrument_frames(
        self,
        assets: Iterable[CryptoAsset],
        pairs: Iterable[CryptoPair],
        perps: Iterable[CryptoPerp],
    ) -> dict[str, pd.DataFrame]:
        """Validated frames of the catalog tables for these instruments, with every currency
        the pairs and perps reference among the assets."""
        assets, pairs, perps = list(assets), list(pairs), list(perps)
        codes = {asset.code for asset in assets} | {asset.code for asset in assets_of(pairs, perps)}
        batches: dict[str, list[Any]] = {
            "crypto_assets": [CryptoAsset(code) for code in sorted(codes)],
            "crypto_pairs": pairs,
            "crypto_perps": perps,
        }
        return {
            name: self._prepare(get_dataset(name), _frame_of(get_dataset(name), items), True)
            for name, items in batches.items()
        }

    @staticmethod
    def _prepare(ds: Dataset, frame: pd.DataFrame, validate: bool) -> pd.DataFrame:
        if validate:
            return validate_frame(ds, frame)
        missing = [column for column in ds.columns if column not in frame.columns]
        if missing:
            raise ValueError(f"{ds.name}: missing columns {missing}")
        return frame[list(ds.columns)]

    # --- reads ---------------------------------------------------------------------------

    def read(
        self,
        dataset: str,
        *,
        exchange: str | None = None,
        symbol: str | None = None,
        timeframe: str | None = None,
        start_ts: int | None = None,
        end_ts: int | None = None,
        typed: bool = True,
    ) -> pd.DataFrame:
        """Rows of ``dataset`` matching the filters (``start_ts <= ts < end_ts``), sorted by
        key, with the model's column order and dtypes.

        ``typed=False`` returns the values exactly as the database holds them (object
        columns): SQLite keeps a text written into a REAL column by another tool, and an audit
        must report such a row rather than fail to read it."""
        ds = get_dataset(dataset)
        table = table_for(ds.name)
        where = _where(ds, table, exchange, symbol, timeframe, start_ts, end_ts)
        # A column the filters fix holds the filter's value in every row: not fetched (a year
        # of candles would be 1.5 million copies of three strings), filled in afterwards.
        given = (("exchange", exchange), ("symbol", symbol), ("timeframe", timeframe))
        fixed = {name: value for name, value in given if value is not None}
        fetched = [c for c in ds.columns if c not in fixed]
        query = (
            sa.select(*(table.c[c] for c in fetched))
            .where(*where)
            .order_by(*(table.c[c] for c in ds.key if c not in fixed))
        )
        with self.engine.connect() as connection:
            rows = _fetch_tuples(connection, query)
        if not typed:
            frame = pd.DataFrame(rows, columns=fetched, dtype=object)
        else:
            frame = _typed_frame(ds, rows, fetched)
        dtypes = pandas_dtypes(ds)
        for name, value in fixed.items():
            frame[name] = pd.Series(
                [value] * len(frame), dtype=object if not typed else dtypes[name]
            )
        return frame[list(ds.columns)]

    def latest_ts(
        self,
        dataset: str,
        *,
        exchange: str,
        symbol: str,
        timeframe: str | None = None,
        start_ts: int | None = None,
        end_ts: int | None = None,
    ) -> int | None:
        """The newest ``ts`` stored for a series, within ``start_ts <= ts < end_ts`` when
        given (a partition's window); None when there is no such row."""
        ds = get_dataset(dataset)
        table = table_for(ds.name)
        where = _where(ds, table, exchange, symbol, timeframe, start_ts, end_ts)
        query = sa.select(sa.func.max(table.c[_time_column(ds)])).where(*where)
        with self.engine.connect() as connection:
            value = connection.execute(query).scalar()
        return None if value is None else int(value)

    def listings(self, exchange: str) -> dict[str, Listing]:
        """The exchange's stored markets (``crypto_pairs`` and ``crypto_perps``) by symbol."""
        return listings_from_frames(
            self.read("crypto_pairs", exchange=exchange),
            self.read("crypto_perps", exchange=exchange),
        )

    def count(
        self,
        dataset: str,
        *,
        exchange: str | None = None,
        symbol: str | None = None,
        timeframe: str | None = None,
        start_ts: int | None = None,
        end_ts: int | None = None,
    ) -> int:
        """Number of rows matching the filters (same filters as ``read``)."""
        ds = get_dataset(dataset)
        table = table_for(ds.name)
        where = _where(ds, table, exchange, symbol, timeframe, start_ts, end_ts)
        query = sa.select(sa.func.count()).select_from(table).where(*where)
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def timestamps(
        self,
        dataset: str,
        *,
        exchange: str,
        symbol: str,
        timeframe: str | None = None,
        start_ts: int | None = None,
        end_ts: int | None = None,
    ) -> list[int]:
        """The distinct ``ts`` values of a series in ascending order (for gap detection)."""
        ds = get_dataset(dataset)
        table = table_for(ds.name)
        ts = table.c[_time_column(ds)]
        where = _where(ds, table, exchange, symbol, timeframe, start_ts, end_ts)
        query = sa.select(ts).where(*where).distinct().order_by(ts)
        with self.engine.connect() as connection:  # the DBAPI cursor: no Row per value
            rows = _fetch_tuples(connection, query)
        return [int(value) for (value,) in rows]


def _time_column(ds: Dataset) -> str:
    if ds.time_column is None:
        raise ValueError(f"{ds.name} has no time column")
    return ds.time_column


def _where(
    ds: Dataset,
    table: sa.Table,
    exchange: str | None,
    symbol: str | None,
    timeframe: str | None,
    start: int | None = None,
    end: int | None = None,
) -> list[sa.ColumnElement[bool]]:
    """SQL conditions for the filters that were given; a ValueError for a filter the
    dataset has no column for (``timeframe`` on trades), rather than silently ignoring it."""
    clauses: list[sa.ColumnElement[bool]] = []
    for name, value in (("exchange", exchange), ("symbol", symbol), ("timeframe", timeframe)):
        if value is None:
            continue
        if name not in ds.columns:
            raise ValueError(f"{ds.name} has no {name!r} column to filter on")
        clauses.append(table.c[name] == value)
    if start is not None or end is not None:
        ts = table.c[_time_column(ds)]
        if start is not None:
            clauses.append(ts >= int(start))
        if end is not None:
            clauses.append(ts < int(end))
    return clauses


def pandas_dtypes(ds: Dataset) -> dict[str, str]:
    """The pandas dtype of each column as read back from SQL."""
    dtypes: dict[str, str] = {}
    for name, column in ds.schema.columns.items():
        dtype = column.dtype
        if pa_dtypes.is_string(dtype):
            dtypes[name] = "str"
        elif pa_dtypes.is_bool(dtype):
            dtypes[name] = "bool"
        elif pa_dtypes.is_int(dtype):
            dtypes[name] = "Int64" if str(dtype) == "Int64" else "int64"
        else:
            dtypes[name] = "float64"
    return dtypes


def _fetch_tuples(connection: sa.Connection, query: sa.Select[Any]) -> list[tuple[Any, ...]]:
    """All rows of ``query`` as the driver's plain tuples.

    Bulk reads (a year of candles is half a million rows) go through the DBAPI cursor: a
    SQLAlchemy ``Row`` per row costs about as much again as the fetch itself. The statement
    is still built and compiled by SQLAlchemy for the connection's dialect; only plain
    column values and literal filter parameters (strings, integers) pass through here."""
    compiled = query.compile(dialect=connection.dialect)
    params: Any = compiled.params
    if compiled.positional:
        params = tuple(params[name] for name in compiled.positiontup or ())
    cursor = connection.connection.cursor()
    try:
        cursor.execute(compiled.string, params)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _typed_frame(
    ds: Dataset, rows: Sequence[Sequence[Any]], columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """Rows (of ``columns``, default all of the model's) -> frame with the model's dtypes.
    Built column-wise: ``from_records`` on SQLAlchemy rows probes each row with ``hasattr``
    and is several times slower."""
    columns = list(ds.columns if columns is None else columns)
    dtypes = pandas_dtypes(ds)
    values = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    data: dict[str, Any] = {}
    for name, column in zip(columns, values, strict=True):
        if dtypes[name] == "float64":
            # None (SQL NULL) -> NaN, also when a column is entirely NULL.
            data[name] = np.array(column, dtype="float64")
        else:
            data[name] = pd.Series(list(column), dtype=dtypes[name])
    return pd.DataFrame(data, columns=columns)


def _frame_of(ds: Dataset, items: Iterable[object]) -> pd.DataFrame:
    records = [dataclasses.asdict(item) for item in items]  # type: ignore[call-overload]
    frame = pd.DataFrame.from_records(records, columns=list(ds.columns))
    return frame.astype(pandas_dtypes(ds)) if records else frame
