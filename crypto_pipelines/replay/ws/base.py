"""What every replay WebSocket shares: the connection, its subscriptions, the streaming loop
and the faults.

A connection (``WsSession``) runs three tasks over bare ASGI: a reader that hands each text
frame to the venue's protocol object (``VenueSocket``, one per connection), a streamer that
polls every subscription along the replay clock every ``TICK_S`` and sends what came due, and
a fault timer that drops or stalls the connection as ``FaultConfig`` asks. Every frame the
server sends goes through one gate, so a stall silences acknowledgements and pongs too (a
client's keep-alive notices a stalled exchange the way it would notice a real one). The
streamer polls rather than waits for the clock because tests move a frozen clock from another
thread; 20 ms of polling is invisible next to a venue's own batching (100 ms and up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import orjson

from crypto_pipelines.replay.clock import ReplayClock
from crypto_pipelines.replay.faults import FaultInjector
from crypto_pipelines.replay.stats import Stats
from crypto_pipelines.replay.tape import MarketSpec, SymbolTape
from crypto_pipelines.replay.venues.base import Venue

log = logging.getLogger(__name__)

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: How often the streamer polls the clock (seconds of real time).
TICK_S = 0.02
#: How often the fault timer looks at the clock (seconds of real time).
FAULT_TICK_S = 0.05
#: Close code of an injected drop: 1001 "going away", what an exchange sends when it
#: recycles a connection (ASGI cannot cut the TCP stream without a close frame).
DROP_CODE = 1001


class Host(Protocol):
    """What a connection needs from the app (``ReplayApp`` is one)."""

    clock: ReplayClock
    stats: Stats
    faults: FaultInjector


@dataclass(frozen=True, slots=True)
class Route:
    """Where a connection landed: the venue's endpoint kind (``spot``, ``linear``,
    ``business``...) plus streams named in the URL itself (Binance's ``/ws/<stream>`` and
    ``/stream?streams=a/b``) and whether frames are wrapped as a combined stream."""

    kind: str
    streams: tuple[str, ...] = ()
    combined: bool = False


class Closed(Exception):
    """The connection is gone (closed by either side); the sending task stops."""


@dataclass(slots=True)
class Subscription:
    """One subscribed topic: its stats channel and the frames due at a replay time."""

    channel: str
    poll: Callable[[int], list[str]]


def dumps(payload: Any) -> str:
    return orjson.dumps(payload).decode()


def find_market(
    venue: Venue, market_id: str, market_type: str, linear: bool | None = None
) -> MarketSpec | None:
    """The tape's instrument a venue's id names, of the given type (and, for swaps, margin
    kind when ``linear`` is given); None when the tape lacks it."""
    for market in venue.markets(market_type):
        if venue.market_id(market) != market_id:
            continue
        if linear is not None and market.is_swap and bool(market.linear) != linear:
            continue
        return market
    return None


class VenueSocket:
    """One connection's protocol for a venue: routing of the URL (a class method, before the
    connection is accepted), then the venue's control messages and heartbeats. Subclasses
    subscribe by building ``Subscription`` objects from feeds and their own renderers."""

    #: the tape folder (and main ccxt id) this protocol serves
    venue_name: ClassVar[str]

    def __init__(self, session: WsSession, venue: Venue, route: Route) -> None:
        self.session = session
        self.venue = venue
        self.route = route

    @classmethod
    def accepts(cls, host: str, path: str, query: str) -> Route | None:
        """The route of a WebSocket URL (``host`` and ``path`` as the exchange spells them),
        or None when the venue has no WebSocket there (the handshake is refused)."""
        raise NotImplementedError

    async def opened(self) -> None:
        """Called once the connection is accepted (URL-named streams start here)."""

    async def received(self, text: str) -> None:
        """A text frame from the client."""
        raise NotImplementedError

    async def ticked(self, now_ms: int) -> None:
        """Called every streaming tick after the subscriptions (venue heartbeats)."""

    def series(self, market: MarketSpec) -> SymbolTape:
        return self.venue.tape.series(market.symbol)


class WsSession:
    """One accepted WebSocket connection (see the module docstring)."""

    def __init__(
        self,
        host: Host,
        exchange: str,
        receive: Receive,
        send: Send,
    ) -> None:
        self.host = host
        self.exchange = exchange
        self._receive = receive
        self._asgi_send = send
        self.subs: dict[str, Subscription] = {}
        self.conn_id = secrets.token_hex(8)
        self.opened_at = time.monotonic()
        self.last_sent = self.opened_at  # monotonic time of the last frame sent
        self._lock = asyncio.Lock()
        self._unstalled = asyncio.Event()
        self._unstalled.set()
        self._stall_mark = self.opened_at
        self._stall_until = 0.0
        self._closing = asyncio.Event()
        self._close_code = 1000
        self._close_reason = ""
        self._gone = False
        self.handler: VenueSocket | None = None

    # -- what protocols use --------------------------------------------------------------
    def now_ms(self) -> int:
        return self.host.clock.now_ms()

    def count(self, channel: str, counter: str, n: int = 1) -> None:
        self.host.stats.add(self.exchange, "ws:" + channel, counter, n)

    def subscribe(self, key: str, sub: Subscription) -> None:
        self.subs[key] = sub
        self.count(sub.channel, "ws_subscribed")

    def unsubscribe(self, key: str) -> bool:
        sub = self.subs.pop(key, None)
        if sub is not None:
            self.count(sub.channel, "ws_unsubscribed")
        return sub is not None

    async def reply(self, payload: Any) -> None:
        """A control frame (acknowledgement, error, pong): never garbled, still stalled."""
        await self._send(payload if isinstance(payload, str) else dumps(payload))

    async def error(self, payload: Any, channel: str = "control") -> None:
        self.count(channel, "ws_errors")
        await self.reply(payload)

    async def send_data(self, text: str, channel: str) -> None:
        """A data frame: counted per channel, lost or garbled with the configured
        probabilities."""
        if self.host.faults.lose():
            self.count(channel, "ws_lost")
            return
        garbled = self.host.faults.garble(text)
        if garbled is not None:
            self.count(channel, "ws_malformed")
            text = garbled
        await self._send(text)
        self.count(channel, "ws_messages")

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Ask for the connection to end with a close frame (after the current frame)."""
        self._close_code, self._close_reason = code, reason
        self._closing.set()

    # -- the connection -------------------------------------------------------------------
    async def run(self, handler: VenueSocket) -> None:
        self.handler = handler
        first = await self._receive()
        if first["type"] != "websocket.connect":
            return
        await self._asgi_send({"type": "websocket.accept"})
        self.count("connection", "ws_connections")
        tasks = [
            asyncio.create_task(self._read()),
            asyncio.create_task(self._stream()),
            asyncio.create_task(self._faults()),
            asyncio.create_task(self._closing.wait()),
        ]
        try:
            await handler.opened()
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except Closed:
            pass
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(
                result, Closed | asyncio.CancelledError
            ):
                # A bug, not a client's doing: say so in the log and to the client (1011).
                log.error("replay websocket task failed", exc_info=result)
                self._close_code, self._close_reason = 1011, "internal error"
        if not self._gone:
            with contextlib.suppress(Exception):
                await self._asgi_send(
                    {
                        "type": "websocket.close",
                        "code": self._close_code,
                        "reason": self._close_reason,
                    }
                )
        self._gone = True

    async def _send(self, text: str) -> None:
        await self._unstalled.wait()
        async with self._lock:
            if self._gone:
                raise Closed
            try:
                await self._asgi_send({"type": "websocket.send", "text": text})
                self.last_sent = time.monotonic()
            except Exception as exc:  # uvicorn raises its own disconnect errors
                self._gone = True
                raise Closed from exc

    async def _read(self) -> None:
        assert self.handler is not None
        while True:
            message = await self._receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                self._gone = True
                return
            if kind != "websocket.receive":
                continue
            text = message.get("text")
            if text is None:
                text = (message.get("bytes") or b"").decode("utf-8", "replace")
            await self.handler.received(text)

    async def _stream(self) -> None:
        assert self.handler is not None
        while True:
            await asyncio.sleep(TICK_S)
            await self._unstalled.wait()
            now = self.now_ms()
            for key, sub in list(self.subs.items()):
                if self.subs.get(key) is not sub:
                    continue  # unsubscribed while an earlier frame was being sent
                for text in sub.poll(now):
                    await self.send_data(text, sub.channel)
            await self.handler.ticked(now)

    async def _faults(self) -> None:
        """Drop and stall timers, re-read each tick so ``PUT /_replay/faults`` applies to
        open connections (their periods then count from the change)."""
        while True:
            await asyncio.sleep(FAULT_TICK_S)
            injector = self.host.faults
            cfg = injector.config
            wall = time.monotonic()
            if cfg.ws_drop_every_s and wall - max(self.opened_at, injector.since) >= (
                cfg.ws_drop_every_s
            ):
                self.count("connection", "ws_drops")
                self._close_code, self._close_reason = DROP_CODE, "replay: injected drop"
                return
            if not self._unstalled.is_set():
                if wall >= self._stall_until:
                    self._stall_mark = wall
                    self._unstalled.set()
            elif cfg.ws_stall_every_s and wall - max(self._stall_mark, injector.since) >= (
                cfg.ws_stall_every_s
            ):
                self.count("connection", "ws_stalls")
                self._stall_until = wall + cfg.ws_stall_s
                self._unstalled.clear()
