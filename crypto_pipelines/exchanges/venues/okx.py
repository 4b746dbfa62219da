"""OKX v5 (``www.okx.com/api/v5``): spot and perpetual swaps through ccxt's ``okx`` client.

Every paged endpoint answers the *newest* ``limit`` rows strictly between ``before`` and
``after`` (both exclusive, on ts), newest first, so the loader asks windows no longer than a
page. ``market/candles`` (300 a request) holds only the latest 1,440 bars; older candles come
from ``market/history-candles``, capped here at 100 a request as OKX long documented (newer
docs say 300; asking 100 cannot lose rows either way). A range wider than a page is clamped,
not refused, which lets the loader cross long gaps (a backfill starting before a listing) in
a few growing probes. Trades come from
``market/history-trades``, newest first: by time (``type=2``) to find the end of a window,
then by trade id (``type=1``) so that trades sharing a millisecond are never skipped. Swap
trade sizes are contracts; candle volume for swaps is ``volCcy`` (base currency), as ccxt
reads it. ccxt takes the funding rate from ``realizedRate``. Open-interest history
(``rubik/stat/contracts/open-interest-history``, 100 periods a request, newest first) rows
are ``[ts, oi (contracts), oiCcy (base), oiUsd]``: ``oiUsd`` stands for the quote value (USD
for inverse swaps; USDT and USDC swaps are valued in USD, equal to within the peg).
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

_BARS = {
    "1m": "1m", "3m": "3m", "5m": "5m", "15m": "15m", "30m": "30m", "1h": "1H", "2h": "2H",
    "4h": "4H", "6h": "6Hutc", "12h": "12Hutc", "1d": "1Dutc", "1w": "1Wutc",
}  # fmt: skip

_CANDLES = (
    RangeQuery(
        "publicGetMarketCandles",
        300,
        Anchor.NEWEST,
        "before",
        "after",
        exclusive_bounds=True,
        recent_rows=1440,
        wide_ranges=True,
    ),
    RangeQuery(
        "publicGetMarketHistoryCandles",
        100,
        Anchor.NEWEST,
        "before",
        "after",
        exclusive_bounds=True,
        wide_ranges=True,
    ),
)
_FUNDING = RangeQuery(
    "publicGetPublicFundingRateHistory",
    100,
    Anchor.NEWEST,
    "before",
    "after",
    exclusive_bounds=True,
    wide_ranges=True,
)

_OPEN_INTEREST = RangeQuery(
    "publicGetRubikStatContractsOpenInterestHistory",
    100,
    Anchor.NEWEST,
    "begin",
    "end",
    exclusive_bounds=True,
    wide_ranges=True,
)


def _per_2s(name: str, capacity: int, method: str, scope: str = "IP") -> RateBudget:
    return RateBudget(name, capacity, 2_000, scope, frozen({method: 1}))


OKX = VenueSpec(
    id="okx",
    market_types=frozenset({"spot", "swap"}),
    symbol_param="instId",
    market_params=frozen({}),
    ohlcv=OhlcvSpec(
        queries=frozen({"spot": _CANDLES, "linear": _CANDLES, "inverse": _CANDLES}),
        interval_param="bar",
        intervals=frozen(_BARS),
        rows_path=("data",),
        columns=CandleColumns(0, 1, 2, 3, 4, volume=frozen({"spot": 5, "linear": 6, "inverse": 6})),
        newest_first=True,
    ),
    trades=TradesSpec(
        paging=TradesPaging.BACKWARD,
        methods=frozen(
            dict.fromkeys(("spot", "linear", "inverse"), "publicGetMarketHistoryTrades")
        ),
        max_rows=frozen({"spot": 100, "linear": 100, "inverse": 100}),
        rows_path=("data",),
        fields=TradeFields(
            id="tradeId",
            ts="ts",
            price="px",
            amount="sz",
            side="side",
            sides=frozen({"buy": "buy", "sell": "sell"}),
        ),
        newest_first=True,
        end_time_param="after",
        older_than_id_param="after",
        by_time_extra=(("type", "2"),),
        by_id_extra=(("type", "1"),),
        window_ms=HOUR_MS,
    ),
    funding=FundingSpec(
        interval_ms=8 * HOUR_MS,
        queries=frozen({"linear": _FUNDING, "inverse": _FUNDING}),
        rows_path=("data",),
        ts_field="fundingTime",
        rate_fields=("realizedRate", "fundingRate"),
        newest_first=True,
    ),
    quirks=frozenset(
        {
            Quirk.NEWEST_FIRST,
            Quirk.EXCLUSIVE_TIME_BOUNDS,
            Quirk.RECENT_CANDLES_ENDPOINT,
            Quirk.CONTRACT_TRADE_SIZES,
        }
    ),
    rate_budgets=(
        _per_2s("market/candles", 40, "publicGetMarketCandles"),
        _per_2s("market/history-candles", 20, "publicGetMarketHistoryCandles"),
        _per_2s("market/history-trades", 20, "publicGetMarketHistoryTrades"),
        _per_2s(
            "public/funding-rate-history", 10, "publicGetPublicFundingRateHistory", "IP and instId"
        ),
        _per_2s("public/instruments", 20, "publicGetPublicInstruments", "IP and instType"),
        _per_2s(
            "rubik/stat/contracts/open-interest-history",
            5,
            "publicGetRubikStatContractsOpenInterestHistory",
            "IP and instId",
        ),
        _per_2s("public/time", 10, "publicGetPublicTime"),
    ),
    # ccxt otherwise also loads dated futures and two option chains.
    ccxt_options=frozen({"fetchMarkets": {"types": ["spot", "swap"]}}),
    # funding-rate channel: fundingRate is for the settlement at fundingTime (nextFundingTime
    # is the one after); it carries no mark price (the mark-price channel does)
    ws_funding=WsFundingSpec("watch_funding_rate", rate="fundingRate", next_time="fundingTime"),
    markets_requests=("publicGetPublicInstruments", "publicGetPublicInstruments"),
    time_request="publicGetPublicTime",
    open_interest=OpenInterestSpec(
        period_ms=5 * MINUTE_MS,
        period_param="period",
        period_code="5m",
        queries=frozen({"linear": _OPEN_INTEREST, "inverse": _OPEN_INTEREST}),
        instrument=frozen({"linear": ("instId", ("id",)), "inverse": ("instId", ("id",))}),
        rows_path=("data",),
        ts_field=0,
        amount_field=1,
        value_field=3,
        value=frozen({"linear": OpenInterestValue.FIELD, "inverse": OpenInterestValue.FIELD}),
        newest_first=True,
    ),
)
