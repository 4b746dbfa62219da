"""Request bodies of the ingestion routes -> a frame of the dataset's columns, or the errors.

The row layout is derived from the dataset's Pandera model, never written twice: a row holds
the model's columns beyond the series columns (exchange, symbol, timeframe), in model order
(candles ``[ts, open, high, low, close, volume]``). Three formats:

- JSON: ``{"exchange", "symbol", "timeframe", "rows": [[...], ...]}`` (rows as arrays in
  that order, or objects keyed by column name);
- NDJSON: one row per line (array or object), the series in the query string;
- CSV: a header naming the row columns (any order), the series in the query string.

This is the cheap, per-request first pass (what pydantic would check of each cell: shape,
required values, numbers, integral timestamps, duplicate keys), vectorised with pandas so a
100,000-row body costs milliseconds. The model's rules (high >= low, prices positive ...)
run afterwards on the whole group in ``committer``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import orjson
import pandas as pd
import pandera.dtypes as pa_dtypes
from pandas.api.types import infer_dtype

from crypto_pipelines.api.errors import RowError
from crypto_pipelines.domain.datasets import MarketDataset

MAX_ERRORS: Final = 1_000
"""Errors listed in one answer (the count is always in ``detail``)."""


class BodyError(ValueError):
    """The body as a whole cannot be read; ``errors`` names what."""

    def __init__(self, detail: str, errors: list[RowError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class TooManyRows(ValueError):
    pass


def row_columns(spec: MarketDataset) -> tuple[str, ...]:
    """The columns of one row of ``spec``, in model order, without the series columns."""
    return tuple(c for c in spec.table.columns if c not in spec.series_columns)


@dataclass(frozen=True, slots=True)
class Batch:
    """A parsed body: its series fields and rows (not yet checked cell by cell)."""

    series: dict[str, Any]
    rows: list[Any]


def parse_json(body: bytes) -> Batch:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyError(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BodyError("body must be a JSON object with the series fields and 'rows'")
    rows = data.get("rows")
    if not isinstance(rows, list):
        raise BodyError(
            "'rows' must be a list", [RowError(field="rows", rule="list_type", message="")]
        )
    return Batch({k: v for k, v in data.items() if k != "rows"}, rows)


def parse_ndjson(body: bytes, series: Mapping[str, Any]) -> Batch:
    rows: list[Any] = []
    errors: list[RowError] = []
    for number, line in enumerate(body.splitlines()):
        if not line.strip():
            continue
        try:
            rows.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            errors.append(
                RowError(index=len(rows), rule="json_invalid", message=f"line {number + 1}: {exc}")
            )
            rows.append(None)
    if errors:
        raise BodyError(f"{len(errors)} line(s) are not valid JSON", errors[:MAX_ERRORS])
    return Batch(dict(series), rows)


def parse_csv(body: bytes, series: Mapping[str, Any], columns: Sequence[str]) -> Batch:
    if not body.strip():
        return Batch(dict(series), [])
    try:
        frame = pd.read_csv(io.BytesIO(body), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise BodyError(f"body is not valid CSV: {str(exc).strip()}") from None
    header = [str(c).strip() for c in frame.columns]
    unknown = [c for c in header if c not in columns]
    if unknown:
        raise BodyError(
            f"CSV header has unknown column(s) {unknown}; a row's columns are {list(columns)}",
            [RowError(field=c, rule="unknown_column") for c in unknown],
        )
    frame.columns = header
    records = frame.replace({"": None}).to_dict("records")
    return Batch(dict(series), records)


def rows_frame(
    spec: MarketDataset,
    rows: list[Any],
    series: Mapping[str, Any],
    batches: np.ndarray | None = None,
) -> tuple[pd.DataFrame, list[RowError]]:
    """``rows`` (arrays or objects) -> a frame of the model's columns with plain dtypes, and
    the cells that cannot be what the model asks (shape, required, number, integer, a key
    repeated within one batch). ``series``: each series column's value (one for all rows, or
    an array per row); ``batches``: which request each row came from, when ``rows`` joins
    several (a key may repeat across requests, not within one)."""
    columns = row_columns(spec)
    errors: list[RowError] = []
    cells = _cells(rows, columns, errors)
    bad_rows = {e.index for e in errors}
    model = spec.table.schema.columns
    out: dict[str, Any] = {}
    for name, values in zip(columns, cells, strict=True):
        column = model[name]
        missing = pd.isna(values)
        if not column.nullable:
            errors.extend(
                RowError(index=i, field=name, rule="required", message=f"{name} must not be null")
                for i in map(int, np.flatnonzero(missing))
                if i not in bad_rows
            )
        if pa_dtypes.is_string(column.dtype):
            out[name] = _strings(name, values, missing, errors)
        else:
            numbers = _numbers(name, values, missing, errors)
            out[name] = (
                _integers(name, numbers, errors) if pa_dtypes.is_int(column.dtype) else numbers
            )
    typed = pd.DataFrame(out, columns=list(columns))
    for name in spec.series_columns:
        typed.insert(list(spec.table.columns).index(name), name, series[name])
    typed = typed[list(spec.table.columns)]
    errors.extend(_duplicates(spec, typed, batches, {e.index for e in errors}))
    errors.sort(key=lambda e: (e.index if e.index is not None else -1, e.field or ""))
    return typed, errors


_NUMBERS: Final = frozenset({"floating", "integer", "mixed-integer-float", "empty"})
"""What ``infer_dtype`` calls a column of numbers and nulls only (no bools, no strings)."""


def _cells(rows: list[Any], columns: tuple[str, ...], errors: list[RowError]) -> list[np.ndarray]:
    """Each column's cells as an object array; a row of the wrong shape is reported and
    taken as all null. The common case (every row an array of the right length) is one
    transposition."""
    width = len(columns)
    if not rows:
        return [np.empty(0, dtype=object) for _ in columns]
    if all(type(row) is list and len(row) == width for row in rows):
        shaped: list[Any] = rows
    else:
        shaped = []
        for index, row in enumerate(rows):
            if isinstance(row, list) and len(row) == width:
                shaped.append(row)
                continue
            if isinstance(row, list):
                message = f"a row has {width} values {list(columns)}, this one {len(row)}"
                errors.append(RowError(index=index, rule="row_length", message=message))
            elif isinstance(row, dict):
                unknown = [k for k in row if k not in columns]
                if unknown:
                    errors.append(
                        RowError(
                            index=index,
                            field=str(unknown[0]),
                            rule="unknown_column",
                            message=f"a row's columns are {list(columns)}",
                        )
                    )
                shaped.append([row.get(c) for c in columns])
                continue
            else:
                message = "a row is an array or an object"
                errors.append(RowError(index=index, rule="row_type", message=message))
            shaped.append([None] * width)
    # One C-level conversion of the rows into a 2-D object array (transposing with zip costs
    # ten times more); cells that are themselves lists would make it 3-D: then cell by cell.
    try:
        table = np.array(shaped, dtype=object)
    except ValueError:  # ragged nesting numpy refuses to shape
        table = np.empty(0, dtype=object)
    if table.shape == (len(shaped), width):
        return [np.ascontiguousarray(table[:, j]) for j in range(width)]
    out = []
    for values in zip(*shaped, strict=True):
        array = np.empty(len(values), dtype=object)
        array[:] = values
        out.append(array)
    return out


def _numbers(
    name: str, values: np.ndarray, missing: np.ndarray, errors: list[RowError]
) -> np.ndarray:
    """The cells as float64 (null: NaN); anything but a number (a bool, a non-numeric
    string) reported. Numeric strings (CSV) are numbers."""
    if infer_dtype(values, skipna=True) in _NUMBERS:
        return values.astype("float64")
    is_bool = np.fromiter((type(v) is bool for v in values), dtype=bool, count=len(values))
    numbers = pd.to_numeric(pd.Series(values).mask(is_bool), errors="coerce")
    floats = numbers.to_numpy(dtype="float64", na_value=np.nan)
    for index in map(int, np.flatnonzero((np.isnan(floats) & ~missing) | is_bool)):
        errors.append(
            RowError(
                index=index,
                field=name,
                rule="number_type",
                message=f"{name} must be a number, got {values[index]!r}",
            )
        )
    return floats


def _integers(name: str, floats: np.ndarray, errors: list[RowError]) -> np.ndarray:
    """Whole numbers as int64 (a fraction or an out-of-range value reported; 0 in its
    place, the row being refused anyway)."""
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(floats) & (np.floor(floats) == floats) & (np.abs(floats) < 2**62)
    for index in map(int, np.flatnonzero(~whole & ~np.isnan(floats))):
        errors.append(
            RowError(index=index, field=name, rule="int_type", message=f"{name} must be an integer")
        )
    return np.where(whole, floats, 0).astype("int64")


def _strings(
    name: str, values: np.ndarray, missing: np.ndarray, errors: list[RowError]
) -> np.ndarray:
    """The cells as str (integers, as trade ids often are, written out); anything else
    (a bool, a fraction, an object) reported."""
    if infer_dtype(values, skipna=True) in ("string", "empty"):
        return values
    text = np.empty(len(values), dtype=object)
    text[:] = [v if v is None or isinstance(v, str) else _text(v) for v in values]
    for index in map(int, np.flatnonzero(pd.isna(text) & ~missing)):
        errors.append(
            RowError(
                index=index,
                field=name,
                rule="string_type",
                message=f"{name} must be a string or an integer",
            )
        )
    return text


def _text(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return None


def _duplicates(
    spec: MarketDataset, frame: pd.DataFrame, batches: np.ndarray | None, bad: set[int | None]
) -> list[RowError]:
    """Rows whose key an earlier row of the same batch has (rows already refused aside).
    ``batches`` is non-decreasing (each batch's rows together), so a batch starts where its
    number first appears."""
    keyed = frame[list(spec.row_key)].copy()
    keyed["__batch"] = 0 if batches is None else batches
    key = list(keyed.columns)
    repeated = keyed.duplicated(subset=key, keep="first").to_numpy()
    if not repeated.any():
        return []
    first: dict[tuple[Any, ...], int] = {}
    errors = []
    for index, values in enumerate(keyed.itertuples(index=False, name=None)):
        if index in bad:
            continue
        if values in first:
            start = 0 if batches is None else int(np.searchsorted(batches, batches[index]))
            errors.append(
                RowError(
                    index=index,
                    field=",".join(spec.row_key),
                    rule="unique_key",
                    message=f"same key as row {first[values] - start}",
                )
            )
        else:
            first[values] = index
    return errors
