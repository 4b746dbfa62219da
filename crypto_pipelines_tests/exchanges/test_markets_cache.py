"""ccxt's markets kept between runs (``exchanges.markets_cache``), against the replay exchange:
a fresh cache spares the exchange every markets request, a stale or unreadable one is asked
again, a symbol listed since the cache was written brings one reload, and the catalog's own
refresh always asks the exchange."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from crypto_pipelines.exchanges.calls import Caller, FetchStats
from crypto_pipelines.exchanges.client import make_client
from crypto_pipelines.exchanges.loader import fetch_markets, iter_ohlcv
from crypto_pipelines.exchanges.markets_cache import MarketsCache
from crypto_pipelines.exchanges.venues import get_venue
from crypto_pipelines.replay import ReplayClock, ReplayServer, Tape
from crypto_pipelines.replay.synth import SynthSpec, write_synthetic_tape

START = datetime(2024, 1, 1, tzinfo=UTC)
START_MS = int(START.timestamp() * 1000)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplayServer]:
    root: Path = tmp_path_factory.mktemp("markets_cache")
    spec = SynthSpec(
        exchanges=("binance",),
        symbols={"binance": ("BTC/USDT", "ETH/USDT")},
        timeframes=("1h",),
        start=START,
        days=1,
        seed=3,
        trades=False,
        books=False,
        funding=False,
    )
    write_synthetic_tape(root, spec)
    tape = Tape.load(root)
    with ReplayServer(tape, clock=ReplayClock(start_ms=START_MS + 86_400_000, speed=0)) as srv:
        yield srv
    tape.close()


def _requests(server: ReplayServer) -> int:
    with urllib.request.urlopen(server.url + "/_replay/stats", timeout=10) as answer:
        return int(json.loads(answer.read())["totals"]["requests"])


def _client(server: ReplayServer, cache: MarketsCache, max_age: float = 3600.0) -> object:
    client = make_client("binance", replay_url=server.url)
    cache.attach(client, max_age)
    return client


def _market(client: object, symbol: str) -> dict[str, object]:
    return Caller(client, get_venue("binance"), FetchStats(), "test").market(symbol)


def test_a_fresh_cache_spares_every_markets_request(server: ReplayServer, tmp_path: Path) -> None:
    cache = MarketsCache("binance", server.url, tmp_path)
    first = _client(server, cache)
    before = _requests(server)
    assert _market(first, "BTC/USDT")["id"] == "BTCUSDT"
    assert _requests(server) - before == 3  # spot, USDⓈ-M and COIN-M exchangeInfo
    assert cache.path.exists()

    second = make_client("binance", replay_url=server.url)
    assert cache.attach(second, 3600.0)
    before = _requests(server)
    assert _market(second, "BTC/USDT")["id"] == "BTCUSDT"
    assert _requests(server) == before  # nothing asked
    spec = get_venue("binance")
    chunks = iter_ohlcv(
        second, spec, "BTC/USDT", "1h", START_MS, START_MS + 86_400_000, stats=FetchStats()
    )
    assert sum(len(chunk) for chunk in chunks) == 24  # data requests work on cached markets
    assert _requests(server) - before == 1  # the candles, no markets


def test_stale_or_unreadable_caches_are_asked_again(server: ReplayServer, tmp_path: Path) -> None:
    cache = MarketsCache("binance", server.url, tmp_path)
    _market(_client(server, cache), "BTC/USDT")
    assert not cache.attach(make_client("binance", replay_url=server.url), 0.0)  # off
    stale = json.loads(cache.path.read_text())
    stale["saved_at"] -= 7200
    cache.path.write_text(json.dumps(stale))
    assert not cache.attach(make_client("binance", replay_url=server.url), 3600.0)
    cache.path.write_text("{not json")
    client = make_client("binance", replay_url=server.url)
    assert not cache.attach(client, 3600.0)
    before = _requests(server)
    assert _market(client, "ETH/USDT")["id"] == "ETHUSDT"
    assert _requests(server) - before == 3
    assert json.loads(cache.path.read_text())["markets"]  # rewritten by the load


def test_a_symbol_listed_since_brings_one_reload(server: ReplayServer, tmp_path: Path) -> None:
    cache = MarketsCache("binance", server.url, tmp_path)
    _market(_client(server, cache), "BTC/USDT")
    saved = json.loads(cache.path.read_text())
    del saved["markets"]["ETH/USDT"]  # as if ETH/USDT had been listed after the cache
    cache.path.write_text(json.dumps(saved))
    client = _client(server, cache)
    before = _requests(server)
    assert _market(client, "ETH/USDT")["id"] == "ETHUSDT"
    assert _requests(server) - before == 3
    assert "ETH/USDT" in json.loads(cache.path.read_text())["markets"]


def test_the_catalog_refresh_always_asks_the_exchange(server: ReplayServer, tmp_path: Path) -> None:
    cache = MarketsCache("binance", server.url, tmp_path)
    _market(_client(server, cache), "BTC/USDT")
    client = _client(server, cache)
    before = _requests(server)
    symbols = {m["symbol"] for m in fetch_markets(client)}
    assert {"BTC/USDT", "ETH/USDT"} <= symbols
    assert _requests(server) - before == 3
