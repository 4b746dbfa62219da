"""The universe filters' selection over a stored listing (plain Python)."""

from __future__ import annotations

import pandas as pd

from crypto_pipelines.domain.listings import (
    Listing,
    listings_from_frames,
    rank_by_volume,
    ranking_keep,
    select_listings,
    volumes_from_ranking,
)
from crypto_pipelines.domain.universe_options import ListingFilters

NOW = 1_704_110_400_000
LISTINGS = [
    Listing("BTC/USDT", "USDT", "spot"),
    Listing("ETH/USDT", "USDT", "spot"),
    Listing("SOL/USDT", "USDT", "spot", listed_ms=NOW + 1),  # not listed yet
    Listing("XRP/USDT", "USDT", "spot", active=False),
    Listing("ADA/USDT", "USDT", "spot", delisted_ms=NOW),  # delisted at "now"
    Listing("DOT/USDT", "USDT", "spot", delisted_ms=NOW + 1),  # delisted later: still tradable
    Listing("ETH/BTC", "BTC", "spot"),
    Listing("BTC/USDT:USDT", "USDT", "swap"),
]


def test_quote_type_and_exclude_filters() -> None:
    filters = ListingFilters(quote=("USDT",), types=("spot",), exclude=("ETH/USDT",))
    assert select_listings(filters, LISTINGS, NOW) == ("BTC/USDT", "DOT/USDT")
    swaps = ListingFilters(quote=("USDT",), types=("swap",))
    assert select_listings(swaps, LISTINGS, NOW) == ("BTC/USDT:USDT",)


def test_top_n_ranks_known_volumes_only() -> None:
    filters = ListingFilters(top_n_by_volume=2)
    volumes = {"ETH/BTC": 5.0, "BTC/USDT": 9.0, "DOT/USDT": 5.0, "ADA/USDT": 99.0}
    # ADA is delisted; ETH/BTC and DOT/USDT tie and the tie goes by symbol.
    assert select_listings(filters, LISTINGS, NOW, volumes) == ("BTC/USDT", "DOT/USDT")
    assert select_listings(filters, LISTINGS, NOW, {}) == ()


def test_ranking_metadata_round_trip() -> None:
    ranking = rank_by_volume({"A/USDT": 1.234, "B/USDT": 9.0, "C/USDT": 5.0}, keep=2)
    assert ranking == [["B/USDT", 9.0], ["C/USDT", 5.0]]
    assert volumes_from_ranking(ranking) == {"B/USDT": 9.0, "C/USDT": 5.0}
    assert volumes_from_ranking([["X", "nan"], "junk", ["Y/USDT", 2]]) == {"Y/USDT": 2.0}
    assert volumes_from_ranking(None) == {}
    assert ranking_keep(ListingFilters(top_n_by_volume=20)) == 40
    assert ranking_keep(ListingFilters(top_n_by_volume=3)) == 13


def test_listings_from_stored_frames() -> None:
    pairs = pd.DataFrame(
        {
            "symbol": ["BTC/USDT"],
            "quote": ["USDT"],
            "active": [True],
            "listed_ms": pd.array([None], dtype="Int64"),
            "delisted_ms": pd.array([NOW], dtype="Int64"),
        }
    )
    perps = pd.DataFrame(
        {
            "symbol": ["BTC/USDT:USDT"],
            "quote": ["USDT"],
            "active": [False],
            "listed_ms": pd.array([NOW], dtype="Int64"),
            "delisted_ms": pd.array([None], dtype="Int64"),
            "funding_interval_ms": pd.array([14_400_000], dtype="Int64"),
        }
    )
    listings = listings_from_frames(pairs, perps)
    assert listings["BTC/USDT"] == Listing("BTC/USDT", "USDT", "spot", delisted_ms=NOW)
    assert listings["BTC/USDT:USDT"] == Listing(
        "BTC/USDT:USDT", "USDT", "swap", False, NOW, None, 14_400_000
    )
