"""What an upsert of a batch would do to each row, before it is done: insert (new key),
update (stored with other values) or nothing (stored as sent).

A source that must report its outcome per row (the API answers each request with
``inserted``/``updated``/``unchanged``) reads the stored rows of the batch's keys back, in
the same transaction as the write, and compares them in pandas; then only the rows that
change need writing. One read per series: a range scan of the primary key where the time
column is part of the key (candles, funding rates), else an ``IN`` over the row keys (trades).
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from crypto_pipelines.domain.schemas import Dataset
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


def _stored(
    connection: Connection, ds: Dataset, frame: pd.DataFrame, key: list[str], values: list[str]
) -> pd.DataFrame:
    table = table_for(ds.name)
    columns = [table.c[c] for c in key + values]
    series_columns = [c for c in _SERIES if c in ds.columns]
    row_key = [c for c in key if c not in series_columns]
    parts: list[Any] = []
    for series in frame[series_columns].drop_duplicates().itertuples(index=False):
        where = [table.c[c] == v for c, v in zip(series_columns, series, strict=True)]
        mask = np.ones(len(frame), dtype=bool)
        for c, v in zip(series_columns, series, strict=True):
            mask &= frame[c].to_numpy() == v
        part = frame[mask]
        if ds.time_column is not None and row_key == [ds.time_column]:
            stamps = part[ds.time_column]
            bounds = [
                table.c[ds.time_column] >= int(stamps.min()),
                table.c[ds.time_column] <= int(stamps.max()),
            ]
            parts.extend(connection.execute(sa.select(*columns).where(*where, *bounds)).all())
        else:
            ids = part[row_key[0]].tolist() if len(row_key) == 1 else None
            if ids is None:
                raise ValueError(f"{ds.name}: cannot classify rows keyed by {row_key}")
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start : start + _IN_CHUNK]
                query = sa.select(*columns).where(*where, table.c[row_key[0]].in_(chunk))
                parts.extend(connection.execute(query).all())
    stored = pd.DataFrame(parts, columns=key + values)
    for name in key:  # the merge needs the frame's dtypes on the key columns
        stored[name] = stored[name].astype(frame[name].dtype)
    return stored
