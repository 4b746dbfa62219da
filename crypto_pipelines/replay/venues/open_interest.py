"""Open interest as each venue words it, derived from a tape's two numbers.

A tape holds, per period, the contracts outstanding and their value in the quote currency
(either may be empty). Venues report other units: Binance USDⓈ-M the base currency and the
quote value, COIN-M contracts and their value in the *base* coin, OKX contracts, base and USD,
Bybit contracts only. Each is derived here with exact decimals from the market's contract
size and, where a conversion needs it (an inverse contract's base value), the close of the
tape's finest candle at or before the period's time. What cannot be derived is ``""``, the
venues' own "no value"; nothing is invented.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal

from crypto_pipelines.replay.tape import MarketSpec, OpenInterest, SymbolTape
from crypto_pipelines.replay.venues.common import plain_decimal

_EXACT = Context(prec=60)
_QUOTIENT = Decimal("1e-8")  # a quotient is rounded to 8 decimals, as Binance writes amounts


@dataclass(frozen=True, slots=True)
class Interest:
    """One period's open interest in the units venues report; ``""`` where unknown."""

    ts: int
    contracts: str
    base: str
    quote_value: str


def price_at(series: SymbolTape, ts: int) -> Decimal | None:
    """Close of the finest candle that opened at or before ``ts`` (the mark the conversion
    uses), or None without candles there."""
    if not series.ohlcv:
        return None
    finest = min(series.ohlcv.values(), key=lambda s: s.timeframe_ms)
    last = finest.between(None, ts, 1, newest=True)
    if not last or last[0].close == "nan":
        return None
    return Decimal(last[0].close)


def interest(market: MarketSpec, series: SymbolTape, row: OpenInterest) -> Interest:
    """A tape row in contracts, base currency and quote value. Linear contracts are worth
    ``contract_size`` base each, inverse ones ``contract_size`` quote each; a price is looked
    up only when the conversion needs one."""
    size = Decimal(market.contract_size or "1")
    contracts = Decimal(row.open_interest) if row.open_interest else None
    value = Decimal(row.open_interest_value) if row.open_interest_value else None
    price: Decimal | None = None

    def mark() -> Decimal | None:
        nonlocal price
        if price is None:
            price = price_at(series, row.ts)
        return price if price else None

    if contracts is None and value is not None:
        if market.linear:
            p = mark()
            contracts = _div(value, p * size) if p else None
        else:
            contracts = _div(value, size)
    if value is None and contracts is not None:
        if market.linear:
            p = mark()
            value = _EXACT.multiply(_EXACT.multiply(contracts, size), p) if p else None
        else:
            value = _EXACT.multiply(contracts, size)
    base: Decimal | None = None
    if contracts is not None and market.linear:
        base = _EXACT.multiply(contracts, size)
    elif value is not None:
        p = mark()
        base = _div(value, p) if p else None
    same = market.linear and size == 1 and row.open_interest
    return Interest(
        row.ts,
        row.open_interest or _text(contracts),
        row.open_interest if same else _text(base),
        row.open_interest_value or _text(value),
    )


def _div(a: Decimal, b: Decimal) -> Decimal:
    return _EXACT.divide(a, b).quantize(_QUOTIENT, ROUND_HALF_EVEN, _EXACT)


def _text(value: Decimal | None) -> str:
    return "" if value is None else plain_decimal(value)
