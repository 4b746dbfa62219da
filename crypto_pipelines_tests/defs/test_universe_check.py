"""A universe asking a venue for what it does not offer is refused where a universe is loaded
to run it (the code location and ``crypto-pipelines partitions sync``), naming the file, the
key and the reason; the domain itself only checks syntax (``domain/test_universe.py``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crypto_pipelines.cli import app
from crypto_pipelines.defs.universe_check import load_checked_universe, venue_problems
from crypto_pipelines.domain.universe import UniverseError, load_universe

UNSUPPORTED = [
    pytest.param(
        "exchanges:\n  kraken:\n    symbols: [BTC/USD]\n",
        "exchanges.kraken: unknown exchange (supported: binance, bybit, coinbaseexchange, okx)",
        id="unknown-exchange",
    ),
    pytest.param(
        "exchanges:\n  coinbaseexchange:\n    symbols: [BTC/USD]\n    timeframes: [4h]\n",
        "exchanges.coinbaseexchange.timeframes: coinbaseexchange has no 4h candles",
        id="timeframe",
    ),
    pytest.param(
        "exchanges:\n  coinbaseexchange:\n    symbols: [BTC/USD:USD]\n",
        "exchanges.coinbaseexchange.symbols: coinbaseexchange lists no perpetual swaps: BTC/USD:USD",
        id="perpetuals",
    ),
    pytest.param(
        "exchanges:\n  coinbaseexchange:\n    filters: {quote: [USD], types: [spot, swap]}\n",
        "exchanges.coinbaseexchange.filters.types: coinbaseexchange lists no swap markets",
        id="filter-types",
    ),
    pytest.param(
        "exchanges:\n  coinbaseexchange:\n    symbols: [BTC/USD]\n    open_interest: true\n",
        "exchanges.coinbaseexchange.open_interest: coinbaseexchange publishes no open interest "
        "history",
        id="open-interest",
    ),
]


@pytest.mark.parametrize(("text", "message"), UNSUPPORTED)
def test_what_a_venue_cannot_do_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UniverseError) as info:
        load_checked_universe(path)
    assert str(info.value) == f"{path}: {message}"


def test_every_problem_is_named_and_the_default_universe_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "exchanges:\n  kraken:\n    symbols: [BTC/USD]\n"
        "  coinbaseexchange:\n    symbols: [BTC/USD:USD]\n    timeframes: [4h]\n"
    )
    problems = venue_problems(load_universe(path))
    assert [p.split(":")[0] for p in problems] == [
        "exchanges.kraken",
        "exchanges.coinbaseexchange.timeframes",
        "exchanges.coinbaseexchange.symbols",
    ]
    monkeypatch.delenv("CRYPTO_PIPELINES_UNIVERSE", raising=False)
    assert venue_problems(load_checked_universe()) == []
    monkeypatch.setenv("CRYPTO_PIPELINES_UNIVERSE", str(path))  # the file the env names
    with pytest.raises(UniverseError, match=f"^{re.escape(str(path))}: exchanges.kraken: unknown"):
        load_checked_universe()


def _bad_universe(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "exchanges:\n  coinbaseexchange:\n    symbols: [BTC/USD]\n    timeframes: [4h]\n"
    )
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "exchanges:\n  coinbaseexchange:\n    symbols: [BTC/USD]\n    timeframes: [4h]\n",
            "exchanges.coinbaseexchange.timeframes: coinbaseexchange has no 4h candles",
            id="venue",
        ),
        pytest.param(
            "exchanges:\n  binance:\n    symbols: [BTC/USDT]\n    start: 2024-13-45\n",
            "exchanges.binance.start: Input should be a valid date or datetime, month value is "
            "outside expected range of 1-12 (got '2024-13-45')",
            id="date-typo",
        ),
        pytest.param(
            "exchanges:\n  binance:\n    symbols: [BTC/USDT]\n    start: 2099-01-01\n",
            "exchanges.binance.start: 2099-01-01 is in the future",
            id="future-start",
        ),
    ],
)
def test_the_code_location_refuses_to_load(tmp_path: Path, text: str, message: str) -> None:
    """What ``dagster dev`` / ``dagster-webserver`` see: importing the code location fails
    with the file, key and reason."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    env = {**os.environ, "CRYPTO_PIPELINES_UNIVERSE": str(path), "DAGSTER_HOME": str(tmp_path)}
    env.pop("CRYPTO_PIPELINES_SOURCE", None)
    done = subprocess.run(
        [sys.executable, "-c", "import crypto_pipelines.definitions"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert f"UniverseError: {path}: {message}" in done.stderr, done.stderr


def test_partitions_sync_refuses_before_touching_the_instance(tmp_path: Path) -> None:
    path = _bad_universe(tmp_path)
    result = CliRunner().invoke(app, ["partitions", "sync", "--universe", str(path)])
    assert result.exit_code == 2
    assert "coinbaseexchange has no 4h candles" in result.output
    assert str(path) in result.output
