"""Unified symbols, tape folder names and timeframes."""

from __future__ import annotations

import pytest

from crypto_pipelines.domain.symbols import SymbolError, dir_to_symbol, parse_symbol, symbol_to_dir
from crypto_pipelines.domain.timeframes import TimeframeError, is_aligned, timeframe_ms


@pytest.mark.parametrize(
    ("symbol", "folder", "kind", "linear"),
    [
        ("BTC/USDT", "BTC_USDT", "spot", None),
        ("BTC/USDT:USDT", "BTC_USDT_USDT", "swap", True),
        ("BTC/USD:BTC", "BTC_USD_BTC", "swap", False),
    ],
)
def test_symbol_round_trip(symbol: str, folder: str, kind: str, linear: bool | None) -> None:
    parsed = parse_symbol(symbol)
    assert (parsed.market_type, parsed.linear, parsed.unified) == (kind, linear, symbol)
    assert symbol_to_dir(symbol) == folder and dir_to_symbol(folder) == symbol


@pytest.mark.parametrize("bad", ["BTCUSDT", "BTC/", "/USDT", "BTC/USDT:", "BTC USDT", ""])
def test_bad_symbols_are_named(bad: str) -> None:
    with pytest.raises(SymbolError, match="not a ccxt unified symbol"):
        parse_symbol(bad)


@pytest.mark.parametrize("bad", ["BTCUSDT", "BTC_", "BTC__USDT", "A_B_C_D"])
def test_bad_folders_are_named(bad: str) -> None:
    with pytest.raises(SymbolError, match="not a tape symbol folder"):
        dir_to_symbol(bad)


def test_timeframes() -> None:
    assert [timeframe_ms(t) for t in ("1s", "1m", "5m", "1h", "1d", "1w")] == [
        1000,
        60_000,
        300_000,
        3_600_000,
        86_400_000,
        604_800_000,
    ]
    assert is_aligned(1_704_067_200_000, "1d") and not is_aligned(1_704_067_260_000, "5m")
    assert is_aligned(1_704_067_200_000, "1w")  # 2024-01-01 is a Monday
    for bad in ("1M", "0m", "m", "5x", "1.5h"):
        with pytest.raises(TimeframeError):
            timeframe_ms(bad)
