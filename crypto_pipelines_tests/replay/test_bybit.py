"""Bybit v5 market data through stock ccxt clients (sync and async) against the replay exchange.

Errors, faults, rate limits, recorded shapes and the real tapes are in test_bybit_errors.py.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import pytest

from crypto_pipelines.replay import ReplayClock, ReplayServer, Tape, point_ccxt_at
from crypto_pipelines.replay.tape import BookSnapshot, MarketSpec
from crypto_pipelines.replay.tape.writer import (
    write_book,
    write_funding,
    write_markets,
    write_ohlcv,
    write_trades,
)

T0 = 1_704_067_200_000  # Monday 2024-01-01 00:00 UTC
MIN, HOUR, DAY, WEEK = 60_000, 3_600_000, 86_400_000, 7 * 86_400_000
NOW = T0 + 2 * DAY + 5 * MIN + 30_000  # the replay clock, pinned
SPOT_MISSING = {5, 6, 7, 1500, 2885}  # minutes without a candle (2885 = NOW's minute)
SWAP_MISSING = {3, 1000, 1001, 2000}
FUNDING_START = T0 - 500 * 8 * HOUR


def _candles(
    start: int, step: int, n: int, skip: set[int], scale: float = 1.0
) -> list[tuple[Any, ...]]:
    rows = []
    for i in range(n):
        if i in skip:
            continue
        p = (42000 + (i % 97) - (i % 13) * 0.5) * scale
        rows.append(
            (
                start + i * step,
                f"{p:.2f}",
                f"{p + 3.25:.2f}",
                f"{p - 2.5:.2f}",
                f"{p + 1.01:.2f}",
                f"{(i % 17) * 0.125 + 0.001:.3f}",
            )
        )
    return rows


def _book(ts: int, levels: int, mid: int) -> BookSnapshot:
    return BookSnapshot(
        ts,
        [(f"{mid - j}.5", f"{j + 1}.25") for j in range(levels)],
        [(f"{mid + 1 + j}.5", f"{j + 2}.5") for j in range(levels)],
    )


def build_tape(root: Path) -> Path:
    """Spot BTC/USDT and ETH/USDT, linear BTC/USDT:USDT, inverse BTC/USD:BTC and the USDC
    perpetual BTC/USDC:USDC, with gaps, data after "now" and deep books."""
    write_ohlcv(root, "bybit", "BTC/USDT", "1m", _candles(T0, MIN, 3 * 1440, SPOT_MISSING))
    write_ohlcv(root, "bybit", "BTC/USDT", "1w", _candles(T0 - 10 * WEEK, WEEK, 11, set()))
    write_trades(
        root,
        "bybit",
        "BTC/USDT",
        [
            (
                T0 + DAY + i * 40_000,
                7_000_000 + i,
                "buy" if i % 3 else "sell",
                f"{42000 + i % 50}.25",
                f"0.{i % 9 + 1:04d}",
            )
            for i in range(3000)
        ],
    )
    write_book(
        root, "bybit", "BTC/USDT", [_book(T0 + 2 * DAY + k * MIN, 300, 42000) for k in range(10)]
    )
    write_ohlcv(root, "bybit", "BTC/USDT:USDT", "1m", _candles(T0, MIN, 3 * 1440, SWAP_MISSING))
    first = NOW - 4999 * 7000 - 500
    ids = [str(uuid.uuid5(uuid.NAMESPACE_OID, str(i))) for i in range(5100)]
    write_trades(
        root,
        "bybit",
        "BTC/USDT:USDT",
        [
            (
                first + i * 7000,
                ids[i],
                "sell" if i % 4 else "buy",
                f"{42000 + i % 70}.1",
                f"{i % 11 + 1}.001",
            )
            for i in range(5100)
        ],
    )
    write_funding(
        root,
        "bybit",
        "BTC/USDT:USDT",
        [(FUNDING_START + k * 8 * HOUR, f"0.000{k % 9 + 1}{k % 7}") for k in range(510)],
    )
    write_book(
        root,
        "bybit",
        "BTC/USDT:USDT",
        [_book(T0 + 2 * DAY + k * MIN, 600, 42010) for k in range(5)],
    )
    write_ohlcv(root, "bybit", "BTC/USD:BTC", "1h", _candles(T0, HOUR, 72, {10}))
    write_funding(
        root,
        "bybit",
        "BTC/USD:BTC",
        [(T0 + k * 4 * HOUR, f"-0.0000{k % 8 + 1}") for k in range(18)],
    )
    write_markets(
        root,
        "bybit",
        [
            MarketSpec("BTC/USDT", "spot", "0.01", "0.000001", "0.000048", None, T0),
            MarketSpec("ETH/USDT", "spot", "0.01", "0.00001", "0.0001", None, T0),
            MarketSpec("BTC/USDT:USDT", "swap", "0.1", "0.001", "0.002", "1", T0 - 400 * DAY),
            MarketSpec("BTC/USD:BTC", "swap", "0.5", "1", "1", "1", T0),
            MarketSpec("BTC/USDC:USDC", "swap", "0.1", "0.001", "0.001", "1", T0),
        ],
    )
    return root


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tape]:
    loaded = Tape.load(build_tape(tmp_path_factory.mktemp("bybit-tape")))
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def server(tape: Tape) -> Iterator[ReplayServer]:
    with ReplayServer(tape, clock=ReplayClock(start_ms=NOW, speed=0)) as srv:
        yield srv


def client(server: ReplayServer, **config: Any) -> ccxt.bybit:
    return point_ccxt_at(ccxt.bybit({"enableRateLimit": False, **config}), server.url)


def candles(
    tape: Tape, symbol: str, timeframe: str, start: int | None = None, end: int | None = None
) -> list[list[float]]:
    series = tape.exchanges["bybit"].symbols[symbol].ohlcv[timeframe]
    return [[c.ts, *(float(v) for v in c[1:])] for c in series.between(start, end, 10**9)]


def stats(server: ReplayServer) -> dict[str, Any]:
    with urllib.request.urlopen(server.url + "/_replay/stats", timeout=10) as resp:
        return json.loads(resp.read())["exchanges"].get("bybit", {})


def requests_to(server: ReplayServer, endpoint: str) -> int:
    return stats(server).get(endpoint, {}).get("requests", 0)


# -- markets ------------------------------------------------------------------------------------
def test_load_markets_spot_linear_inverse_usdc(server: ReplayServer) -> None:
    markets = client(server).load_markets()
    assert set(markets) == {"BTC/USDT", "ETH/USDT", "BTC/USDT:USDT", "BTC/USD:BTC", "BTC/USDC:USDC"}
    spot, linear, inverse, usdc = (
        markets[s] for s in ("BTC/USDT", "BTC/USDT:USDT", "BTC/USD:BTC", "BTC/USDC:USDC")
    )
    assert (
        spot["type"],
        spot["spot"],
        spot["id"],
        spot["precision"],
        spot["limits"]["amount"]["min"],
    ) == ("spot", True, "BTCUSDT", {"amount": 0.000001, "price": 0.01}, 0.000048)
    assert (
        linear["type"],
        linear["linear"],
        linear["inverse"],
        linear["settle"],
        linear["contractSize"],
    ) == ("swap", True, False, "USDT", 1.0)
    assert (
        linear["precision"]["amount"],
        linear["precision"]["price"],
        linear["limits"]["amount"]["min"],
    ) == (0.001, 0.1, 0.002)
    assert linear["created"] == T0 - 400 * DAY and linear["info"]["fundingInterval"] == 480
    assert (
        inverse["type"],
        inverse["inverse"],
        inverse["linear"],
        inverse["settle"],
        inverse["contractSize"],
        inverse["id"],
    ) == ("swap", True, False, "BTC", 1.0, "BTCUSD")
    assert (
        inverse["precision"]["amount"],
        inverse["precision"]["price"],
        inverse["info"]["fundingInterval"],
    ) == (1.0, 0.5, 240)
    assert (usdc["id"], usdc["linear"], usdc["settle"]) == ("BTCPERP", True, "USDC")


def test_load_markets_requests_and_empty_categories(server: ReplayServer) -> None:
    before = requests_to(server, "/v5/market/instruments-info")
    ex = client(server)
    ex.load_markets()
    # spot, linear + PreLaunch, inverse + PreLaunch, options for BTC ETH SOL XRP MNT DOGE
    assert requests_to(server, "/v5/market/instruments-info") - before == 11
    pre = ex.public_get_v5_market_instruments_info({"category": "linear", "status": "PreLaunch"})
    options = ex.public_get_v5_market_instruments_info({"category": "option", "baseCoin": "BTC"})
    assert pre["retCode"] == 0 and pre["result"] == {
        "category": "linear",
        "list": [],
        "nextPageCursor": "",
    }
    assert options["result"]["list"] == [] and options["result"]["category"] == "option"


def test_instruments_cursor_paging(tmp_path: Path) -> None:
    """More linear instruments than a page (ccxt asks for 1000): ccxt follows the cursor."""
    specs = [
        MarketSpec(f"C{i:04d}/USDT:USDT", "swap", "0.001", "1", "1", "1", T0) for i in range(1205)
    ]
    write_markets(
        tmp_path, "bybit", [*specs, MarketSpec("BTC/USDT", "spot", "0.01", "0.0001", "0.0001")]
    )
    with ReplayServer(tmp_path) as srv:
        ex = client(srv)
        markets = ex.load_markets()
        assert len(markets) == 1206 and all(m.symbol in markets for m in specs)
        assert requests_to(srv, "/v5/market/instruments-info") == 12  # one more for page 2
        page = ex.public_get_v5_market_instruments_info({"category": "linear", "limit": 500})
        ids = [i["symbol"] for i in page["result"]["list"]]
        while cursor := page["result"]["nextPageCursor"]:
            assert "=" not in cursor and "&" not in cursor  # URL-safe: ccxt sends it back raw
            page = ex.public_get_v5_market_instruments_info(
                {"category": "linear", "limit": 500, "cursor": cursor}
            )
            ids += [i["symbol"] for i in page["result"]["list"]]
        assert ids == sorted(f"C{i:04d}USDT" for i in range(1205))


# -- candles ------------------------------------------------------------------------------------
def test_ohlcv_since_limit_and_omitted_candles(server: ReplayServer, tape: Tape) -> None:
    ex = client(server)
    got = ex.fetch_ohlcv("BTC/USDT", "1m", since=T0, limit=10)
    assert got == candles(tape, "BTC/USDT", "1m")[:10]
    assert got[5][0] == T0 + 8 * MIN  # minutes 5-7 are not on the tape and stay missing
    # since is not on the grid: ccxt rounds it up, so the candle containing it is not asked for
    assert (
        ex.fetch_ohlcv("BTC/USDT", "1m", since=T0 + 10 * MIN + 1, limit=2)
        == candles(tape, "BTC/USDT", "1m", T0 + 11 * MIN)[:2]
    )


def test_ohlcv_without_since_is_newest_up_to_now(server: ReplayServer, tape: Tape) -> None:
    ex = client(server)
    got = ex.fetch_ohlcv("BTC/USDT:USDT", "1m", limit=3)
    # the candle containing "now" counts (Bybit serves the forming candle)
    assert [c[0] for c in got] == [NOW - 30_000 - 2 * MIN, NOW - 30_000 - MIN, NOW - 30_000]
    assert (
        ex.fetch_ohlcv("BTC/USDT:USDT", "1m")
        == candles(tape, "BTC/USDT:USDT", "1m", None, NOW)[-200:]
    )
    spot = ex.fetch_ohlcv("BTC/USDT", "1m", limit=2)  # NOW's minute is missing on spot
    assert [c[0] for c in spot] == [NOW - 30_000 - 2 * MIN, NOW - 30_000 - MIN]


def test_kline_raw_is_newest_first_clamped_and_end_inclusive(
    server: ReplayServer, tape: Tape
) -> None:
    ex = client(server)
    ex.load_markets()
    raw = ex.public_get_v5_market_kline(
        {"category": "linear", "symbol": "BTCUSDT", "interval": "1", "start": T0, "limit": 5000}
    )
    rows = raw["result"]["list"]
    assert (
        len(rows) == 1000
        and raw["result"]["symbol"] == "BTCUSDT"
        and raw["result"]["category"] == "linear"
    )
    assert [int(r[0]) for r in rows] == sorted((int(r[0]) for r in rows), reverse=True)
    series = tape.exchanges["bybit"].symbols["BTC/USDT:USDT"].ohlcv["1m"]
    assert [r[:6] for r in reversed(rows)] == [
        [str(c.ts), *c[1:]] for c in series.between(T0, None, 1000)
    ]
    assert all(Decimal(r[6]) == Decimal(r[5]) * Decimal(r[4]) for r in rows)  # turnover
    window = ex.public_get_v5_market_kline(
        {
            "category": "linear",
            "symbol": "BTCUSDT",
            "interval": "1",
            "start": T0 + 10 * MIN,
            "end": T0 + 12 * MIN,
        }
    )
    assert [int(r[0]) for r in window["result"]["list"]] == [
        T0 + 12 * MIN,
        T0 + 11 * MIN,
        T0 + 10 * MIN,
    ]
    future = ex.public_get_v5_market_kline(
        {"category": "linear", "symbol": "BTCUSDT", "interval": "1", "start": NOW + HOUR}
    )
    assert future["retCode"] == 0 and future["result"]["list"] == []


def test_ohlcv_until_is_end(server: ReplayServer, tape: Tape) -> None:
    got = client(server).fetch_ohlcv("BTC/USDT", "1m", limit=3, params={"until": T0 + 9 * MIN})
    assert got == candles(tape, "BTC/USDT", "1m", None, T0 + 9 * MIN)[-3:]


def test_weekly_start_is_floored_to_monday(server: ReplayServer, tape: Tape) -> None:
    """ccxt aligns 1w to epoch weeks (Thursdays); Bybit answers from the Monday candle that
    contains ``start``, and ccxt then drops that candle as older than since: one fewer than
    asked for."""
    ex = client(server)
    ex.load_markets()
    thursday = T0 - 3 * WEEK + 3 * DAY
    raw = ex.public_get_v5_market_kline(
        {"category": "spot", "symbol": "BTCUSDT", "interval": "W", "start": thursday, "limit": 2}
    )
    assert [int(r[0]) for r in raw["result"]["list"]] == [T0 - 2 * WEEK, T0 - 3 * WEEK]
    got = ex.fetch_ohlcv("BTC/USDT", "1w", since=thursday, limit=2)
    assert got == candles(tape, "BTC/USDT", "1w", T0 - 2 * WEEK)[:1]


def test_inverse_volume_is_in_the_turnover_slot(server: ReplayServer, tape: Tape) -> None:
    ex = client(server)
    got = ex.fetch_ohlcv("BTC/USD:BTC", "1h", since=T0, limit=20)
    assert got == candles(tape, "BTC/USD:BTC", "1h")[:20] and len(got) == 20
    raw = ex.public_get_v5_market_kline(
        {"category": "inverse", "symbol": "BTCUSD", "interval": "60", "start": T0, "limit": 1}
    )
    row = raw["result"]["list"][0]
    assert Decimal(row[5]) == Decimal(row[6]) * Decimal(row[4])  # contracts (USD) = base x price


def test_ohlcv_paginate_since_until_over_two_days(server: ReplayServer, tape: Tape) -> None:
    ex = client(server)
    before = requests_to(server, "/v5/market/kline")
    got = ex.fetch_ohlcv(
        "BTC/USDT:USDT", "1m", since=T0, params={"paginate": True, "until": T0 + 2 * DAY - 1}
    )
    assert got == candles(tape, "BTC/USDT:USDT", "1m", T0, T0 + 2 * DAY - 1)
    assert len(got) == 2 * 1440 - len(SWAP_MISSING)
    assert requests_to(server, "/v5/market/kline") - before == 3


def test_ohlcv_paginate_without_since_uses_the_clients_clock(server: ReplayServer) -> None:
    """ccxt asks for the 10 000 candles before *its own* now in 10 calls: against a replay
    clock pinned in the past that range is in the tape's future, and the answer is empty."""
    ex = client(server)
    before = requests_to(server, "/v5/market/kline")
    assert ex.fetch_ohlcv("BTC/USDT", "1m", params={"paginate": True}) == []
    assert requests_to(server, "/v5/market/kline") - before == 10


def test_ohlcv_paginate_without_since_on_a_live_clock(tmp_path: Path) -> None:
    """With the replay clock at real time and a tape ending now, the same call returns the
    last 10 000 minutes of the tape (ccxt's starts are off-grid by 1 ms and rounded up)."""
    now = int(time.time() * 1000)
    last = now - now % MIN
    write_ohlcv(
        tmp_path,
        "bybit",
        "BTC/USDT",
        "1m",
        _candles(last - 12_000 * MIN, MIN, 12_001, {11_990, 5000}),
    )
    with ReplayServer(tmp_path) as srv:
        ex = client(srv)
        got = ex.fetch_ohlcv("BTC/USDT", "1m", params={"paginate": True})
        series = srv.tape.exchanges["bybit"].symbols["BTC/USDT"].ohlcv["1m"]
        expected = [[c.ts, *(float(v) for v in c[1:])] for c in series.rows(0, len(series))]
        assert last - 10_000 * MIN <= got[0][0] <= last - 9_999 * MIN
        assert got == [c for c in expected if c[0] >= got[0][0]] and len(got) >= 9_990
        assert got[-1][0] == last and requests_to(srv, "/v5/market/kline") == 10
