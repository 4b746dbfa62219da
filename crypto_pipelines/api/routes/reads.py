"""Routes: reads of stored rows (``GET /v1/ohlcv``, ``/v1/trades``, ``/v1/funding-rates``) and
of a symbol's latest state (``GET /v1/latest/{exchange}/{symbol}``).

Stored rows come back in the row layout of the ingestion bodies (``bodies.row_columns``), so
what a client reads it can POST again; the response models are derived from the datasets'
Pandera models, as the body models are (``read_models``). A read is keyset-paged in its key order (trades, keyed by id, in ``(ts,
trade_id)`` order, which is what a reader wants and what the ``(exchange, symbol, ts)`` index
serves): the opaque ``next`` cursor is the last row's position, so a page costs an index range
scan however deep it is, and rows written meanwhile neither shift nor repeat a page. The
reads are plain ``def`` routes: FastAPI runs them in its thread pool, off the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, Final

import orjson
import pandera.dtypes as pa_dtypes
import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from sqlalchemy.engine import Engine

from crypto_pipelines.api.auth import require_key
from crypto_pipelines.api.bodies import row_columns
from crypto_pipelines.api.errors import ApiError, ErrorBody, RowError, refusals
from crypto_pipelines.api.latest import (
    HotCache,
    HotCacheUnavailable,
    Latest,
    latest_from_sql,
)
from crypto_pipelines.api.read_models import (
    LatestAnswer,
    encode_cursor,
    page_model,
    page_order,
)
from crypto_pipelines.api.services import ApiServices
from crypto_pipelines.api.settings import ApiKey, ApiSettings
from crypto_pipelines.domain.checks import is_exchange_id, is_timeframe
from crypto_pipelines.domain.datasets import (
    FUNDING_RATES,
    OHLCV,
    TRADES,
    MarketDataset,
    get_market_dataset,
)
from crypto_pipelines.domain.symbols import SymbolError, parse_symbol
from crypto_pipelines.storage.schema import table_for

log = logging.getLogger(__name__)

DEFAULT_LIMIT: Final = 1_000
MAX_LIMIT: Final = 10_000
MAX_BIGINT: Final = 2**63 - 1
"""The largest value a ``ts`` (BIGINT) can hold: bounds beyond it are refused, not sent to
a database that would fail on them."""

EXCHANGE_PATTERN: Final = r"^[a-z][a-z0-9]*$"
SYMBOL_PATTERN: Final = r"^[A-Za-z0-9.\-]+/[A-Za-z0-9.\-]+(:[A-Za-z0-9.\-]+)?$"
TIMEFRAME_PATTERN: Final = r"^(0*[1-9][0-9]*[smhdw]|[1-9][0-9]*M)$"
CURSOR_PATTERN: Final = r"^[A-Za-z0-9_\-]+$"
"""What the OpenAPI schema says of the parameters, so a client (or a schema-driven test)
knows what is refused with 422. ``check_series`` (the domain's own rules) stays the
authority; a test keeps these patterns in agreement with it."""

ERRORS: Final = refusals(_422="malformed exchange, symbol, timeframe or cursor")


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Closes the app's hot cache client, if a request made one."""
    try:
        yield
    finally:
        cache: HotCache | None = getattr(app.state, "hot_cache", None)
        if cache is not None:
            await cache.close()


router = APIRouter(prefix="/v1", tags=["reads"], lifespan=_lifespan)


# --- request checks ----------------------------------------------------------------------


def _invalid(field: str, rule: str, message: str) -> ApiError:
    return ApiError(
        422, message, reason="invalid", errors=[RowError(field=field, rule=rule, message=message)]
    )


def check_series(exchange: str, symbol: str, timeframe: str | None = None) -> None:
    """422 for an exchange id, symbol or timeframe that no stored row can have; an unknown
    but well-formed one simply has no rows."""
    if not is_exchange_id(exchange):
        raise _invalid("exchange", "exchange_id", f"not a ccxt exchange id: {exchange!r}")
    try:
        parse_symbol(symbol)
    except SymbolError as exc:
        raise _invalid("symbol", "symbol_unified", str(exc)) from None
    if timeframe is not None and not is_timeframe(timeframe):
        raise _invalid(
            "timeframe", "timeframe_valid", f"not a ccxt timeframe (1m, 1h, 1d ...): {timeframe!r}"
        )


# --- paging ------------------------------------------------------------------------------


def decode_cursor(spec: MarketDataset, text: str) -> list[Any]:
    """The position a ``next`` cursor of ``spec`` names; 422 for anything else (a cursor of
    another dataset, an edited one)."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        position = orjson.loads(raw)
    except (binascii.Error, ValueError):
        position = None
    order = page_order(spec)
    columns = spec.table.schema.columns
    if not isinstance(position, list) or len(position) != len(order):
        position = None
    else:
        for name, value in zip(order, position, strict=True):
            if pa_dtypes.is_int(columns[name].dtype):
                ok = type(value) is int and -MAX_BIGINT <= value <= MAX_BIGINT
            else:
                ok = isinstance(value, str) and "\x00" not in value
            if not ok:
                position = None
                break
    if position is None:
        raise _invalid(
            "cursor", "cursor_invalid", "not a cursor of this read (use 'next' as given)"
        )
    return position


def _after(
    table: sa.Table, order: Sequence[str], position: Sequence[Any]
) -> sa.ColumnElement[bool]:
    """Rows after ``position`` in ``order`` (lexicographic), written as a plain OR of ANDs,
    which SQLite and PostgreSQL both plan as a range on the leading column."""
    cols = [table.c[name] for name in order]
    return sa.or_(
        *(
            sa.and_(*(cols[j] == position[j] for j in range(i)), cols[i] > position[i])
            for i in range(len(order))
        )
    )


def read_page(
    engine: Engine,
    spec: MarketDataset,
    series: dict[str, str],
    start: int | None,
    end: int | None,
    limit: int,
    after: Sequence[Any] | None,
) -> tuple[list[list[Any]], list[Any] | None]:
    """Up to ``limit`` rows of one series with ``start <= ts < end`` after ``after``, in the
    row layout; and the last row's position when more rows follow (else None)."""
    table = table_for(spec.name)
    columns = row_columns(spec)
    order = page_order(spec)
    where = [table.c[name] == value for name, value in series.items()]
    if start is not None:
        where.append(table.c.ts >= start)
    if end is not None:
        where.append(table.c.ts < end)
    if after is not None:
        where += [table.c[order[0]] >= after[0], _after(table, order, after)]
    query = (
        sa.select(*(table.c[c] for c in columns))
        .where(*where)
        .order_by(*(table.c[c] for c in order))
        .limit(limit + 1)
    )
    with engine.connect() as connection:
        rows = [list(row) for row in connection.execute(query)]
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, [rows[-1][columns.index(name)] for name in order]


# --- routes ------------------------------------------------------------------------------

ExchangeQuery = Annotated[
    str, Query(pattern=EXCHANGE_PATTERN, description="ccxt exchange id, e.g. binance")
]
SymbolQuery = Annotated[
    str, Query(pattern=SYMBOL_PATTERN, description="ccxt unified symbol, e.g. BTC/USDT")
]
TimeframeQuery = Annotated[
    str, Query(pattern=TIMEFRAME_PATTERN, description="ccxt timeframe, e.g. 1m")
]
StartQuery = Annotated[
    int | None, Query(ge=-MAX_BIGINT, le=MAX_BIGINT, description="first ts (ms), inclusive")
]
EndQuery = Annotated[
    int | None, Query(ge=-MAX_BIGINT, le=MAX_BIGINT, description="last ts (ms), exclusive")
]
LimitQuery = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="rows per page")]
CursorQuery = Annotated[
    str | None,
    Query(max_length=4096, pattern=CURSOR_PATTERN, description="the previous page's `next`"),
]
KeyDep = Annotated[ApiKey, Depends(require_key)]


def _read(
    request: Request,
    spec: MarketDataset,
    series: dict[str, str],
    start: int | None,
    end: int | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    check_series(series["exchange"], series["symbol"], series.get("timeframe"))
    after = decode_cursor(spec, cursor) if cursor is not None else None
    services: ApiServices = request.app.state.services
    rows, last = read_page(services.store.engine, spec, series, start, end, limit, after)
    return {**series, "rows": rows, "next": None if last is None else encode_cursor(last)}


def _route(dataset: str, path: str, summary: str) -> None:
    spec = get_market_dataset(dataset)
    if spec.per_timeframe:

        def endpoint(
            request: Request,
            key: KeyDep,
            exchange: ExchangeQuery,
            symbol: SymbolQuery,
            timeframe: TimeframeQuery,
            start: StartQuery = None,
            end: EndQuery = None,
            limit: LimitQuery = DEFAULT_LIMIT,
            cursor: CursorQuery = None,
        ) -> dict[str, Any]:
            series = {"exchange": exchange, "symbol": symbol, "timeframe": timeframe}
            return _read(request, spec, series, start, end, limit, cursor)

    else:

        def endpoint(  # type: ignore[misc]
            request: Request,
            key: KeyDep,
            exchange: ExchangeQuery,
            symbol: SymbolQuery,
            start: StartQuery = None,
            end: EndQuery = None,
            limit: LimitQuery = DEFAULT_LIMIT,
            cursor: CursorQuery = None,
        ) -> dict[str, Any]:
            series = {"exchange": exchange, "symbol": symbol}
            return _read(request, spec, series, start, end, limit, cursor)

    endpoint.__name__ = f"get_{dataset}"
    router.add_api_route(
        path,
        endpoint,
        methods=["GET"],
        response_model=page_model(spec),
        responses=ERRORS,
        summary=summary,
        description=(
            f"{summary}, `start <= ts < end`, in {list(page_order(spec))} order. A row is "
            f"`{list(row_columns(spec))}`, as in the POST body. Up to `limit` rows a page; "
            "`next` is the cursor of the following page (null on the last). An unknown "
            "series has no rows. Refused with 422 for a malformed exchange, symbol, "
            "timeframe or cursor (a cursor of another read included); 401 without a valid "
            "key, 429 when its request budget is spent."
        ),
    )


_route(OHLCV, "/ohlcv", "Read candles")
_route(TRADES, "/trades", "Read trades")
_route(FUNDING_RATES, "/funding-rates", "Read funding rates")


def _hot_cache(request: Request, url: str) -> HotCache:
    """The app's hot cache reader, made on first use (in the server's event loop); a test
    may install its own (another key prefix) as ``app.state.hot_cache`` first."""
    state = request.app.state
    cache: HotCache | None = getattr(state, "hot_cache", None)
    if cache is None:
        cache = state.hot_cache = HotCache(url)
    return cache


@router.get(
    "/latest/{exchange}/{symbol:path}",
    response_model=LatestAnswer,
    responses={**ERRORS, 404: {"model": ErrorBody, "description": "nothing known of the symbol"}},
    summary="Latest trade, candles, top of book and funding of a symbol",
)
async def get_latest(
    request: Request,
    key: KeyDep,
    exchange: Annotated[str, Path(pattern=EXCHANGE_PATTERN, description="ccxt exchange id")],
    # No pattern here: a path parameter with a '/' cannot be generated from one (schemathesis
    # never does), so the domain's check answers 422 for a malformed symbol instead.
    symbol: Annotated[str, Path(description="ccxt unified symbol, '/' as is")],
) -> dict[str, Any]:
    """The newest trade, the newest closed (and the forming) candle of each timeframe, the
    best bid and ask and, for a perpetual, its funding (announced rate and mark price from the
    hot cache, the last settled rate from SQL). From the stream's Redis hot cache when one is configured and knows the
    symbol, else (or when Redis cannot be reached) from the stored rows; `source` says
    which. The symbol's '/' stays as is: `/v1/latest/binance/BTC/USDT:USDT`.

    Refused with 422 for a malformed exchange or symbol, 404 when neither the hot cache nor
    the stored rows know anything of the symbol."""
    check_series(exchange, symbol)
    settings: ApiSettings = request.app.state.settings
    services: ApiServices = request.app.state.services
    found: Latest | None = None
    source = "redis"
    if settings.redis_url:
        try:
            found = await _hot_cache(request, settings.redis_url).latest(exchange, symbol)
        except HotCacheUnavailable as exc:
            log.warning("hot cache unavailable, reading %s %s from SQL: %s", exchange, symbol, exc)
    if found is None or found.empty:
        source = "sql"
        found = await asyncio.to_thread(latest_from_sql, services.store.engine, exchange, symbol)
    if found.empty:
        raise ApiError(404, f"nothing is known of {exchange} {symbol}", reason="not_found")
    return {
        "exchange": exchange,
        "symbol": symbol,
        "source": source,
        "trade": found.trade,
        "candles": found.candles,
        "book": found.book,
        "funding": found.funding,
    }
