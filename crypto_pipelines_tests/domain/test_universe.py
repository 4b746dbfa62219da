"""The universe file: the default loads; malformed ones are refused naming key and reason.

The domain checks syntax only: what each venue offers is checked where a universe is loaded
to run it (``crypto_pipelines_tests/defs/test_universe_check.py``)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from crypto_pipelines.domain.universe import (
    ExchangeUniverse,
    UniverseError,
    load_universe,
    universe_path,
)


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
            "exchanges.binance.colour: unknown key (allowed: symbols, timeframes, start, "
            "trades, funding, open_interest, filters, incremental)",
        ),
        (
            "exchanges:\n  binance:\n    symbols: [BTC/USDT]\n    strat: 2024-01-01\n",
            "exchanges.binance.strat: unknown key, did you mean 'start'? (allowed: symbols,",
        ),
        (
            "exchanges:\n  binance:\n    filters: {quote: [USDT], top_by_volume: 5}\n",
            "exchanges.binance.filters.top_by_volume: unknown key, did you mean 'top_n_by_volume'? "
            "(allowed: quote, types, top_n_by_volume, exclude)",
        ),
        (
            "exchange:\n  binance:\n    symbols: [BTC/USDT]\n",
            "exchange: unknown key, did you mean 'exchanges'? (allowed: source, exchanges)",
        ),
        (
            "exchanges:\n  binance:\n    symbols: [BTC/USDT]\n    trades: maybe\n",
            "exchanges.binance.trades: Input should be a valid boolean, unable to interpret "
            "input (got 'maybe')",
        ),
        (
            "exchanges:\n  binance:\n    symbols: [BTC/USDT]\n"
            "    incremental: {interval_seconds: 5}\n",
            "exchanges.binance.incremental.interval_seconds: Input should be greater than or "
            "equal to 30 (got 5)",
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


def _universe_with(tmp_path: Path, start: str) -> Path:
    path = tmp_path / "universe.yaml"
    path.write_text(f"exchanges:\n  binance:\n    symbols: [BTC/USDT]\n    start: {start}\n")
    return path


@pytest.mark.parametrize(
    ("start", "reason"),
    [
        # YAML reads these as dates and, building them, used to raise a bare ValueError
        # ("month must be in 1..12") naming neither the file nor the key.
        ("2024-13-45", "month value is outside expected range of 1-12 (got '2024-13-45')"),
        ("2024-02-30", "day value is outside expected range (got '2024-02-30')"),
        ("2024-01-01 25:00:00", "hour value is outside expected range of 0-23"),
        ("!!timestamp soon", "(got 'soon')"),
    ],
)
def test_an_impossible_date_names_file_and_key(tmp_path: Path, start: str, reason: str) -> None:
    path = _universe_with(tmp_path, start)
    with pytest.raises(UniverseError) as info:
        load_universe(path)
    message = str(info.value)
    assert message.startswith(f"{path}: exchanges.binance.start: "), message
    assert reason in message, message


def test_a_start_in_the_future_is_refused(tmp_path: Path) -> None:
    today = datetime.now(UTC).date()
    with pytest.raises(UniverseError) as info:
        load_universe(_universe_with(tmp_path, "2099-01-01"))
    assert str(info.value) == (
        f"{tmp_path / 'universe.yaml'}: exchanges.binance.start: 2099-01-01 is in the future "
        f"(today is {today.isoformat()} UTC): start must be a day that has begun"
    )
    soon = today + timedelta(days=2)
    with pytest.raises(UniverseError, match=f"start: {soon.isoformat()} is in the future"):
        load_universe(_universe_with(tmp_path, soon.isoformat()))
    # built in code rather than read from a file, the same rule holds
    with pytest.raises(ValidationError, match="is in the future"):
        ExchangeUniverse(symbols=("BTC/USDT",), start=soon)


def test_a_start_of_today_is_accepted(tmp_path: Path) -> None:
    today = datetime.now(UTC).date()
    universe = load_universe(_universe_with(tmp_path, today.isoformat()))
    assert universe.exchanges["binance"].start in (today, today + timedelta(days=1))
    assert load_universe(_universe_with(tmp_path, "2024-01-05")).exchanges["binance"].start == date(
        2024, 1, 5
    )


def test_a_bad_source_override_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRYPTO_PIPELINES_SOURCE", "paper")
    path = _universe_with(tmp_path, "2024-01-01")
    with pytest.raises(UniverseError) as info:
        load_universe(path)
    assert str(info.value) == (
        f"{path}: source (from $CRYPTO_PIPELINES_SOURCE): Input should be 'live' or 'replay' "
        "(got 'paper')"
    )


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
