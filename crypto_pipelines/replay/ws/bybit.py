"""Bybit v5 public streams (``stream.bybit.com/v5/public/{spot,linear,inverse}``).

Topics: ``publicTrade.<symbol>``, ``kline.<interval>.<symbol>`` (``confirm`` true once the
candle's period is over) and ``orderbook.<depth>.<symbol>`` (a snapshot on subscribing, then
deltas; ``u`` and ``seq`` number the tape's snapshots as the REST order book does). Requests
are ``{"op": "subscribe"|"unsubscribe"|"ping", "req_id": ..., "args": [...]}``; answers carry
``success``, ``ret_msg``, ``conn_id``, the echoed ``req_id`` and ``op``. A request naming an
unknown topic or symbol, or one already subscribed, fails whole (``success: false``) and
subscribes nothing. Spot takes at most 10 args per request; linear and inverse cap the args of
a connection at 21,000 characters, as Bybit documents. Pongs follow the two shapes Bybit uses
(spot: ``ret_msg: "pong"``; contracts: ``op: "pong"`` with the server time). Trades come in
batches of at most 1,024 per message, ``L`` the tick direction against the previous trade.
``tickers.<symbol>`` is served for linear and inverse perpetuals with funding data (snapshot,
then deltas; see ``ws.bybit_tickers``); elsewhere (spot among them) it is refused as an
unknown topic.
"""

from __future__ import annotations

from typing import Any

import orjson

from crypto_pipelines.domain.timeframes import TimeframeError, timeframe_ms
from crypto_pipelines.replay.tape import MarketSpec, SymbolTape, Trade
from crypto_pipelines.replay.venues.bybit import _INTERVALS, _product
from crypto_pipelines.replay.venues.common import book_update_id
from crypto_pipelines.replay.ws.base import Route, Subscription, VenueSocket, dumps, find_market
from crypto_pipelines.replay.ws.bybit_tickers import ticker_subscription
from crypto_pipelines.replay.ws.feeds import Bar, BookFeed, CandleFeed, TradeFeed
from crypto_pipelines.replay.ws.marks import has_funding

#: endpoint kind -> (tape market type, linear?)
_KINDS: dict[str, tuple[str, bool | None]] = {
    "spot": ("spot", None),
    "linear": ("swap", True),
    "inverse": ("swap", False),
    "option": ("option", None),
}
_BOOK_DEPTHS = {
    "spot": (1, 50, 200, 1000),
    "linear": (1, 50, 200, 500, 1000),
    "inverse": (1, 50, 200, 500, 1000),
    "option": (25, 100),
}
_SPOT_ARGS_PER_REQUEST = 10
_CONTRACT_ARGS_CHARS = 21_000
_TRADES_PER_MESSAGE = 1024


class BybitSocket(VenueSocket):
    venue_name = "bybit"

    @classmethod
    def accepts(cls, host: str, path: str, query: str) -> Route | None:
        parts = [p for p in path.split("/") if p]
        if len(parts) == 3 and parts[:2] == ["v5", "public"] and parts[2] in _KINDS:
            return Route(parts[2])
        return None

    # -- control --------------------------------------------------------------------------
    def _answer(self, op: str, req_id: Any, success: bool, ret_msg: str) -> dict[str, Any]:
        answer: dict[str, Any] = {"success": success, "ret_msg": ret_msg}
        answer["conn_id"] = self.session.conn_id
        if req_id is not None:
            answer["req_id"] = str(req_id)
        answer["op"] = op
        return answer

    async def received(self, text: str) -> None:
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError:
            request = None
        if not isinstance(request, dict):
            await self.session.error(self._answer("", None, False, "error:request not json"))
            return
        op, req_id, args = request.get("op"), request.get("req_id"), request.get("args")
        if op == "ping":
            await self.session.reply(self._pong(req_id))
        elif op in ("subscribe", "unsubscribe"):
            if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
                await self.session.error(self._answer(op, req_id, False, "error:args invalid"))
            elif op == "subscribe":
                await self._subscribe(args, req_id)
            else:
                for topic in args:
                    self.session.unsubscribe(topic)
                await self.session.reply(self._answer(op, req_id, True, ""))
        else:
            await self.session.error(self._answer(str(op or ""), req_id, False, "error:invalid op"))

    def _pong(self, req_id: Any) -> dict[str, Any]:
        if self.route.kind == "spot":
            return self._answer("ping", req_id, True, "pong")
        pong: dict[str, Any] = {"req_id": str(req_id)} if req_id is not None else {}
        pong.update(op="pong", args=[str(self.session.now_ms())], conn_id=self.session.conn_id)
        return pong

    async def _subscribe(self, topics: list[str], req_id: Any) -> None:
        failure = None
        if self.route.kind == "spot" and len(topics) > _SPOT_ARGS_PER_REQUEST:
            failure = f"args size >{_SPOT_ARGS_PER_REQUEST}"
        elif self.route.kind != "spot" and (
            sum(len(t) for t in (*self.session.subs, *topics)) > _CONTRACT_ARGS_CHARS
        ):
            failure = f"error:args length exceeds {_CONTRACT_ARGS_CHARS} characters"
        built: dict[str, Subscription] = {}
        for topic in topics:
            if failure is not None:
                break
            if topic in self.session.subs or topic in built:
                failure = f"error:already subscribed,topic:{topic}"
                continue
            sub = self._build(topic)
            if isinstance(sub, str):
                failure = sub
            else:
                built[topic] = sub
        if failure is not None:
            channel = topics[0].split(".")[0] if topics else "control"
            await self.session.error(self._answer("subscribe", req_id, False, failure), channel)
            return
        ret_msg = "subscribe" if self.route.kind == "spot" else ""
        await self.session.reply(self._answer("subscribe", req_id, True, ret_msg))
        for topic, sub in built.items():
            self.session.subscribe(topic, sub)

    # -- topics ---------------------------------------------------------------------------
    def _build(self, topic: str) -> Subscription | str:
        """The subscription of a topic, or Bybit's ``ret_msg`` refusing it."""
        parts = topic.split(".")
        name = parts[0]
        known = (("publicTrade", 2), ("kline", 3), ("orderbook", 3), ("tickers", 2))
        if (name, len(parts)) not in known:
            return f"error:handler not found,topic:{topic}"
        if name == "tickers" and self.route.kind not in ("linear", "inverse"):
            return f"error:handler not found,topic:{topic}"
        market_type, linear = _KINDS[self.route.kind]
        market = find_market(self.venue, parts[-1], market_type, linear)
        if market is None:
            return f"Invalid symbol :[{topic}]"
        series = self.series(market)
        start = self.session.now_ms()
        if name == "tickers":
            if not has_funding(series):
                return f"error:handler not found,topic:{topic}"
            market_id = self.venue.market_id(market)
            return ticker_subscription(topic, market_id, self.route.kind, series, start)
        if name == "publicTrade":
            return self._trades(topic, market, series, start)
        if name == "kline":
            timeframe = _INTERVALS.get(parts[1])
            if timeframe is None:
                return f"error:handler not found,topic:{topic}"
            return self._klines(topic, market, series, timeframe, start)
        if not parts[1].isdigit() or int(parts[1]) not in _BOOK_DEPTHS[self.route.kind]:
            return f"error:handler not found,topic:{topic}"
        book = BookFeed(
            series.book,
            start,
            depth=int(parts[1]),
            snapshot_first=True,
            update_id=book_update_id,
        )
        market_id = self.venue.market_id(market)

        def poll_book(now: int) -> list[str]:
            out = []
            for update in book.poll(now):
                data: dict[str, Any] = {"s": market_id, "b": update.bids, "a": update.asks}
                data.update(u=update.update_id, seq=update.update_id)
                kind = "snapshot" if update.snapshot else "delta"
                frame = {"topic": topic, "type": kind, "ts": update.ts, "data": data}
                out.append(dumps({**frame, "cts": update.ts}))
            return out

        return Subscription("orderbook." + parts[1], poll_book)

    def _trades(
        self, topic: str, market: MarketSpec, series: SymbolTape, start: int
    ) -> Subscription:
        feed = TradeFeed(series.trades, start)
        market_id = self.venue.market_id(market)
        last_price: list[str] = []  # the previous trade's price, for the tick direction
        if series.trades is not None:
            before = series.trades.between(None, start, 1, newest=True)
            last_price.extend(t.price for t in before)
        direction = ["ZeroPlusTick"]

        def tick(trade: Trade) -> str:
            if last_price and trade.price != last_price[-1]:
                up = float(trade.price) > float(last_price[-1])
                direction[0] = "PlusTick" if up else "MinusTick"
            elif direction[0] in ("PlusTick", "MinusTick"):
                direction[0] = "Zero" + direction[0]
            last_price[:] = [trade.price]
            return direction[0]

        def poll(now: int) -> list[str]:
            trades = feed.poll(now)
            out = []
            for i in range(0, len(trades), _TRADES_PER_MESSAGE):
                chunk = trades[i : i + _TRADES_PER_MESSAGE]
                data = [
                    {
                        "T": t.ts,
                        "s": market_id,
                        "S": "Buy" if t.side == "buy" else "Sell",
                        "v": t.amount,
                        "p": t.price,
                        "L": tick(t),
                        "i": t.id,
                        "BT": False,
                        "RPI": False,
                    }
                    for t in chunk
                ]
                frame = {"topic": topic, "type": "snapshot", "ts": chunk[-1].ts, "data": data}
                out.append(dumps(frame))
            return out

        return Subscription("publicTrade", poll)

    def _klines(
        self, topic: str, market: MarketSpec, series: SymbolTape, timeframe: str, start: int
    ) -> Subscription:
        interval = topic.split(".")[1]
        try:
            tf = timeframe_ms(timeframe)
        except TimeframeError:  # monthly candles: a tape holds none
            return Subscription("kline." + interval, lambda now: [])
        candles = series.ohlcv.get(timeframe)
        feed = CandleFeed(
            candles,
            series.trades,
            tf,
            start,
            weekly=timeframe.endswith("w"),
            forming=candles is not None,
        )
        inverse = self.route.kind == "inverse"

        def row(bar: Bar) -> dict[str, Any]:
            # Inverse volume is in contracts (USD) and turnover in the base coin, which is
            # where ccxt reads an inverse market's volume; the REST klines do the same.
            other = _product(bar.volume, bar.close)
            volume, turnover = (other, bar.volume) if inverse else (bar.volume, other)
            return {
                "start": bar.ts,
                "end": bar.ts + tf - 1,
                "interval": interval,
                "open": bar.open,
                "close": bar.close,
                "high": bar.high,
                "low": bar.low,
                "volume": volume,
                "turnover": turnover,
                "confirm": bar.closed,
                "timestamp": bar.event_ms,
            }

        def poll(now: int) -> list[str]:
            return [
                dumps({"topic": topic, "data": [row(bar)], "ts": bar.event_ms, "type": "snapshot"})
                for bar in feed.poll(now)
            ]

        return Subscription("kline." + interval, poll)
