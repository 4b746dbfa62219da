"""The replay exchange as an ASGI application.

URL rule: the ccxt URL ``https://HOST/PATH`` of exchange E is served at ``/E/HOST/PATH``.
Control endpoints live under ``/_replay/`` (stats, faults, health). Every exchange request
goes through the same pipeline: latency, injected faults, rate limits, then the venue.
WebSockets follow the same rule (``ws://ADDR/E/HOST/PATH``, PATH possibly empty) and are
handed to the venue's protocol in ``ws/``; a URL no venue streams on is refused at the
handshake (403).
Written against bare ASGI because the hot path (500+ kline requests/s on one core) cannot
afford a framework's routing and response objects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qsl

import orjson

from crypto_pipelines.replay.clock import ReplayClock
from crypto_pipelines.replay.faults import Fault, FaultConfig, FaultInjector
from crypto_pipelines.replay.limits import Limiter
from crypto_pipelines.replay.stats import Stats
from crypto_pipelines.replay.tape import Tape, TapeError
from crypto_pipelines.replay.venues import venue_classes, venue_for
from crypto_pipelines.replay.venues.base import ErrorKind, Request, Response, Venue
from crypto_pipelines.replay.ws import WsSession, socket_classes

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ReplayApp:
    def __init__(
        self,
        tape: Tape,
        *,
        faults: FaultConfig | None = None,
        enforce_limits: bool = False,
        clock: ReplayClock | None = None,
    ) -> None:
        self.tape = tape
        self.clock = clock or ReplayClock()
        self.stats = Stats()
        self.enforce_limits = enforce_limits
        self.set_faults(faults or FaultConfig())
        self.venues: dict[str, Venue] = {}
        self.limiters: dict[str, Limiter] = {}
        for exchange_id, exchange_tape in tape.exchanges.items():
            cls = venue_classes().get(exchange_id)
            if cls is None:
                known = ", ".join(sorted(venue_classes()))
                raise TapeError(
                    tape.root / exchange_id, f"unknown exchange folder (served: {known})"
                )
            venue = cls(exchange_tape, self.clock)
            self.venues[exchange_id] = venue
            self.limiters[exchange_id] = Limiter(cls.ban)

    def set_faults(self, config: FaultConfig) -> None:
        self.faults = FaultInjector(config)

    # -- ASGI ------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path.startswith("/_replay/"):
            response = await self._control(scope, receive, path)
        else:
            response = await self._exchange(scope, path)
        headers = [(b"content-type", response.content_type.encode())]
        headers.extend((k.lower().encode(), str(v).encode()) for k, v in response.headers.items())
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    async def _exchange(self, scope: Scope, path: str) -> Response:
        parts = path.split("/", 3)  # ['', E, HOST, PATH]
        if len(parts) < 4 or not parts[1] or not parts[2]:
            return _plain(404, "expected /EXCHANGE/HOST/PATH")
        exchange_id = venue_for(parts[1])
        venue = self.venues.get(exchange_id or "")
        if venue is None or exchange_id is None:
            return _plain(404, f"exchange {parts[1]!r} is not on this tape")
        query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
        request = Request(scope["method"], parts[2], "/" + parts[3], query)
        endpoint = request.path
        self.stats.add(exchange_id, endpoint, "requests")

        delay = self.faults.latency_s()
        if delay:
            await asyncio.sleep(delay)
        fault = self.faults.draw()
        if fault is Fault.TIMEOUT:
            self.stats.add(exchange_id, endpoint, "timeouts")
            await asyncio.sleep(self.faults.config.timeout_s)
            return venue.error(ErrorKind.SERVER_ERROR, "timed out")
        if fault is Fault.RATE_LIMIT:
            self.stats.add(exchange_id, endpoint, "rate_limited")
            return venue.error(
                ErrorKind.RATE_LIMIT, "rate limit exceeded (injected)", retry_after_s=1
            )
        if fault is Fault.SERVER_ERROR:
            self.stats.add(exchange_id, endpoint, "server_errors")
            return venue.error(ErrorKind.SERVER_ERROR, "internal error (injected)")

        extra: dict[str, str] = {}
        if self.enforce_limits and venue.serves(request.path):
            verdict = self.limiters[exchange_id].charge(
                venue.budgets_for(request), venue.endpoint_key(request), venue.cost(request)
            )
            extra = venue.limit_headers(request, verdict)
            if not verdict.allowed:
                kind = ErrorKind.BANNED if verdict.banned else ErrorKind.RATE_LIMIT
                self.stats.add(
                    exchange_id, endpoint, "banned" if verdict.banned else "rate_limited"
                )
                response = venue.error(
                    kind, "rate limit exceeded", retry_after_s=verdict.retry_after_s
                )
                response.headers.update(extra)
                return response
        response = venue.handle(request)
        response.headers.update(extra)
        self.stats.add(exchange_id, endpoint, "ok" if response.status < 400 else "errors")
        return response

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        parts = scope["path"].split("/", 3)  # ['', E, HOST, PATH?]
        exchange_id = venue_for(parts[1]) if len(parts) >= 3 else None
        venue = self.venues.get(exchange_id or "")
        cls = socket_classes().get(exchange_id or "")
        route = None
        if venue is not None and cls is not None and parts[2]:
            path = "/" + parts[3] if len(parts) == 4 else "/"
            route = cls.accepts(parts[2], path, scope["query_string"].decode("latin-1"))
        if venue is None or cls is None or route is None or exchange_id is None:
            await send({"type": "websocket.close", "code": 1003})
            return
        session = WsSession(self, exchange_id, receive, send)
        await session.run(cls(session, venue, route))

    async def _control(self, scope: Scope, receive: Receive, path: str) -> Response:
        if path == "/_replay/health":
            return Response(200, b'{"status":"ok"}')
        if path == "/_replay/stats":
            if scope["method"] == "DELETE":
                self.stats.reset()
            return Response(200, orjson.dumps(self.stats.snapshot()))
        if path == "/_replay/faults":
            if scope["method"] in ("PUT", "POST"):
                body = await _read_body(receive)
                try:
                    self.set_faults(FaultConfig(**orjson.loads(body or b"{}")))
                except (TypeError, ValueError) as exc:
                    return _plain(400, f"bad fault configuration: {exc}")
            return Response(200, orjson.dumps(asdict(self.faults.config)))
        return _plain(404, f"unknown control endpoint {path}")


def _plain(status: int, message: str) -> Response:
    return Response(status, orjson.dumps({"error": message}))


async def _read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
