"""OKX v5 public streams (``ws.okx.com:8443/ws/v5/public`` and ``/ws/v5/business``).

Channels: ``trades`` (public), ``candle<bar>`` (business only: OKX moved candles there, and
asks for them on ``/public`` are refused with 60018 as OKX does), and the books on public:
``books`` (a 400-level snapshot, then updates with ``seqId``/``prevSeqId`` and the CRC32
``checksum`` of the top 25 levels), ``books5`` and ``bbo-tbt`` (the top 5 / top level, whole,
each time it changes), and for perpetuals with funding data ``mark-price``
(``{"instId", "instType": "SWAP", "markPx", "ts"}`` on subscribing and every 10 s of replay
time, OKX's period for an unchanged mark; the derived mark changes at most once a minute, on
that grid) and ``funding-rate`` (on subscribing and every 60 s, OKX pushing every 30 to 90 s:
``fundingRate`` announced for ``fundingTime``, ``nextFundingTime`` the one after, ``method``
``current_period`` with ``nextFundingRate`` ``""`` as OKX sends then, ``settFundingRate`` the
last settled rate, ``premium`` ``"0"``; OKX's funding caps are left out, the tape has none).
Both are derived as ``ws.marks`` documents; for other instruments they are refused with 60018
like an unknown channel. Sequence ids number the tape's snapshots as the REST book's do. Requests
are ``{"op": "subscribe"|"unsubscribe", "args": [{"channel", "instId"}], "id"?}``, each arg
acknowledged on its own (``{"event": "subscribe", "arg", "connId"}``) or refused
(``{"event": "error", "code", "msg", "connId"}``); heartbeats are the text ``ping``/``pong``.

Limits as documented: 480 subscribe/unsubscribe requests per hour per connection (60014
beyond), args of at most 64 KB a request, and a connection on which nothing has passed either
way for 30 seconds is closed (4004), which is why ccxt.pro pings every 18 s. Candle bars OKX
aligns to Hong Kong time (``1D``, ``6H``...) are valid channels the tape cannot answer (UTC
candles only): acknowledged, silent, as the REST candles answer them with an empty list.
"""

from __future__ import annotations

import time
import zlib
from collections import deque
from typing import Any

import orjson

from crypto_pipelines.domain.timeframes import timeframe_ms
from crypto_pipelines.replay.tape import BookSnapshot, MarketSpec, SymbolTape
from crypto_pipelines.replay.venues.base import Venue
from crypto_pipelines.replay.venues.common import book_update_id
from crypto_pipelines.replay.venues.okx_format import BARS, candle_volumes
from crypto_pipelines.replay.ws.base import (
    Route,
    Subscription,
    VenueSocket,
    WsSession,
    dumps,
    find_market,
)
from crypto_pipelines.replay.ws.feeds import Bar, BookFeed, BookUpdate, CandleFeed, TradeFeed
from crypto_pipelines.replay.ws.marks import EIGHT_HOURS_MS, GridFeed, MarkSource, has_funding

_PATHS = {"/ws/v5/public": "public", "/ws/v5/business": "business", "/ws/v5/private": "private"}
_BOOKS = {"books": 400, "books5": 5, "bbo-tbt": 1}
#: derived channels -> push period (ms of replay time)
_MARKS = {"mark-price": 10_000, "funding-rate": 60_000}
_REQUESTS_PER_HOUR = 480
_MAX_REQUEST_BYTES = 64 * 1024
_IDLE_S = 30.0


def checksum(book: BookSnapshot) -> int:
    """OKX's book checksum: CRC32 (as a signed 32-bit int) of the top 25 bids and asks
    interleaved as ``bidPx:bidSz:askPx:askSz:...``, levels a side has no more of left out."""
    parts: list[str] = []
    for i in range(25):
        if i < len(book.bids):
            parts.extend(book.bids[i])
        if i < len(book.asks):
            parts.extend(book.asks[i])
    value = zlib.crc32(":".join(parts).encode())
    return value - (1 << 32) if value >= 1 << 31 else value


class OkxSocket(VenueSocket):
    venue_name = "okx"

    @classmethod
    def accepts(cls, host: str, path: str, query: str) -> Route | None:
        kind = _PATHS.get(path.rstrip("/"))
        return Route(kind) if kind is not None else None

    def __init__(self, session: WsSession, venue: Venue, route: Route) -> None:
        super().__init__(session, venue, route)
        self._requests: deque[float] = deque()
        self._last_io = time.monotonic()

    # -- control --------------------------------------------------------------------------
    def _fail(self, code: str, msg: str) -> dict[str, Any]:
        return {"event": "error", "code": code, "msg": msg, "connId": self.session.conn_id}

    async def received(self, text: str) -> None:
        self._last_io = time.monotonic()
        if text == "ping":
            await self.session.reply("pong")
            return
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError:
            request = None
        op = request.get("op") if isinstance(request, dict) else None
        args = request.get("args") if isinstance(request, dict) else None
        if op not in ("subscribe", "unsubscribe") or not isinstance(args, list):
            await self.session.error(self._fail("60012", f"Illegal request: {text}"))
            return
        assert isinstance(request, dict)
        now = time.monotonic()
        self._requests.append(now)
        while self._requests and self._requests[0] <= now - 3600:
            self._requests.popleft()
        if len(self._requests) > _REQUESTS_PER_HOUR:
            await self.session.error(self._fail("60014", "Requests too frequent."))
            return
        if len(text.encode()) > _MAX_REQUEST_BYTES:
            await self.session.error(self._fail("60013", "Invalid args"))
            return
        for arg in args:
            await self._one(op, arg, request.get("id"))

    async def _one(self, op: str, arg: Any, request_id: Any) -> None:
        if not isinstance(arg, dict) or not isinstance(arg.get("channel"), str):
            await self.session.error(self._fail("60012", f"Illegal request: {dumps(arg)}"))
            return
        channel, inst_id = arg["channel"], arg.get("instId")
        key = f"{channel}:{inst_id}"
        ack: dict[str, Any] = {"id": request_id} if request_id is not None else {}
        ack.update(event=op, arg={"channel": channel, "instId": inst_id})
        ack["connId"] = self.session.conn_id
        if op == "unsubscribe":
            self.session.unsubscribe(key)
            await self.session.reply(ack)
            return
        sub = self._build(channel, inst_id) if isinstance(inst_id, str) else None
        if sub is None:
            msg = (
                f"Wrong URL or channel:{channel},instId:{inst_id} doesn't exist. Please use "
                "the correct URL, channel and parameters referring to API document."
            )
            await self.session.error(self._fail("60018", msg), channel)
            return
        await self.session.reply(ack)
        self.session.subscribe(key, sub)

    async def ticked(self, now_ms: int) -> None:
        wall = time.monotonic()
        if self.session.last_sent > self._last_io:
            self._last_io = self.session.last_sent
        if wall - self._last_io > _IDLE_S:
            self.session.close(4004, "No data received in 30s.")

    # -- channels -------------------------------------------------------------------------
    def _build(self, channel: str, inst_id: str) -> Subscription | None:
        kind = self.route.kind
        if kind == "business" and channel.startswith("candle"):
            bar = channel.removeprefix("candle")
            if bar not in BARS:
                return None
        elif kind != "public" or (
            channel != "trades" and channel not in _BOOKS and channel not in _MARKS
        ):
            return None
        market = find_market(self.venue, inst_id, "swap" if inst_id.endswith("-SWAP") else "spot")
        if market is None:
            return None
        series = self.series(market)
        start = self.session.now_ms()
        arg = {"channel": channel, "instId": inst_id}
        if channel == "trades":
            feed = TradeFeed(series.trades, start)

            def trades(now: int) -> list[str]:
                return [
                    dumps(
                        {
                            "arg": arg,
                            "data": [
                                {
                                    "instId": inst_id,
                                    "tradeId": t.id,
                                    "px": t.price,
                                    "sz": t.amount,
                                    "side": t.side,
                                    "ts": str(t.ts),
                                    "count": "1",
                                    "source": "0",
                                }
                            ],
                        }
                    )
                    for t in feed.poll(now)
                ]

            return Subscription("trades", trades)
        if channel in _BOOKS:
            return self._books(channel, arg, series, start)
        if channel in _MARKS:
            return self._marks(channel, arg, market, series, start)
        return self._candles(channel, arg, market, series, start)

    def _candles(
        self, channel: str, arg: dict[str, str], market: MarketSpec, series: SymbolTape, start: int
    ) -> Subscription:
        timeframe = BARS[channel.removeprefix("candle")]
        if timeframe is None:
            return Subscription(channel, lambda now: [])
        candles = series.ohlcv.get(timeframe)
        feed = CandleFeed(
            candles,
            series.trades,
            timeframe_ms(timeframe),
            start,
            weekly=timeframe.endswith("w"),
            forming=candles is not None,
        )

        def row(bar: Bar) -> list[str]:
            vol, vol_ccy, quote = candle_volumes(market, bar.volume, bar.close)
            confirm = "1" if bar.closed else "0"
            return [
                str(bar.ts),
                bar.open,
                bar.high,
                bar.low,
                bar.close,
                vol,
                vol_ccy,
                quote,
                confirm,
            ]

        return Subscription(
            channel, lambda now: [dumps({"arg": arg, "data": [row(b)]}) for b in feed.poll(now)]
        )

    def _marks(
        self, channel: str, arg: dict[str, str], market: MarketSpec, series: SymbolTape, start: int
    ) -> Subscription | None:
        if not market.is_swap or not has_funding(series):
            return None
        source = MarkSource(series, EIGHT_HOURS_MS)
        grid = GridFeed(_MARKS[channel], start, first=True, sources=(source,))
        base = {"instId": arg["instId"], "instType": "SWAP"}

        def data(t: int) -> dict[str, str] | None:
            state = source.at(t)
            if state is None:
                return None
            if channel == "mark-price":
                return {**base, "markPx": state.mark, "ts": str(t)}
            return {
                **base,
                "method": "current_period",
                "fundingRate": state.rate,
                "fundingTime": str(state.funding_time),
                "nextFundingRate": "",
                "nextFundingTime": str(source.next_funding(state.funding_time)[0]),
                "settFundingRate": state.settled,
                "settState": "settled",
                "premium": "0",
                "interestRate": "0",
                "ts": str(t),
            }

        def poll(now: int) -> list[str]:
            rows = (data(t) for t in grid.poll(now))
            return [dumps({"arg": arg, "data": [row]}) for row in rows if row is not None]

        return Subscription(channel, poll)

    def _books(
        self, channel: str, arg: dict[str, str], series: SymbolTape, start: int
    ) -> Subscription:
        depth = _BOOKS[channel]
        incremental = channel == "books"
        feed = BookFeed(
            series.book, start, depth=depth, snapshot_first=True, update_id=book_update_id
        )

        def levels(side: list[tuple[str, str]]) -> list[list[str]]:
            return [[p, a, "0", "0" if a == "0" else "1"] for p, a in side]

        def frame(update: BookUpdate) -> str:
            if incremental:
                data: dict[str, Any] = {
                    "asks": levels(update.asks),
                    "bids": levels(update.bids),
                    "ts": str(update.ts),
                    "checksum": checksum(update.book),
                    "prevSeqId": -1 if update.snapshot else update.prev_id,
                    "seqId": update.update_id,
                }
                action = "snapshot" if update.snapshot else "update"
                return dumps({"arg": arg, "action": action, "data": [data]})
            book = update.book
            data = {"asks": levels(book.asks), "bids": levels(book.bids), "ts": str(update.ts)}
            if channel == "books5":
                data.update(instId=arg["instId"], seqId=update.update_id)
            return dumps({"arg": arg, "data": [data]})

        return Subscription(channel, lambda now: [frame(u) for u in feed.poll(now)])
