"""Binance market streams: spot (``stream.binance.com:9443``), USDⓈ-M (``fstream.binance.com``,
with the ``/public`` and ``/market`` paths ccxt.pro uses) and COIN-M (``dstream.binance.com``).

Streams are named ``<symbol>@trade``, ``@aggTrade``, ``@kline_<interval>`` and
``@depth[@100ms]``, in the URL (``/ws/<stream>``, ``/stream?streams=a/b``) or with
``{"method": "SUBSCRIBE", "params": [...], "id": n}``, answered ``{"result": null, "id": n}``.
ccxt.pro's ``watch_trades`` subscribes to ``@trade`` by default on all three markets (its
``watchTrades.name`` option, ``aggTrade`` on request). The tape keeps one trade list per
symbol (Binance's aggregate trades), so both streams carry those rows: ``t`` and ``a`` are the
tape's ids. Depth is a diff stream without a snapshot: a client takes the REST depth snapshot
and joins on ``lastUpdateId``; update ids number the tape's snapshots as REST does
(``U = previous + 1``, ``u`` this one, futures add ``pu`` = previous ``u``).

USDⓈ-M and COIN-M also serve ``<symbol>@markPrice`` (every 3 s of replay time) and
``<symbol>@markPrice@1s`` (every second; ccxt.pro's ``watch_mark_price(s)`` default), and
the all-market ``!markPrice@arr[@1s]`` (``watch_mark_prices()`` without symbols):
``{"e": "markPriceUpdate", "E", "s", "p", "i", "P", "r", "T"}``, derived from the tape's
funding rows and candles as ``ws.marks`` documents; spot and perpetuals without funding data
get the invalid-stream error.

Limits as documented: 1,024 streams per connection on spot, 200 on futures; 5 incoming
messages per second on spot and 10 on futures, beyond which the connection is closed. One
deliberate difference: a stream for a symbol the tape lacks is refused with Binance's
``{"error": {"code": 2, "msg": "Invalid request: invalid stream"}}`` where the real exchange
accepts it and stays silent, so a typo fails at once instead of looking like a stalled feed.
Binance keeps connections alive with protocol pings, which the server (uvicorn) sends.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any
from urllib.parse import parse_qs

import orjson

from crypto_pipelines.domain.timeframes import timeframe_ms
from crypto_pipelines.replay.tape import MarketSpec, Trade
from crypto_pipelines.replay.venues.base import Venue
from crypto_pipelines.replay.venues.binance import _INTERVALS
from crypto_pipelines.replay.venues.common import book_update_id
from crypto_pipelines.replay.ws.base import (
    Route,
    Subscription,
    VenueSocket,
    WsSession,
    dumps,
    find_market,
)
from crypto_pipelines.replay.ws.feeds import Bar, BookFeed, BookUpdate, CandleFeed, TradeFeed
from crypto_pipelines.replay.ws.marks import (
    EIGHT_HOURS_MS,
    GridFeed,
    MarkSource,
    MarkState,
    has_funding,
)

#: endpoint kind -> (tape market type, linear?)
_KINDS: dict[str, tuple[str, bool | None]] = {
    "spot": ("spot", None),
    "linear": ("swap", True),
    "inverse": ("swap", False),
}
_STREAM_LIMIT = {"spot": 1024, "linear": 200, "inverse": 200}
_MESSAGES_PER_S = {"spot": 5, "linear": 10, "inverse": 10}
#: mark price stream suffix -> push period (ms): every 3 s, or every second with ``@1s``
_MARK_PERIODS = {"markPrice": 3_000, "markPrice@1s": 1_000}
_ALL_MARKS = {"!markPrice@arr": 3_000, "!markPrice@arr@1s": 1_000}
_DEPTH_SPEEDS = ("", "@100ms", "@250ms", "@500ms", "@1000ms", "@0ms")
_METHODS = "`SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`"
INVALID_STREAM = "Invalid request: invalid stream"


def _error(code: int, msg: str, request_id: Any) -> dict[str, Any]:
    return {"error": {"code": code, "msg": msg}, "id": request_id}


def _trade_id(trade: Trade) -> int | str:
    return int(trade.id) if trade.id.isdigit() else trade.id


class BinanceSocket(VenueSocket):
    venue_name = "binance"

    @classmethod
    def accepts(cls, host: str, path: str, query: str) -> Route | None:
        kind = "linear" if host.startswith("fstream") else "spot"
        if host.startswith("dstream"):
            kind = "inverse"
        segments = [s for s in path.split("/") if s]
        if kind == "linear" and segments and segments[0] in ("public", "market"):
            segments = segments[1:]
        if not segments or segments[0] not in ("ws", "stream"):
            return None
        if segments[0] == "stream":
            names = parse_qs(query).get("streams", [""])[0]
            return Route(kind, tuple(s for s in names.split("/") if s), combined=True)
        # ``/ws/<stream>``; ccxt.pro puts a connection number there (``/ws/0``), which names
        # no stream and is ignored, as Binance ignores it.
        return Route(kind, tuple(segments[1:2]))

    def __init__(self, session: WsSession, venue: Venue, route: Route) -> None:
        super().__init__(session, venue, route)
        self.combined = self.route.combined
        self._recent: deque[float] = deque()

    # -- control --------------------------------------------------------------------------
    async def opened(self) -> None:
        for name in self.route.streams:
            sub = self._build(name)
            if sub is not None:
                self.session.subscribe(name, sub)

    async def received(self, text: str) -> None:
        now = time.monotonic()
        self._recent.append(now)
        while self._recent and self._recent[0] <= now - 1.0:
            self._recent.popleft()
        if len(self._recent) > _MESSAGES_PER_S[self.route.kind]:
            self.session.count("control", "ws_errors")
            self.session.close(1008, "Too many requests")
            return
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            await self.session.error(_error(3, f"Invalid JSON: {exc}", None))
            return
        if not isinstance(request, dict):
            await self.session.error(_error(2, "Invalid request: request must be an object", None))
            return
        request_id = request.get("id")
        method = request.get("method")
        params = request.get("params")
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                await self.session.error(
                    _error(2, "Invalid request: params must be a list of streams", request_id)
                )
                return
            if method == "SUBSCRIBE":
                await self._subscribe(params, request_id)
            else:
                for name in params:
                    self.session.unsubscribe(name)
                await self.session.reply({"result": None, "id": request_id})
        elif method == "LIST_SUBSCRIPTIONS":
            await self.session.reply({"result": list(self.session.subs), "id": request_id})
        elif method == "SET_PROPERTY":
            if isinstance(params, list) and len(params) == 2 and params[0] == "combined":
                self.combined = bool(params[1])
            await self.session.reply({"result": None, "id": request_id})
        elif method == "GET_PROPERTY":
            await self.session.reply({"result": self.combined, "id": request_id})
        else:
            msg = f"Invalid request: unknown variant `{method}`, expected one of {_METHODS}"
            await self.session.error(_error(2, msg, request_id))

    async def _subscribe(self, names: list[str], request_id: Any) -> None:
        new = [n for n in dict.fromkeys(names) if n not in self.session.subs]
        limit = _STREAM_LIMIT[self.route.kind]
        if len(self.session.subs) + len(new) > limit:
            msg = f"Invalid request: too many streams (at most {limit} per connection)"
            await self.session.error(_error(2, msg, request_id))
            return
        built: dict[str, Subscription] = {}
        for name in new:
            sub = self._build(name)
            if sub is None:
                await self.session.error(_error(2, INVALID_STREAM, request_id), _channel(name))
                return
            built[name] = sub
        await self.session.reply({"result": None, "id": request_id})
        for name, sub in built.items():
            self.session.subscribe(name, sub)

    # -- streams --------------------------------------------------------------------------
    def _market(self, lowercase_id: str) -> MarketSpec | None:
        market_type, linear = _KINDS[self.route.kind]
        return find_market(self.venue, lowercase_id.upper(), market_type, linear)

    def _build(self, name: str) -> Subscription | None:
        symbol_id, _, rest = name.partition("@")
        if name in _ALL_MARKS:
            return self._all_mark_prices(name)
        market = self._market(symbol_id)
        if market is None:
            return None
        series = self.series(market)
        market_id = self.venue.market_id(market)
        start = self.session.now_ms()
        if rest in ("trade", "aggTrade"):
            trades = TradeFeed(series.trades, start)
            render = self._trade if rest == "trade" else self._agg_trade
            return Subscription(
                rest,
                lambda now: [self._frame(name, render(market_id, t)) for t in trades.poll(now)],
            )
        if rest.startswith("kline_") and rest[6:] in _INTERVALS:
            interval = rest[6:]
            candles = series.ohlcv.get(interval)
            feed = CandleFeed(
                candles,
                series.trades,
                timeframe_ms(interval),
                start,
                weekly=interval.endswith("w"),
                forming=candles is not None,
            )
            return Subscription(
                "kline_" + interval,
                lambda now: [
                    self._frame(name, self._kline(market_id, interval, feed.tf, bar))
                    for bar in feed.poll(now)
                ],
            )
        if rest in _MARK_PERIODS:
            return self._mark_prices(name, [market], _MARK_PERIODS[rest])
        if rest.startswith("depth") and rest[5:] in _DEPTH_SPEEDS:
            book = BookFeed(
                series.book, start, depth=None, snapshot_first=False, update_id=book_update_id
            )
            return Subscription(
                "depth",
                lambda now: [
                    self._frame(name, self._depth(market_id, update)) for update in book.poll(now)
                ],
            )
        return None

    def _all_mark_prices(self, name: str) -> Subscription | None:
        if self.route.kind == "spot":
            return None
        market_type, linear = _KINDS[self.route.kind]
        markets = [m for m in self.venue.markets(market_type) if bool(m.linear) == linear]
        return self._mark_prices(name, markets, _ALL_MARKS[name])

    def _mark_prices(
        self, name: str, markets: list[MarketSpec], period_ms: int
    ) -> Subscription | None:
        """``<symbol>@markPrice[@1s]`` (one market) or ``!markPrice@arr[@1s]`` (every
        perpetual of the endpoint with funding data, a list per frame): derived as
        ``ws.marks`` says, none before the first grid point after subscribing."""
        if self.route.kind == "spot":
            return None
        sources = {
            self.venue.market_id(m): MarkSource(self.series(m), EIGHT_HOURS_MS)
            for m in markets
            if has_funding(self.series(m))
        }
        if not sources:
            return None
        grid = GridFeed(period_ms, self.session.now_ms(), first=False, sources=(*sources.values(),))
        single = not name.startswith("!")

        def poll(now: int) -> list[str]:
            frames = []
            for t in grid.poll(now):
                states = [(mid, src.at(t)) for mid, src in sources.items()]
                payloads = [_mark_price(mid, st) for mid, st in states if st is not None]
                if payloads:
                    frames.append(self._frame(name, payloads[0] if single else payloads))
            return frames

        return Subscription("markPrice", poll)

    def _frame(self, name: str, payload: dict[str, Any] | list[dict[str, Any]]) -> str:
        return dumps({"stream": name, "data": payload} if self.combined else payload)

    def _trade(self, market_id: str, t: Trade) -> dict[str, Any]:
        payload: dict[str, Any] = {"e": "trade", "E": t.ts, "s": market_id}
        payload.update(t=_trade_id(t), p=t.price, q=t.amount, T=t.ts, m=t.side == "sell")
        if self.route.kind == "spot":
            payload["M"] = True
        else:
            payload["X"] = "MARKET"
        return payload

    def _agg_trade(self, market_id: str, t: Trade) -> dict[str, Any]:
        trade_id = _trade_id(t)
        payload: dict[str, Any] = {"e": "aggTrade", "E": t.ts, "s": market_id, "a": trade_id}
        payload.update(p=t.price, q=t.amount, f=trade_id, l=trade_id, T=t.ts, m=t.side == "sell")
        if self.route.kind == "spot":
            payload["M"] = True
        return payload

    def _kline(self, market_id: str, interval: str, tf: int, bar: Bar) -> dict[str, Any]:
        # Quote volumes are "0" as in the REST klines (the tape has none). COIN-M reports the
        # volume in contracts in ``v`` and in the base coin in ``q``; the tape's volume is in
        # the base coin and ccxt.pro reads ``v``, so it goes in both, as REST does.
        quote = bar.volume if self.route.kind == "inverse" else "0"
        kline: dict[str, Any] = {
            "t": bar.ts,
            "T": bar.ts + tf - 1,
            "s": market_id,
            "i": interval,
            "f": -1,
            "L": -1,
            "o": bar.open,
            "c": bar.close,
            "h": bar.high,
            "l": bar.low,
            "v": bar.volume,
            "n": bar.trades or 0,
            "x": bar.closed,
            "q": quote,
            "V": "0",
            "Q": "0",
            "B": "0",
        }
        payload: dict[str, Any] = {"e": "kline", "E": bar.event_ms, "s": market_id, "k": kline}
        if self.route.kind == "inverse":
            payload["ps"] = kline["ps"] = market_id.removesuffix("_PERP")
        return payload

    def _depth(self, market_id: str, update: BookUpdate) -> dict[str, Any]:
        payload: dict[str, Any] = {"e": "depthUpdate", "E": update.ts}
        if self.route.kind != "spot":
            payload["T"] = update.ts
        payload.update(s=market_id, U=update.prev_id + 1, u=update.update_id)
        if self.route.kind != "spot":
            payload["pu"] = update.prev_id
        payload.update(b=[list(level) for level in update.bids])
        payload.update(a=[list(level) for level in update.asks])
        return payload


def _mark_price(market_id: str, state: MarkState) -> dict[str, Any]:
    """A ``markPriceUpdate`` as USDⓈ-M and COIN-M send it (numbers as strings, times as
    integers): mark, index and estimated settle price are the one derived mark."""
    return {
        "e": "markPriceUpdate",
        "E": state.ts,
        "s": market_id,
        "p": state.mark,
        "i": state.mark,
        "P": state.mark,
        "r": state.rate,
        "T": state.funding_time,
    }


def _channel(name: str) -> str:
    """The stats channel of a stream name: ``btcusdt@kline_1m`` -> ``kline_1m``,
    ``!markPrice@arr@1s`` -> ``markPrice``."""
    rest = name[1:] if name.startswith("!") else name.partition("@")[2]
    return rest.split("@", 1)[0] or "control"
