"""``fetch_usd_volumes`` against the replay exchange: bulk where the venue answers it, symbol by
symbol where it refuses (the replay's Binance) or answers without volumes (Coinbase), quotes
converted to USD, OKX swap contracts turned into base currency."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from crypto_pipelines.exchanges.calls import FetchStats
from crypto_pipelines.exchanges.client import make_client
from crypto_pipelines.exchanges.loader import fetch_markets
from crypto_pipelines.exchanges.tickers import fetch_usd_volumes
from crypto_pipelines.replay import ReplayClock, ReplayServer, Tape
from crypto_pipelines.replay.synth import SynthSpec, write_synthetic_tape

START = datetime(2024, 1, 1, tzinfo=UTC)
NOW = int(START.timestamp() * 1000) + 18 * 3_600_000
SYMBOLS = {
    "binance": ("BTC/USDT", "ETH/BTC", "SOL/USDC"),
    "bybit": ("BTC/USDT", "ETH/USDT"),
    "coinbaseexchange": ("BTC/USD", "ETH/USD"),
    "okx": ("BTC/USDT", "ETH/USDT:USDT"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplayServer]:
    root: Path = tmp_path_factory.mktemp("tickers")
    spec = SynthSpec(
        exchanges=tuple(SYMBOLS),
        symbols=SYMBOLS,
        timeframes=("1m",),
        start=START,
        days=1,
        seed=9,
        trades=False,
        books=False,
        funding=False,
    )
    write_synthetic_tape(root, spec)
    tape = Tape.load(root)
    with ReplayServer(tape, clock=ReplayClock(start_ms=NOW, speed=0)) as srv:
        yield srv
    tape.close()


def _quote_volume(tape: Tape, exchange: str, symbol: str) -> float:
    rows = (
        tape.exchanges[exchange]
        .symbols[symbol]
        .ohlcv["1m"]
        .between(NOW - 86_400_000 + 1, NOW, 10**6)
    )
    return float(sum(Decimal(c.volume) * Decimal(c.close) for c in rows))


def _base_volume(tape: Tape, exchange: str, symbol: str) -> float:
    rows = (
        tape.exchanges[exchange]
        .symbols[symbol]
        .ohlcv["1m"]
        .between(NOW - 86_400_000 + 1, NOW, 10**6)
    )
    return float(sum(Decimal(c.volume) for c in rows))


def _last(tape: Tape, exchange: str, symbol: str) -> float:
    return float(
        tape.exchanges[exchange]
        .symbols[symbol]
        .ohlcv["1m"]
        .between(None, NOW, 1, newest=True)[0]
        .close
    )


@pytest.mark.parametrize("exchange", ["binance", "bybit", "coinbaseexchange"])
def test_spot_volumes_in_usd(server: ReplayServer, exchange: str) -> None:
    client = make_client(exchange, replay_url=server.url)
    markets = fetch_markets(client)
    stats = FetchStats()
    volumes = fetch_usd_volumes(client, markets, stats=stats)
    assert set(volumes) == set(SYMBOLS[exchange])
    for symbol in SYMBOLS[exchange]:
        if exchange == "coinbaseexchange":  # its ticker has base volume only: x last price
            expected = _base_volume(server.tape, exchange, symbol) * _last(
                server.tape, exchange, symbol
            )
        else:
            expected = _quote_volume(server.tape, exchange, symbol)
        if symbol == "ETH/BTC":  # quoted in BTC: valued at BTC/USDT's last price
            expected *= _last(server.tape, exchange, "BTC/USDT")
        assert volumes[symbol] == pytest.approx(expected, rel=1e-6), symbol
    # One request per symbol where the bulk form is refused or has no volumes, else one per type.
    assert stats.requests >= (1 if exchange == "bybit" else len(SYMBOLS[exchange]))


def test_okx_swap_volume_counts_contracts_in_base_currency(server: ReplayServer) -> None:
    client = make_client("okx", replay_url=server.url)
    markets = [m for m in fetch_markets(client) if m["type"] == "swap"]
    volumes = fetch_usd_volumes(client, markets)
    ticker = client.fetch_ticker("ETH/USDT:USDT")
    # OKX's own base-currency volume (volCcy24h) at the last price, independent of ccxt's units.
    expected = float(ticker["info"]["volCcy24h"]) * float(ticker["last"])
    assert volumes["ETH/USDT:USDT"] == pytest.approx(expected, rel=1e-6)
