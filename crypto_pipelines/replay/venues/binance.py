"""Binance: spot (``api.binance.com/api/v3``), USDⓈ-M futures (``fapi.binance.com/fapi/v1``)
and COIN-M futures (``dapi.binance.com/dapi/v1``), as ccxt's ``binance``, ``binanceusdm`` and
``binancecoinm`` call them.

Behaviour follows Binance's docs: klines and funding answer the oldest rows from ``startTime``,
the newest rows up to ``endTime`` (or now) otherwise; aggTrades page by ``fromId`` or by a time
window of at most one hour; weights are charged per request and reported in
``X-MBX-USED-WEIGHT-1M``; 429 carries ``Retry-After`` and a client that keeps going is banned
with 418. Futures statistics (open-interest history, ``/futures/data``) live in
``binance_data``.
"""

from __future__ import annotations

from typing import Any

import orjson

from crypto_pipelines.domain.timeframes import timeframe_ms
from crypto_pipelines.replay.limits import BanPolicy, Budget, Verdict
from crypto_pipelines.replay.tape import MarketSpec
from crypto_pipelines.replay.venues import binance_data
from crypto_pipelines.replay.venues.base import (
    ErrorKind,
    Handler,
    Request,
    Response,
    Venue,
    VenueError,
    gateway_unavailable,
    int_param,
    json_response,
    limit_param,
)
from crypto_pipelines.replay.venues.common import book_update_id, day_stats, decimals_of

# Request-weight budgets per API family (per IP, per minute), as Binance publishes them.
SPOT_WEIGHT = Budget("REQUEST_WEIGHT_SPOT", 60_000, 6_000)
FAPI_WEIGHT = Budget("REQUEST_WEIGHT_FAPI", 60_000, 2_400)
DAPI_WEIGHT = Budget("REQUEST_WEIGHT_DAPI", 60_000, 2_400)
# fundingRate has its own budget: 500 requests per 5 minutes per IP.
FUNDING_RATE_REQUESTS = Budget("FUNDING_RATE", 300_000, 500)
_FAMILY_BUDGET = {"api": SPOT_WEIGHT, "sapi": SPOT_WEIGHT, "fapi": FAPI_WEIGHT, "dapi": DAPI_WEIGHT}

_INTERVALS = (
    "1s",
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "3d",
    "1w",
)
_DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000, 5000)
_FAR_FUTURE_MS = 4133404800000  # Binance's deliveryDate for perpetuals (2100-12-25)

_ERRORS: dict[ErrorKind, tuple[int, int, str]] = {
    ErrorKind.BAD_REQUEST: (
        400,
        -1102,
        "Mandatory parameter was not sent, was empty/null, or malformed.",
    ),
    ErrorKind.BAD_SYMBOL: (400, -1121, "Invalid symbol."),
    ErrorKind.NOT_FOUND: (404, -1000, "Not found."),
    ErrorKind.RATE_LIMIT: (
        429,
        -1003,
        "Too much request weight used; current limit is %s request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.",
    ),
    ErrorKind.BANNED: (
        418,
        -1003,
        "Way too much request weight used; IP banned until %s. Please use WebSocket Streams for live updates to avoid bans.",
    ),
}


def _family(path: str) -> str:
    return path.split("/", 2)[1] if path.count("/") >= 2 else "api"


class Binance(Venue):
    name = "binance"
    aliases = ("binanceusdm", "binancecoinm")
    budgets = (SPOT_WEIGHT,)
    ban = BanPolicy(after=10, ban_ms=120_000)

    def routes(self) -> dict[str, Handler]:
        routes: dict[str, Handler] = {
            "/api/v3/ping": self.ping,
            "/api/v3/time": self.time,
            "/api/v3/exchangeInfo": self.exchange_info,
            "/api/v3/klines": self.klines,
            "/api/v3/uiKlines": self.klines,
            "/api/v3/aggTrades": self.agg_trades,
            "/api/v3/trades": self.recent_trades,
            "/api/v3/depth": self.depth,
            "/api/v3/ticker/24hr": self.ticker_24hr,
            "/sapi/v1/system/status": self.system_status,
            # fapi and dapi hosts alike: binance_data tells them apart by host
            binance_data.OPEN_INTEREST_HIST: self.open_interest_hist,
        }
        for family in ("fapi", "dapi"):
            prefix = f"/{family}/v1"
            routes.update(
                {
                    f"{prefix}/ping": self.ping,
                    f"{prefix}/time": self.time,
                    f"{prefix}/exchangeInfo": self.exchange_info,
                    f"{prefix}/klines": self.klines,
                    f"{prefix}/aggTrades": self.agg_trades,
                    f"{prefix}/trades": self.recent_trades,
                    f"{prefix}/depth": self.depth,
                    f"{prefix}/ticker/24hr": self.ticker_24hr,
                    f"{prefix}/fundingRate": self.funding_rate,
                    f"{prefix}/premiumIndex": self.premium_index,
                }
            )
        return routes

    # -- naming -----------------------------------------------------------------------------
    def market_id(self, market: MarketSpec) -> str:
        if market.is_swap and not market.linear:
            return f"{market.base}{market.quote}_PERP"
        return f"{market.base}{market.quote}"

    def _market_type(self, request: Request) -> str:
        return "spot" if _family(request.path) == "api" else "swap"

    def _market(self, request: Request) -> MarketSpec:
        market = self.market(request.query.get("symbol"), self._market_type(request))
        family = _family(request.path)
        if market.is_swap and (family == "fapi") != bool(market.linear):
            raise VenueError(ErrorKind.BAD_SYMBOL, "Invalid symbol.")
        return market

    # -- errors and limits ------------------------------------------------------------------
    def error(self, kind: ErrorKind, message: str, *, retry_after_s: int | None = None) -> Response:
        if kind is ErrorKind.SERVER_ERROR:
            return gateway_unavailable()
        status, code, text = _ERRORS[kind]
        if kind in (ErrorKind.BAD_REQUEST, ErrorKind.BAD_SYMBOL) and message:
            text = message if kind is ErrorKind.BAD_REQUEST else text
        if "%s" in text:
            text = text % (
                SPOT_WEIGHT.capacity
                if kind is ErrorKind.RATE_LIMIT
                else self.now_ms() + (retry_after_s or 0) * 1000
            )
        headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else {}
        return Response(status, orjson.dumps({"code": code, "msg": text}), headers)

    def budgets_for(self, request: Request) -> tuple[Budget, ...]:
        if request.path.endswith("/fundingRate"):
            return (FUNDING_RATE_REQUESTS,)
        if request.path.startswith("/futures/data/"):
            return (binance_data.FUTURES_DATA_REQUESTS,)
        return (_FAMILY_BUDGET.get(_family(request.path), SPOT_WEIGHT),)

    def endpoint_key(self, request: Request) -> str:
        return _family(request.path)

    def limit_headers(self, request: Request, verdict: Verdict) -> dict[str, str]:
        if verdict.banned:
            return {}
        return {"X-MBX-USED-WEIGHT-1M": str(verdict.used), "X-MBX-USED-WEIGHT": str(verdict.used)}

    def cost(self, request: Request) -> int:
        """Request weight as Binance documents it (spot and futures differ)."""
        endpoint = request.path.rsplit("/", 1)[-1]
        futures = _family(request.path) in ("fapi", "dapi")
        limit = int_param(request, "limit", None) if endpoint in ("klines", "depth") else None
        if endpoint == "exchangeInfo":
            return 1 if futures else 20
        if endpoint in ("klines", "uiKlines"):
            if not futures:
                return 2
            n = limit or 500
            return 1 if n < 100 else 2 if n < 500 else 5 if n <= 1000 else 10
        if endpoint == "aggTrades":
            return 20 if futures else 4
        if endpoint == "trades":
            return 5 if futures else 25
        if endpoint == "depth":
            n = limit or (500 if futures else 100)
            if futures:
                return 2 if n <= 50 else 5 if n <= 100 else 10 if n <= 500 else 20
            return 5 if n <= 100 else 25 if n <= 500 else 50 if n <= 1000 else 250
        if endpoint == "24hr":
            return 1 if futures else 2
        return 1

    # -- endpoints --------------------------------------------------------------------------
    def ping(self, request: Request) -> Response:
        return Response(200, b"{}")

    def time(self, request: Request) -> Response:
        return json_response({"serverTime": self.now_ms()})

    def system_status(self, request: Request) -> Response:
        return json_response({"status": 0, "msg": "normal"})

    def exchange_info(self, request: Request) -> Response:
        family = _family(request.path)
        if family == "api":
            symbols = [self._spot_info(m) for m in self.markets("spot")]
        else:
            linear = family == "fapi"
            symbols = [self._swap_info(m) for m in self.markets("swap") if bool(m.linear) == linear]
        budget = _FAMILY_BUDGET[family]
        return json_response(
            {
                "timezone": "UTC",
                "serverTime": self.now_ms(),
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": budget.capacity,
                    },
                    {
                        "rateLimitType": "ORDERS",
                        "interval": "SECOND",
                        "intervalNum": 10,
                        "limit": 100,
                    },
                    {
                        "rateLimitType": "RAW_REQUESTS",
                        "interval": "MINUTE",
                        "intervalNum": 5,
                        "limit": 61000,
                    },
                ],
                "exchangeFilters": [],
                **(
                    {
                        "assets": [],
                        "futuresType": "U_MARGINED" if family == "fapi" else "COIN_MARGINED",
                    }
                    if family != "api"
                    else {}
                ),
                "symbols": symbols,
            }
        )

    def _filters(self, m: MarketSpec) -> list[dict[str, Any]]:
        return [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": m.price_tick,
                "maxPrice": "1000000.00000000",
                "tickSize": m.price_tick,
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": m.min_amount,
                "maxQty": "9000000.00000000",
                "stepSize": m.amount_step,
            },
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": "0",
                "maxQty": "9000000.00000000",
                "stepSize": "0",
            },
        ]

    def _spot_info(self, m: MarketSpec) -> dict[str, Any]:
        return {
            "symbol": self.market_id(m),
            "status": "TRADING",
            "baseAsset": m.base,
            "baseAssetPrecision": 8,
            "quoteAsset": m.quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": [
                "LIMIT",
                "LIMIT_MAKER",
                "MARKET",
                "STOP_LOSS_LIMIT",
                "TAKE_PROFIT_LIMIT",
            ],
            "icebergAllowed": True,
            "ocoAllowed": True,
            "otoAllowed": True,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True,
            "cancelReplaceAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                *self._filters(m),
                {
                    "filterType": "NOTIONAL",
                    "minNotional": "0",
                    "applyMinToMarket": True,
                    "maxNotional": "9000000.00000000",
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                },
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }

    def _swap_info(self, m: MarketSpec) -> dict[str, Any]:
        info: dict[str, Any] = {
            "symbol": self.market_id(m),
            "pair": f"{m.base}{m.quote}",
            "contractType": "PERPETUAL",
            "deliveryDate": _FAR_FUTURE_MS,
            "onboardDate": m.listed_ms or 0,
            "baseAsset": m.base,
            "quoteAsset": m.quote,
            "marginAsset": m.settle,
            "pricePrecision": decimals_of(m.price_tick),
            "quantityPrecision": decimals_of(m.amount_step),
            "baseAssetPrecision": 8,
            "quotePrecision": 8,
            "underlyingType": "COIN",
            "underlyingSubType": [],
            "triggerProtect": "0.0500",
            "liquidationFee": "0.012500",
            "marketTakeBound": "0.05",
            "maxMoveOrderLimit": 10000,
            "filters": [*self._filters(m), {"filterType": "MIN_NOTIONAL", "notional": "5"}],
            "orderTypes": [
                "LIMIT",
                "MARKET",
                "STOP",
                "STOP_MARKET",
                "TAKE_PROFIT",
                "TAKE_PROFIT_MARKET",
                "TRAILING_STOP_MARKET",
            ],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        }
        if m.linear:
            info.update(
                {
                    "status": "TRADING",
                    "maintMarginPercent": "2.5000",
                    "requiredMarginPercent": "5.0000",
                    "settlePlan": 0,
                }
            )
        else:
            info.update(
                {
                    "contractStatus": "TRADING",
                    "contractSize": int(float(m.contract_size or "1")),
                    "equalQtyPrecision": 4,
                }
            )
        return info

    def klines(self, request: Request) -> Response:
        market = self._market(request)
        interval = request.query.get("interval", "")
        if interval not in _INTERVALS:
            raise VenueError(ErrorKind.BAD_REQUEST, "Invalid interval.")
        series = self.tape.series(market.symbol).ohlcv.get(interval)
        futures = _family(request.path) != "api"
        limit = limit_param(request, "limit", 500, 1500 if futures else 1000)
        start = int_param(request, "startTime")
        end = int_param(request, "endTime")
        if series is None:
            return Response(200, b"[]")
        if start is not None:
            candles = series.between(start, end, limit)
        else:
            candles = series.between(
                None, end if end is not None else self.now_ms(), limit, newest=True
            )
        step = timeframe_ms(interval) - 1
        # Hand-built JSON: the hot path of every historical load (see benchmarks/).
        if _family(request.path) == "dapi":
            # COIN-M rows carry the volume in contracts at 5 and in the base coin at 7, which
            # is where ccxt reads an inverse market's volume; the tape's volume is base volume.
            rows = [
                f'[{c[0]},"{c[1]}","{c[2]}","{c[3]}","{c[4]}","{c[5]}",{c[0] + step},"{c[5]}",0,"0","0","0"]'
                for c in candles
            ]
        else:
            rows = [
                f'[{c[0]},"{c[1]}","{c[2]}","{c[3]}","{c[4]}","{c[5]}",{c[0] + step},"0",0,"0","0","0"]'
                for c in candles
            ]
        return Response(200, ("[" + ",".join(rows) + "]").encode())

    def agg_trades(self, request: Request) -> Response:
        market = self._market(request)
        limit = limit_param(request, "limit", 500, 1000)
        start = int_param(request, "startTime")
        end = int_param(request, "endTime")
        from_id = int_param(request, "fromId")
        trades_series = self.tape.series(market.symbol).trades
        if start is not None and end is not None and end - start > 3_600_000:
            return self._error_code(400, -1127, "More than 1 hours between startTime and endTime.")
        if trades_series is None:
            return Response(200, b"[]")
        if from_id is not None:
            if trades_series.numeric_ids is None:
                raise VenueError(ErrorKind.BAD_REQUEST, "fromId is not supported for this tape")
            i0 = trades_series.id_position(from_id)
            trades = trades_series.rows(i0, min(len(trades_series), i0 + limit))
            if end is not None:
                trades = [t for t in trades if t.ts <= end]
        elif start is not None and end is not None:
            # Binance counts ``limit`` from the end of a time window (its docs' issue #10;
            # ccxt's fetch_trades caveat): the last trades of the hour, ascending.
            trades = trades_series.between(start, end, limit, newest=True)
        elif start is not None:
            trades = trades_series.between(start, None, limit)
        elif end is not None:
            trades = trades_series.between(None, end, limit, newest=True)
        else:
            trades = trades_series.between(None, self.now_ms(), limit, newest=True)
        spot = _family(request.path) == "api"
        return json_response(
            [
                {
                    "a": int(t.id),
                    "p": t.price,
                    "q": t.amount,
                    "f": int(t.id),
                    "l": int(t.id),
                    "T": t.ts,
                    "m": t.side == "sell",
                    **({"M": True} if spot else {}),
                }
                for t in trades
            ]
        )

    def recent_trades(self, request: Request) -> Response:
        market = self._market(request)
        limit = limit_param(request, "limit", 500, 1000)
        trades_series = self.tape.series(market.symbol).trades
        trades = (
            trades_series.between(None, self.now_ms(), limit, newest=True) if trades_series else []
        )
        return json_response(
            [
                {
                    "id": int(t.id),
                    "price": t.price,
                    "qty": t.amount,
                    "quoteQty": "0",
                    "time": t.ts,
                    "isBuyerMaker": t.side == "sell",
                    "isBestMatch": True,
                }
                for t in trades
            ]
        )

    def depth(self, request: Request) -> Response:
        market = self._market(request)
        limit = int_param(request, "limit", 100) or 100
        if limit not in _DEPTH_LIMITS and not (
            _family(request.path) != "api" and limit in (5, 10, 20, 50, 100, 500, 1000)
        ):
            # Binance rounds an unlisted limit up to the next valid one on spot.
            limit = next((x for x in _DEPTH_LIMITS if x >= limit), 5000)
        book = self.tape.series(market.symbol).book
        snapshot = book.at(self.now_ms()) if book is not None else None
        if snapshot is None:
            payload: dict[str, Any] = {"lastUpdateId": 0, "bids": [], "asks": []}
            ts = self.now_ms()
        else:
            ts = snapshot.ts
            payload = {
                "lastUpdateId": book_update_id(snapshot.ts),
                "bids": [list(level) for level in snapshot.bids[:limit]],
                "asks": [list(level) for level in snapshot.asks[:limit]],
            }
        if _family(request.path) != "api":
            payload = {
                "lastUpdateId": payload["lastUpdateId"],
                "E": ts,
                "T": ts,
                "bids": payload["bids"],
                "asks": payload["asks"],
            }
        return json_response(payload)

    def ticker_24hr(self, request: Request) -> Response:
        market = self._market(request)
        now = self.now_ms()
        stats = day_stats(self.tape.series(market.symbol), now)
        if stats is None:
            raise VenueError(ErrorKind.BAD_SYMBOL, "Invalid symbol.")
        change = float(stats.change)
        payload: dict[str, Any] = {
            "symbol": self.market_id(market),
            "priceChange": stats.change,
            "priceChangePercent": f"{(change / float(stats.open) * 100) if float(stats.open) else 0:.3f}",
            "weightedAvgPrice": stats.last,
            "lastPrice": stats.last,
            "lastQty": "0",
            "openPrice": stats.open,
            "highPrice": stats.high,
            "lowPrice": stats.low,
            "volume": stats.volume,
            "quoteVolume": stats.quote_volume,
            "openTime": stats.open_ts,
            "closeTime": stats.close_ts,
            "firstId": 0,
            "lastId": 0,
            "count": stats.count,
        }
        if _family(request.path) == "api":
            payload = {
                **payload,
                "prevClosePrice": stats.open,
                "bidPrice": stats.last,
                "bidQty": "0",
                "askPrice": stats.last,
                "askQty": "0",
            }
        return json_response(payload)

    def funding_rate(self, request: Request) -> Response:
        market = self._market(request)
        limit = limit_param(request, "limit", 100, 1000)
        start = int_param(request, "startTime")
        end = int_param(request, "endTime")
        series = self.tape.series(market.symbol)
        funding = series.funding
        if funding is None:
            return Response(200, b"[]")
        if start is not None:
            rates = funding.between(start, end, limit)
        else:
            rates = funding.between(
                None, end if end is not None else self.now_ms(), limit, newest=True
            )
        marks = min(series.ohlcv.values(), key=lambda s: s.timeframe_ms) if series.ohlcv else None
        out = []
        for rate in rates:
            mark = marks.between(None, rate.ts, 1, newest=True) if marks is not None else []
            out.append(
                {
                    "symbol": self.market_id(market),
                    "fundingTime": rate.ts,
                    "fundingRate": rate.rate,
                    "markPrice": mark[0].close if mark else "",
                }
            )
        return json_response(out)

    def open_interest_hist(self, request: Request) -> Response:
        return binance_data.open_interest_hist(self, request)

    def premium_index(self, request: Request) -> Response:
        market = self._market(request)
        now = self.now_ms()
        series = self.tape.series(market.symbol)
        last_rate = series.funding.between(None, now, 1, newest=True) if series.funding else []
        stats = day_stats(series, now)
        price = stats.last if stats else ""
        interval = 8 * 3_600_000
        return json_response(
            {
                "symbol": self.market_id(market),
                "markPrice": price,
                "indexPrice": price,
                "estimatedSettlePrice": price,
                "lastFundingRate": last_rate[0].rate if last_rate else "0",
                "interestRate": "0.00010000",
                "nextFundingTime": (now // interval + 1) * interval,
                "time": now,
            }
        )

    def _error_code(self, status: int, code: int, msg: str) -> Response:
        return Response(status, orjson.dumps({"code": code, "msg": msg}))
