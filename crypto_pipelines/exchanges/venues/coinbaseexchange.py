"""Coinbase Exchange (``api.exchange.coinbase.com``), spot only, through ccxt's
``coinbaseexchange`` client.

Candles cover an ISO ``start``/``end`` range (both inclusive) of at most 300 buckets, a longer
range being refused rather than clamped; they arrive newest first as JSON numbers
``[time_s, low, high, open, close, volume]``, and a bucket without trades has no candle at all
(gaps are the venue's design, not an outage). Trades page by ``trade_id`` cursors: ``after``
an id gives older trades, ``before`` an id the page just newer. Their ``side`` is the maker's;
the loader reports the taker's, as ccxt does. There are no perpetuals and so no funding.
"""

from __future__ import annotations

from crypto_pipelines.exchanges.venues.spec import (
    Anchor,
    CandleColumns,
    OhlcvSpec,
    Quirk,
    RangeQuery,
    RateBudget,
    TimeFormat,
    TradeFields,
    TradesPaging,
    TradesSpec,
    VenueSpec,
    frozen,
)

_GRANULARITY = {"1m": "60", "5m": "300", "15m": "900", "1h": "3600", "6h": "21600", "1d": "86400"}

COINBASE_EXCHANGE = VenueSpec(
    id="coinbaseexchange",
    market_types=frozenset({"spot"}),
    symbol_param="id",
    market_params=frozen({}),
    ohlcv=OhlcvSpec(
        queries=frozen(
            {
                "spot": (
                    RangeQuery(
                        "publicGetProductsIdCandles",
                        300,
                        Anchor.NEWEST,
                        "start",
                        "end",
                        limit_param=None,
                        time_format=TimeFormat.ISO,
                    ),
                )
            }
        ),
        interval_param="granularity",
        intervals=frozen(_GRANULARITY),
        rows_path=(),
        columns=CandleColumns(ts=0, open=3, high=2, low=1, close=4, volume=frozen({"spot": 5})),
        newest_first=True,
        ts_unit_ms=1000,
    ),
    trades=TradesSpec(
        paging=TradesPaging.ID_CURSORS,
        methods=frozen({"spot": "publicGetProductsIdTrades"}),
        max_rows=frozen({"spot": 1000}),
        rows_path=(),
        fields=TradeFields(
            id="trade_id",
            ts="time",
            price="price",
            amount="size",
            side="side",
            sides=frozen({"buy": "sell", "sell": "buy"}),  # maker side -> taker side
            ts_format=TimeFormat.ISO,
        ),
        newest_first=True,
        older_than_id_param="after",
        newer_than_id_param="before",
    ),
    funding=None,
    quirks=frozenset(
        {
            Quirk.OMITS_EMPTY_CANDLES,
            Quirk.NEWEST_FIRST,
            Quirk.RANGE_OVER_LIMIT_REFUSED,
            Quirk.MAKER_SIDE,
            Quirk.SECONDS_TIMESTAMPS,
        }
    ),
    rate_budgets=(
        RateBudget(
            "public requests",
            10,
            1_000,
            "IP",
            frozen(
                dict.fromkeys(
                    (
                        "publicGetProductsIdCandles",
                        "publicGetProductsIdTrades",
                        "publicGetProducts",
                        "publicGetCurrencies",
                        "publicGetTime",
                    ),
                    1,
                )
            ),
        ),
    ),
    ccxt_options=frozen({}),
    markets_requests=("publicGetProducts", "publicGetCurrencies"),
    time_request="publicGetTime",
    ws_book_signed=True,  # ccxt.pro signs every level2 subscription
)
