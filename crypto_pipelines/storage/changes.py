"""What an upsert of a batch would do to each row, before it is done: insert (new key),
update (stored with other values) or nothing (stored as sent).

A source that must report its outcome per row (the API answers each request with
``inserted``/``updated``/``unchanged``) reads the stored rows of the batch's keys back, in
the same transaction as the write, and compares them in pandas; then only the rows that
change need writing. One read per series: a range scan of the primary key where the time
column is part of the key (candles, funding rates), else an ``IN`` over the row keys (trades).
"""

from __future__ import annotations

from functools import cache
from typing import Any, Final

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from crypto_pipelines.domain.schemas import Dataset, get_dataset
from crypto_pipelines.storage.schema import table_for

INSERTED: Final = 0
UPDATED: Final = 1
UNCHANGED: Final = 2
_IN_CHUNK: Final = 500
_SERIES: Final = ("exchange", "symbol", "timeframe")


def classify(connection: Connection, ds: Dataset, frame: pd.DataFrame) -> np.ndarray:
    """Per row of ``frame`` (the model's columns, keys unique): ``INSERTED``, ``UPDATED`` or
    ``UNCHANGED`` against what ``connection`` sees stored."""
    outcome = np.full(len(frame), INSERTED, dtype=np.int8)
    if frame.empty:
        return outcome
    key = list(ds.key)
    values = [c for c in ds.columns if c not in ds.key]
    stored = _stored(connection, ds, frame, key, values)
    if stored.empty:
        return outcome
    merged = frame[key + values].merge(
        stored, on=key, how="left", suffixes=("", "__stored"), indicator=True, sort=False
    )
    present = merged["_merge"].eq("both").to_numpy()
    same = np.ones(len(frame), dtype=bool)
    for name in values:
        new = merged[name]
        old = merged[f"{name}__stored"]
        same &= (new.eq(old) | (new.isna() & old.isna())).to_numpy()
    outcome[present & same] = UNCHANGED
    outcome[present & ~same] = UPDATED
    return outcome


@cache
def _range_query(dataset: str) -> sa.Select[Any]:
    """The stored rows of one series between two times, with bound parameters: one statement
    object per dataset, so SQLAlchemy computes its cache key once, not per batch."""
    ds = get_dataset(dataset)
    table = table_for(ds.name)
    assert ds.time_column is not None
    ts = table.c[ds.time_column]
    return sa.select(*(table.c[c] for c in [*ds.key, *_values(ds)])).where(
        *(table.c[c] == sa.bindparam(c) for c in _series_columns(ds)),
        ts >= sa.bindparam("first_ts"),
        ts <= sa.bindparam("last_ts"),
    )


@cache
def _ids_query(dataset: str) -> sa.Select[Any]:
    """The stored rows of one series among given row keys (``ids``, an expanding list)."""
    ds = get_dataset(dataset)
    table = table_for(ds.name)
    [row_key] = [c for c in ds.key if c not in _series_columns(ds)]
    return sa.select(*(table.c[c] for c in [*ds.key, *_values(ds)])).where(
        *(table.c[c] == sa.bindparam(c) for c in _series_columns(ds)),
        table.c[row_key].in_(sa.bindparam("ids", expanding=True)),
    )


def _series_columns(ds: Dataset) -> list[str]:
    return [c for c in _SERIES if c in ds.columns]


def _values(ds: Dataset) -> list[str]:
    return [c for c in ds.columns if c not in ds.key]


def _stored(
    connection: Connection, ds: Dataset, frame: pd.DataFrame, key: list[str], values: list[str]
) -> pd.DataFrame:
    series_columns = _series_columns(ds)
    row_key = [c for c in key if c not in series_columns]
    by_range = ds.time_column is not None and row_key == [ds.time_column]
    if not by_range and len(row_key) != 1:
        raise ValueError(f"{ds.name}: cannot classify rows keyed by {row_key}")
    parts: list[Any] = []
    for series in frame[series_columns].drop_duplicates().itertuples(index=False):
        params = dict(zip(series_columns, series, strict=True))
        mask = np.ones(len(frame), dtype=bool)
        for c, v in params.items():
            mask &= frame[c].to_numpy() == v
        part = frame[mask]
        if by_range:
            assert ds.time_column is not None
            stamps = part[ds.time_column]
            bounds = {"first_ts": int(stamps.min()), "last_ts": int(stamps.max())}
            parts.extend(connection.execute(_range_query(ds.name), params | bounds).all())
        else:
            ids = part[row_key[0]].tolist()
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = {"ids": ids[start : start + _IN_CHUNK]}
                parts.extend(connection.execute(_ids_query(ds.name), params | chunk).all())
    stored = pd.DataFrame(parts, columns=key + values)
    for name in key:  # the merge needs the frame's dtypes on the key columns
        stored[name] = stored[name].astype(frame[name].dtype)
    return stored
