"""OKX trading statistics (``/api/v5/rubik/stat/*``): a perpetual's open-interest history, as
ccxt's ``publicGetRubikStatContractsOpenInterestHistory`` calls it.

Rows are ``[ts, oi, oiCcy, oiUsd]`` strings, newest first: contracts, base currency and USD
value (the tape's quote value is served as ``oiUsd``: USDT and USDC count as USD, as OKX's own
figures do to within their peg). ``begin``/``end`` are exclusive bounds on ts and a page holds
the newest ``limit`` periods (at most 100) of the range, the rule of every OKX paged endpoint.
Periods follow OKX's bars: ``5m`` to ``4H``, ``6H``...``1W`` at Hong Kong midnight (UTC+8),
the ``utc`` variants at UTC midnight; multi-day and month bars are valid but have no fixed grid
a snapshot series can be cut to, so they answer an empty list, as candles do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crypto_pipelines.domain.timeframes import DAY_MS, HOUR_MS, MINUTE_MS
from crypto_pipelines.replay.venues.base import ErrorKind, Request, Response, VenueError
from crypto_pipelines.replay.venues.open_interest import interest

if TYPE_CHECKING:
    from crypto_pipelines.replay.venues.okx import Okx

OPEN_INTEREST_HISTORY = "rubik/stat/contracts/open-interest-history"
#: OKX documents 5 requests per 2 s, keyed by IP and instId.
OPEN_INTEREST_LIMIT = (5, 2_000, "instId")

_HK = 8 * HOUR_MS  # Hong Kong bars start at 16:00 UTC
_MONDAY = 4 * DAY_MS  # 1970-01-01 was a Thursday; weeks start on Monday
#: OKX period -> (length, offset of its grid from the epoch); None: valid, never on a grid.
PERIODS: dict[str, tuple[int, int] | None] = {
    "5m": (5 * MINUTE_MS, 0),
    "15m": (15 * MINUTE_MS, 0),
    "30m": (30 * MINUTE_MS, 0),
    "1H": (HOUR_MS, 0),
    "2H": (2 * HOUR_MS, 0),
    "4H": (4 * HOUR_MS, 0),
    "6H": (6 * HOUR_MS, -_HK % (6 * HOUR_MS)),
    "12H": (12 * HOUR_MS, -_HK % (12 * HOUR_MS)),
    "1D": (DAY_MS, -_HK % DAY_MS),
    "1W": (7 * DAY_MS, (_MONDAY - _HK) % (7 * DAY_MS)),
    "6Hutc": (6 * HOUR_MS, 0),
    "12Hutc": (12 * HOUR_MS, 0),
    "1Dutc": (DAY_MS, 0),
    "1Wutc": (7 * DAY_MS, _MONDAY),
    **dict.fromkeys(("2D", "3D", "5D", "1M", "3M", "2Dutc", "3Dutc", "5Dutc", "1Mutc", "3Mutc")),
}
_DEFAULT_LIMIT = _MAX_LIMIT = 100


def _int(request: Request, name: str) -> int | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise VenueError(ErrorKind.BAD_REQUEST, f"Parameter {name} error") from None


def open_interest_history(venue: Okx, request: Request) -> Response:
    """The newest ``limit`` periods strictly between ``begin`` and ``end`` (and not after
    now), newest first; an empty list where the tape holds no open interest."""
    market = venue._market(request, ("swap",))
    period = request.query.get("period") or "5m"
    if period not in PERIODS:
        raise VenueError(ErrorKind.BAD_REQUEST, "Parameter period error")
    limit = _int(request, "limit")
    if limit is not None and limit <= 0:
        raise VenueError(ErrorKind.BAD_REQUEST, "Parameter limit error")
    limit = min(limit or _DEFAULT_LIMIT, _MAX_LIMIT)
    begin, end = _int(request, "begin"), _int(request, "end")
    grid = PERIODS[period]
    series = venue.tape.series(market.symbol)
    rows = []
    if grid is not None and series.open_interest is not None:
        length, offset = grid
        now = venue.now_ms()
        low = None if begin is None else begin + 1
        high = now if end is None else min(now, end - 1)
        rows = series.open_interest.buckets(length, low, high, limit, newest=True, offset_ms=offset)
    cells = []
    for row in reversed(rows):
        value = interest(market, series, row)
        cells.append(f'["{row.ts}","{value.contracts}","{value.base}","{value.quote_value}"]')
    return Response(200, ('{"code":"0","msg":"","data":[' + ",".join(cells) + "]}").encode())
