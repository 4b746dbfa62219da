"""Bybit v5 instrument and ticker objects built from a tape's markets and data.

Split from ``bybit.py`` to keep each module readable. These are the two payloads whose shape
decides how ccxt classifies a market: ``result.category`` makes a contract linear or
inverse, ``lotSizeFilter.minOrderQty`` is an inverse contract's size, ``fundingInterval`` (in
minutes) sizes ccxt's funding-history window, and ``openInterestValue`` is the only thing
that tells ccxt a ticker belongs to the contract and not to the spot market of the same id.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal, localcontext
from typing import Any

from crypto_pipelines.replay.tape import MarketSpec, SymbolTape
from crypto_pipelines.replay.venues.common import DayStats, decimals_of

#: Bybit's default funding period (minutes) when a tape's funding series cannot tell
DEFAULT_FUNDING_MINUTES = 480
HOUR_MS = 3_600_000

# Order-size ceilings Bybit publishes per instrument; the tape has none, so generous
# constants (as Bybit lists for its majors) stand in for them.
_MAX_QTY = "9000000"
_MAX_PRICE = "1999999.80"

#: decimals of ``price24hPcnt`` as Bybit prints it (spot "0.0068", contracts "0.025861")
PCNT_DECIMALS = {"spot": 4, "linear": 6, "inverse": 6}


def funding_minutes(series: SymbolTape) -> int:
    """The funding period in minutes, as the most common gap between the tape's funding
    times (Bybit lists 60, 240 or 480 per instrument)."""
    funding = series.funding
    if funding is None or len(funding) < 2:
        return DEFAULT_FUNDING_MINUTES
    ts = funding.file.ts[: min(len(funding), 200)].tolist()
    gaps = Counter(b - a for a, b in zip(ts, ts[1:], strict=False) if b > a)
    if not gaps:
        return DEFAULT_FUNDING_MINUTES
    return max(1, gaps.most_common(1)[0][0] // 60_000)


def spot_instrument(m: MarketSpec, market_id: str) -> dict[str, Any]:
    return {
        "symbol": market_id,
        "baseCoin": m.base,
        "quoteCoin": m.quote,
        "innovation": "0",
        "status": "Trading",
        "marginTrading": "none",
        "stTag": "0",
        "lotSizeFilter": {
            "basePrecision": m.amount_step,
            "quotePrecision": "0.00000001",
            "minOrderQty": m.min_amount,
            "maxOrderQty": _MAX_QTY,
            "minOrderAmt": "1",
            "maxOrderAmt": "2000000",
        },
        "priceFilter": {"tickSize": m.price_tick},
        "riskParameters": {"priceLimitRatioX": "0.01", "priceLimitRatioY": "0.02"},
    }


def contract_instrument(
    m: MarketSpec, market_id: str, category: str, minutes: int
) -> dict[str, Any]:
    """A perpetual. For inverse contracts ccxt reads the contract size from ``minOrderQty``
    (Bybit's inverse contracts are 1 USD and the minimum order is one contract), so the
    tape's ``contract_size`` goes there."""
    linear = category == "linear"
    return {
        "symbol": market_id,
        "contractType": "LinearPerpetual" if linear else "InversePerpetual",
        "status": "Trading",
        "baseCoin": m.base,
        "quoteCoin": m.quote,
        "launchTime": str(m.listed_ms or 0),
        "deliveryTime": "0",
        "deliveryFeeRate": "",
        "priceScale": str(decimals_of(m.price_tick)),
        "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
        "priceFilter": {"minPrice": m.price_tick, "maxPrice": _MAX_PRICE, "tickSize": m.price_tick},
        "lotSizeFilter": {
            "maxOrderQty": _MAX_QTY,
            "minOrderQty": m.min_amount if linear else (m.contract_size or "1"),
            "qtyStep": m.amount_step,
            "postOnlyMaxOrderQty": _MAX_QTY,
            "maxMktOrderQty": _MAX_QTY,
            "minNotionalValue": "5" if linear else "",
        },
        "unifiedMarginTrade": True,
        "fundingInterval": minutes,
        "settleCoin": m.settle,
        "copyTrading": "none",
        "upperFundingRate": "0.005",
        "lowerFundingRate": "-0.005",
        "isPreListing": False,
        "preListingInfo": None,
        "displayName": "",
    }


def _pcnt(stats: DayStats, decimals: int) -> str:
    opened = Decimal(stats.open)
    if not opened:
        return "0"
    with localcontext() as ctx:
        ctx.prec = 60
        return str((Decimal(stats.change) / opened).quantize(Decimal(1).scaleb(-decimals)))


def _top(series: SymbolTape, now: int) -> tuple[str, str, str, str]:
    """Best bid and ask (price, size) of the book at ``now``; empty strings, as Bybit
    prints missing values, when the tape has no book then."""
    snapshot = series.book.at(now) if series.book is not None else None
    if snapshot is None:
        return "", "", "", ""
    bid = snapshot.bids[0] if snapshot.bids else ("", "")
    ask = snapshot.asks[0] if snapshot.asks else ("", "")
    return bid[0], bid[1], ask[0], ask[1]


def spot_ticker(market_id: str, stats: DayStats, series: SymbolTape, now: int) -> dict[str, Any]:
    bid, bid_size, ask, ask_size = _top(series, now)
    return {
        "symbol": market_id,
        "bid1Price": bid,
        "bid1Size": bid_size,
        "ask1Price": ask,
        "ask1Size": ask_size,
        "lastPrice": stats.last,
        "prevPrice24h": stats.open,
        "price24hPcnt": _pcnt(stats, PCNT_DECIMALS["spot"]),
        "highPrice24h": stats.high,
        "lowPrice24h": stats.low,
        "turnover24h": stats.quote_volume,
        "volume24h": stats.volume,
        "usdIndexPrice": "",
    }


def contract_ticker(
    market_id: str, category: str, stats: DayStats, series: SymbolTape, now: int, minutes: int
) -> dict[str, Any]:
    """A linear or inverse ticker. The tape has no mark, index or open-interest series:
    mark and index are the last price (as the other venues report them) and open interest
    is "0" — present, because ccxt tells contract tickers from spot ones by it. The
    funding rate is the one the tape settles next (what Bybit's predicted rate converges
    to), else the last settled one. Inverse volume24h counts contracts (USD) and
    turnover24h base coin, the reverse of linear."""
    bid, bid_size, ask, ask_size = _top(series, now)
    rate, next_ts = "", (now // (minutes * 60_000) + 1) * minutes * 60_000
    if series.funding is not None:
        upcoming = series.funding.between(now + 1, None, 1)
        settled = series.funding.between(None, now, 1, newest=True)
        if upcoming:
            rate, next_ts = upcoming[0].rate, upcoming[0].ts
        elif settled:
            rate = settled[0].rate
    hour_ago = _price_at(series, now - HOUR_MS) or stats.open
    linear = category == "linear"
    return {
        "symbol": market_id,
        "lastPrice": stats.last,
        "indexPrice": stats.last,
        "markPrice": stats.last,
        "prevPrice24h": stats.open,
        "price24hPcnt": _pcnt(stats, PCNT_DECIMALS[category]),
        "highPrice24h": stats.high,
        "lowPrice24h": stats.low,
        "prevPrice1h": hour_ago,
        "openInterest": "0",
        "openInterestValue": "0",
        "turnover24h": stats.quote_volume if linear else stats.volume,
        "volume24h": stats.volume if linear else stats.quote_volume,
        "fundingRate": rate,
        "nextFundingTime": str(next_ts),
        "predictedDeliveryPrice": "",
        "basisRate": "",
        "deliveryFeeRate": "",
        "deliveryTime": "0",
        "ask1Size": ask_size,
        "bid1Price": bid,
        "ask1Price": ask,
        "bid1Size": bid_size,
        "basis": "",
        "preOpenPrice": "",
        "preQty": "",
        "curPreListingPhase": "",
    }


def _price_at(series: SymbolTape, ts: int) -> str | None:
    if not series.ohlcv:
        return None
    finest = min(series.ohlcv.values(), key=lambda s: s.timeframe_ms)
    last = finest.between(None, ts, 1, newest=True)
    return last[0].close if last else None
