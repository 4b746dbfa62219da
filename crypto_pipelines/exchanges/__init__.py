"""Exchanges: what each venue offers (``venues``), the ccxt client (``client``) and the
generic loaders of candles, trades and funding rates (``loader``). Plain Python: the Dagster
layer builds on it and is not imported here.

    from crypto_pipelines.exchanges import FetchStats, get_venue, iter_ohlcv, make_client

    client = make_client("binance")
    stats = FetchStats()
    for chunk in iter_ohlcv(client, get_venue("binance"), "BTC/USDT", "1m", start, end, stats=stats):
        store(chunk)
"""

from crypto_pipelines.exchanges.calls import FetchStats, RetryPolicy
from crypto_pipelines.exchanges.client import make_client
from crypto_pipelines.exchanges.errors import (
    FetchError,
    InvalidResponse,
    RetriesExhausted,
    UnsupportedRequest,
)
from crypto_pipelines.exchanges.loader import (
    FUNDING_COLUMNS,
    OHLCV_COLUMNS,
    TRADE_FRAME_COLUMNS,
    exchange_time_ms,
    fetch_markets,
    iter_funding_rates,
    iter_ohlcv,
    iter_trades,
)
from crypto_pipelines.exchanges.venues import VENUES, Quirk, TradesPaging, VenueSpec, get_venue

__all__ = [
    "FUNDING_COLUMNS",
    "OHLCV_COLUMNS",
    "TRADE_FRAME_COLUMNS",
    "VENUES",
    "FetchError",
    "FetchStats",
    "InvalidResponse",
    "Quirk",
    "RetriesExhausted",
    "RetryPolicy",
    "TradesPaging",
    "UnsupportedRequest",
    "VenueSpec",
    "exchange_time_ms",
    "fetch_markets",
    "get_venue",
    "iter_funding_rates",
    "iter_ohlcv",
    "iter_trades",
    "make_client",
]
