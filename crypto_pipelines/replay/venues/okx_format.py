"""OKX v5 wire formats and paging rule, kept apart from the endpoint plumbing in ``okx.py``.

Everything OKX sends is a JSON string (``"ts":"1712250348676"``), rows come newest first, and
every paged endpoint uses one rule: ``after=X`` means "strictly older than X", ``before=X``
"strictly newer than X", and the page holds the *newest* ``limit`` rows that match (so
``before`` alone returns the latest data, as OKX documents for candles and trades).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Protocol

from crypto_pipelines.domain.timeframes import DAY_MS, HOUR_MS
from crypto_pipelines.replay.tape import Candle, MarketSpec, SymbolTape
from crypto_pipelines.replay.venues.common import day_stats, plain_decimal

#: OKX ``bar`` values -> the tape timeframe they are served from. OKX's plain ``6H``...``3M``
#: bars open at midnight Hong Kong time (UTC+8); a tape holds UTC-aligned candles only, so
#: those bars are valid requests that the tape cannot answer (an empty list, never an error).
#: Month bars have no fixed length and a tape cannot hold them either.
BARS: dict[str, str | None] = {
    "1s": "1s",
    "1m": "1m",
    "3m": "3m",
    "5m": "5m",
    "15m": "15m",
    "30m": "30m",
    "1H": "1h",
    "2H": "2h",
    "4H": "4h",
    "6Hutc": "6h",
    "12Hutc": "12h",
    "1Dutc": "1d",
    "2Dutc": "2d",
    "3Dutc": "3d",
    "1Wutc": "1w",
    **dict.fromkeys(("6H", "12H", "1D", "2D", "3D", "1W", "1M", "3M", "1Mutc", "3Mutc")),
}

#: OKX ``instType`` -> tape market type (None: a type OKX lists that a tape never holds).
INST_TYPES: dict[str, str | None] = {
    "SPOT": "spot",
    "SWAP": "swap",
    "FUTURES": None,
    "OPTION": None,
    "MARGIN": None,
}

NAN = "nan"


class Spanned(Protocol):
    def span(
        self, start: int | None, end: int | None, limit: int, *, newest: bool = False
    ) -> tuple[int, int]: ...


def okx_span(
    series: Spanned, before: int | None, after: int | None, limit: int, now_ms: int
) -> tuple[int, int]:
    """Row range OKX answers for ``before``/``after`` compared on ts: both exclusive, never
    past "now", the newest ``limit`` rows of the range."""
    start = None if before is None else before + 1
    end = now_ms if after is None else min(now_ms, after - 1)
    return series.span(start, end, limit, newest=True)


def envelope(data: Any) -> dict[str, Any]:
    return {"code": "0", "msg": "", "data": data}


def inst_id(market: MarketSpec) -> str:
    """``BTC-USDT`` for spot, ``BTC-USDT-SWAP`` / ``BTC-USD-SWAP`` for perpetual swaps."""
    spot = f"{market.base}-{market.quote}"
    return f"{spot}-SWAP" if market.is_swap else spot


def inst_type(market: MarketSpec) -> str:
    return "SWAP" if market.is_swap else "SPOT"


def instrument(market: MarketSpec, code: int) -> dict[str, Any]:
    """A ``public/instruments`` row in OKX's current shape. Derivatives carry ``uly`` and
    ``instFamily`` (ccxt takes base and quote from ``uly``) and empty ``baseCcy``/``quoteCcy``.
    The tape knows no leverage or order caps, so ``lever`` is empty (ccxt reads 1x) and the
    size caps are OKX's usual ones."""
    swap = market.is_swap
    family = f"{market.base}-{market.quote}" if swap else ""
    return {
        "alias": "",
        "auctionEndTime": "",
        "baseCcy": "" if swap else market.base,
        "category": "1",
        "contTdSwTime": "",
        "ctMult": "1" if swap else "",
        "ctType": ("linear" if market.linear else "inverse") if swap else "",
        "ctVal": (market.contract_size or "1") if swap else "",
        "ctValCcy": (market.base if market.linear else market.quote) if swap else "",
        "expTime": "",
        "futureSettlement": False,
        "instFamily": family,
        "instId": inst_id(market),
        "instIdCode": code,
        "instType": inst_type(market),
        "lever": "",
        "listTime": str(market.listed_ms) if market.listed_ms is not None else "",
        "lotSz": market.amount_step,
        "maxIcebergSz": "9999999999.0000000000000000",
        "maxLmtAmt": "20000000",
        "maxLmtSz": "9999999999",
        "maxMktAmt": "" if swap else "1000000",
        "maxMktSz": "1000000",
        "maxStopSz": "1000000",
        "maxTriggerSz": "9999999999.0000000000000000",
        "maxTwapSz": "9999999999.0000000000000000",
        "minSz": market.min_amount,
        "openType": "",
        "optType": "",
        "quoteCcy": "" if swap else market.quote,
        "ruleType": "normal",
        "settleCcy": (market.settle or "") if swap else "",
        "state": "live",
        "stk": "",
        "tickSz": market.price_tick,
        "tradeQuoteCcyList": [],
        "uly": family,
    }


def candle_rows(candles: list[Candle], market: MarketSpec, timeframe_ms: int, now_ms: int) -> bytes:
    """Candles (oldest first) as OKX's ``data`` array, newest first:
    ``[ts, o, h, l, c, vol, volCcy, volCcyQuote, confirm]``, all strings.

    ccxt reads the volume from ``vol`` for spot and from ``volCcy`` (base currency) for
    swaps, so the tape's base volume goes there unchanged; the other volume fields are
    derived (contracts = base / ctVal, or quote / ctVal for inverse; quote = base x close).
    ``confirm`` is "0" for the bar still forming at "now"."""
    rows: list[str] = []
    for c in reversed(candles):
        confirm = "0" if c.ts + timeframe_ms > now_ms else "1"
        vol, vol_ccy, quote = candle_volumes(market, c.volume, c.close)
        rows.append(
            f'["{c.ts}","{c.open}","{c.high}","{c.low}","{c.close}","{vol}","{vol_ccy}","{quote}","{confirm}"]'
        )
    return ('{"code":"0","msg":"","data":[' + ",".join(rows) + "]}").encode()


def candle_volumes(market: MarketSpec, volume: str, close: str) -> tuple[str, str, str]:
    """A candle's ``vol``, ``volCcy`` and ``volCcyQuote`` from the tape's base volume (REST
    candles and the WebSocket candle channels alike; see ``candle_rows``)."""
    if volume == NAN:
        return NAN, NAN, NAN
    base = Decimal(volume)
    quote = plain_decimal(base * Decimal(close))
    if not market.is_swap:
        return volume, quote, quote
    ct_val = Decimal(market.contract_size or "1")
    contracts = base / ct_val if market.linear else base * Decimal(close) / ct_val
    return plain_decimal(contracts), volume, quote


def contracts_of(market: MarketSpec, base_volume: str, price: str) -> str:
    """A base-currency volume in contracts (what OKX's ``vol24h`` counts for swaps)."""
    if not market.is_swap or base_volume == NAN:
        return base_volume
    ct_val = Decimal(market.contract_size or "1")
    value = Decimal(base_volume) if market.linear else Decimal(base_volume) * Decimal(price)
    return plain_decimal(value / ct_val)


def ticker_row(market: MarketSpec, series: SymbolTape, now_ms: int) -> dict[str, Any]:
    """A ``market/ticker`` row: 24-hour statistics from the finest candles, best bid/ask from
    the book snapshot and the last size from the trades where the tape has them ("" otherwise,
    as OKX sends for a missing value). For swaps ``vol24h`` counts contracts and
    ``volCcy24h`` is the base volume."""
    stats = day_stats(series, now_ms)
    snapshot = series.book.at(now_ms) if series.book is not None else None
    last_trade = series.trades.between(None, now_ms, 1, newest=True) if series.trades else []
    bid = snapshot.bids[0] if snapshot and snapshot.bids else ("", "")
    ask = snapshot.asks[0] if snapshot and snapshot.asks else ("", "")
    row: dict[str, Any] = {
        "instType": inst_type(market),
        "instId": inst_id(market),
        "last": last_trade[0].price if last_trade else "",
        "lastSz": last_trade[0].amount if last_trade else "",
        "askPx": ask[0],
        "askSz": ask[1],
        "bidPx": bid[0],
        "bidSz": bid[1],
        **dict.fromkeys(("open24h", "high24h", "low24h", "volCcy24h", "vol24h"), ""),
        "ts": str(now_ms),
        "sodUtc0": "",
        "sodUtc8": "",
    }
    if stats is None:
        return row
    row.update(
        last=stats.last,
        open24h=stats.open,
        high24h=stats.high,
        low24h=stats.low,
        volCcy24h=stats.volume if market.is_swap else stats.quote_volume,
        vol24h=contracts_of(market, stats.volume, stats.last),
        ts=str(min(now_ms, stats.close_ts)),
        sodUtc0=_day_open(series, stats.close_ts, 0),
        sodUtc8=_day_open(series, stats.close_ts, 8 * HOUR_MS),
    )
    return row


def _day_open(series: SymbolTape, at_ms: int, offset_ms: int) -> str:
    """Open price of the day holding ``at_ms`` in a UTC+offset calendar (OKX's sodUtc0/8)."""
    finest = min(series.ohlcv.values(), key=lambda s: s.timeframe_ms)
    day_start = (at_ms + offset_ms) // DAY_MS * DAY_MS - offset_ms
    first = finest.between(day_start, at_ms, 1)
    return first[0].open if first else ""
