"""Listing dates from first candles, against the replay exchange: one request on venues that
answer a range's first rows (Binance, Bybit), daily windows from the universe's start on one
that answers newest first (Coinbase); stored dates are not asked again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from crypto_pipelines.domain.instruments import instruments_from_ccxt_markets
from crypto_pipelines.exchanges.calls import FetchStats
from crypto_pipelines.exchanges.client import make_client
from crypto_pipelines.exchanges.listing import first_candle_ms, with_first_candles
from crypto_pipelines.exchanges.loader import fetch_markets
from crypto_pipelines.replay import ReplayClock, ReplayServer, Tape
from crypto_pipelines.replay.synth import SynthSpec, write_synthetic_tape

START = datetime(2024, 3, 10, tzinfo=UTC)  # the tape's first day
START_MS = int(START.timestamp() * 1000)
DAY = 86_400_000
EARLIER = START_MS - 280 * DAY  # a universe start long before the market traded
SYMBOLS = {
    "binance": ("BTC/USDT",),
    "bybit": ("BTC/USDT",),
    "coinbaseexchange": ("BTC/USD",),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplayServer]:
    root: Path = tmp_path_factory.mktemp("listing")
    spec = SynthSpec(
        exchanges=tuple(SYMBOLS),
        symbols=SYMBOLS,
        timeframes=("1h", "1d"),
        start=START,
        days=3,
        seed=5,
        trades=False,
        books=False,
        funding=False,
    )
    write_synthetic_tape(root, spec)
    tape = Tape.load(root)
    with ReplayServer(tape, clock=ReplayClock(start_ms=START_MS + 3 * DAY, speed=0)) as srv:
        yield srv
    tape.close()


def _first(server: ReplayServer, exchange: str, symbol: str, timeframe: str) -> int:
    first = server.tape.exchanges[exchange].symbols[symbol].ohlcv[timeframe].first_ts
    assert first is not None
    return first


@pytest.mark.parametrize("exchange", ["binance", "bybit"])
def test_one_request_finds_the_first_candle_where_ranges_answer_oldest_first(
    server: ReplayServer, exchange: str
) -> None:
    client = make_client(exchange, replay_url=server.url)
    client.load_markets()
    stats = FetchStats()
    found = first_candle_ms(client, "BTC/USDT", "1h", EARLIER, stats=stats)
    assert found == _first(server, exchange, "BTC/USDT", "1h")
    assert stats.requests == 1


def test_coinbase_walks_daily_windows_from_the_universe_start(server: ReplayServer) -> None:
    client = make_client("coinbaseexchange", replay_url=server.url)
    client.load_markets()
    stats = FetchStats()
    found = first_candle_ms(client, "BTC/USD", "1h", EARLIER, stats=stats)
    assert found == _first(server, "coinbaseexchange", "BTC/USD", "1d") == START_MS
    assert 1 <= stats.requests <= 2  # 300 days a window
    # trading from the universe's start: its listing is earlier, and unknown
    assert first_candle_ms(client, "BTC/USD", "1h", START_MS, stats=FetchStats()) is None


def test_stored_dates_win_and_only_universe_symbols_are_asked(server: ReplayServer) -> None:
    client = make_client("binance", replay_url=server.url)
    markets = fetch_markets(client)
    instruments = instruments_from_ccxt_markets("binance", markets)
    assert all(p.listed_ms is None for p in instruments.pairs)  # Binance spot gives none
    stats = FetchStats()
    done, asked = with_first_candles(
        client, instruments, {"BTC/USDT"}, {}, "1h", EARLIER, stats=stats
    )
    listed = {p.symbol: p.listed_ms for p in done.pairs}
    assert asked == {"BTC/USDT": _first(server, "binance", "BTC/USDT", "1h")}
    assert listed["BTC/USDT"] == asked["BTC/USDT"]
    assert all(ms is None for symbol, ms in listed.items() if symbol != "BTC/USDT")

    again = FetchStats()
    done, asked = with_first_candles(
        client, instruments, {"BTC/USDT"}, {"BTC/USDT": START_MS - DAY}, "1h", EARLIER, stats=again
    )
    assert asked == {} and again.requests == 0
    assert {p.symbol: p.listed_ms for p in done.pairs}["BTC/USDT"] == START_MS - DAY
