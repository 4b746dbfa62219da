"""The catalog's records and ``PUT`` bodies (``routes.catalog``) as pydantic models, with the
examples the OpenAPI page shows (Binance's BTC/USDT spot market and BTC/USDT:USDT perpetual).

The record models hold the Pandera models' columns in order, with their types and nullability
(``crypto_pipelines_tests/api/test_catalog.py`` fails when they drift apart).
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field

from crypto_pipelines.domain.checks import TS_MAX_MS, TS_MIN_MS

PAIR_BODY_EXAMPLE: Final[dict[str, Any]] = {
    "price_tick": 0.01,
    "amount_step": 0.00001,
    "min_amount": 0.00001,
    "active": True,
    "listed_ms": 1502942400000,
}
PAIR_EXAMPLE: Final[dict[str, Any]] = {
    "exchange": "binance",
    "symbol": "BTC/USDT",
    "base": "BTC",
    "quote": "USDT",
    **PAIR_BODY_EXAMPLE,
    "delisted_ms": None,
}
PERP_BODY_EXAMPLE: Final[dict[str, Any]] = {
    "linear": True,
    "contract_size": 1.0,
    "price_tick": 0.1,
    "amount_step": 0.001,
    "min_amount": 0.001,
    "funding_interval_ms": 28_800_000,
    "active": True,
    "listed_ms": 1569398400000,
}
PERP_EXAMPLE: Final[dict[str, Any]] = {
    "exchange": "binance",
    "symbol": "BTC/USDT:USDT",
    "base": "BTC",
    "quote": "USDT",
    "settle": "USDT",
    **PERP_BODY_EXAMPLE,
    "delisted_ms": None,
}

EpochMs = Annotated[int, Field(ge=TS_MIN_MS, lt=TS_MAX_MS, description="epoch ms UTC")]


class AssetRecord(BaseModel):
    """A row of ``crypto_assets``: a currency code as ccxt unifies it."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"code": "BTC"}]})

    code: str


class PairRecord(BaseModel):
    """A row of ``crypto_pairs``: a spot market (ticks and steps None when unpublished)."""

    model_config = ConfigDict(json_schema_extra={"examples": [PAIR_EXAMPLE]})

    exchange: str
    symbol: str
    base: str
    quote: str
    price_tick: float | None = None
    amount_step: float | None = None
    min_amount: float | None = None
    active: bool = True
    listed_ms: int | None = None
    delisted_ms: int | None = None


class PerpRecord(BaseModel):
    """A row of ``crypto_perps``: a perpetual swap (linear = settled in the quote)."""

    model_config = ConfigDict(json_schema_extra={"examples": [PERP_EXAMPLE]})

    exchange: str
    symbol: str
    base: str
    quote: str
    settle: str
    linear: bool
    contract_size: float | None = None
    price_tick: float | None = None
    amount_step: float | None = None
    min_amount: float | None = None
    funding_interval_ms: int | None = None
    active: bool = True
    listed_ms: int | None = None
    delisted_ms: int | None = None


class _Body(BaseModel):
    # No NaN or infinity: JSON has neither, and "inf" as a string would pass "> 0" checks.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class PairBody(_Body):
    """A spot market as ``PUT`` replaces it. ``exchange``/``symbol`` come from the path (if
    sent, equal to it); ``base``/``quote`` default to the symbol's. Omitted optional fields
    are stored as unknown (a ``PUT`` replaces the whole record)."""

    model_config = ConfigDict(json_schema_extra={"examples": [PAIR_BODY_EXAMPLE]})

    exchange: str | None = None
    symbol: str | None = None
    base: str | None = None
    quote: str | None = None
    price_tick: float | None = None
    amount_step: float | None = None
    min_amount: float | None = None
    active: bool = True
    listed_ms: EpochMs | None = None
    delisted_ms: EpochMs | None = None


class PerpBody(_Body):
    """A perpetual swap as ``PUT`` replaces it: as ``PairBody``, plus ``settle`` (default:
    the symbol's) and ``linear`` (default: settled in the quote currency)."""

    model_config = ConfigDict(json_schema_extra={"examples": [PERP_BODY_EXAMPLE]})

    exchange: str | None = None
    symbol: str | None = None
    base: str | None = None
    quote: str | None = None
    settle: str | None = None
    linear: bool | None = None
    contract_size: float | None = None
    price_tick: float | None = None
    amount_step: float | None = None
    min_amount: float | None = None
    funding_interval_ms: int | None = None
    active: bool = True
    listed_ms: EpochMs | None = None
    delisted_ms: EpochMs | None = None
