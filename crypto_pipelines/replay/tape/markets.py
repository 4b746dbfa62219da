"""Instrument metadata a tape carries (``markets.json``) or implies (its symbol folders)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from crypto_pipelines.domain.symbols import Symbol, SymbolError, parse_symbol
from crypto_pipelines.replay.tape.errors import TapeError

_OPTIONAL_DECIMALS = ("price_tick", "amount_step", "min_amount", "contract_size")


@dataclass(frozen=True, slots=True)
class MarketSpec:
    """One instrument as the replay exchange lists it. Decimals are kept as strings."""

    symbol: str
    type: str  # "spot" | "swap"
    price_tick: str
    amount_step: str
    min_amount: str
    contract_size: str | None = None
    listed_ms: int | None = None

    @property
    def parsed(self) -> Symbol:
        return parse_symbol(self.symbol)

    @property
    def base(self) -> str:
        return self.parsed.base

    @property
    def quote(self) -> str:
        return self.parsed.quote

    @property
    def settle(self) -> str | None:
        return self.parsed.settle

    @property
    def linear(self) -> bool | None:
        return self.parsed.linear

    @property
    def is_swap(self) -> bool:
        return self.type == "swap"


def read_markets_json(path: Path) -> dict[str, dict[str, Any]]:
    """Validated entries of a ``markets.json`` by symbol (fields not yet defaulted)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TapeError(path, f"not readable JSON: {exc}") from exc
    if not isinstance(data, list):
        raise TapeError(path, "must be a JSON list of market objects")
    out: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(data):
        where = f"entry {index}"
        if not isinstance(entry, dict) or not isinstance(entry.get("symbol"), str):
            raise TapeError(path, f"{where}: each market needs a string 'symbol'")
        symbol = entry["symbol"]
        try:
            parsed = parse_symbol(symbol)
        except SymbolError as exc:
            raise TapeError(path, f"{where}: {exc}") from exc
        market_type = entry.get("type", parsed.market_type)
        if market_type not in ("spot", "swap") or market_type != parsed.market_type:
            raise TapeError(
                path, f"{where} ({symbol}): type {market_type!r} does not match the symbol"
            )
        for key in _OPTIONAL_DECIMALS:
            if key in entry:
                entry[key] = _positive_decimal(path, f"{where} ({symbol}) {key}", entry[key])
        listed = entry.get("listed_ms")
        if listed is not None and (not isinstance(listed, int) or isinstance(listed, bool)):
            raise TapeError(path, f"{where} ({symbol}): listed_ms must be an integer (ms)")
        if symbol in out:
            raise TapeError(path, f"{where}: duplicate symbol {symbol!r}")
        out[symbol] = entry
    return out


def _positive_decimal(path: Path, where: str, value: object) -> str:
    text = (
        str(value) if isinstance(value, int | float | str) and not isinstance(value, bool) else ""
    )
    try:
        number = Decimal(text)
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite() or number <= 0:
        raise TapeError(path, f"{where} must be a positive decimal, found {value!r}")
    return text


def step_from_samples(values: list[str], default: str) -> str:
    """The coarsest decimal step consistent with the samples: 10^-(most decimals seen)."""
    decimals = 0
    for value in values:
        if "e" in value or "E" in value:
            decimals = max(decimals, -Decimal(value).normalize().as_tuple().exponent)  # type: ignore[operator]
            continue
        if "." in value:
            decimals = max(decimals, len(value.split(".", 1)[1].rstrip("0")))
    if not values:
        return default
    return format(Decimal(1).scaleb(-decimals), "f")


def build_market(
    symbol: str,
    entry: dict[str, Any] | None,
    price_samples: list[str],
    amount_samples: list[str],
    first_ts: int | None,
) -> MarketSpec:
    """A MarketSpec from ``markets.json`` fields where given, else from the data."""
    entry = entry or {}
    parsed = parse_symbol(symbol)
    amount_step = entry.get("amount_step") or step_from_samples(amount_samples, "0.00000001")
    return MarketSpec(
        symbol=symbol,
        type=parsed.market_type,
        price_tick=entry.get("price_tick") or step_from_samples(price_samples, "0.00000001"),
        amount_step=amount_step,
        min_amount=entry.get("min_amount") or amount_step,
        contract_size=entry.get("contract_size") or ("1" if parsed.settle else None),
        listed_ms=entry.get("listed_ms", first_ts),
    )
