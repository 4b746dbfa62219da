"""The venues the loader knows, as data (``VenueSpec``), chosen from a registry by ccxt id."""

from __future__ import annotations

from collections.abc import Mapping

from crypto_pipelines.exchanges.errors import UnsupportedRequest
from crypto_pipelines.exchanges.venues.binance import BINANCE
from crypto_pipelines.exchanges.venues.bybit import BYBIT
from crypto_pipelines.exchanges.venues.coinbaseexchange import COINBASE_EXCHANGE
from crypto_pipelines.exchanges.venues.okx import OKX
from crypto_pipelines.exchanges.venues.spec import (
    Anchor,
    CandleColumns,
    FundingSpec,
    MarketKind,
    OhlcvSpec,
    OpenInterestSpec,
    OpenInterestValue,
    Quirk,
    RangeQuery,
    RateBudget,
    TimeFormat,
    TradeFields,
    TradesPaging,
    TradesSpec,
    VenueSpec,
    WsFundingSpec,
    frozen,
)

VENUES: Mapping[str, VenueSpec] = frozen(
    {v.id: v for v in (BINANCE, OKX, BYBIT, COINBASE_EXCHANGE)}
)


def get_venue(name: str) -> VenueSpec:
    """The spec of a supported exchange by ccxt id; anything else is refused by name, so a
    typo or an exchange nobody has described fails before any request is made."""
    try:
        return VENUES[name]
    except KeyError:
        raise UnsupportedRequest(
            f"unknown exchange {name!r}: supported are {', '.join(sorted(VENUES))}"
        ) from None


__all__ = [
    "VENUES",
    "Anchor",
    "CandleColumns",
    "FundingSpec",
    "MarketKind",
    "OhlcvSpec",
    "OpenInterestSpec",
    "OpenInterestValue",
    "Quirk",
    "RangeQuery",
    "RateBudget",
    "TimeFormat",
    "TradeFields",
    "TradesPaging",
    "TradesSpec",
    "VenueSpec",
    "WsFundingSpec",
    "get_venue",
]
