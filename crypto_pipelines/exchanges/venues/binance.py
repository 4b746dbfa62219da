"""Binance: spot (``/api/v3``), USDⓈ-M perpetuals (``/fapi/v1``) and COIN-M perpetuals
(``/dapi/v1``), all through ccxt's ``binance`` client.

Klines answer the oldest ``limit`` candles with ``openTime >= startTime`` (both bounds
inclusive), so the loader pages forward from the last candle. ccxt caps a request at 1,000
candles on spot and futures alike (fapi would allow 1,500); we ask for what ccxt asks. Trades
are aggTrades paged by ``fromId``: a time window with more than ``limit`` trades answers its
*last* ones, so paging by time would skip trades. Inverse klines carry base-currency volume in
column 7 (column 5 counts contracts), as ccxt reads them. Request weights are Binance's own
(spot klines 2, aggTrades 4, which ccxt's throttler prices at 2; futures klines by ``limit``):
the shared budget (``exchanges.budget``) spends them, ccxt's throttler does not know them.
Open-interest history (``/futures/data/openInterestHist``, 500 periods a request) reaches
back 30 days only; windows of one page make its rows the same whether a range answers its
first or its last periods, which Binance does not document. Its own limit (1,000 requests per
5 minutes, no weight) is left to ccxt's throttler: a load asks once per 41 hours of range.
"""

from __future__ import annotations

from crypto_pipelines.domain.timeframes import DAY_MS, HOUR_MS, MINUTE_MS
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

_TIMEFRAMES = (
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "3d",
    "1w",
)


def _klines(method: str) -> tuple[RangeQuery, ...]:
    return (RangeQuery(method, 1000, Anchor.OLDEST, "startTime", "endTime"),)


def _funding(method: str) -> RangeQuery:
    return RangeQuery(method, 1000, Anchor.OLDEST, "startTime", "endTime")


def _open_interest(method: str, *extra: tuple[str, str]) -> RangeQuery:
    return RangeQuery(method, 500, Anchor.NEWEST, "startTime", "endTime", extra=extra)


#: Futures klines are priced by ``limit`` (no ``limit`` means 500): weight 1 under 100 rows,
#: 2 under 500, 5 up to 1,000, 10 beyond.
_FUTURES_KLINE_STEPS = ((99, 1), (499, 2), (1000, 5), (1500, 10))


def _futures_weight(name: str, api: str) -> RateBudget:
    return RateBudget(
        name,
        2400,
        60_000,
        "IP",
        frozen(
            {
                f"{api}GetKlines": 5,
                f"{api}GetAggTrades": 20,
                f"{api}GetExchangeInfo": 1,
            }
        ),
        frozen({f"{api}GetKlines": _FUTURES_KLINE_STEPS}),
    )


BINANCE = VenueSpec(
    id="binance",
    market_types=frozenset({"spot", "swap"}),
    symbol_param="symbol",
    market_params=frozen({}),
    ohlcv=OhlcvSpec(
        queries=frozen(
            {
                "spot": _klines("publicGetKlines"),
                "linear": _klines("fapiPublicGetKlines"),
                "inverse": _klines("dapiPublicGetKlines"),
            }
        ),
        interval_param="interval",
        intervals=frozen({tf: tf for tf in _TIMEFRAMES}),
        rows_path=(),
        columns=CandleColumns(0, 1, 2, 3, 4, volume=frozen({"spot": 5, "linear": 5, "inverse": 7})),
        newest_first=False,
    ),
    trades=TradesSpec(
        paging=TradesPaging.FROM_ID,
        methods=frozen(
            {
                "spot": "publicGetAggTrades",
                "linear": "fapiPublicGetAggTrades",
                "inverse": "dapiPublicGetAggTrades",
            }
        ),
        max_rows=frozen({"spot": 1000, "linear": 1000, "inverse": 1000}),
        rows_path=(),
        fields=TradeFields(
            id="a",
            ts="T",
            price="p",
            amount="q",
            side="m",
            sides=frozen({True: "sell", False: "buy"}),
        ),
        newest_first=False,
        from_id_param="fromId",
        end_time_param="endTime",
        sequential_ids=True,  # aggregate trade ids count up by one per market
    ),
    funding=FundingSpec(
        interval_ms=8 * HOUR_MS,
        queries=frozen(
            {
                "linear": _funding("fapiPublicGetFundingRate"),
                "inverse": _funding("dapiPublicGetFundingRate"),
            }
        ),
        rows_path=(),
        ts_field="fundingTime",
        rate_fields=("fundingRate",),
        newest_first=False,
    ),
    quirks=frozenset({Quirk.TIME_WINDOW_RETURNS_LAST_ROWS}),
    rate_budgets=(
        RateBudget(
            "spot request weight",
            6000,
            60_000,
            "IP",
            frozen(
                {
                    "publicGetKlines": 2,
                    "publicGetAggTrades": 4,
                    "publicGetExchangeInfo": 20,
                    "publicGetTime": 1,
                }
            ),
        ),
        _futures_weight("USDⓈ-M request weight", "fapiPublic"),
        _futures_weight("COIN-M request weight", "dapiPublic"),
        RateBudget(
            "funding rate requests",
            500,
            300_000,
            "IP",
            frozen({"fapiPublicGetFundingRate": 1, "dapiPublicGetFundingRate": 1}),
        ),
    ),
    # Spot, USDⓈ-M and COIN-M markets only (no options); no margin pairs or currencies, which
    # are private calls that need keys and tell us nothing about market data.
    # markPriceUpdate: ``r`` the rate announced for the settlement at ``T``, ``p`` the mark
    ws_funding=WsFundingSpec("watch_mark_price", rate="r", next_time="T", mark="p"),
    ws_options=frozen(
        {
            "watchTrades": {"name": "aggTrade"},
            "watchTradesForSymbols": {"name": "aggTrade"},
        }
    ),
    ccxt_options=frozen(
        {
            "fetchMarkets": {"types": ["spot", "linear", "inverse"]},
            "fetchMargins": False,
            "fetchCurrencies": False,
        }
    ),
    markets_requests=(
        "publicGetExchangeInfo",
        "fapiPublicGetExchangeInfo",
        "dapiPublicGetExchangeInfo",
    ),
    time_request="publicGetTime",
    open_interest=OpenInterestSpec(
        period_ms=5 * MINUTE_MS,
        period_param="period",
        period_code="5m",
        queries=frozen(
            {
                "linear": _open_interest("fapiDataGetOpenInterestHist"),
                "inverse": _open_interest(
                    "dapiDataGetOpenInterestHist", ("contractType", "PERPETUAL")
                ),
            }
        ),
        instrument=frozen({"linear": ("symbol", ("id",)), "inverse": ("pair", ("info", "pair"))}),
        rows_path=(),
        ts_field="timestamp",
        amount_field="sumOpenInterest",
        # COIN-M's sumOpenInterestValue is in the base coin; contracts x size is the USD value
        value_field="sumOpenInterestValue",
        value=frozen(
            {"linear": OpenInterestValue.FIELD, "inverse": OpenInterestValue.CONTRACT_NOTIONAL}
        ),
        newest_first=False,
        history_ms=30 * DAY_MS,
    ),
)
