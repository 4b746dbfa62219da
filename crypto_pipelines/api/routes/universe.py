"""Routes: the universe (``/v1/universe``): what is collected, and symbols added to or
removed from an exchange at run time.

The universe file stays the base and is never rewritten: a change is a row of
``universe_changes`` (the latest action per exchange and symbol, with the key that made it),
applied on top of the file wherever the universe is used (``ApiServices.current_universe``
for ingestion, ``defs.universe_sync`` for the dynamic partitions, within a sensor tick).
Only exchanges the file configures take changes: an exchange needs its assets, jobs and
schedules, which the code location builds from the file. After a change this process's
cached universe is dropped, so the next ingestion request already sees it; other API
workers see it within their ``universe_ttl_s``.
"""

from __future__ import annotations

import time
from datetime import date
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from crypto_pipelines.api.auth import require_key
from crypto_pipelines.api.errors import ApiError, ErrorBody, RowError, refusals
from crypto_pipelines.api.services import ApiServices
from crypto_pipelines.api.settings import ApiKey
from crypto_pipelines.domain.symbols import SymbolError, parse_symbol
from crypto_pipelines.domain.universe import ExchangeUniverse, Universe, with_changes
from crypto_pipelines.exchanges.venues import VENUES
from crypto_pipelines.storage.universe_changes import (
    Action,
    UniverseChange,
    record_change,
    universe_changes,
)

router = APIRouter(prefix="/v1/universe", tags=["universe"])

ERRORS: Final = refusals()

CHANGE_EXAMPLE: Final[dict[str, Any]] = {
    "symbol": "SOL/USDT",
    "action": "add",
    "changed_at": 1704067200000,
    "changed_by": "desk",
}
CHANGE_RESULT_EXAMPLE: Final[dict[str, Any]] = {
    "exchange": "binance",
    **CHANGE_EXAMPLE,
    "recorded": True,
    "symbols": ["BTC/USDT", "ETH/USDT", "BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT"],
}
EXCHANGE_EXAMPLE: Final[dict[str, Any]] = {
    "file_symbols": ["BTC/USDT", "ETH/USDT", "BTC/USDT:USDT", "ETH/USDT:USDT"],
    "added": ["SOL/USDT"],
    "removed": [],
    "symbols": CHANGE_RESULT_EXAMPLE["symbols"],
    "filtered": False,
    "timeframes": ["1m", "1h", "1d"],
    "datasets": ["ohlcv", "trades", "funding_rates", "open_interest"],
    "start": "2024-01-01",
    "changes": [CHANGE_EXAMPLE],
}


class ChangeView(BaseModel):
    """A stored run-time change: the latest action on one symbol of an exchange."""

    model_config = ConfigDict(json_schema_extra={"examples": [CHANGE_EXAMPLE]})

    symbol: str
    action: Action
    changed_at: int = Field(description="epoch ms UTC")
    changed_by: str = Field(description="the name of the API key that made it")


class ExchangeView(BaseModel):
    """One exchange of the effective universe."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXCHANGE_EXAMPLE]})

    file_symbols: list[str] = Field(description="the symbols the universe file lists")
    added: list[str] = Field(description="symbols added through the API (not in the file)")
    removed: list[str] = Field(description="symbols whose latest change is a removal")
    symbols: list[str] = Field(description="the effective symbols: file + added - removed")
    filtered: bool = Field(description="listing filters also select markets (not listed here)")
    timeframes: list[str]
    datasets: list[str] = Field(description="the datasets collected for the symbols")
    start: date
    changes: list[ChangeView]


class UniverseView(BaseModel):
    """The effective universe: the file's, with the run-time changes applied."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"source": "live", "exchanges": {"binance": EXCHANGE_EXAMPLE}}]
        }
    )

    source: str = Field(description="`live` or `replay` (where the exchange clients go)")
    exchanges: dict[str, ExchangeView]


class SymbolBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"symbol": "SOL/USDT"}]}
    )

    symbol: str = Field(description="ccxt unified symbol: BASE/QUOTE or BASE/QUOTE:SETTLE")


class SymbolChangeResult(BaseModel):
    """The answer to a change: what was asked, whether a change was stored (False: the
    universe already said so), and the exchange's effective symbols afterwards."""

    model_config = ConfigDict(json_schema_extra={"examples": [CHANGE_RESULT_EXAMPLE]})

    exchange: str
    symbol: str
    action: Action
    recorded: bool
    changed_at: int | None
    changed_by: str | None
    symbols: list[str]


def _services(request: Request) -> ApiServices:
    services: ApiServices = request.app.state.services
    return services


def _effective(services: ApiServices, changes: list[UniverseChange]) -> Universe:
    return with_changes(services.universe, ((c.exchange, c.symbol, c.action) for c in changes))


def _view(
    file: ExchangeUniverse, config: ExchangeUniverse, changes: list[UniverseChange]
) -> ExchangeView:
    datasets = dict.fromkeys(spec.name for spec, _timeframe in config.series_datasets())
    return ExchangeView(
        file_symbols=list(file.symbols),
        added=[s for s in config.symbols if s not in file.symbols],
        removed=[c.symbol for c in changes if c.action == "remove"],
        symbols=list(config.symbols),
        filtered=config.filters is not None,
        timeframes=list(config.timeframes),
        datasets=list(datasets),
        start=config.start,
        changes=[
            ChangeView(
                symbol=c.symbol, action=c.action, changed_at=c.changed_at, changed_by=c.changed_by
            )
            for c in changes
        ],
    )


@router.get("", dependencies=[Depends(require_key)], response_model=UniverseView, responses=ERRORS)
def get_universe(request: Request) -> UniverseView:
    """The effective universe: per exchange the file's symbols, those added and removed
    through the API, the result, and what is collected for them. Read from the store on
    each request (not the cached universe), so it shows every worker's changes. Refused only
    without a valid key (401) or when its request budget is spent (429)."""
    services = _services(request)
    changes = universe_changes(services.store.engine)
    effective = _effective(services, changes)
    return UniverseView(
        source=effective.source,
        exchanges={
            name: _view(
                services.universe.exchanges[name],
                config,
                [c for c in changes if c.exchange == name],
            )
            for name, config in effective.exchanges.items()
        },
    )


def _refuse(status_code: int, field: str, rule: str, message: str) -> ApiError:
    reason = "not_found" if status_code == 404 else "invalid"
    return ApiError(
        status_code,
        message,
        reason=reason,
        errors=[RowError(field=field, rule=rule, message=message)],
    )


def _configured(services: ApiServices, exchange: str, status_code: int) -> None:
    if exchange not in services.universe.exchanges:
        known = ", ".join(services.universe.exchanges)
        message = f"exchange {exchange!r} is not in the universe file (configured: {known})"
        raise _refuse(status_code, "exchange", "unknown_exchange", message)


def _change(
    services: ApiServices, key: ApiKey, exchange: str, symbol: str, action: Action
) -> SymbolChangeResult:
    """Store ``action`` unless the effective universe already says so (nothing stored)."""
    changes = universe_changes(services.store.engine, exchange)
    present = symbol in _effective(services, changes).exchanges[exchange].symbols
    recorded = present != (action == "add")
    if recorded:
        now_ms = int(time.time() * 1000)
        record_change(services.store.engine, exchange, symbol, action, by=key.name, now_ms=now_ms)
        services.forget_universe()
        changes = universe_changes(services.store.engine, exchange)
    last = next((c for c in changes if c.symbol == symbol), None)
    return SymbolChangeResult(
        exchange=exchange,
        symbol=symbol,
        action=action,
        recorded=recorded,
        changed_at=last.changed_at if last is not None else None,
        changed_by=last.changed_by if last is not None else None,
        symbols=list(_effective(services, changes).exchanges[exchange].symbols),
    )


@router.post(
    "/{exchange}/symbols",
    response_model=SymbolChangeResult,
    status_code=status.HTTP_201_CREATED,
    responses={
        **ERRORS,
        200: {"model": SymbolChangeResult, "description": "already in the universe"},
        422: {"model": ErrorBody, "description": "not a symbol, or an exchange the file lacks"},
    },
)
def add_symbol(
    request: Request,
    response: Response,
    key: Annotated[ApiKey, Depends(require_key)],
    exchange: str,
    body: SymbolBody,
) -> SymbolChangeResult:
    """Add a symbol to a configured exchange (201), or re-add one removed before (a file
    symbol included); 200 when it is in the universe already. The partitions follow within
    a tick of ``universe_partitions_sensor``.

    Refused with 422 for an exchange the universe file does not configure
    (``unknown_exchange``), a symbol that is not a ccxt unified one (``symbol_unified``) or of
    a market type the exchange does not list (``market_type``)."""
    services = _services(request)
    _configured(services, exchange, 422)
    try:
        parsed = parse_symbol(body.symbol)
    except SymbolError as exc:
        raise _refuse(422, "symbol", "symbol_unified", str(exc)) from None
    venue = VENUES.get(exchange)
    if venue is not None and parsed.market_type not in venue.market_types:
        message = f"{exchange} lists no {parsed.market_type} markets: {body.symbol!r}"
        raise _refuse(422, "symbol", "market_type", message)
    result = _change(services, key, exchange, body.symbol, "add")
    if not result.recorded:
        response.status_code = status.HTTP_200_OK
    return result


@router.delete(
    "/{exchange}/symbols/{symbol:path}",
    response_model=SymbolChangeResult,
    responses={**ERRORS, 404: {"model": ErrorBody, "description": "not in the universe"}},
)
def remove_symbol(
    request: Request,
    key: Annotated[ApiKey, Depends(require_key)],
    exchange: str,
    symbol: str,
) -> SymbolChangeResult:
    """Remove a symbol from an exchange's effective universe (a file symbol is hidden, the
    file is not touched); 404 when it is not there. Stored data and partitions' history
    stay; the sensor drops its partitions within a tick.

    Refused with 404 for an exchange the universe file does not configure
    (``unknown_exchange``) or a symbol not in its effective universe (``not_in_universe``)."""
    services = _services(request)
    _configured(services, exchange, 404)
    result = _change(services, key, exchange, symbol, "remove")
    if not result.recorded:
        message = f"{symbol!r} is not in {exchange}'s universe"
        raise _refuse(404, "symbol", "not_in_universe", message)
    return result
