"""Bybit: the v5 public market API (``api.bybit.com/v5/market/*``) as ccxt's ``bybit`` calls it.

One host serves every product; the ``category`` parameter (spot, linear, inverse, option)
chooses the market, and a spot and a linear instrument may share an id (``BTCUSDT``). Every
answer is the envelope ``{"retCode", "retMsg", "result", "retExtInfo", "time"}`` with HTTP
200, errors included; numbers inside ``result`` are strings except the order book's
``ts``/``u``/``seq``/``cts`` and the instrument's ``fundingInterval``. Klines, trades and
funding come newest first. Bybit's public limit is 600 requests per 5 s per IP.
"""

from __future__ import annotations

import time
from decimal import Context, Decimal
from typing import Any, ClassVar
from urllib.parse import parse_qs

import orjson

from crypto_pipelines.domain.timeframes import grid_offset_ms
from crypto_pipelines.replay.limits import Budget, Verdict
from crypto_pipelines.replay.tape import MarketSpec
from crypto_pipelines.replay.venues import bybit_markets as info
from crypto_pipelines.replay.venues import bybit_stats
from crypto_pipelines.replay.venues.base import (
    ErrorKind,
    Handler,
    Request,
    Response,
    Venue,
    VenueError,
    int_param,
    limit_param,
)
from crypto_pipelines.replay.venues.common import book_update_id, day_stats

#: Bybit's HTTP IP limit: 600 requests in any 5-second window, all endpoints together.
IP_LIMIT = Budget("BYBIT_IP", 5_000, 600)

#: category -> (tape market type, linear?)
_CATEGORIES: dict[str, tuple[str, bool | None]] = {
    "spot": ("spot", None),
    "linear": ("swap", True),
    "inverse": ("swap", False),
    "option": ("option", None),
}
#: Bybit interval code -> tape timeframe
_INTERVALS = {
    "1": "1m", "3": "3m", "5": "5m", "15": "15m", "30": "30m", "60": "1h", "120": "2h",
    "240": "4h", "360": "6h", "720": "12h", "D": "1d", "W": "1w", "M": "1M",
}  # fmt: skip
#: (default, maximum) rows per request by category, as Bybit documents them
_TRADE_LIMITS = {
    "spot": (60, 60),
    "linear": (500, 1000),
    "inverse": (500, 1000),
    "option": (500, 1000),
}
_BOOK_LIMITS = {"spot": (1, 200), "linear": (25, 500), "inverse": (25, 500), "option": (1, 25)}
_KLINE_LIMIT = (200, 1000)
_FUNDING_LIMIT = (200, 200)
_INSTRUMENTS_LIMIT = (500, 1000)

_EXACT = Context(prec=80)  # wide enough that a product of two tape decimals is exact
_OK = b'{"retCode":0,"retMsg":"OK","result":'

# (HTTP status, retCode, retMsg) per error kind; None retMsg = the handler's message.
# Bybit answers API errors with HTTP 200 and a retCode; only the edge (IP ban, gateway
# failures) answers with HTTP errors and non-JSON bodies, which ccxt maps by status.
_ERRORS: dict[ErrorKind, tuple[int, int, str | None]] = {
    ErrorKind.BAD_REQUEST: (200, 10001, None),
    ErrorKind.BAD_SYMBOL: (200, 10001, "Not supported symbols"),
    ErrorKind.NOT_FOUND: (404, 10017, "route not found"),
    ErrorKind.RATE_LIMIT: (200, 10006, "Too many visits!"),
}
_BANNED_BODY = b"access too frequent"
_SERVER_ERROR_BODY = b"<html><head><title>503 Service Temporarily Unavailable</title></head></html>"


class Bybit(Venue):
    name = "bybit"
    budgets = (IP_LIMIT,)
    #: ids of USDC-settled linear perpetuals: Bybit names them BASE + "PERP" (BTCPERP)
    linear_id_suffix: ClassVar[dict[str, str]] = {"USDC": "PERP"}

    def routes(self) -> dict[str, Handler]:
        return {
            "/v5/market/time": self.time,
            "/v5/system/status": self.system_status,
            "/v5/market/instruments-info": self.instruments_info,
            "/v5/market/kline": self.kline,
            "/v5/market/recent-trade": self.recent_trade,
            "/v5/market/orderbook": self.orderbook,
            "/v5/market/funding/history": self.funding_history,
            bybit_stats.OPEN_INTEREST: lambda request: bybit_stats.open_interest(self, request),
            "/v5/market/tickers": self.tickers,
        }

    # -- naming -----------------------------------------------------------------------------
    def market_id(self, market: MarketSpec) -> str:
        if market.is_swap and market.linear and market.quote in self.linear_id_suffix:
            return market.base + self.linear_id_suffix[market.quote]
        return f"{market.base}{market.quote}"

    def _category(
        self, request: Request, allowed: tuple[str, ...], default: str | None = None
    ) -> str:
        category = request.query.get("category") or default
        if category not in allowed:
            raise VenueError(
                ErrorKind.BAD_REQUEST, f"params error: category {category or ''} is invalid"
            )
        return category

    def _market(self, request: Request, category: str) -> MarketSpec:
        """The instrument ``symbol`` names in ``category``; Bybit's 10001 "Not supported
        symbols" when that category does not list it."""
        symbol = request.query.get("symbol")
        if not symbol:
            raise VenueError(ErrorKind.BAD_REQUEST, "params error: symbol is required")
        market_type, linear = _CATEGORIES[category]
        market = self._by_id.get((symbol, market_type))
        if market is None or (market.is_swap and market.linear != linear):
            raise VenueError(ErrorKind.BAD_SYMBOL, "Not supported symbols")
        return market

    def _in_category(self, category: str) -> list[MarketSpec]:
        market_type, linear = _CATEGORIES[category]
        return sorted(
            (m for m in self.markets(market_type) if not m.is_swap or m.linear == linear),
            key=self.market_id,
        )

    def _funding_minutes(self, market: MarketSpec) -> int:
        return info.funding_minutes(self.tape.series(market.symbol))

    # -- envelope, errors and limits --------------------------------------------------------
    def _ok(self, result: Any) -> Response:
        return self._ok_raw(orjson.dumps(result))

    def _ok_raw(self, result: bytes) -> Response:
        tail = b',"retExtInfo":{},"time":' + str(self.now_ms()).encode() + b"}"
        return Response(200, _OK + result + tail)

    def error(self, kind: ErrorKind, message: str, *, retry_after_s: int | None = None) -> Response:
        if kind is ErrorKind.BANNED:
            return Response(403, _BANNED_BODY, content_type="text/plain")
        if kind is ErrorKind.SERVER_ERROR:
            return Response(503, _SERVER_ERROR_BODY, content_type="text/html")
        status, code, text = _ERRORS[kind]
        if text is None:
            text = message if message.startswith("params error") else f"params error: {message}"
        body = {
            "retCode": code,
            "retMsg": text,
            "result": {},
            "retExtInfo": {},
            "time": self.now_ms(),
        }
        headers: dict[str, str] = {}
        if kind is ErrorKind.RATE_LIMIT:
            reset = _wall_ms() + 1000 * (retry_after_s or 1)
            headers = _limit_headers(IP_LIMIT.capacity, 0, reset)
        return Response(status, orjson.dumps(body), headers)

    def limit_headers(self, request: Request, verdict: Verdict) -> dict[str, str]:
        """Bybit's X-Bapi-Limit* headers; the reset timestamp is the window's end once the
        limit is exceeded and the current time otherwise, as Bybit documents."""
        reset = verdict.reset_ms if not verdict.allowed else _wall_ms()
        return _limit_headers(verdict.capacity, verdict.remaining, reset)

    # -- endpoints --------------------------------------------------------------------------
    def time(self, request: Request) -> Response:
        now = self.now_ms()
        return self._ok({"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)})

    def system_status(self, request: Request) -> Response:
        """No maintenance events: ccxt reports status "ok"."""
        return self._ok({"list": []})

    def instruments_info(self, request: Request) -> Response:
        """Listed instruments of a category. Spot answers all in one page; derivatives page
        by ``limit`` with an opaque ``nextPageCursor`` that is "" on the last page. The tape
        lists only trading perpetuals and spot pairs: pre-launch, closed and option queries
        get empty lists."""
        category = self._category(request, tuple(_CATEGORIES))
        status = request.query.get("status") or "Trading"
        markets = self._in_category(category) if status == "Trading" else []
        if symbol := request.query.get("symbol"):
            markets = [m for m in markets if self.market_id(m) == symbol]
        if (base := request.query.get("baseCoin")) and category != "spot":
            markets = [m for m in markets if m.base == base]
        cursor = ""
        if category != "spot":
            limit = limit_param(request, "limit", *_INSTRUMENTS_LIMIT)
            after = _cursor_after(request.query.get("cursor"))
            if after is not None:
                markets = [m for m in markets if self.market_id(m) > after]
            if len(markets) > limit:
                markets = markets[:limit]
                cursor = (
                    f"first%3D{self.market_id(markets[0])}%26last%3D{self.market_id(markets[-1])}"
                )
        if category == "spot":
            items = [info.spot_instrument(m, self.market_id(m)) for m in markets]
        else:
            items = [
                info.contract_instrument(m, self.market_id(m), category, self._funding_minutes(m))
                for m in markets
            ]
        return self._ok({"category": category, "list": items, "nextPageCursor": cursor})

    def kline(self, request: Request) -> Response:
        """Candles newest first. With ``start``: the first ``limit`` candles from the one
        containing ``start`` up to ``end`` (inclusive) or now; without: the last ``limit``
        candles up to ``end`` or now. Inverse rows put base-coin volume in the turnover slot
        (ccxt reads it there) and contracts (USD) in the volume slot."""
        category = self._category(request, ("spot", "linear", "inverse"), default="linear")
        market = self._market(request, category)
        timeframe = _INTERVALS.get(request.query.get("interval", ""))
        if timeframe is None:
            raise VenueError(ErrorKind.BAD_REQUEST, "params error: Invalid period!")
        limit = limit_param(request, "limit", *_KLINE_LIMIT)
        start = int_param(request, "start")
        end = int_param(request, "end")
        now = self.now_ms()
        hi = now if end is None else min(end, now)
        series = self.tape.series(market.symbol).ohlcv.get(timeframe)
        candles = []
        if series is not None:
            if start is not None:
                offset = grid_offset_ms(timeframe)
                start -= (start - offset) % series.timeframe_ms
                candles = series.between(start, hi, limit)
            else:
                candles = series.between(None, hi, limit, newest=True)
        inverse = category == "inverse"
        rows = []
        for c in reversed(candles):
            other = _product(c.volume, c.close)
            volume, turnover = (other, c.volume) if inverse else (c.volume, other)
            rows.append(
                f'["{c.ts}","{c.open}","{c.high}","{c.low}","{c.close}","{volume}","{turnover}"]'
            )
        head = f'{{"symbol":"{self.market_id(market)}","category":"{category}","list":['
        return self._ok_raw((head + ",".join(rows) + "]}").encode())

    def recent_trade(self, request: Request) -> Response:
        """The latest trades at or before now, newest first. Bybit keeps no public trade
        history here: no time or id parameters, only ``limit``."""
        category = self._category(request, tuple(_CATEGORIES))
        market = self._market(request, category)
        limit = limit_param(request, "limit", *_TRADE_LIMITS[category])
        series = self.tape.series(market.symbol).trades
        trades = series.between(None, self.now_ms(), limit, newest=True) if series else []
        market_id = self.market_id(market)
        items = [
            {
                "execId": t.id,
                "symbol": market_id,
                "price": t.price,
                "size": t.amount,
                "side": "Buy" if t.side == "buy" else "Sell",
                "time": str(t.ts),
                "isBlockTrade": False,
                "isRPITrade": False,
            }
            for t in reversed(trades)
        ]
        return self._ok({"category": category, "list": items})

    def orderbook(self, request: Request) -> Response:
        """The tape's latest snapshot at or before now, cut to ``limit`` levels a side."""
        category = self._category(request, tuple(_CATEGORIES))
        market = self._market(request, category)
        limit = limit_param(request, "limit", *_BOOK_LIMITS[category])
        book = self.tape.series(market.symbol).book
        snapshot = book.at(self.now_ms()) if book is not None else None
        ts = snapshot.ts if snapshot is not None else self.now_ms()
        update_id = book_update_id(snapshot.ts) if snapshot is not None else 0
        return self._ok(
            {
                "s": self.market_id(market),
                "b": [list(level) for level in snapshot.bids[:limit]] if snapshot else [],
                "a": [list(level) for level in snapshot.asks[:limit]] if snapshot else [],
                "ts": ts,
                "u": update_id,
                "seq": update_id,
                "cts": ts,
            }
        )

    def funding_history(self, request: Request) -> Response:
        """Settled funding rates newest first: the newest ``limit`` with
        ``startTime <= ts <= min(endTime, now)``. Bybit refuses ``startTime`` alone."""
        category = self._category(request, ("linear", "inverse"))
        market = self._market(request, category)
        limit = limit_param(request, "limit", *_FUNDING_LIMIT)
        start = int_param(request, "startTime")
        end = int_param(request, "endTime")
        if start is not None and end is None:
            raise VenueError(
                ErrorKind.BAD_REQUEST, "params error: endTime is required when startTime is set"
            )
        now = self.now_ms()
        series = self.tape.series(market.symbol).funding
        rates = (
            series.between(start, now if end is None else min(end, now), limit, newest=True)
            if series
            else []
        )
        market_id = self.market_id(market)
        items = [
            {"symbol": market_id, "fundingRate": r.rate, "fundingRateTimestamp": str(r.ts)}
            for r in reversed(rates)
        ]
        return self._ok({"category": category, "list": items})

    def tickers(self, request: Request) -> Response:
        """24-hour tickers of one symbol or of the whole category (markets with candles up
        to now); contract tickers carry ``openInterestValue``, spot ones do not."""
        category = self._category(request, tuple(_CATEGORIES))
        if request.query.get("symbol"):
            markets = [self._market(request, category)]
        else:
            markets = self._in_category(category) if category != "option" else []
        now = self.now_ms()
        items = []
        for m in markets:
            series = self.tape.series(m.symbol)
            stats = day_stats(series, now)
            if stats is None:
                if request.query.get("symbol"):
                    raise VenueError(ErrorKind.BAD_SYMBOL, "Not supported symbols")
                continue
            if category == "spot":
                items.append(info.spot_ticker(self.market_id(m), stats, series, now))
            else:
                minutes = self._funding_minutes(m)
                items.append(
                    info.contract_ticker(self.market_id(m), category, stats, series, now, minutes)
                )
        return self._ok({"category": category, "list": items})


def _cursor_after(cursor: str | None) -> str | None:
    """The last id of the previous page, from a cursor this venue handed out
    (``first=A&last=B`` once the query string is decoded)."""
    if not cursor:
        return None
    last = parse_qs(cursor).get("last")
    if not last or not last[0]:
        raise VenueError(ErrorKind.BAD_REQUEST, "params error: cursor is invalid")
    return last[0]


def _product(volume: str, price: str) -> str:
    """``volume * price`` exactly (the tape has no turnover; this is the closest it can
    say); unknown volume (``nan``) stays unknown."""
    if volume == "nan":
        return "nan"
    return format(_EXACT.multiply(Decimal(volume), Decimal(price)).normalize(_EXACT), "f")


def _limit_headers(limit: int, remaining: int, reset_ms: int) -> dict[str, str]:
    return {
        "X-Bapi-Limit": str(limit),
        "X-Bapi-Limit-Status": str(remaining),
        "X-Bapi-Limit-Reset-Timestamp": str(reset_ms),
    }


def _wall_ms() -> int:
    """Wall-clock ms: rate-limit windows run on real time, not on the replay clock."""
    return int(time.time() * 1000)
