"""An exchange's stored listing (``crypto_pairs`` / ``crypto_perps``) as the automation reads it:
listing windows for the incremental loads, and the universe ``filters`` selection.

Plain Python over the frames ``MarketStore.read`` returns. The 24-hour volumes that rank
``top_n_by_volume`` come from ``<exchange>/markets`` (it fetches tickers when it refreshes the
listing and records the ranking in its materialization metadata under
``VOLUME_RANKING_METADATA``), so ranking costs the sensors no exchange request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from crypto_pipelines.domain.universe_options import ListingFilters

VOLUME_RANKING_METADATA = "volume_24h_usd_ranking"


@dataclass(frozen=True, slots=True)
class Listing:
    """One stored market of an exchange."""

    symbol: str
    quote: str
    market_type: str  # spot | swap
    active: bool = True
    listed_ms: int | None = None
    delisted_ms: int | None = None
    funding_interval_ms: int | None = None

    def delisted_by(self, now_ms: int) -> bool:
        return self.delisted_ms is not None and self.delisted_ms <= now_ms

    def tradable_at(self, now_ms: int) -> bool:
        """Active, listed by ``now_ms`` (when known) and not delisted."""
        listed = self.listed_ms is None or self.listed_ms <= now_ms
        return self.active and listed and not self.delisted_by(now_ms)


def _optional_int(value: object) -> int | None:
    return None if value is None or pd.isna(value) else int(value)  # type: ignore[call-overload]


def listings_from_frames(pairs: pd.DataFrame, perps: pd.DataFrame) -> dict[str, Listing]:
    """Listings by symbol from rows of ``crypto_pairs`` and ``crypto_perps`` (one exchange)."""
    out: dict[str, Listing] = {}
    for frame, market_type in ((pairs, "spot"), (perps, "swap")):
        has_funding = "funding_interval_ms" in frame.columns
        for row in frame.itertuples(index=False):
            out[str(row.symbol)] = Listing(
                symbol=str(row.symbol),
                quote=str(row.quote),
                market_type=market_type,
                active=bool(row.active),
                listed_ms=_optional_int(row.listed_ms),
                delisted_ms=_optional_int(row.delisted_ms),
                funding_interval_ms=_optional_int(row.funding_interval_ms) if has_funding else None,
            )
    return out


def rank_by_volume(volumes: Mapping[str, float], keep: int) -> list[list[str | float]]:
    """The ``keep`` largest volumes as ``[symbol, usd]`` pairs, largest first (ties by symbol):
    the JSON recorded as ``VOLUME_RANKING_METADATA``."""
    ranked = sorted(volumes.items(), key=lambda item: (-item[1], item[0]))[:keep]
    return [[symbol, round(float(usd), 2)] for symbol, usd in ranked]


def ranking_keep(filters: ListingFilters) -> int:
    """How many ranked markets ``<exchange>/markets`` records: twice the N asked for (at
    least N + 10), so markets delisted before the next refresh leave others to take their place."""
    n = filters.top_n_by_volume or 0
    return max(2 * n, n + 10)


def volumes_from_ranking(ranking: object) -> dict[str, float]:
    """Symbol -> USD volume from recorded ranking JSON (malformed entries are ignored)."""
    out: dict[str, float] = {}
    if isinstance(ranking, Sequence) and not isinstance(ranking, str):
        for entry in ranking:
            if (
                isinstance(entry, Sequence)
                and len(entry) == 2
                and isinstance(entry[0], str)
                and isinstance(entry[1], int | float)
            ):
                out[entry[0]] = float(entry[1])
    return out


def filter_candidates(
    filters: ListingFilters, listings: Iterable[Listing], now_ms: int
) -> list[Listing]:
    """Tradable listings passing the quote, type and exclude filters."""
    return [
        listing
        for listing in listings
        if listing.tradable_at(now_ms)
        and filters.matches(listing.symbol, listing.quote, listing.market_type)
    ]


def select_listings(
    filters: ListingFilters,
    listings: Iterable[Listing],
    now_ms: int,
    volumes: Mapping[str, float] | None = None,
) -> tuple[str, ...]:
    """The symbols the filters add to the universe at ``now_ms``, sorted by symbol. With
    ``top_n_by_volume``, a market without a known volume cannot rank and is left out."""
    candidates = filter_candidates(filters, listings, now_ms)
    if filters.top_n_by_volume is not None:
        known = volumes or {}
        ranked = sorted(
            (c for c in candidates if c.symbol in known),
            key=lambda c: (-known[c.symbol], c.symbol),
        )
        candidates = ranked[: filters.top_n_by_volume]
    return tuple(sorted(c.symbol for c in candidates))
