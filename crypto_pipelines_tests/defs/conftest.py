"""A replay exchange on a small synthetic tape and a universe pointing at it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from crypto_pipelines.domain.universe import Universe, load_universe
from crypto_pipelines.replay import ReplayClock, ReplayServer, Tape
from crypto_pipelines.replay.synth import SynthSpec, write_synthetic_tape

START = datetime(2024, 1, 1, tzinfo=UTC)
START_MS = int(START.timestamp() * 1000)
DAYS = 3
DAY_MS = 86_400_000
SYMBOLS = {
    "binance": ("BTC/USDT", "BTC/USDT:USDT"),
    "okx": ("BTC/USDT", "BTC/USDT:USDT"),
    "bybit": ("BTC/USDT", "BTC/USDT:USDT"),
    "coinbaseexchange": ("BTC/USD",),
}


@dataclass
class ReplayWorld:
    tape: Tape
    server: ReplayServer
    universe: Universe
    universe_path: Path


@pytest.fixture(scope="session")
def synth_tape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tape]:
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_tape(
        root,
        SynthSpec(
            symbols=SYMBOLS, timeframes=("1m", "1h"), start=START, days=DAYS, seed=11, books=False
        ),
    )
    tape = Tape.load(root)
    yield tape
    tape.close()


@pytest.fixture(scope="session")
def replay_world(
    synth_tape: Tape, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReplayWorld]:
    # "Now" is pinned one day after the tape ends: every candle on it is closed.
    clock = ReplayClock(start_ms=START_MS + (DAYS + 1) * DAY_MS, speed=0)
    path = tmp_path_factory.mktemp("universe") / "universe.yaml"
    lines = ["source: replay", "exchanges:"]
    for exchange, symbols in SYMBOLS.items():
        perps = any(":" in s for s in symbols)
        lines += [
            f"  {exchange}:",
            f"    symbols: [{', '.join(symbols)}]",
            "    timeframes: [1m, 1h]",
            "    start: 2024-01-01",
            f"    trades: {'true' if exchange != 'bybit' else 'false'}",
            f"    funding: {'true' if perps else 'false'}",
        ]
    path.write_text("\n".join(lines) + "\n")
    with ReplayServer(synth_tape, clock=clock) as server:
        yield ReplayWorld(synth_tape, server, load_universe(path), path)
