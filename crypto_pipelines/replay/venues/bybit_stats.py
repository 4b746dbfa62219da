"""Bybit's open-interest history (``/v5/market/open-interest``), as ccxt's
``publicGetV5MarketOpenInterest`` calls it.

Rows are ``{"openInterest", "timestamp"}`` strings, newest first: contracts only (a linear
contract is one base unit, an inverse one is one USD), no value. The endpoint walks backwards
from ``endTime`` (or now): a page holds the newest ``limit`` periods (default 50, at most 200)
of ``[startTime, endTime]``, a lone ``startTime`` is ignored (ccxt's own note), and
``nextPageCursor`` (``lastid%3D...`` like Bybit's, "" only on an empty page) continues with
the periods older than the page; a cursor past the oldest period gets an empty page, which is
where ccxt's ``paginate`` stops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote

from crypto_pipelines.domain.timeframes import DAY_MS, HOUR_MS, MINUTE_MS
from crypto_pipelines.replay.venues.base import (
    ErrorKind,
    Request,
    Response,
    VenueError,
    int_param,
    limit_param,
)
from crypto_pipelines.replay.venues.open_interest import interest

if TYPE_CHECKING:
    from crypto_pipelines.replay.venues.bybit import Bybit

OPEN_INTEREST = "/v5/market/open-interest"
INTERVALS = {
    "5min": 5 * MINUTE_MS,
    "15min": 15 * MINUTE_MS,
    "30min": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "4h": 4 * HOUR_MS,
    "1d": DAY_MS,
}
_LIMIT = (50, 200)


def open_interest(venue: Bybit, request: Request) -> Response:
    """Contracts per period, newest first, in Bybit's envelope (module docstring: paging)."""
    category = venue._category(request, ("linear", "inverse"))
    market = venue._market(request, category)
    period = INTERVALS.get(request.query.get("intervalTime") or "")
    if period is None:
        raise VenueError(ErrorKind.BAD_REQUEST, "params error: intervalTime is invalid")
    limit = limit_param(request, "limit", *_LIMIT)
    start = int_param(request, "startTime")
    end = int_param(request, "endTime")
    if end is None:
        start = None
    now = venue.now_ms()
    high = now if end is None else min(end, now)
    older_than = _cursor(request.query.get("cursor"))
    if older_than is not None:
        high = min(high, older_than - 1)
    series = venue.tape.series(market.symbol)
    oi = series.open_interest
    rows = oi.buckets(period, start, high, limit, newest=True) if oi is not None else []
    cursor = f"lastid%3D{rows[0].ts}" if rows else ""
    items = [
        {"openInterest": interest(market, series, row).contracts, "timestamp": str(row.ts)}
        for row in reversed(rows)
    ]
    return venue._ok(
        {
            "symbol": venue.market_id(market),
            "category": category,
            "list": items,
            "nextPageCursor": cursor,
        }
    )


def _cursor(cursor: str | None) -> int | None:
    """The oldest period of the previous page, from a cursor this venue handed out
    (``lastid=T``, percent-encoded once or twice depending on the client)."""
    if not cursor:
        return None
    values = parse_qs(unquote(unquote(cursor))).get("lastid")
    if values and values[0].isdigit():
        return int(values[0])
    raise VenueError(ErrorKind.BAD_REQUEST, "params error: cursor is invalid")
