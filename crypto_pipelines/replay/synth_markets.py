"""Which markets a synthetic tape may list, and their precision (``markets.json``).

Precision matters to the pipelines (tick-rounded prices, step-rounded amounts, contract
sizes for volume units), so the default markets carry their venues' real 2024 values; any
other symbol gets a plausible generic precision so that users can ask for what they need.
"""

from __future__ import annotations

import math
from decimal import Decimal

from crypto_pipelines.domain.symbols import SymbolError, parse_symbol
from crypto_pipelines.replay.synth_model import asset_level
from crypto_pipelines.replay.tape.markets import MarketSpec

KNOWN_EXCHANGES: tuple[str, ...] = ("binance", "okx", "bybit", "coinbaseexchange")
NO_SWAPS: frozenset[str] = frozenset({"coinbaseexchange"})
# Real-world precision of the markets the default symbols name (2024): (exchange, kind,
# base) -> (price_tick, amount_step, min_amount, contract_size). Swap amounts are contracts.
_MARKETS: dict[tuple[str, str, str], tuple[str, str, str, str | None]] = {
    ("binance", "spot", "BTC"): ("0.01", "0.00001", "0.00001", None),
    ("binance", "spot", "ETH"): ("0.01", "0.0001", "0.0001", None),
    ("binance", "linear", "BTC"): ("0.1", "0.001", "0.001", "1"),
    ("binance", "linear", "ETH"): ("0.01", "0.001", "0.001", "1"),
    ("binance", "inverse", "BTC"): ("0.1", "1", "1", "100"),
    ("binance", "inverse", "ETH"): ("0.01", "1", "1", "10"),
    ("okx", "spot", "BTC"): ("0.1", "0.00000001", "0.00001", None),
    ("okx", "spot", "ETH"): ("0.01", "0.000001", "0.0001", None),
    ("okx", "linear", "BTC"): ("0.1", "0.01", "0.01", "0.01"),
    ("okx", "linear", "ETH"): ("0.01", "0.01", "0.01", "0.1"),
    ("okx", "inverse", "BTC"): ("0.1", "1", "1", "100"),
    ("okx", "inverse", "ETH"): ("0.01", "1", "1", "10"),
    ("bybit", "spot", "BTC"): ("0.01", "0.000001", "0.000048", None),
    ("bybit", "spot", "ETH"): ("0.01", "0.00001", "0.00062", None),
    ("bybit", "linear", "BTC"): ("0.1", "0.001", "0.001", "1"),
    ("bybit", "linear", "ETH"): ("0.01", "0.01", "0.01", "1"),
    ("bybit", "inverse", "BTC"): ("0.5", "1", "1", "1"),
    ("bybit", "inverse", "ETH"): ("0.05", "1", "1", "1"),
    ("coinbaseexchange", "spot", "BTC"): ("0.01", "0.00000001", "0.00000001", None),
    ("coinbaseexchange", "spot", "ETH"): ("0.01", "0.00000001", "0.00000001", None),
}
_USD_LIKE = frozenset({"USD", "USDT", "USDC"})


class SynthError(ValueError):
    """A synthetic tape spec that cannot be generated; the message names the bad value."""


def market_kind(exchange: str, symbol: str) -> str:
    """spot, linear or inverse; SynthError for symbols the venue cannot list."""
    try:
        parsed = parse_symbol(symbol)
    except SymbolError as exc:
        raise SynthError(f"{exchange}: {exc}") from exc
    if parsed.settle is None:
        return "spot"
    if exchange in NO_SWAPS:
        raise SynthError(
            f"{exchange} lists no perpetual swaps, so {symbol!r} cannot be generated for it "
            "(use spot symbols such as BTC/USD)"
        )
    if parsed.settle == parsed.quote:
        return "linear"
    if parsed.settle == parsed.base:
        return "inverse"
    raise SynthError(
        f"{symbol!r}: the settle currency must be the quote (linear swap) or the base (inverse swap)"
    )


def market_spec(exchange: str, symbol: str, listed_ms: int) -> MarketSpec:
    """The market as ``markets.json`` describes it: real precision for the known markets,
    otherwise a tick about 1e-5 of the price and an amount step worth about a dime to a dollar."""
    kind = market_kind(exchange, symbol)
    parsed = parse_symbol(symbol)
    known = _MARKETS.get((exchange, kind, parsed.base)) if parsed.quote in _USD_LIKE else None
    if known is not None:
        tick, step, minimum, contract = known
    else:
        usd_base = asset_level(parsed.base)[0]
        level = usd_base / asset_level(parsed.quote)[0]
        tick = _power_of_ten(math.floor(math.log10(level)) - 5)
        spot_step = _power_of_ten(min(0, -(math.floor(math.log10(usd_base)) + 1)))
        if kind == "spot":
            step, contract = spot_step, None
        elif kind == "linear":
            step, contract = _power_of_ten(min(0, -(math.floor(math.log10(usd_base)) + 1) + 1)), "1"
        else:
            step, contract = "1", "100" if parsed.base == "BTC" else "10"
        minimum = step
    return MarketSpec(
        symbol=symbol,
        type=parsed.market_type,
        price_tick=tick,
        amount_step=step,
        min_amount=minimum,
        contract_size=contract,
        listed_ms=listed_ms,
    )


def _power_of_ten(exponent: int) -> str:
    return format(Decimal(1).scaleb(exponent), "f")
