"""Which listings are compared, and the reference each candle is compared with."""

from __future__ import annotations

import pandas as pd
import pytest

from crypto_pipelines.domain.cross_exchange import (
    Listing,
    close_deviations,
    comparable_groups,
    offending,
    validate_max_bps,
)


def test_groups_same_base_and_type_with_dollar_quotes_on_two_exchanges() -> None:
    listings = [
        Listing("binance", "BTC/USDT"),
        Listing("coinbaseexchange", "BTC/USD"),
        Listing("okx", "BTC/USDC"),
        Listing("okx", "BTC/EUR"),  # not a dollar quote
        Listing("binance", "BTC/USDT:USDT"),
        Listing("bybit", "BTC/USD:BTC"),  # inverse perp: a USD price too
        Listing("binance", "ETH/USDT"),
        Listing("binance", "ETH/USDC"),  # one exchange only: nothing to compare with
    ]
    groups = {(g.base, g.market_type): g.listings for g in comparable_groups(listings)}
    assert groups == {
        ("BTC", "spot"): (
            Listing("binance", "BTC/USDT"),
            Listing("coinbaseexchange", "BTC/USD"),
            Listing("okx", "BTC/USDC"),
        ),
        ("BTC", "swap"): (Listing("binance", "BTC/USDT:USDT"), Listing("bybit", "BTC/USD:BTC")),
    }


def _closes(values: dict[str, list[float | None]]) -> dict[Listing, pd.Series]:
    ts = [0, 60_000, 120_000]
    return {
        Listing(name, "BTC/USDT"): pd.Series(closes, index=ts, dtype="float64")
        for name, closes in values.items()
    }


def test_median_of_three_singles_out_the_outlier() -> None:
    deviations = close_deviations(
        _closes({"a": [100.0, 100.0, 100.0], "b": [100.0, 100.1, 100.0], "c": [101.0, 100.0, None]})
    )
    bad_c = offending(deviations, Listing("c", "BTC/USDT"), 50)
    assert bad_c["ts"].tolist() == [0]
    assert bad_c["deviation_bps"].item() == pytest.approx(100.0)
    assert bad_c["venues"].item() == 3
    for name in ("a", "b"):
        assert offending(deviations, Listing(name, "BTC/USDT"), 50).empty
    # At ts 120000 only a and b have a close: each is compared with the other.
    pair = deviations[deviations["ts"] == 120_000]
    assert pair["venues"].tolist() == [2, 2] and pair["deviation_bps"].tolist() == [0.0, 0.0]


def test_two_venues_report_both_sides() -> None:
    deviations = close_deviations(_closes({"a": [100.0, 100.0, 100.0], "b": [101.0, 100.0, 100.0]}))
    for name in ("a", "b"):
        bad = offending(deviations, Listing(name, "BTC/USDT"), 50)
        assert bad["ts"].tolist() == [0]
    assert offending(deviations, Listing("b", "BTC/USDT"), 150).empty


def test_no_overlap_or_bad_values_compare_nothing() -> None:
    only_one = close_deviations(_closes({"a": [100.0, 100.0, 100.0]}))
    assert only_one.empty
    bad = close_deviations(_closes({"a": [100.0, -1.0, None], "b": [100.0, 100.0, 100.0]}))
    assert bad["ts"].tolist() == [0, 0]


@pytest.mark.parametrize("value", [0, -1, 10_000, float("nan"), float("inf")])
def test_threshold_validation(value: float) -> None:
    with pytest.raises(ValueError):
        validate_max_bps(value)
