"""How each exchange pages its public history: the recorder's per-exchange data.

Values follow each venue's docs as collected in the replay specs: the most rows one request
returns, and which cursor walks trades and funding rates. A venue not listed here can still be
recorded by passing a ``VenueProfile`` to ``record_tape``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from crypto_pipelines.domain.timeframes import HOUR_MS


class TradePaging(Enum):
    FORWARD = "forward"  # a time-seeded first page, then ids upwards (Binance aggTrades fromId)
    BACKWARD = "backward"  # pages of older trades below an id cursor (OKX, Coinbase)
    LATEST = "latest"  # only the newest trades are served (Bybit recent-trade)


class FundingPaging(Enum):
    NONE = "none"  # spot-only venue
    FORWARD = "forward"  # oldest rows from since (Binance startTime)
    BACKWARD = "backward"  # newest rows below an end bound (OKX after=, Bybit endTime=)


@dataclass(frozen=True)
class VenueProfile:
    """How one exchange pages. Candles need only ``ohlcv_limit``: every venue's ccxt code
    turns ``since`` + ``until`` into a bounded window, so candles page the same way everywhere.
    ``ohlcv_limit`` must not exceed what the exchange really returns per request: a window
    with more slots than that would silently lose candles (OKX and Coinbase keep the newest)."""

    tape_name: str  # the tape folder (binanceusdm records into binance/)
    ohlcv_limit: int  # candle slots per request
    trades: TradePaging
    trade_limit: int
    trade_cursor: str | None = None  # param carrying the trade-id cursor
    trade_cursor_inclusive: bool = False  # the exchange returns the cursor id itself (fromId)
    trade_seed_window_ms: int = HOUR_MS  # FORWARD: widest time window one seed request covers
    trade_seed_end: str | None = None  # BACKWARD: param bounding the first page by time (exclusive)
    trade_seed_params: Mapping[str, str] = field(default_factory=dict)  # on the first page only
    trade_params: Mapping[str, str] = field(default_factory=dict)  # on every trades request
    funding: FundingPaging = FundingPaging.NONE
    funding_limit: int = 100
    funding_end: str | None = None  # BACKWARD: param bounding a page's newest funding time
    funding_end_inclusive: bool = False


# Binance: klines 1000 (spot; futures take 1500, 1000 is safe for both); aggTrades 1000 by
# fromId (inclusive), a startTime request spans at most one hour; fundingRate 1000 from startTime.
_BINANCE = VenueProfile(
    "binance",
    ohlcv_limit=1000,
    trades=TradePaging.FORWARD,
    trade_limit=1000,
    trade_cursor="fromId",
    trade_cursor_inclusive=True,
    funding=FundingPaging.FORWARD,
    funding_limit=1000,
)

PROFILES: dict[str, VenueProfile] = {
    "binance": _BINANCE,
    "binanceusdm": _BINANCE,
    "binancecoinm": _BINANCE,
    # OKX: history-candles 300; history-trades 100 a page, type=2 pages by ts (used once, to
    # start at `until`), the default type=1 by tradeId (exact at equal timestamps); funding
    # 100 a page below after= (exclusive). Trades and funding reach back about three months.
    "okx": VenueProfile(
        "okx",
        ohlcv_limit=300,
        trades=TradePaging.BACKWARD,
        trade_limit=100,
        trade_cursor="after",
        trade_seed_end="after",
        trade_seed_params={"type": "2"},
        trade_params={"method": "publicGetMarketHistoryTrades"},
        funding=FundingPaging.BACKWARD,
        funding_limit=100,
        funding_end="after",
    ),
    # Bybit: kline 1000; recent-trade has no history (1000 newest, 60 on spot); funding 200 a
    # page up to endTime (inclusive).
    "bybit": VenueProfile(
        "bybit",
        ohlcv_limit=1000,
        trades=TradePaging.LATEST,
        trade_limit=1000,
        funding=FundingPaging.BACKWARD,
        funding_limit=200,
        funding_end="endTime",
        funding_end_inclusive=True,
    ),
    # Coinbase Exchange: candles 300; trades 1000 a page, only backwards from the newest with
    # after=trade_id (ccxt never sends since); spot only, so no funding.
    "coinbaseexchange": VenueProfile(
        "coinbaseexchange",
        ohlcv_limit=300,
        trades=TradePaging.BACKWARD,
        trade_limit=1000,
        trade_cursor="after",
    ),
}
