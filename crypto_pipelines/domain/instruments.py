"""Tradable instruments: crypto assets, spot pairs and perpetual swaps, built from ccxt markets.

Crypto venues trade 24/7, so an instrument has no sessions or calendar: what matters for
storing and using market data is the identity (exchange + ccxt unified symbol), the
currencies, the price/amount grid and the listing window. Everything else in a ccxt market
(fees, leverage tiers, margin modes) changes often and is left in ``market['info']``.

ccxt 4.5 uses TICK_SIZE precision mode for all four venues: ``market['precision']['price']``
is the tick itself (0.01), not a number of decimals. Listing time is ``market['created']``;
delisting times are venue fields of ``market['info']`` (see ``_DELIST_FIELDS``).

The tables ``crypto_assets``, ``crypto_pairs`` and ``crypto_perps`` hold these dataclasses'
fields; their Pandera models (``CryptoAssets``, ``CryptoPairs``, ``CryptoPerps``) live with
the other datasets in ``schemas``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from crypto_pipelines.domain import checks
from crypto_pipelines.domain.symbols import SymbolError, parse_symbol

# info fields that carry a scheduled delisting time, by venue: Bybit swaps `deliveryTime`,
# Binance futures `deliveryDate` (4133404800000 = "never" for perpetuals), OKX `expTime`.
_DELIST_FIELDS: Final = ("deliveryTime", "deliveryDate", "expTime")
_NEVER_MS: Final = 4_133_404_800_000
_MINUTE_MS: Final = 60_000


class InstrumentError(ValueError):
    """A market that cannot become an instrument; the message names exchange and symbol."""


class UnsupportedMarketError(InstrumentError):
    """A market of a type the project does not store (dated futures, options)."""


@dataclass(frozen=True, slots=True)
class CryptoAsset:
    """A currency code as ccxt unifies it across venues (``XBT`` on one venue is ``BTC``)."""

    code: str

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not checks.is_currency_code(self.code):
            raise InstrumentError(f"not a currency code: {self.code!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class CryptoPair:
    """A spot market. Ticks and steps are None when the venue does not publish them."""

    exchange: str
    symbol: str
    base: str
    quote: str
    price_tick: float | None = None
    amount_step: float | None = None
    min_amount: float | None = None
    active: bool = True
    listed_ms: int | None = None
    delisted_ms: int | None = None

    def __post_init__(self) -> None:
        _check_common(self, expect_swap=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class CryptoPerp:
    """A perpetual swap. ``linear`` = margined and settled in the quote currency
    (BTC/USDT:USDT); inverse swaps settle in the base (BTC/USD:BTC). ``contract_size`` is
    in base units for linear and quote units for inverse swaps, as in ccxt."""

    exchange: str
    symbol: str
    base: str
    quote: str
    settle: str
    linear: bool
    contract_size: float | None = None
    price_tick: float | None = None
    amount_step: float | None = None
    min_amount: float | None = None
    funding_interval_ms: int | None = None
    active: bool = True
    listed_ms: int | None = None
    delisted_ms: int | None = None

    def __post_init__(self) -> None:
        _check_common(self, expect_swap=True)
        parsed = parse_symbol(self.symbol)
        if parsed.settle != self.settle:
            raise InstrumentError(f"{self.symbol}: settle {self.settle!r} does not match")
        _positive(self, "contract_size")
        if self.funding_interval_ms is not None and self.funding_interval_ms <= 0:
            raise InstrumentError(f"{self.symbol}: funding_interval_ms must be > 0")


def _check_common(inst: CryptoPair | CryptoPerp, *, expect_swap: bool) -> None:
    if not checks.is_exchange_id(inst.exchange):
        raise InstrumentError(f"not a ccxt exchange id: {inst.exchange!r}")
    try:
        parsed = parse_symbol(inst.symbol)
    except SymbolError as exc:
        raise InstrumentError(str(exc)) from None
    if (parsed.settle is not None) != expect_swap:
        kind = "BASE/QUOTE:SETTLE" if expect_swap else "BASE/QUOTE"
        raise InstrumentError(f"{inst.symbol}: expected a {kind} symbol")
    if (parsed.base, parsed.quote) != (inst.base, inst.quote):
        raise InstrumentError(f"{inst.symbol}: base/quote {inst.base}/{inst.quote} do not match")
    for name in ("price_tick", "amount_step"):
        _positive(inst, name)
    if inst.min_amount is not None and not (
        inst.min_amount >= 0 and math.isfinite(inst.min_amount)
    ):
        raise InstrumentError(f"{inst.symbol}: min_amount must be >= 0, got {inst.min_amount!r}")
    for name in ("listed_ms", "delisted_ms"):
        value = getattr(inst, name)
        if value is not None and not (checks.TS_MIN_MS <= value < checks.TS_MAX_MS):
            raise InstrumentError(f"{inst.symbol}: {name} is not epoch milliseconds: {value!r}")


def _positive(inst: object, name: str) -> None:
    value = getattr(inst, name)
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise InstrumentError(f"{getattr(inst, 'symbol', '?')}: {name} must be > 0, got {value!r}")


def from_ccxt_market(
    exchange_id: str, market: Mapping[str, Any], *, funding_interval_ms: int | None = None
) -> CryptoPair | CryptoPerp:
    """The instrument for one ccxt market dict (an entry of ``exchange.load_markets()``).

    ``funding_interval_ms`` is used for swaps whose venue does not publish the interval in
    the market itself (only Bybit does). Raises ``UnsupportedMarketError`` for dated futures,
    options and quanto swaps, and ``InstrumentError`` naming exchange and symbol for a malformed market."""
    symbol = market.get("symbol") if isinstance(market, Mapping) else None
    where = f"{exchange_id} market {symbol!r}"
    if not isinstance(market, Mapping):
        raise InstrumentError(f"{where}: not a ccxt market dict ({type(market).__name__})")
    kind = market.get("type")
    if kind not in ("spot", "swap"):
        raise UnsupportedMarketError(f"{where}: market type {kind!r} is not spot or swap")
    try:
        common: dict[str, Any] = {
            "exchange": exchange_id,
            "symbol": _text(market, "symbol"),
            "base": _text(market, "base"),
            "quote": _text(market, "quote"),
            "price_tick": _number(market.get("precision"), "price"),
            "amount_step": _number(market.get("precision"), "amount"),
            "min_amount": _number(_mapping(market.get("limits")).get("amount"), "min"),
            "active": market.get("active") is not False,  # None = unknown; ccxt lists it
            "listed_ms": _listed_ms(market.get("created")),
            "delisted_ms": _delisted_ms(market.get("info")),
        }
        if kind == "spot":
            return CryptoPair(**common)
        settle = _text(market, "settle")
        if settle not in (common["base"], common["quote"]):
            raise UnsupportedMarketError(f"{where}: quanto swap (settles in {settle})")
        return CryptoPerp(
            **common,
            settle=settle,
            # From the currencies, not ccxt's flag: ccxt derives that from a response field
            # (Bybit's `category`) that is not always present, and then reports False.
            linear=settle == common["quote"],
            contract_size=_number(market, "contractSize"),
            funding_interval_ms=_funding_interval_ms(market.get("info")) or funding_interval_ms,
        )
    except UnsupportedMarketError:
        raise
    except (InstrumentError, TypeError, ValueError) as exc:
        raise InstrumentError(f"{where}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Instruments:
    """Instruments of one or more venues, with the assets they reference."""

    pairs: tuple[CryptoPair, ...] = ()
    perps: tuple[CryptoPerp, ...] = ()
    skipped: tuple[str, ...] = field(default=(), compare=False)  # unsupported market symbols

    @property
    def assets(self) -> tuple[CryptoAsset, ...]:
        return assets_of(self.pairs, self.perps)


def instruments_from_ccxt_markets(
    exchange_id: str,
    markets: Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]],
    *,
    funding_interval_ms: int | None = None,
) -> Instruments:
    """Pairs and perps of ``exchange.load_markets()`` (or ``fetch_markets()``); dated futures
    and options are listed in ``skipped``; a malformed market raises ``InstrumentError``."""
    values = markets.values() if isinstance(markets, Mapping) else markets
    pairs: list[CryptoPair] = []
    perps: list[CryptoPerp] = []
    skipped: list[str] = []
    for market in values:
        try:
            inst = from_ccxt_market(exchange_id, market, funding_interval_ms=funding_interval_ms)
        except UnsupportedMarketError:
            skipped.append(str(market.get("symbol")))
            continue
        if isinstance(inst, CryptoPerp):
            perps.append(inst)
        else:
            pairs.append(inst)
    return Instruments(tuple(pairs), tuple(perps), tuple(skipped))


def assets_of(*groups: Iterable[CryptoPair | CryptoPerp]) -> tuple[CryptoAsset, ...]:
    """Every currency the instruments reference (base, quote, settle), sorted by code."""
    codes: set[str] = set()
    for group in groups:
        for inst in group:
            codes.update((inst.base, inst.quote))
            if isinstance(inst, CryptoPerp):
                codes.add(inst.settle)
    return tuple(CryptoAsset(code) for code in sorted(codes))


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(market: Mapping[str, Any], key: str) -> str:
    value = market.get(key)
    if not isinstance(value, str) or not value:
        raise InstrumentError(f"{key!r} missing or not a string: {value!r}")
    return value


def _number(parent: object, key: str) -> float | None:
    value = parent.get(key) if isinstance(parent, Mapping) else None
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InstrumentError(f"{key!r} is not a number: {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InstrumentError(f"{key!r} is not a number: {value!r}") from None


def _millis(value: object) -> int | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise InstrumentError(f"not epoch milliseconds: {value!r}") from None


def _listed_ms(created: object) -> int | None:
    """ccxt ``created``; venues send 0 (Bybit ``launchTime``) when they do not know."""
    value = _millis(created)
    return value if value is not None and value > 0 else None


def _delisted_ms(info: object) -> int | None:
    if not isinstance(info, Mapping):
        return None
    for key in _DELIST_FIELDS:
        value = _millis(info.get(key))
        if value is not None and 0 < value < _NEVER_MS:
            return value
    return None


def _funding_interval_ms(info: object) -> int | None:
    """Bybit v5 publishes ``fundingInterval`` in minutes; other venues do not list it."""
    minutes = _number(info, "fundingInterval") if isinstance(info, Mapping) else None
    return int(minutes * _MINUTE_MS) if minutes and minutes > 0 else None
