"""The ingestion bodies and answers as pydantic models, for the OpenAPI page.

Each dataset's body model is built from its Pandera model (``bodies.row_columns``: the row's
columns and their types), so the documented row layout cannot drift from what is stored.
The routes read the raw body themselves (``bodies``): one request may hold 100,000 rows,
which pydantic would check one by one at many times the cost.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pandera.dtypes as pa_dtypes
from pydantic import BaseModel, ConfigDict, Field, create_model

from crypto_pipelines.api.bodies import row_columns
from crypto_pipelines.domain.datasets import MarketDataset

EXAMPLE_ROWS: dict[str, list[list[Any]]] = {
    "ohlcv": [[1704067200000, 42283.58, 42298.62, 42261.02, 42298.61, 35.92724]],
    "trades": [["3351806432", 1704067200112, "buy", 42283.58, 0.0012]],
    "funding_rates": [[1704067200000, 0.0001]],
}
EXAMPLE_SERIES: dict[str, dict[str, str]] = {
    "ohlcv": {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m"},
    "trades": {"exchange": "binance", "symbol": "BTC/USDT"},
    "funding_rates": {"exchange": "binance", "symbol": "BTC/USDT:USDT"},
}


class IngestResult(BaseModel):
    """Rows committed by one request: new keys, changed values, already stored as sent."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"inserted": 498, "updated": 2, "unchanged": 0}]}
    )

    inserted: int
    updated: int
    unchanged: int


def _cell_type(spec: MarketDataset, name: str) -> Any:
    column = spec.table.schema.columns[name]
    dtype = column.dtype
    if pa_dtypes.is_int(dtype):
        kind: Any = int
    elif pa_dtypes.is_string(dtype):
        kind = str | int
    else:
        kind = float
    return kind | None if column.nullable else kind


@cache
def body_model(spec: MarketDataset) -> type[BaseModel]:
    columns = row_columns(spec)
    row = tuple.__class_getitem__(tuple(_cell_type(spec, c) for c in columns))
    fields: dict[str, Any] = {
        name: (str, Field(description=f"{name} of every row")) for name in spec.series_columns
    }
    fields["rows"] = (
        list[row],  # type: ignore[valid-type]
        Field(description=f"rows as arrays {list(columns)} (or objects keyed by those names)"),
    )
    example: dict[str, Any] = {
        **EXAMPLE_SERIES.get(spec.name, {}),
        "rows": EXAMPLE_ROWS.get(spec.name, []),
    }
    return create_model(
        f"{spec.name.title().replace('_', '')}Body",
        __config__=ConfigDict(json_schema_extra={"examples": [example]}),
        **fields,
    )
