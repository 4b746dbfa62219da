"""OKX v5 public REST (``www.okx.com/api/v5``), as ccxt's ``okx`` (and ``myokx``/``okxus``,
which differ only in hostname) call it.

Behaviour follows OKX's docs: every answer is ``{"code","msg","data":[...]}`` with strings for
numbers; rows come newest first; ``after``/``before`` are exclusive bounds on ts (or on
tradeId) and a page holds the newest ``limit`` matching rows (see ``okx_format``). Errors
travel as codes in the body: an unknown instId is 51001 with HTTP 200, a bad parameter 51000
with HTTP 400, rate limiting 50011 with HTTP 429 (ccxt maps the code, not the status). Rate
limits are per endpoint per IP (some per instType or instId), in 2-second windows.

Choices where OKX's docs are silent: ``public/funding-rate-history`` with ``before`` alone
returns the newest rows after it, the rule OKX documents for its other paged endpoints; so
ccxt's ``since`` there yields the newest page, and older pages come from ``after``. History
retention (3 months for trades and funding) is not applied: the tape is what the exchange
holds. ``market/candles`` serves only the latest 1,440 bars at or before "now", as OKX does.
"""

from __future__ import annotations

from typing import Any

import orjson

from crypto_pipelines.replay.clock import ReplayClock
from crypto_pipelines.replay.limits import Budget
from crypto_pipelines.replay.tape import ExchangeTape, MarketSpec, TradeSeries
from crypto_pipelines.replay.venues import okx_stats
from crypto_pipelines.replay.venues.base import (
    ErrorKind,
    Handler,
    Request,
    Response,
    Venue,
    VenueError,
    json_response,
)
from crypto_pipelines.replay.venues.okx_format import (
    BARS,
    INST_TYPES,
    candle_rows,
    envelope,
    inst_id,
    instrument,
    okx_span,
    ticker_row,
)

_API = "/api/v5"

#: Documented limits: path -> (requests, window ms, the parameter that also keys the limit).
_LIMITS: dict[str, tuple[int, int, str | None]] = {
    "public/instruments": (20, 2_000, "instType"),
    "market/candles": (40, 2_000, None),
    "market/history-candles": (20, 2_000, None),
    "market/trades": (100, 2_000, None),
    "market/history-trades": (20, 2_000, None),
    "market/books": (40, 2_000, None),
    "market/books-full": (10, 2_000, None),
    "market/ticker": (20, 2_000, None),
    "market/tickers": (20, 2_000, None),
    "public/funding-rate-history": (10, 2_000, "instId"),
    "public/time": (10, 2_000, None),
    okx_stats.OPEN_INTEREST_HISTORY: okx_stats.OPEN_INTEREST_LIMIT,
    "system/status": (1, 5_000, None),
}
BUDGETS: dict[str, Budget] = {
    f"{_API}/{path}": Budget(f"okx {path}", window_ms, capacity, per_endpoint=True)
    for path, (capacity, window_ms, _) in _LIMITS.items()
}

#: Candle endpoints: (default limit, max limit, bars held: candles keeps the latest 1,440).
_CANDLES: dict[str, tuple[int, int, int | None]] = {
    "market/candles": (100, 300, 1440),
    "market/history-candles": (100, 300, None),
}
#: Book endpoints: max depth per side (``sz`` defaults to 1 on both).
_BOOKS: dict[str, int] = {"market/books": 400, "market/books-full": 5000}

#: ErrorKind -> (HTTP status, code, msg) as OKX words them.
_ERRORS: dict[ErrorKind, tuple[int, str, str]] = {
    ErrorKind.BAD_REQUEST: (400, "51000", "Parameter error"),
    ErrorKind.BAD_SYMBOL: (200, "51001", "Instrument ID or Spread ID doesn't exist."),
    # A path the replay does not serve: ccxt raises a plain ExchangeError (not retryable).
    ErrorKind.NOT_FOUND: (404, "404", "Not Found"),
    ErrorKind.RATE_LIMIT: (429, "50011", "Too Many Requests"),
    ErrorKind.BANNED: (429, "50011", "Too Many Requests"),
    # 50026 is ExchangeNotAvailable in ccxt (50001, "upgrading", would be OnMaintenance).
    ErrorKind.SERVER_ERROR: (500, "50026", "System error. Try again later."),
}


class OkxError(VenueError):
    """An OKX error with its own code (the ErrorKinds cover only the common ones)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(ErrorKind.BAD_REQUEST, message)
        self.status = status
        self.code = code


def _missing(name: str) -> OkxError:
    return OkxError(400, "50014", f"Parameter {name} can not be empty")


def _bad(name: str) -> OkxError:
    return OkxError(400, "51000", f"Parameter {name} error")


def _int(request: Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise _bad(name) from None


def _limit(request: Request, name: str, default: int, maximum: int) -> int:
    """A row count clamped silently to the endpoint's maximum, as OKX does."""
    value = _int(request, name)
    if value is None:
        return default
    if value <= 0:
        raise _bad(name)
    return min(value, maximum)


class Okx(Venue):
    name = "okx"
    aliases = ("myokx", "okxus")
    budgets = tuple(BUDGETS.values())

    def __init__(self, tape: ExchangeTape, clock: ReplayClock) -> None:
        # Row positions of trade ids, for tapes whose ids are not increasing integers.
        self._id_positions: dict[str, dict[str, int]] = {}
        super().__init__(tape, clock)

    def routes(self) -> dict[str, Handler]:
        routes: dict[str, Handler] = {
            "public/instruments": self.instruments,
            "market/trades": self.trades,
            "market/history-trades": self.history_trades,
            "public/funding-rate-history": self.funding_rate_history,
            okx_stats.OPEN_INTEREST_HISTORY: self.open_interest_history,
            "market/ticker": self.ticker,
            "market/tickers": self.tickers,
            "public/time": self.time,
            "system/status": self.system_status,
        }
        for path in _CANDLES:
            routes[path] = self.candles
        for path in _BOOKS:
            routes[path] = self.books
        return {f"{_API}/{path}": self._coded(handler) for path, handler in routes.items()}

    # -- naming -----------------------------------------------------------------------------
    def market_id(self, market: MarketSpec) -> str:
        return inst_id(market)

    def _market(self, request: Request, types: tuple[str, ...] = ("spot", "swap")) -> MarketSpec:
        raw = request.query.get("instId")
        if not raw:
            raise _missing("instId")
        for market_type in types:
            found = self._by_id.get((raw, market_type))
            if found is not None:
                return found
        raise VenueError(ErrorKind.BAD_SYMBOL, f"unknown instrument {raw}")

    # -- errors and limits ------------------------------------------------------------------
    def _coded(self, handler: Handler) -> Handler:
        """Answer an OkxError with its own code (the base maps only ErrorKinds)."""

        def run(request: Request) -> Response:
            try:
                return handler(request)
            except OkxError as exc:
                return self._body(exc.status, exc.code, exc.message)

        return run

    def error(self, kind: ErrorKind, message: str, *, retry_after_s: int | None = None) -> Response:
        status, code, text = _ERRORS[kind]
        if kind in (ErrorKind.RATE_LIMIT, ErrorKind.BANNED):
            # OKX's rate-limit answer has no data field.
            return Response(status, orjson.dumps({"msg": text, "code": code}))
        if kind is ErrorKind.BAD_REQUEST and message.startswith("Parameter "):
            text = message
        return self._body(status, code, text)

    @staticmethod
    def _body(status: int, code: str, msg: str) -> Response:
        return Response(status, orjson.dumps({"code": code, "msg": msg, "data": []}))

    def budgets_for(self, request: Request) -> tuple[Budget, ...]:
        budget = BUDGETS.get(request.path)
        return (budget,) if budget is not None else ()

    def endpoint_key(self, request: Request) -> str:
        """OKX keys some limits by IP and a parameter too (instType, instId)."""
        rule = _LIMITS.get(request.path.removeprefix(_API + "/"))
        scope = rule[2] if rule else None
        return f"{request.path}?{request.query.get(scope, '')}" if scope else request.path

    # -- endpoints --------------------------------------------------------------------------
    def time(self, request: Request) -> Response:
        return json_response(envelope([{"ts": str(self.now_ms())}]))

    def system_status(self, request: Request) -> Response:
        return json_response(envelope([]))

    def instruments(self, request: Request) -> Response:
        kind = request.query.get("instType")
        if not kind:
            raise _missing("instType")
        if kind not in INST_TYPES:
            raise _bad("instType")
        family = request.query.get("instFamily") or request.query.get("uly")
        if kind == "OPTION" and not family:
            raise OkxError(400, "50015", "Either parameter instFamily or uly is required")
        market_type = INST_TYPES[kind]
        markets = self.markets(market_type) if market_type else []
        codes = {symbol: 10_000 + i for i, symbol in enumerate(sorted(self.tape.markets))}
        rows = [instrument(m, codes[m.symbol]) for m in markets]
        if family and kind != "SPOT":
            rows = [r for r in rows if family in (r["uly"], r["instFamily"])]
        wanted = request.query.get("instId")
        if wanted:
            rows = [r for r in rows if r["instId"] == wanted]
            if not rows:
                raise VenueError(ErrorKind.BAD_SYMBOL, f"unknown instrument {wanted}")
        return json_response(envelope(rows))

    def candles(self, request: Request) -> Response:
        market = self._market(request)
        default, maximum, held = _CANDLES[request.path.removeprefix(_API + "/")]
        bar = request.query.get("bar") or "1m"
        if bar not in BARS:
            raise _bad("bar")
        limit = _limit(request, "limit", default, maximum)
        before, after = _int(request, "before"), _int(request, "after")
        timeframe = BARS[bar]
        series = self.tape.series(market.symbol).ohlcv.get(timeframe) if timeframe else None
        if series is None:
            return json_response(envelope([]))
        now = self.now_ms()
        i0, i1 = okx_span(series, before, after, limit, now)
        if held is not None:
            newest = series.span(None, now, 1, newest=True)[1]
            i0 = max(i0, newest - held)
        return Response(
            200, candle_rows(series.rows(i0, max(i0, i1)), market, series.timeframe_ms, now)
        )

    def trades(self, request: Request) -> Response:
        """The latest trades at "now" (``after``/``before`` are not parameters here)."""
        market = self._market(request)
        limit = _limit(request, "limit", 100, 500)
        series = self.tape.series(market.symbol).trades
        if series is None:
            return json_response(envelope([]))
        return self._trade_page(
            market, series, *series.span(None, self.now_ms(), limit, newest=True)
        )

    def history_trades(self, request: Request) -> Response:
        """``type=1`` pages by tradeId, ``type=2`` by ts (``after`` only: OKX refuses
        ``before`` with ts paging)."""
        market = self._market(request)
        limit = _limit(request, "limit", 100, 100)
        paging = request.query.get("type") or "1"
        if paging not in ("1", "2"):
            raise _bad("type")
        if paging == "2" and request.query.get("before"):
            raise OkxError(
                200, "50039", "Parameter before isn't supported for timestamp pagination"
            )
        series = self.tape.series(market.symbol).trades
        if series is None:
            return json_response(envelope([]))
        now = self.now_ms()
        if paging == "2":
            span = okx_span(series, None, _int(request, "after"), limit, now)
            return self._trade_page(market, series, *span)
        lo, hi = 0, series.span(None, now, 1, newest=True)[1]
        if request.query.get("after"):
            hi = min(hi, self._id_index(market.symbol, series, request, "after"))
        if request.query.get("before"):
            lo = self._id_index(market.symbol, series, request, "before")
        return self._trade_page(market, series, max(lo, hi - limit), hi)

    def _id_index(self, symbol: str, series: TradeSeries, request: Request, name: str) -> int:
        """Row index of the first trade newer than the id in ``before``, or of the first not
        older than the id in ``after``. Tapes whose ids are not increasing integers are paged
        by the id's position in the tape."""
        raw, newer = request.query[name], name == "before"
        if series.numeric_ids is not None:
            value = _int(request, name)
            assert value is not None
            return series.id_position(value + 1 if newer else value)
        positions = self._id_positions.get(symbol)
        if positions is None:
            positions = {t.id: i for i, t in enumerate(series.rows(0, len(series)))}
            self._id_positions[symbol] = positions
        if raw not in positions:
            raise _bad(name)
        return positions[raw] + (1 if newer else 0)

    def _trade_page(self, market: MarketSpec, series: TradeSeries, i0: int, i1: int) -> Response:
        name = inst_id(market)
        rows = [
            {
                "instId": name,
                "side": t.side,
                "sz": t.amount,
                "px": t.price,
                "tradeId": t.id,
                "ts": str(t.ts),
            }
            for t in reversed(series.rows(i0, max(i0, i1)))
        ]
        return json_response(envelope(rows))

    def books(self, request: Request) -> Response:
        """The tape's snapshot at or before "now", ``sz`` levels a side; levels are
        ``[px, sz, "0" (deprecated), orders]``."""
        market = self._market(request)
        depth = _limit(request, "sz", 1, _BOOKS[request.path.removeprefix(_API + "/")])
        book = self.tape.series(market.symbol).book
        now = self.now_ms()
        snapshot = book.at(now) if book is not None else None
        if snapshot is None:
            return json_response(envelope([{"asks": [], "bids": [], "ts": str(now)}]))
        return json_response(
            envelope(
                [
                    {
                        "asks": [[p, a, "0", "1"] for p, a in snapshot.asks[:depth]],
                        "bids": [[p, a, "0", "1"] for p, a in snapshot.bids[:depth]],
                        "ts": str(snapshot.ts),
                    }
                ]
            )
        )

    def funding_rate_history(self, request: Request) -> Response:
        market = self._market(request, ("swap",))
        limit = _limit(request, "limit", 100, 100)
        before, after = _int(request, "before"), _int(request, "after")
        series = self.tape.series(market.symbol).funding
        if series is None:
            return json_response(envelope([]))
        i0, i1 = okx_span(series, before, after, limit, self.now_ms())
        name = inst_id(market)
        rows = [
            # ccxt reads the unified rate from realizedRate: both carry the tape's rate.
            {
                "instType": "SWAP",
                "instId": name,
                "fundingRate": r.rate,
                "realizedRate": r.rate,
                "fundingTime": str(r.ts),
            }
            for r in reversed(series.rows(i0, max(i0, i1)))
        ]
        return json_response(envelope(rows))

    def open_interest_history(self, request: Request) -> Response:
        return okx_stats.open_interest_history(self, request)

    def ticker(self, request: Request) -> Response:
        market = self._market(request)
        return json_response(envelope([self._ticker(market, self.now_ms())]))

    def tickers(self, request: Request) -> Response:
        kind = request.query.get("instType")
        if not kind:
            raise _missing("instType")
        if kind not in INST_TYPES:
            raise _bad("instType")
        market_type = INST_TYPES[kind]
        now = self.now_ms()
        markets = self.markets(market_type) if market_type else []
        return json_response(envelope([self._ticker(m, now) for m in markets]))

    def _ticker(self, market: MarketSpec, now: int) -> dict[str, Any]:
        return ticker_row(market, self.tape.series(market.symbol), now)
