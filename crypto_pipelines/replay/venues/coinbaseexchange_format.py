"""Coinbase Exchange's wire formats: timestamps, product and currency objects, candle rows.

Kept apart from the endpoint logic in ``coinbaseexchange.py`` so that each file stays small;
everything here is a pure function of tape data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from crypto_pipelines.domain.timeframes import HOUR_MS
from crypto_pipelines.replay.tape import Candle, MarketSpec

#: The only granularities (seconds) the venue accepts, and the tape timeframe of each.
GRANULARITIES: dict[int, str] = {
    60: "1m",
    300: "5m",
    900: "15m",
    3600: "1h",
    21600: "6h",
    86400: "1d",
}
#: Most candles one request may span; a longer range is refused, not clamped.
MAX_CANDLES = 300
#: Most trades one page holds (also the default page size).
MAX_TRADES = 1000
#: Currencies the venue reports as ``details.type == "fiat"``; every other one is crypto.
FIAT = frozenset({"USD", "EUR", "GBP"})

_UNIX_SECONDS = re.compile(r"-?\d+(\.\d+)?")
_PRODUCT_ID = re.compile(r"[A-Za-z0-9]+-[A-Za-z0-9]+")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_ms(ts_ms: int) -> str:
    """``2024-03-13T11:10:41.270Z``: the format of ``/time``'s ``iso``."""
    return (
        datetime.fromtimestamp(ts_ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        + f".{ts_ms % 1000:03d}Z"
    )


def iso_us(ts_ms: int) -> str:
    """``2024-03-13T11:10:41.270000Z``: trades, tickers and books carry microseconds; a tape
    keeps milliseconds, so the last three digits are zero."""
    return iso_ms(ts_ms)[:-1] + "000Z"


def parse_time(text: str) -> int | None:
    """A ``start``/``end`` value in ms: ISO 8601 (fraction and offset optional, no offset
    meaning UTC) or unix seconds, both of which the venue accepts. None when malformed."""
    text = text.strip()
    if _UNIX_SECONDS.fullmatch(text):
        return int(Decimal(text) * 1000)
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    # Exact integer arithmetic: float seconds * 1000 would turn .001 into .000999...
    return (parsed - _EPOCH) // timedelta(milliseconds=1)


def well_formed_product_id(product_id: str) -> bool:
    """Whether an id has the ``BASE-QUOTE`` form (else the venue answers "Invalid product_id")."""
    return _PRODUCT_ID.fullmatch(product_id) is not None


def product(market: MarketSpec, product_id: str) -> dict[str, Any]:
    """A ``/products`` element in the venue's current shape. ``min_market_funds`` is "0": a
    tape records a minimum amount in the base currency but no minimum order value, and
    inventing one would misstate the market (Binance's NOTIONAL filter does the same)."""
    return {
        "id": product_id,
        "base_currency": market.base,
        "quote_currency": market.quote,
        "quote_increment": market.price_tick,
        "base_increment": market.amount_step,
        "display_name": product_id,
        "min_market_funds": "0",
        "margin_enabled": False,
        "post_only": False,
        "limit_only": False,
        "cancel_only": False,
        "status": "online",
        "status_message": "",
        "trading_disabled": False,
        "fx_stablecoin": False,
        "max_slippage_percentage": "0.02000000",
        "auction_mode": False,
        "high_bid_limit_percentage": "",
    }


def currencies(markets: Iterable[MarketSpec]) -> list[dict[str, Any]]:
    """``/currencies`` derived from the listed markets: each base and quote currency once, its
    precision the finest step any market uses for it (amount step as base, tick as quote)."""
    finest: dict[str, Decimal] = {}
    text: dict[str, str] = {}
    for market in markets:
        for code, step in ((market.base, market.amount_step), (market.quote, market.price_tick)):
            if code not in finest or Decimal(step) < finest[code]:
                finest[code], text[code] = Decimal(step), step
    return [_currency(code, text[code]) for code in sorted(text)]


def _currency(code: str, precision: str) -> dict[str, Any]:
    return {
        "id": code,
        "name": code,
        "min_size": precision,
        "status": "online",
        "message": "",
        "max_precision": precision,
        "convertible_to": [],
        "details": {
            "type": "fiat" if code in FIAT else "crypto",
            "symbol": "",
            "network_confirmations": 0,
            "sort_order": 0,
            "crypto_address_link": "",
            "crypto_transaction_link": "",
            "push_payment_methods": [],
            "group_types": [],
            "display_name": None,
            "processing_time_seconds": None,
            "min_withdrawal_amount": None,
            "max_withdrawal_amount": None,
        },
        "default_network": "",
        "supported_networks": [],
        "display_name": code,
    }


def candle_rows(candles: list[Candle]) -> bytes:
    """Candles as the venue sends them: newest first, ``[time_s, low, high, open, close,
    volume]``, all JSON numbers. The tape's decimal text is emitted as the number itself (never
    re-rounded); an unknown volume (``nan``) becomes null. Hand-built: the hot path."""
    rows = [
        f"[{c[0] // 1000},{c[3]},{c[2]},{c[1]},{c[4]},{'null' if c[5] == 'nan' else c[5]}]"
        for c in reversed(candles)
    ]
    return ("[" + ",".join(rows) + "]").encode()


def hourly_sparkline(candles: list[Candle]) -> bytes:
    """``/products/spark-lines`` rows of one product: hourly ``[time_s, low, high, open,
    close]`` newest first, aggregated from the tape's candles (a sub-hour series rolls up
    exactly; nothing is invented for hours without candles)."""
    hours: dict[int, list[Candle]] = {}
    for candle in candles:
        hours.setdefault(candle.ts - candle.ts % HOUR_MS, []).append(candle)
    rows = []
    for hour in sorted(hours, reverse=True):
        group = hours[hour]
        low = min((c.low for c in group), key=Decimal)
        high = max((c.high for c in group), key=Decimal)
        rows.append(f"[{hour // 1000},{low},{high},{group[0].open},{group[-1].close}]")
    return ("[" + ",".join(rows) + "]").encode()
