"""Bybit v5 (``api.bybit.com/v5/market``): spot, linear and inverse perpetuals through ccxt's
``bybit`` client, one host for all, the ``category`` parameter choosing the product.

Klines are anchored at ``start`` (the first ``limit`` candles from it, ``end`` inclusive) but
arrive newest first. Funding history answers the *newest* ``limit`` rows of
``[startTime, endTime]``. Public trades are the latest ones only (60 on spot, 1,000 on
contracts): Bybit publishes no trade history over REST, so a backfill gets what exists and
says so. Inverse candle volume in base currency sits in the turnover column, as ccxt reads it.
Open-interest history answers the newest ``limit`` (200) periods of ``[startTime, endTime]``,
newest first, in contracts only (one base unit linear, one USD inverse): no value is reported,
and an inverse one is its contracts' USD notional.
"""

from __future__ import annotations

from crypto_pipelines.domain.timeframes import HOUR_MS, MINUTE_MS
from crypto_pipelines.exchanges.venues.spec import (
    Anchor,
    CandleColumns,
    FundingSpec,
    OhlcvSpec,
    OpenInterestSpec,
    OpenInterestValue,
    Quirk,
    RangeQuery,
    RateBudget,
    TradeFields,
    TradesPaging,
    TradesSpec,
    VenueSpec,
    WsFundingSpec,
    frozen,
)

_INTERVALS = {
    "1m": "1", "3m": "3", "5m": "5", "15m": "15", "30m": "30", "1h": "60", "2h": "120",
    "4h": "240", "6h": "360", "12h": "720", "1d": "D", "1w": "W",
}  # fmt: skip

_KLINE = (RangeQuery("publicGetV5MarketKline", 1000, Anchor.OLDEST, "start", "end"),)
_FUNDING = RangeQuery("publicGetV5MarketFundingHistory", 200, Anchor.NEWEST, "startTime", "endTime")
_OPEN_INTEREST = RangeQuery(
    "publicGetV5MarketOpenInterest", 200, Anchor.NEWEST, "startTime", "endTime"
)
_ALL_MARKET_DATA = (
    "publicGetV5MarketKline",
    "publicGetV5MarketRecentTrade",
    "publicGetV5MarketFundingHistory",
    "publicGetV5MarketOpenInterest",
    "publicGetV5MarketInstrumentsInfo",
    "publicGetV5MarketTime",
)

BYBIT = VenueSpec(
    id="bybit",
    market_types=frozenset({"spot", "swap"}),
    symbol_param="symbol",
    market_params=frozen(
        {
            "spot": (("category", "spot"),),
            "linear": (("category", "linear"),),
            "inverse": (("category", "inverse"),),
        }
    ),
    ohlcv=OhlcvSpec(
        queries=frozen({"spot": _KLINE, "linear": _KLINE, "inverse": _KLINE}),
        interval_param="interval",
        intervals=frozen(_INTERVALS),
        rows_path=("result", "list"),
        columns=CandleColumns(0, 1, 2, 3, 4, volume=frozen({"spot": 5, "linear": 5, "inverse": 6})),
        newest_first=True,
    ),
    trades=TradesSpec(
        paging=TradesPaging.RECENT_ONLY,
        methods=frozen(
            dict.fromkeys(("spot", "linear", "inverse"), "publicGetV5MarketRecentTrade")
        ),
        max_rows=frozen({"spot": 60, "linear": 1000, "inverse": 1000}),
        rows_path=("result", "list"),
        fields=TradeFields(
            id="execId",
            ts="time",
            price="price",
            amount="size",
            side="side",
            sides=frozen({"Buy": "buy", "Sell": "sell"}),
        ),
        newest_first=True,
    ),
    funding=FundingSpec(
        interval_ms=8 * HOUR_MS,
        queries=frozen({"linear": _FUNDING, "inverse": _FUNDING}),
        rows_path=("result", "list"),
        ts_field="fundingRateTimestamp",
        rate_fields=("fundingRate",),
        newest_first=True,
    ),
    quirks=frozenset({Quirk.NEWEST_FIRST, Quirk.NO_TRADE_HISTORY}),
    rate_budgets=(
        RateBudget("HTTP requests", 600, 5_000, "IP", frozen(dict.fromkeys(_ALL_MARKET_DATA, 1))),
    ),
    # ccxt otherwise also asks for six option chains.
    ccxt_options=frozen({"fetchMarkets": {"types": ["spot", "linear", "inverse"]}}),
    rate_limit_reset_header="X-Bapi-Limit-Reset-Timestamp",
    # spot, then linear and inverse each twice (listed, and pre-launch with status=PreLaunch)
    markets_requests=("publicGetV5MarketInstrumentsInfo",) * 5,
    time_request="publicGetV5MarketTime",
    open_interest=OpenInterestSpec(
        period_ms=5 * MINUTE_MS,
        period_param="intervalTime",
        period_code="5min",
        queries=frozen({"linear": _OPEN_INTEREST, "inverse": _OPEN_INTEREST}),
        instrument=frozen({"linear": ("symbol", ("id",)), "inverse": ("symbol", ("id",))}),
        rows_path=("result", "list"),
        ts_field="timestamp",
        amount_field="openInterest",
        value_field=None,
        value=frozen(
            {"linear": OpenInterestValue.NONE, "inverse": OpenInterestValue.CONTRACT_NOTIONAL}
        ),
        newest_first=True,
    ),
    ws_book_depths=(50, 200, 1000),  # orderbook.<n> channels
    # tickers.<symbol> of a swap: the rate for the settlement at nextFundingTime, markPrice
    ws_funding=WsFundingSpec(
        "watch_ticker", rate="fundingRate", next_time="nextFundingTime", mark="markPrice"
    ),
)
