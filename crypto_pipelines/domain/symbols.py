"""ccxt unified symbols and the folder names a tape stores them under.

A unified symbol is ``BASE/QUOTE`` for spot and ``BASE/QUOTE:SETTLE`` for a perpetual swap
(linear when SETTLE == QUOTE, inverse otherwise). Tape folders replace '/' and ':' with '_',
which is ambiguous for currencies containing '_' (none of the four venues lists one), so the
reverse mapping only accepts two or three non-empty parts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

MarketType = Literal["spot", "swap"]

_CURRENCY = r"[A-Za-z0-9.\-]+"
_SYMBOL_RE = re.compile(rf"^({_CURRENCY})/({_CURRENCY})(?::({_CURRENCY}))?$")
_DIR_RE = re.compile(rf"^({_CURRENCY})_({_CURRENCY})(?:_({_CURRENCY}))?$")


class SymbolError(ValueError):
    """A string that is not a ccxt unified symbol (or tape folder name)."""


@dataclass(frozen=True, slots=True)
class Symbol:
    """A parsed unified symbol."""

    base: str
    quote: str
    settle: str | None = None

    @property
    def unified(self) -> str:
        spot = f"{self.base}/{self.quote}"
        return f"{spot}:{self.settle}" if self.settle else spot

    @property
    def market_type(self) -> MarketType:
        return "swap" if self.settle else "spot"

    @property
    def linear(self) -> bool | None:
        """True for USDT-margined style swaps, False for coin-margined, None for spot."""
        return None if self.settle is None else self.settle == self.quote

    @property
    def dir_name(self) -> str:
        return symbol_to_dir(self.unified)

    def __str__(self) -> str:
        return self.unified


def parse_symbol(symbol: str) -> Symbol:
    """Parse ``BASE/QUOTE[:SETTLE]``; raises SymbolError naming the bad value."""
    match = _SYMBOL_RE.match(symbol)
    if not match:
        raise SymbolError(
            f"not a ccxt unified symbol (BASE/QUOTE or BASE/QUOTE:SETTLE): {symbol!r}"
        )
    base, quote, settle = match.groups()
    return Symbol(base, quote, settle)


def symbol_to_dir(symbol: str) -> str:
    """``BTC/USDT:USDT`` -> ``BTC_USDT_USDT`` (the tape folder name)."""
    parse_symbol(symbol)
    return symbol.replace("/", "_").replace(":", "_")


def dir_to_symbol(name: str) -> str:
    """``BTC_USDT_USDT`` -> ``BTC/USDT:USDT``; raises SymbolError for anything else."""
    match = _DIR_RE.match(name)
    if not match:
        raise SymbolError(f"not a tape symbol folder (BASE_QUOTE or BASE_QUOTE_SETTLE): {name!r}")
    base, quote, settle = match.groups()
    return Symbol(base, quote, settle).unified
