"""What every replay venue shares: requests, responses, errors, market lookup, routing.

A venue is a small module of data and formatting on this base: the paths it serves, how it
names instruments, its rate-limit budgets and how it words an error. The ASGI app does
everything else (faults, limits, stats) the same way for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

import orjson

from crypto_pipelines.replay.clock import ReplayClock
from crypto_pipelines.replay.limits import BanPolicy, Budget, Verdict
from crypto_pipelines.replay.tape import ExchangeTape, MarketSpec


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    host: str
    path: str  # the exchange's own path, e.g. "/api/v3/klines"
    query: Mapping[str, str]
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


class ErrorKind(Enum):
    BAD_REQUEST = "bad_request"
    BAD_SYMBOL = "bad_symbol"
    NOT_FOUND = "not_found"
    RATE_LIMIT = "rate_limit"
    BANNED = "banned"
    SERVER_ERROR = "server_error"


class VenueError(Exception):
    """Raised by a handler; the venue turns it into the exchange's own error response."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


Handler = Callable[[Request], Response]


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(status, orjson.dumps(payload), headers or {})


def raw_json_response(body: str | bytes, status: int = 200) -> Response:
    return Response(status, body.encode() if isinstance(body, str) else body)


GATEWAY_503 = (
    b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n"
    b"<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n</body>\r\n</html>\r\n"
)


def gateway_unavailable() -> Response:
    """What an exchange's edge answers when the service behind it is down: an HTML 503, not
    the API's JSON. ccxt turns it into ExchangeNotAvailable for every venue, as it would
    against the real exchange."""
    return Response(503, GATEWAY_503, content_type="text/html")


class Venue:
    """Base of the four venues. Subclasses set the class data and implement ``routes``,
    ``market_id`` and ``error``."""

    #: tape folder (and main ccxt id) this venue serves
    name: ClassVar[str]
    #: other ccxt ids whose URLs route here (e.g. binanceusdm)
    aliases: ClassVar[tuple[str, ...]] = ()
    #: rate-limit budgets enforced with --enforce-limits
    budgets: ClassVar[tuple[Budget, ...]] = ()
    ban: ClassVar[BanPolicy | None] = None

    def __init__(self, tape: ExchangeTape, clock: ReplayClock) -> None:
        self.tape = tape
        self.clock = clock
        self._by_id: dict[tuple[str, str], MarketSpec] = {}
        for market in tape.markets.values():
            self._by_id[(self.market_id(market), market.type)] = market
        self._routes = self.routes()

    # -- subclass interface ---------------------------------------------------------------
    def routes(self) -> dict[str, Handler]:
        """Map of exchange path (as ccxt requests it) to handler."""
        raise NotImplementedError

    def market_id(self, market: MarketSpec) -> str:
        """The exchange's own instrument id for a market (``BTCUSDT``, ``BTC-USDT-SWAP``...)."""
        raise NotImplementedError

    def error(self, kind: ErrorKind, message: str, *, retry_after_s: int | None = None) -> Response:
        """The exchange's error response (status, body, headers) for ``kind``."""
        raise NotImplementedError

    def cost(self, request: Request) -> int:
        """Rate-limit cost of a request (Binance weight; 1 elsewhere)."""
        return 1

    def budgets_for(self, request: Request) -> tuple[Budget, ...]:
        """The budgets a request draws on (most venues: all of ``budgets``)."""
        return self.budgets

    def endpoint_key(self, request: Request) -> str:
        """Which per-endpoint budget a request draws on."""
        return request.path

    def limit_headers(self, request: Request, verdict: Verdict) -> dict[str, str]:
        """Headers that report budget use on every answer (X-MBX-USED-WEIGHT-1M...)."""
        return {}

    # -- shared behaviour -----------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        handler = self._routes.get(request.path)
        if handler is None:
            return self.error(
                ErrorKind.NOT_FOUND, f"{request.path} is not served by the replay exchange"
            )
        try:
            return handler(request)
        except VenueError as exc:
            return self.error(exc.kind, exc.message)

    def serves(self, path: str) -> bool:
        return path in self._routes

    def market(self, market_id: str | None, market_type: str) -> MarketSpec:
        """Look up an instrument by the exchange's id; BAD_SYMBOL when the tape lacks it."""
        if not market_id:
            raise VenueError(ErrorKind.BAD_REQUEST, "missing instrument parameter")
        found = self._by_id.get((market_id, market_type))
        if found is None:
            raise VenueError(ErrorKind.BAD_SYMBOL, f"unknown instrument {market_id}")
        return found

    def markets(self, market_type: str | None = None) -> list[MarketSpec]:
        return [m for m in self.tape.markets.values() if market_type in (None, m.type)]

    def now_ms(self) -> int:
        return self.clock.now_ms()


def int_param(request: Request, name: str, default: int | None = None) -> int | None:
    """An optional integer query parameter; BAD_REQUEST naming it when malformed."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise VenueError(
            ErrorKind.BAD_REQUEST, f"parameter {name} must be an integer, got {raw!r}"
        ) from None


def limit_param(request: Request, name: str, default: int, maximum: int) -> int:
    """A row limit clamped to the exchange's maximum (as the exchanges do)."""
    value = int_param(request, name, default)
    assert value is not None
    if value <= 0:
        raise VenueError(ErrorKind.BAD_REQUEST, f"parameter {name} must be positive, got {value}")
    return min(value, maximum)
