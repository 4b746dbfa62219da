"""Comparing one market's closes across exchanges.

Which listings are comparable: the same base and the same market type, with a quote in
``COMPARABLE_QUOTES`` (USDT, USDC and USD, which usually trade within a few bps of each other
and seldom more than a few tens; a 50 bps threshold is above that). Spot is compared with spot and perpetuals with perpetuals, never
spot with perps: a perp trades at a basis to spot that follows funding and can itself exceed
50 bps in a fast market, so mixing them would report the basis, not a bad candle. Linear and
inverse perps of a base are both USD prices of it and are compared together.

The reference for a candle is the median close of all listings at that ``ts`` when three or
more have one (one wrong venue cannot move a median), and the other listing's close when only
two do (then both candles of a diverging pair are reported: nothing says which one is wrong).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from crypto_pipelines.domain.symbols import MarketType, parse_symbol

COMPARABLE_QUOTES = frozenset({"USDT", "USDC", "USD"})
DEFAULT_MAX_DEVIATION_BPS = 50.0


@dataclass(frozen=True, slots=True, order=True)
class Listing:
    exchange: str
    symbol: str


@dataclass(frozen=True, slots=True)
class ComparableGroup:
    """Listings of one base and market type, on at least two exchanges."""

    base: str
    market_type: MarketType
    listings: tuple[Listing, ...]

    def others(self, listing: Listing) -> tuple[Listing, ...]:
        return tuple(other for other in self.listings if other != listing)


def comparable_groups(listings: Iterable[Listing]) -> list[ComparableGroup]:
    """Group listings into comparable sets; a set needs listings on two exchanges or more."""
    by_key: dict[tuple[str, MarketType], set[Listing]] = defaultdict(set)
    for listing in listings:
        symbol = parse_symbol(listing.symbol)
        if symbol.quote.upper() not in COMPARABLE_QUOTES:
            continue
        by_key[(symbol.base.upper(), symbol.market_type)].add(listing)
    return [
        ComparableGroup(base, market_type, tuple(sorted(members)))
        for (base, market_type), members in sorted(by_key.items())
        if len({m.exchange for m in members}) >= 2
    ]


def group_of(groups: Sequence[ComparableGroup], listing: Listing) -> ComparableGroup | None:
    return next((group for group in groups if listing in group.listings), None)


def close_deviations(closes: Mapping[Listing, pd.Series]) -> pd.DataFrame:
    """Each listing's deviation from the reference at every ``ts`` two or more listings share.

    ``closes`` maps a listing to its closes indexed by ``ts``. Returns one row per listing and
    ``ts``: exchange, symbol, ts, close, reference, deviation_bps (absolute) and venues (how
    many listings had a close then). Closes that are not positive numbers are ignored (the
    schema check reports them)."""
    columns = {
        f"{listing.exchange}|{listing.symbol}": pd.to_numeric(series, errors="coerce")
        for listing, series in closes.items()
    }
    table = pd.DataFrame(columns).where(lambda df: df > 0) if columns else pd.DataFrame()
    empty = pd.DataFrame(
        columns=["exchange", "symbol", "ts", "close", "reference", "deviation_bps", "venues"]
    )
    if table.empty or table.shape[1] < 2:
        return empty
    venues = table.notna().sum(axis=1)
    table = table[venues >= 2]
    venues = venues[venues >= 2]
    median = table.median(axis=1)
    # Two venues: each one's reference is the other's close (sum minus itself).
    pair_other = table.sum(axis=1).to_numpy()[:, None] - table.to_numpy()
    reference = np.where(venues.to_numpy()[:, None] >= 3, median.to_numpy()[:, None], pair_other)
    deviation = np.abs(table.to_numpy() / reference - 1.0) * 10_000.0
    frames = []
    for position, column in enumerate(table.columns):
        present = table[column].notna().to_numpy()
        exchange, symbol = column.split("|", 1)
        frames.append(
            pd.DataFrame(
                {
                    "exchange": exchange,
                    "symbol": symbol,
                    "ts": table.index.to_numpy(dtype=np.int64)[present],
                    "close": table[column].to_numpy()[present],
                    "reference": reference[present, position],
                    "deviation_bps": deviation[present, position],
                    "venues": venues.to_numpy()[present],
                }
            )
        )
    return pd.concat(frames, ignore_index=True).sort_values(["ts", "exchange"], ignore_index=True)


def offending(deviations: pd.DataFrame, listing: Listing, max_bps: float) -> pd.DataFrame:
    """The listing's candles whose deviation exceeds ``max_bps``."""
    mine = (deviations["exchange"] == listing.exchange) & (deviations["symbol"] == listing.symbol)
    return deviations[mine & (deviations["deviation_bps"] > max_bps)].reset_index(drop=True)


def validate_max_bps(value: float) -> float:
    """A threshold in bps must be a positive finite number below 10,000 (100%)."""
    number = float(value)
    if not (0 < number < 10_000):
        raise ValueError(f"cross-exchange threshold must be in (0, 10000) bps, got {value!r}")
    return number
