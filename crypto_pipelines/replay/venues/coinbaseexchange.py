"""Coinbase Exchange (ex-Coinbase Pro, ``api.exchange.coinbase.com``) as ccxt's
``coinbaseexchange`` calls it. Spot only: the venue has no perpetuals, so a tape's swap
markets are not listed and there is no funding endpoint.

Behaviour follows Coinbase's docs: candles cover a ``start``/``end`` range of at most 300
buckets (a longer range is refused with 400, not clamped), newest first, as JSON numbers;
without both bounds the 300 buckets ending now are chosen. Trades page newest first by
``trade_id`` cursors (``after`` = older, ``before`` = newer, echoed in ``CB-AFTER`` and
``CB-BEFORE``), and their ``side`` is the maker's. Public requests are limited to 10 a second
per IP. Every error is ``{"message": ...}``; an unknown product is ``404 NotFound``.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Any

import orjson

from crypto_pipelines.domain.timeframes import DAY_MS
from crypto_pipelines.replay.clock import ReplayClock
from crypto_pipelines.replay.limits import Budget
from crypto_pipelines.replay.tape import ExchangeTape, MarketSpec, Trade
from crypto_pipelines.replay.venues.base import (
    ErrorKind,
    Handler,
    Request,
    Response,
    Venue,
    VenueError,
    gateway_unavailable,
    int_param,
    json_response,
    limit_param,
)
from crypto_pipelines.replay.venues.coinbaseexchange_format import (
    GRANULARITIES,
    MAX_CANDLES,
    MAX_TRADES,
    candle_rows,
    currencies,
    hourly_sparkline,
    iso_ms,
    iso_us,
    parse_time,
    product,
    well_formed_product_id,
)
from crypto_pipelines.replay.venues.common import (
    DayStats,
    book_update_id,
    day_stats,
    trade_day_stats,
)

#: "Requests per second per IP: 10" for public endpoints (the venue also allows bursts of 15
#: with a token bucket; a fixed one-second window of 10 is the stricter reading).
PUBLIC = Budget("PUBLIC_IP", 1_000, 10)

#: Status and fixed message per error kind; None keeps the handler's own message.
_ERRORS: dict[ErrorKind, tuple[int, str | None]] = {
    ErrorKind.BAD_REQUEST: (400, None),
    ErrorKind.BAD_SYMBOL: (404, "NotFound"),
    ErrorKind.NOT_FOUND: (404, "NotFound"),
    ErrorKind.RATE_LIMIT: (429, "Public rate limit exceeded"),
    ErrorKind.BANNED: (429, "Public rate limit exceeded"),
}

#: Side as the venue reports it (the maker's) from the tape's taker side.
_MAKER_SIDE = {"buy": "sell", "sell": "buy"}

ProductHandler = Callable[[Request, MarketSpec], Response]


class CoinbaseExchange(Venue):
    name = "coinbaseexchange"
    # ccxt's old id "coinbasepro" was removed before 4.5 (coinbaseexchange replaced it).
    aliases = ()
    budgets = (PUBLIC,)

    def __init__(self, tape: ExchangeTape, clock: ReplayClock) -> None:
        super().__init__(tape, clock)
        self._product_routes = self.product_routes()

    def routes(self) -> dict[str, Handler]:
        return {
            "/time": self.time,
            "/currencies": self.currencies,
            "/products": self.products,
            "/products/spark-lines": self.spark_lines,
        }

    def product_routes(self) -> dict[str, ProductHandler]:
        """``/products/{id}/<suffix>`` handlers by suffix (``""`` is the product itself)."""
        return {
            "": self.product,
            "candles": self.candles,
            "trades": self.trades,
            "book": self.book,
            "ticker": self.ticker,
            "stats": self.stats,
        }

    def market_id(self, market: MarketSpec) -> str:
        return f"{market.base}-{market.quote}"

    # -- routing: most paths carry the product id ------------------------------------------
    def _resolve(self, path: str) -> Handler | None:
        static = self._routes.get(path)
        if static is not None:
            return static
        parts = path.split("/")
        if len(parts) not in (3, 4) or parts[1] != "products" or not parts[2]:
            return None
        handler = self._product_routes.get(parts[3] if len(parts) == 4 else "")
        return None if handler is None else partial(self._with_product, handler, parts[2])

    def _with_product(self, handler: ProductHandler, product_id: str, request: Request) -> Response:
        if not well_formed_product_id(product_id):
            raise VenueError(ErrorKind.BAD_REQUEST, "Invalid product_id")
        return handler(request, self.market(product_id, "spot"))

    def handle(self, request: Request) -> Response:
        handler = self._resolve(request.path)
        if handler is None:
            return self.error(ErrorKind.NOT_FOUND, "NotFound")
        try:
            return handler(request)
        except VenueError as exc:
            return self.error(exc.kind, exc.message)

    def serves(self, path: str) -> bool:
        return self._resolve(path) is not None

    def endpoint_key(self, request: Request) -> str:
        return "public"

    # -- errors -----------------------------------------------------------------------------
    def error(self, kind: ErrorKind, message: str, *, retry_after_s: int | None = None) -> Response:
        """``{"message": ...}`` with the venue's status (a server error is the edge's HTML
        503). ccxt maps 404 "NotFound" to OrderNotFound, other 400/404 messages to
        ExchangeError, 429 to RateLimitExceeded and 5xx to ExchangeNotAvailable. The body is
        never empty: ccxt reads ``body[0]`` of a 400/404."""
        if kind is ErrorKind.SERVER_ERROR:
            return gateway_unavailable()
        status, fixed = _ERRORS[kind]
        return Response(status, orjson.dumps({"message": fixed or message or "Bad Request"}))

    # -- endpoints --------------------------------------------------------------------------
    def time(self, request: Request) -> Response:
        now = self.now_ms()
        body = f'{{"iso":"{iso_ms(now)}","epoch":{now // 1000}.{now % 1000:03d}}}'
        return Response(200, body.encode())

    def currencies(self, request: Request) -> Response:
        return json_response(currencies(self.markets("spot")))

    def products(self, request: Request) -> Response:
        return json_response([product(m, self.market_id(m)) for m in self.markets("spot")])

    def product(self, request: Request, market: MarketSpec) -> Response:
        return json_response(product(market, self.market_id(market)))

    def candles(self, request: Request, market: MarketSpec) -> Response:
        granularity = _granularity(request.query.get("granularity", ""))
        step = granularity * 1000
        now = self.now_ms()
        raw_start, raw_end = request.query.get("start"), request.query.get("end")
        if raw_start and raw_end:
            start, end = _time_param(raw_start, "start"), _time_param(raw_end, "end")
            if (end - start) / step > MAX_CANDLES:
                raise VenueError(
                    ErrorKind.BAD_REQUEST,
                    "granularity too small for the requested time range. "
                    "Count of aggregations requested exceeds 300",
                )
        else:
            # Docs: "If the start or end fields are not provided, both fields are ignored";
            # the range then ends now and spans 300 buckets, the in-progress one included.
            end = now
            start = now - now % step - (MAX_CANDLES - 1) * step
        # Buckets from the one holding ``start`` ("may precede your declared start") to
        # ``end``, both inclusive, never past now; at most 300, the newest kept.
        series = self.tape.series(market.symbol).ohlcv.get(GRANULARITIES[granularity])
        first, last = start - start % step, min(end, now)
        if series is None or last < first:
            return Response(200, b"[]")
        return Response(200, candle_rows(series.between(first, last, MAX_CANDLES, newest=True)))

    def trades(self, request: Request, market: MarketSpec) -> Response:
        limit = limit_param(request, "limit", MAX_TRADES, MAX_TRADES)
        series = self.tape.series(market.symbol).trades
        if series is None or not len(series):
            return Response(200, b"[]")
        after, before = int_param(request, "after"), int_param(request, "before")
        i_now = series.span(None, self.now_ms(), len(series))[1]
        if (after is not None or before is not None) and series.numeric_ids is None:
            raise VenueError(
                ErrorKind.BAD_REQUEST, "Invalid cursor: this tape's trade ids are not integers"
            )
        if after is not None:  # older than ``after``: the newest ``limit`` of them
            i1 = min(i_now, series.id_position(after))
            i0 = max(0, i1 - limit)
        elif before is not None:  # newer than ``before``: the page right above it
            i0 = series.id_position(before + 1)
            i1 = min(i_now, i0 + limit)
        else:
            i0, i1 = max(0, i_now - limit), i_now
        rows = series.rows(i0, i1) if i1 > i0 else []
        numeric = series.numeric_ids is not None
        payload = [_trade(t, numeric) for t in reversed(rows)]
        headers = {"CB-BEFORE": rows[-1].id, "CB-AFTER": rows[0].id} if rows else {}
        return json_response(payload, headers=headers)

    def book(self, request: Request, market: MarketSpec) -> Response:
        level = request.query.get("level", "1")
        if level == "3":
            raise VenueError(
                ErrorKind.BAD_REQUEST, "level 3 (order by order) is not on a tape; use level 1 or 2"
            )
        if level not in ("1", "2"):
            raise VenueError(ErrorKind.BAD_REQUEST, "Invalid level")
        depth = 1 if level == "1" else None
        book = self.tape.series(market.symbol).book
        snapshot = book.at(self.now_ms()) if book is not None else None
        if snapshot is None:
            bids: list[list[Any]] = []
            asks: list[list[Any]] = []
            sequence, ts = 0, self.now_ms()
        else:
            # [price, size, num_orders]: a tape aggregates each level; at least one order
            # rests there, and that is all it can say.
            bids = [[p, s, 1] for p, s in snapshot.bids[:depth]]
            asks = [[p, s, 1] for p, s in snapshot.asks[:depth]]
            sequence, ts = book_update_id(snapshot.ts), snapshot.ts
        return json_response(
            {
                "bids": bids,
                "asks": asks,
                "sequence": sequence,
                "auction_mode": False,
                "auction": None,
                "time": iso_us(ts),
            }
        )

    def ticker(self, request: Request, market: MarketSpec) -> Response:
        now = self.now_ms()
        series = self.tape.series(market.symbol)
        stats = self._day(market, now)
        trades = series.trades
        last_trade = trades.between(None, now, 1, newest=True) if trades is not None else []
        if trades is not None and last_trade:
            trade = last_trade[0]
            price, size, ts = trade.price, trade.amount, trade.ts
            trade_id: int | str = _trade_id(trade, trades.numeric_ids is not None)
        else:  # candles only: the last close, with no single trade behind it
            price, size, trade_id, ts = stats.last, "0", 0, min(now, stats.close_ts)
        snapshot = series.book.at(now) if series.book is not None else None
        bid = snapshot.bids[0][0] if snapshot and snapshot.bids else price
        ask = snapshot.asks[0][0] if snapshot and snapshot.asks else price
        return json_response(
            {
                "ask": ask,
                "bid": bid,
                "volume": stats.volume,
                "trade_id": trade_id,
                "price": price,
                "size": size,
                "time": iso_us(ts),
                # Fills outside the order book (RFQ, conversions): a tape records none.
                "rfq_volume": "0",
                "conversions_volume": "0",
            }
        )

    def stats(self, request: Request, market: MarketSpec) -> Response:
        now = self.now_ms()
        day = self._day(market, now)
        return json_response(
            {
                "open": day.open,
                "high": day.high,
                "low": day.low,
                "last": day.last,
                "volume": day.volume,
                "volume_30day": self._volume_30day(market, now),
            }
        )

    def spark_lines(self, request: Request) -> Response:
        now = self.now_ms()
        parts = []
        for market in self.markets("spot"):
            candles = self.tape.series(market.symbol).ohlcv
            finest = min(candles.values(), key=lambda s: s.timeframe_ms) if candles else None
            if finest is None or finest.timeframe_ms > 3_600_000:
                continue
            rows = finest.between(now - DAY_MS + 1, now, 100_000)
            parts.append(orjson.dumps(self.market_id(market)) + b":" + hourly_sparkline(rows))
        return Response(200, b"{" + b",".join(parts) + b"}")

    # -- helpers ----------------------------------------------------------------------------
    def _day(self, market: MarketSpec, now: int) -> DayStats:
        series = self.tape.series(market.symbol)
        stats = day_stats(series, now)
        if stats is None and series.trades is not None:
            stats = trade_day_stats(series.trades, now)
        if stats is None:
            raise VenueError(ErrorKind.NOT_FOUND, "NotFound")
        return stats

    def _volume_30day(self, market: MarketSpec, now: int) -> str:
        """Base volume of the 30 days up to now, from the coarsest candles (fewest rows),
        else from trades."""
        series = self.tape.series(market.symbol)
        start = now - 30 * DAY_MS + 1
        if series.ohlcv:
            coarsest = max(series.ohlcv.values(), key=lambda s: s.timeframe_ms)
            amounts = [
                c.volume for c in coarsest.between(start, now, 10_000_000) if c.volume != "nan"
            ]
        elif series.trades is not None:
            amounts = [t.amount for t in series.trades.between(start, now, 10_000_000)]
        else:
            amounts = []
        return format(sum((Decimal(a) for a in amounts), Decimal(0)).normalize(), "f")


def _granularity(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value not in GRANULARITIES:
        raise VenueError(ErrorKind.BAD_REQUEST, "Unsupported granularity")
    return value


def _time_param(raw: str, name: str) -> int:
    value = parse_time(raw)
    if value is None:
        raise VenueError(ErrorKind.BAD_REQUEST, f"Invalid {name}")
    return value


def _trade_id(trade: Trade, numeric: bool) -> int | str:
    """The venue's ``trade_id`` is an integer; a tape with other ids keeps them as text."""
    return int(trade.id) if numeric else trade.id


def _trade(trade: Trade, numeric: bool) -> dict[str, Any]:
    return {
        "trade_id": _trade_id(trade, numeric),
        "side": _MAKER_SIDE[trade.side],
        "size": trade.amount,
        "price": trade.price,
        "time": iso_us(trade.ts),
    }
