"""point_ccxt_at's URL rule, the control endpoints and the limiter's windows."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import ccxt
import ccxt.pro
import pytest

from crypto_pipelines.replay import ReplayServer, Tape, point_ccxt_at
from crypto_pipelines.replay.limits import BanPolicy, Budget, Limiter
from crypto_pipelines.replay.routing import rewrite_url
from crypto_pipelines.replay.tape.writer import write_ohlcv

BASE = "http://127.0.0.1:9999"


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@pytest.mark.parametrize(
    "exchange_id", ["binance", "binanceusdm", "okx", "bybit", "coinbaseexchange"]
)
def test_every_api_url_is_rewritten(exchange_id: str) -> None:
    ex = point_ccxt_at(getattr(ccxt, exchange_id)(), BASE)
    urls = list(_strings(ex.urls["api"]))
    assert urls and all(u.startswith(f"{BASE}/{exchange_id}/") for u in urls if "://" in u)
    assert not any("{hostname}" in u for u in urls)


def test_hostname_placeholder_and_websocket_urls() -> None:
    assert (
        rewrite_url("https://api.{hostname}/v5", "bybit", BASE, "bybit.com")
        == f"{BASE}/bybit/api.bybit.com/v5"
    )
    assert (
        rewrite_url("wss://stream.binance.com:9443/ws", "binance", BASE)
        == "ws://127.0.0.1:9999/binance/stream.binance.com:9443/ws"
    )
    assert rewrite_url("mailto:someone", "binance", BASE) == "mailto:someone"
    pro = point_ccxt_at(ccxt.pro.okx(), BASE)
    ws = [u for u in _strings(pro.urls["api"]) if u.startswith("ws://")]
    assert ws and all(u.startswith("ws://127.0.0.1:9999/okx/") for u in ws)


@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[ReplayServer]:
    write_ohlcv(
        tmp_path, "binance", "BTC/USDT", "1m", [(1_704_067_200_000, "1", "2", "0.5", "1.5", "3")]
    )
    with ReplayServer(Tape.load(tmp_path)) as server:
        yield server


def _request(url: str, method: str = "GET", body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_stats_count_requests_and_faults(small_server: ReplayServer) -> None:
    ex = point_ccxt_at(ccxt.binance({"enableRateLimit": False}), small_server.url)
    ex.load_markets()
    assert ex.fetch_ohlcv("BTC/USDT", "1m", since=1_704_067_200_000)[0][4] == 1.5
    status, stats = _request(small_server.url + "/_replay/stats")
    assert status == 200
    klines = stats["exchanges"]["binance"]["/api/v3/klines"]
    assert klines["requests"] == 1 and klines["ok"] == 1
    assert stats["totals"]["requests"] >= 4  # three exchangeInfo calls + klines

    status, config = _request(
        small_server.url + "/_replay/faults", "PUT", {"server_error": 1.0, "seed": 3}
    )
    assert status == 200 and config["server_error"] == 1.0
    with pytest.raises(ccxt.ExchangeNotAvailable):
        ex.fetch_ohlcv("BTC/USDT", "1m", since=1_704_067_200_000)
    _, stats = _request(small_server.url + "/_replay/stats")
    assert stats["exchanges"]["binance"]["/api/v3/klines"]["server_errors"] == 1
    assert _request(small_server.url + "/_replay/faults", "PUT", {"server_error": 2})[0] == 400
    assert _request(small_server.url + "/_replay/stats", "DELETE")[1]["totals"]["requests"] == 0


def test_unknown_exchange_and_paths(small_server: ReplayServer) -> None:
    assert _request(small_server.url + "/kraken/api.kraken.com/0/public/Time")[0] == 404
    assert (
        _request(small_server.url + "/okx/www.okx.com/api/v5/public/time")[0] == 404
    )  # not on this tape
    assert _request(small_server.url + "/_replay/nope")[0] == 404


def test_limiter_fixed_windows_and_ban() -> None:
    now = [60_000]
    limiter = Limiter(BanPolicy(after=2, ban_ms=5_000), now_ms=lambda: now[0])
    budget = (Budget("w", 1_000, 3),)
    assert [limiter.charge(budget, "", 1).allowed for _ in range(4)] == [True, True, True, False]
    refused = limiter.charge(budget, "", 1)
    assert not refused.allowed and refused.retry_after_s == 1 and not refused.banned
    banned = limiter.charge(budget, "", 1)  # third violation in a row: banned
    assert banned.banned and banned.retry_after_s == 5
    now[0] += 1_000
    assert limiter.charge(budget, "", 1).banned  # the ban outlives the window
    now[0] += 5_000
    verdict = limiter.charge(budget, "", 2)
    assert verdict.allowed and verdict.used == 2 and verdict.remaining == 1


def test_per_endpoint_budgets_are_separate() -> None:
    now = [0]
    limiter = Limiter(now_ms=lambda: now[0])
    budget = (Budget("e", 2_000, 1, per_endpoint=True),)
    assert limiter.charge(budget, "/a", 1).allowed and limiter.charge(budget, "/b", 1).allowed
    assert not limiter.charge(budget, "/a", 1).allowed
