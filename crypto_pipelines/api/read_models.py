"""The answers of the read routes (``routes.reads``) as pydantic models, for the OpenAPI page:
a page of stored rows per dataset and a symbol's latest state, each with an example.

Rows are answered in the row layout of the ingestion bodies (``bodies.row_columns``) and the
models are derived from the datasets' Pandera models, as the body models (``models``) are.
A page is keyset-paged in ``page_order``; its ``next`` cursor (``encode_cursor``) is the
last row's position in that order.
"""

from __future__ import annotations

import base64
import functools
import operator
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import orjson
import pandera.dtypes as pa_dtypes
from pydantic import BaseModel, ConfigDict, Field, create_model

from crypto_pipelines.api.bodies import row_columns
from crypto_pipelines.api.models import EXAMPLE_ROWS, EXAMPLE_SERIES
from crypto_pipelines.domain.datasets import OHLCV, TRADES, MarketDataset, get_market_dataset


def page_order(spec: MarketDataset) -> tuple[str, ...]:
    """The columns a read of ``spec`` is ordered and paged by: ``ts``, then the rest of the
    row key (trades: ``(ts, trade_id)``)."""
    return ("ts", *(c for c in spec.row_key if c != "ts"))


def encode_cursor(position: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(position))).rstrip(b"=").decode()


def row_type(spec: MarketDataset) -> Any:
    """The type of one row of ``spec`` in an answer: an array of the row's width whose cells
    are of the column types of its dataset (from the Pandera model, as the body models).

    Not the body models' tuple (``prefixItems``), precise as that is: schemathesis (4.32)
    cannot validate responses against ``prefixItems`` and reports the operation as an error."""
    columns = spec.table.schema.columns
    cells: set[Any] = set()
    for name in row_columns(spec):
        dtype = columns[name].dtype
        if pa_dtypes.is_int(dtype):
            cells.add(int)
        elif pa_dtypes.is_string(dtype):
            cells.add(str)
        else:
            cells.add(float)
        if columns[name].nullable:
            cells.add(type(None))
    order = (int, float, str, type(None))
    cell = functools.reduce(operator.or_, (kind for kind in order if kind in cells))
    width = len(row_columns(spec))
    return Annotated[list[cell], Field(min_length=width, max_length=width)]  # type: ignore[valid-type]


# --- pages -------------------------------------------------------------------------------

_NEXT_ROWS: dict[str, list[list[Any]]] = {
    "ohlcv": [[1704067260000, 42298.62, 42320.0, 42298.61, 42318.01, 28.31506]],
    "trades": [["3351806433", 1704067200112, "sell", 42283.57, 0.05]],
    "funding_rates": [[1704096000000, 0.000129]],
}
"""Rows following ``models.EXAMPLE_ROWS`` in the page examples."""


def page_example(spec: MarketDataset) -> dict[str, Any]:
    """A page of ``spec``: two rows and the cursor of the next page. (Not a last page: the
    OpenAPI document drops null values, so ``"next": null`` would show as a missing field.)"""
    rows = [*EXAMPLE_ROWS.get(spec.name, []), *_NEXT_ROWS.get(spec.name, [])]
    columns = row_columns(spec)
    position = [rows[-1][columns.index(name)] for name in page_order(spec)] if rows else []
    return {
        **EXAMPLE_SERIES.get(spec.name, {}),
        "rows": rows,
        "next": encode_cursor(position) if rows else None,
    }


def page_model(spec: MarketDataset) -> type[BaseModel]:
    fields: dict[str, Any] = {name: (str, ...) for name in spec.series_columns}
    fields["rows"] = (
        list[row_type(spec)],  # type: ignore[misc]
        Field(
            description=f"rows as arrays {list(row_columns(spec))}, in {list(page_order(spec))} order"
        ),
    )
    fields["next"] = (
        str | None,
        Field(description="pass as `cursor` for the next page; null on the last page"),
    )
    return create_model(
        f"{spec.name.title().replace('_', '')}Page",
        __config__=ConfigDict(json_schema_extra={"examples": [page_example(spec)]}),
        **fields,
    )


# --- the latest state of a symbol --------------------------------------------------------

TRADE_EXAMPLE: list[Any] = EXAMPLE_ROWS["trades"][0]
BOOK_EXAMPLE: dict[str, Any] = {
    "ts": 1704067200250,
    "bid": {"price": 42283.57, "amount": 1.53218},
    "ask": {"price": 42283.58, "amount": 0.21403},
}


class BookLevel(BaseModel):
    price: float
    amount: float


class TopOfBook(BaseModel):
    """The best bid and ask of the newest order book snapshot."""

    model_config = ConfigDict(json_schema_extra={"examples": [BOOK_EXAMPLE]})

    ts: int
    bid: BookLevel | None
    ask: BookLevel | None


class FundingState(BaseModel):
    """A perpetual's funding: from the hot cache, the mark price and the rate the venue
    announced for the settlement at `next_funding_ms` (`settled` false); from SQL, the last
    settled rate at `ts` (`settled` true)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "ts": 1704096000000,
                    "mark_price": 42301.2,
                    "funding_rate": 0.0001,
                    "next_funding_ms": 1704124800000,
                    "settled": False,
                }
            ]
        }
    )

    ts: int | None
    mark_price: float | None
    funding_rate: float | None
    next_funding_ms: int | None
    settled: bool


Source = Literal["redis", "sql"]
_CANDLES = get_market_dataset(OHLCV)
_CANDLE_ROW = row_type(_CANDLES)
LATEST_EXAMPLE: dict[str, Any] = {
    "exchange": "binance",
    "symbol": "BTC/USDT",
    "source": "redis",
    "trade": TRADE_EXAMPLE,
    "candles": {
        "1m": {
            "closed": EXAMPLE_ROWS["ohlcv"][0],
            "forming": [1704067260000, 42298.62, 42305.0, 42290.1, 42301.5, 3.10245],
        },
        "1h": {
            "closed": [1704063600000, 42150.0, 42310.0, 42120.35, 42283.58, 812.33041],
            "forming": [1704067200000, 42283.58, 42305.0, 42261.02, 42301.5, 39.02969],
        },
    },
    "book": BOOK_EXAMPLE,
    "funding": None,
}
LatestCandles = create_model(
    "LatestCandles",
    __config__=ConfigDict(json_schema_extra={"examples": [LATEST_EXAMPLE["candles"]["1m"]]}),
    closed=(
        _CANDLE_ROW | None,
        Field(description=f"the newest closed candle {list(row_columns(_CANDLES))}"),
    ),
    forming=(
        _CANDLE_ROW | None,
        Field(description="the candle still forming (hot cache only; never stored)"),
    ),
)
LatestAnswer = create_model(
    "Latest",
    __config__=ConfigDict(json_schema_extra={"examples": [LATEST_EXAMPLE]}),
    exchange=(str, ...),
    symbol=(str, ...),
    source=(
        Source,
        Field(description="`redis`: the stream's hot cache; `sql`: the stored rows"),
    ),
    trade=(
        row_type(get_market_dataset(TRADES)) | None,
        Field(description=f"the newest trade {list(row_columns(get_market_dataset(TRADES)))}"),
    ),
    candles=(
        dict[str, LatestCandles],  # type: ignore[valid-type]
        Field(description="per timeframe, shortest first"),
    ),
    book=(TopOfBook | None, ...),
    funding=(
        FundingState | None,
        Field(description="perpetuals: announced (hot cache) or last settled (SQL) funding"),
    ),
)
