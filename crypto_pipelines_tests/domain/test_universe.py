"""The universe file: the default loads; malformed ones are refused naming key and reason.

The domain checks syntax only: what each venue offers is checked where a universe is loaded
to run it (``crypto_pipelines_tests/defs/test_universe_check.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from crypto_pipelines.domain.universe import UniverseError, load_universe, universe_path


def test_default_universe_covers_the_four_exchanges() -> None:
    universe = load_universe()
    assert set(universe.exchanges) == {"binance", "okx", "bybit", "coinbaseexchange"}
    assert universe.exchanges["binance"].perpetuals == ("BTC/USDT:USDT", "ETH/USDT:USDT")
    assert universe.exchanges["coinbaseexchange"].perpetuals == ()
    assert universe.exchanges["okx"].start_ms == 1_704_067_200_000


def test_env_selects_file_and_source_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "u.yaml"
    path.write_text(
        "source: live\nexchanges:\n  binance:\n    symbols: [BTC/USDT]\n    timeframes: [1h, 1m]\n"
    )
    monkeypatch.setenv("CRYPTO_PIPELINES_UNIVERSE", str(path))
    monkeypatch.setenv("CRYPTO_PIPELINES_SOURCE", "replay")
    universe = load_universe()
    assert universe.source == "replay"
    assert universe.exchanges["binance"].timeframes == ("1m", "1h")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("exchanges: [1, 2", "not valid YAML"),
        ("- a\n- b\n", "a universe is a mapping"),
        (
            "exchanges:\n  binance:\n    symbols: [BTCUSDT]\n",
            "exchanges.binance.symbols: not a ccxt unified symbol",
        ),
        (
            "exchanges:\n  binance:\n    symbols: [BTC/USDT]\n    timeframes: [7x]\n",
            "exchanges.binance.timeframes: not a ccxt timeframe",
        ),
        (
            "exchanges:\n  binance:\n    symbols: [BTC/USDT]\n    colour: red\n",
            "exchanges.binance.colour: Extra inputs are not permitted",
        ),
        (
            "exchanges:\n  binance:\n    symbols: [BTC/USDT]\n    start: yesterday\n",
            "exchanges.binance.start",
        ),
        (
            "source: paper\nexchanges:\n  binance:\n    symbols: [BTC/USDT]\n",
            "source: Input should be 'live' or 'replay'",
        ),
        ("exchanges: {}\n", "exchanges: Dictionary should have at least 1 item"),
    ],
)
def test_malformed_universe_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UniverseError) as info:
        load_universe(path)
    assert str(path) in str(info.value) and message in str(info.value), str(info.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(UniverseError, match="cannot read universe file"):
        load_universe(tmp_path / "nope.yaml")


def test_what_venues_offer_is_not_the_domains_question(tmp_path: Path) -> None:
    """An exchange the loader does not know, or a timeframe its venue lacks, is well-formed:
    the venue registry (``crypto_pipelines.exchanges``) judges it, not the domain."""
    path = tmp_path / "u.yaml"
    path.write_text(
        "exchanges:\n  kraken:\n    symbols: [BTC/USD]\n"
        "  coinbaseexchange:\n    symbols: [BTC/USD:USD]\n    timeframes: [4h]\n"
    )
    universe = load_universe(path)
    assert set(universe.exchanges) == {"kraken", "coinbaseexchange"}
    assert universe_path(path) == path
