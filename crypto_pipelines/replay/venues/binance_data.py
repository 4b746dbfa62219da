"""Binance's futures statistics (``/futures/data/*`` on the fapi and dapi hosts): open-interest
history, as ccxt's ``fapiDataGetOpenInterestHist`` / ``dapiDataGetOpenInterestHist`` call it.

Both hosts serve the same path, so the host decides the product: USDⓈ-M takes ``symbol``
(``BTCUSDT``), COIN-M takes ``pair`` (``BTCUSD``) and a ``contractType``. A page holds the
newest ``limit`` periods (default 30, at most 500) of ``[startTime, endTime]`` (end: now by
default), oldest first. ccxt bounds every ``since`` with an ``endTime`` ``limit`` periods
later, which only matters if a lone ``startTime`` does not anchor the page at the start: that
is what this replay assumes, and a client paging in windows of ``limit`` periods gets the same
rows either way. USDⓈ-M reports the base amount and its quote value; COIN-M the contracts and
their value in the base coin.

Binance keeps only the latest 30 days of this history, and so does the replay, relative to its
clock: older periods are not served and an older ``startTime`` is refused (-1130), as ccxt's
maintainers report of the real endpoint. A tape from the past therefore needs the clock pinned
inside it (``replay serve --now``, ``ReplayClock``) for its Binance open interest to be seen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crypto_pipelines.domain.timeframes import DAY_MS, timeframe_ms
from crypto_pipelines.replay.limits import Budget
from crypto_pipelines.replay.tape import MarketSpec
from crypto_pipelines.replay.venues.base import (
    ErrorKind,
    Request,
    Response,
    VenueError,
    int_param,
    json_response,
    limit_param,
)
from crypto_pipelines.replay.venues.open_interest import interest

if TYPE_CHECKING:
    from crypto_pipelines.replay.venues.binance import Binance

OPEN_INTEREST_HIST = "/futures/data/openInterestHist"
#: ``/futures/data`` endpoints: 1,000 requests per 5 minutes per IP, apart from the weights.
FUTURES_DATA_REQUESTS = Budget("FUTURES_DATA", 300_000, 1000)
PERIODS = ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")
CONTRACT_TYPES = ("ALL", "CURRENT_QUARTER", "NEXT_QUARTER", "PERPETUAL")
_DEFAULT_LIMIT, _MAX_LIMIT = 30, 500
#: how far back Binance serves open-interest history
HISTORY_MS = 30 * DAY_MS


class InvalidParameter(Exception):
    """Binance's -1130, "a parameter's value is not valid" (the base's BAD_REQUEST is -1102,
    a parameter missing or malformed)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _mandatory(request: Request, name: str) -> str:
    value = request.query.get(name)
    if not value:
        raise VenueError(
            ErrorKind.BAD_REQUEST,
            f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
        )
    return value


def is_coin_m(request: Request) -> bool:
    return request.host.split(".", 1)[0].startswith("dapi")


def open_interest_hist(venue: Binance, request: Request) -> Response:
    """Open interest per period, oldest first; an empty list for a perpetual the tape holds
    no open interest for, and for COIN-M delivery contracts (a tape has perpetuals only)."""
    try:
        return _open_interest_hist(venue, request)
    except InvalidParameter as exc:
        return venue._error_code(400, -1130, exc.message)


def _open_interest_hist(venue: Binance, request: Request) -> Response:
    coin_m = is_coin_m(request)
    market = _coin_m_market(venue, request) if coin_m else _usdm_market(venue, request)
    period = _mandatory(request, "period")
    if period not in PERIODS:
        raise InvalidParameter("Data sent for parameter 'period' is not valid.")
    limit = limit_param(request, "limit", _DEFAULT_LIMIT, _MAX_LIMIT)
    start = int_param(request, "startTime")
    end = int_param(request, "endTime")
    now = venue.now_ms()
    kept_from = now - HISTORY_MS
    if start is not None and start < kept_from:
        raise InvalidParameter("parameter 'startTime' is invalid.")
    start = kept_from if start is None else start
    if market is None:
        return json_response([])
    tape = venue.tape.series(market.symbol)
    if tape.open_interest is None:
        return json_response([])
    rows = tape.open_interest.buckets(
        timeframe_ms(period), start, now if end is None else min(end, now), limit, newest=True
    )
    out: list[dict[str, Any]] = []
    for row in rows:
        value = interest(market, tape, row)
        if coin_m:
            out.append(
                {
                    "pair": f"{market.base}{market.quote}",
                    "contractType": "PERPETUAL",
                    "sumOpenInterest": value.contracts,
                    "sumOpenInterestValue": value.base,
                    "timestamp": row.ts,
                }
            )
        else:
            out.append(
                {
                    "symbol": venue.market_id(market),
                    "sumOpenInterest": value.base,
                    "sumOpenInterestValue": value.quote_value,
                    "timestamp": row.ts,
                }
            )
    return json_response(out)


def _usdm_market(venue: Binance, request: Request) -> MarketSpec:
    market = venue.market(_mandatory(request, "symbol"), "swap")
    if not market.linear:
        raise VenueError(ErrorKind.BAD_SYMBOL, "Invalid symbol.")
    return market


def _coin_m_market(venue: Binance, request: Request) -> MarketSpec | None:
    """The perpetual of ``pair``; None for a delivery contract type (none on a tape)."""
    pair = _mandatory(request, "pair")
    contract_type = _mandatory(request, "contractType")
    if contract_type not in CONTRACT_TYPES:
        raise InvalidParameter("Data sent for parameter 'contractType' is not valid.")
    market = venue.market(f"{pair}_PERP", "swap")
    if market.linear:
        raise VenueError(ErrorKind.BAD_SYMBOL, "Invalid symbol.")
    return market if contract_type in ("ALL", "PERPETUAL") else None
