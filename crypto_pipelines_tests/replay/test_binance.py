"""Binance (spot, USDⓈ-M, COIN-M) through stock ccxt clients against the replay exchange."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import ccxt
import ccxt.async_support as ccxt_async
import pytest

from crypto_pipelines.replay import FaultConfig, ReplayClock, ReplayServer, Tape, point_ccxt_at
from crypto_pipelines.replay.tape import BookSnapshot
from crypto_pipelines.replay.tape.markets import MarketSpec
from crypto_pipelines.replay.tape.writer import (
    write_book,
    write_funding,
    write_markets,
    write_ohlcv,
    write_trades,
)
from crypto_pipelines_tests.replay.shape import recorded_responses, shape_differences

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
MIN = 60_000
DAYS = 3
MISSING = {5, 6, 7, 1500, 4000}  # minutes with no candle (omitted by the exchange)


def _candles(n: int, skip: set[int]) -> list[tuple[int, str, str, str, str, str]]:
    rows = []
    for i in range(n):
        if i in skip:
            continue
        base = 42000 + (i % 97) - (i % 13) * 0.5
        rows.append(
            (
                T0 + i * MIN,
                f"{base:.2f}",
                f"{base + 3.25:.2f}",
                f"{base - 2.5:.2f}",
                f"{base + 1.01:.2f}",
                f"{(i % 17) * 0.125 + 0.001:.3f}",
            )
        )
    return rows


@pytest.fixture(scope="module")
def tape_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("binance-tape")
    n = DAYS * 1440
    write_ohlcv(root, "binance", "BTC/USDT", "1m", _candles(n, MISSING))
    write_ohlcv(
        root,
        "binance",
        "BTC/USDT",
        "1h",
        [
            (T0 + h * 3_600_000, "42000.00", "42100.00", "41900.00", "42050.00", "12.5")
            for h in range(DAYS * 24)
        ],
    )
    write_ohlcv(root, "binance", "BTC/USDT:USDT", "1m", _candles(n, set()))
    write_trades(
        root,
        "binance",
        "BTC/USDT",
        [
            (
                T0 + i * 7_000,
                1000 + i,
                "buy" if i % 3 else "sell",
                f"{42000 + i % 50}.5",
                f"0.{i % 9 + 1:03d}",
            )
            for i in range(5000)
        ],
    )
    write_funding(
        root,
        "binance",
        "BTC/USDT:USDT",
        [(T0 + k * 8 * 3_600_000, f"0.000{k % 9 + 1}") for k in range(DAYS * 3)],
    )
    write_book(
        root,
        "binance",
        "BTC/USDT",
        [
            BookSnapshot(
                T0 + k * 60_000,
                [(f"{42000 - j}.5", f"{j + 1}.25") for j in range(30)],
                [(f"{42001 + j}.5", f"{j + 2}.5") for j in range(30)],
            )
            for k in range(10)
        ],
    )
    write_ohlcv(
        root,
        "binance",
        "BTC/USD:BTC",
        "1h",
        [
            (T0 + h * 3_600_000, "42000.0", "42100.0", "41900.0", "42050.0", "300")
            for h in range(24)
        ],
    )
    write_markets(
        root,
        "binance",
        [
            MarketSpec("BTC/USDT", "spot", "0.01", "0.00001", "0.00001", None, T0),
            MarketSpec("BTC/USDT:USDT", "swap", "0.1", "0.001", "0.001", "1", T0),
            MarketSpec("BTC/USD:BTC", "swap", "0.1", "1", "1", "100", T0),
        ],
    )
    return root


@pytest.fixture(scope="module")
def tape(tape_dir: Path) -> Iterator[Tape]:
    loaded = Tape.load(tape_dir)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def server(tape: Tape) -> Iterator[ReplayServer]:
    # "now" pinned to the middle of the tape, so "latest" questions have a definite answer.
    clock = ReplayClock(start_ms=T0 + 5 * MIN + 30_000, speed=0)
    with ReplayServer(tape, clock=clock) as srv:
        yield srv


def client(server: ReplayServer, exchange_id: str = "binance", **config: object) -> ccxt.Exchange:
    return point_ccxt_at(
        getattr(ccxt, exchange_id)({"enableRateLimit": False, **config}), server.url
    )


def tape_candles(tape: Tape, symbol: str, timeframe: str) -> list[list[float]]:
    series = tape.exchanges["binance"].symbols[symbol].ohlcv[timeframe]
    return [[c.ts, *(float(v) for v in c[1:])] for c in series.rows(0, len(series))]


def test_load_markets_spot_linear_and_inverse(server: ReplayServer) -> None:
    ex = client(server)
    markets = ex.load_markets()
    spot, linear, inverse = markets["BTC/USDT"], markets["BTC/USDT:USDT"], markets["BTC/USD:BTC"]
    assert (
        spot["type"],
        spot["spot"],
        spot["precision"]["price"],
        spot["precision"]["amount"],
    ) == ("spot", True, 0.01, 0.00001)
    assert (linear["type"], linear["linear"], linear["settle"], linear["contractSize"]) == (
        "swap",
        True,
        "USDT",
        1.0,
    )
    assert (inverse["type"], inverse["inverse"], inverse["settle"], inverse["contractSize"]) == (
        "swap",
        True,
        "BTC",
        100.0,
    )
    assert linear["precision"]["price"] == 0.1 and linear["limits"]["amount"]["min"] == 0.001
    assert set(markets) == {"BTC/USDT", "BTC/USDT:USDT", "BTC/USD:BTC"}


def test_ohlcv_since_keeps_omitted_candles_omitted(server: ReplayServer, tape: Tape) -> None:
    ex = client(server)
    got = ex.fetch_ohlcv("BTC/USDT", "1m", since=T0, limit=10)
    expected = tape_candles(tape, "BTC/USDT", "1m")[:10]
    assert got == expected
    assert [c[0] for c in got][5] == T0 + 8 * MIN  # minutes 5-7 are missing, and stay missing


def test_ohlcv_without_since_returns_newest_up_to_now(server: ReplayServer, tape: Tape) -> None:
    got = client(server).fetch_ohlcv("BTC/USDT", "1m", limit=3)
    # now = minute 5 + 30 s; minutes 5..7 missing, so the newest closed rows are 2, 3, 4
    assert [c[0] for c in got] == [T0 + 2 * MIN, T0 + 3 * MIN, T0 + 4 * MIN]


def test_ohlcv_paginate_over_three_days(server: ReplayServer, tape: Tape) -> None:
    ex = client(server)
    until = T0 + DAYS * 1440 * MIN
    got = ex.fetch_ohlcv(
        "BTC/USDT",
        "1m",
        since=T0,
        params={"paginate": True, "until": until - 1, "paginationCalls": 10},
    )
    assert got == tape_candles(tape, "BTC/USDT", "1m")
    assert len(got) == DAYS * 1440 - len(MISSING)


def test_ohlcv_swap_serves_1500_per_request(server: ReplayServer, tape: Tape) -> None:
    ex = client(server)
    ex.load_markets()
    raw = ex.fapipublic_get_klines(
        {"symbol": "BTCUSDT", "interval": "1m", "startTime": T0, "limit": 5000}
    )
    assert len(raw) == 1500  # fapi's cap (spot: 1000); ccxt itself asks for at most 1000
    assert [r[0] for r in raw] == [c[0] for c in tape_candles(tape, "BTC/USDT:USDT", "1m")[:1500]]
    assert (
        ex.fetch_ohlcv("BTC/USDT:USDT", "1m", since=T0, limit=1000)
        == tape_candles(tape, "BTC/USDT:USDT", "1m")[:1000]
    )


def test_trades_many_pages_by_id(server: ReplayServer, tape: Tape) -> None:
    ex = client(server)
    series = tape.exchanges["binance"].symbols["BTC/USDT"].trades
    assert series is not None
    expected = series.rows(0, len(series))
    got: list[dict] = []
    next_id = int(expected[0].id)
    while True:
        page = ex.fetch_trades("BTC/USDT", limit=1000, params={"fromId": next_id})
        if not page:
            break
        got.extend(page)
        next_id = int(page[-1]["id"]) + 1
    assert [(t["timestamp"], t["id"], t["side"], t["price"], t["amount"]) for t in got] == [
        (t.ts, t.id, t.side, float(t.price), float(t.amount)) for t in expected
    ]


def test_trades_since_pages_by_time(server: ReplayServer, tape: Tape) -> None:
    ex = client(server)
    got = ex.fetch_trades("BTC/USDT", since=T0 + 3_600_000, limit=1000)
    series = tape.exchanges["binance"].symbols["BTC/USDT"].trades
    assert series is not None
    expected = series.between(T0 + 3_600_000, T0 + 2 * 3_600_000, 1000)
    assert [t["id"] for t in got] == [t.id for t in expected] and len(got) > 100
    # More trades in the hour than the limit: Binance answers the last ones of the window.
    last = ex.fetch_trades("BTC/USDT", since=T0 + 3_600_000, limit=10)
    assert [t["id"] for t in last] == [t.id for t in expected[-10:]]


def test_agg_trades_window_over_an_hour_is_refused(server: ReplayServer) -> None:
    ex = client(server)
    with pytest.raises(ccxt.BadRequest, match="More than 1 hours"):
        ex.fetch_trades("BTC/USDT", params={"startTime": T0, "endTime": T0 + 2 * 3_600_000})


def test_order_book_is_the_snapshot_at_or_before_now(server: ReplayServer, tape: Tape) -> None:
    book = client(server).fetch_order_book("BTC/USDT", limit=5)
    series = tape.exchanges["binance"].symbols["BTC/USDT"].book
    assert series is not None
    snap = series.at(T0 + 5 * MIN + 30_000)
    assert snap is not None and snap.ts == T0 + 5 * MIN
    assert book["bids"] == [[float(p), float(a)] for p, a in snap.bids[:5]]
    assert book["asks"] == [[float(p), float(a)] for p, a in snap.asks[:5]]
    assert book["nonce"] == snap.ts * 1000


def test_funding_rate_history_paginates(server: ReplayServer, tape: Tape) -> None:
    ex = client(server)
    got = ex.fetch_funding_rate_history("BTC/USDT:USDT", since=T0, limit=4)
    funding = tape.exchanges["binance"].symbols["BTC/USDT:USDT"].funding
    assert funding is not None
    assert [(r["timestamp"], r["fundingRate"]) for r in got] == [
        (f.ts, float(f.rate)) for f in funding.rows(0, 4)
    ]
    everything = ex.fetch_funding_rate_history(
        "BTC/USDT:USDT", since=T0, params={"paginate": True, "until": T0 + DAYS * 86_400_000}
    )
    assert [r["timestamp"] for r in everything] == funding.file.ts.tolist()


def test_ticker_time_and_status(server: ReplayServer) -> None:
    ex = client(server)
    ticker = ex.fetch_ticker("BTC/USDT")
    assert ticker["symbol"] == "BTC/USDT" and ticker["last"] > 0 and ticker["high"] >= ticker["low"]
    assert ex.fetch_time() == T0 + 5 * MIN + 30_000
    assert ex.fetch_status()["status"] == "ok"


def test_unknown_symbol_is_bad_symbol(server: ReplayServer) -> None:
    ex = client(server)
    ex.load_markets()
    with pytest.raises(ccxt.BadSymbol):
        ex.public_get_klines({"symbol": "DOGEUSDT", "interval": "1m"})


def test_binanceusdm_routes_to_the_same_tape(server: ReplayServer, tape: Tape) -> None:
    ex = client(server, "binanceusdm")
    got = ex.fetch_ohlcv("BTC/USDT:USDT", "1m", since=T0, limit=5)
    assert got == tape_candles(tape, "BTC/USDT:USDT", "1m")[:5]


async def test_async_client_reads_the_same(server: ReplayServer, tape: Tape) -> None:
    ex = point_ccxt_at(ccxt_async.binance({"enableRateLimit": False}), server.url)
    try:
        got = await ex.fetch_ohlcv("BTC/USDT", "1m", since=T0, limit=1000)
        trades = await ex.fetch_trades("BTC/USDT", limit=10, params={"fromId": 1000})
    finally:
        await ex.close()
    assert got == tape_candles(tape, "BTC/USDT", "1m")[:1000]
    assert [t["id"] for t in trades] == [str(1000 + i) for i in range(10)]


@pytest.mark.parametrize(
    ("faults", "error"),
    [
        # ccxt's binance raises DDoSProtection (RateLimitExceeded's parent) for any 429,
        # before reading the body: that is what the real exchange's 429 causes.
        (FaultConfig(rate_limit=1.0), ccxt.DDoSProtection),
        (FaultConfig(server_error=1.0), ccxt.ExchangeNotAvailable),
        (FaultConfig(timeout=1.0, timeout_s=3.0), ccxt.RequestTimeout),
    ],
)
def test_injected_faults_reach_ccxt_as_the_exchange_errors(
    tape: Tape, faults: FaultConfig, error: type[Exception]
) -> None:
    with ReplayServer(tape) as srv:
        ex = client(srv, timeout=1000)
        ex.load_markets()
        srv.set_faults(faults)
        with pytest.raises(error):
            ex.fetch_ohlcv("BTC/USDT", "1m", since=T0, limit=5)
        stats = _get_json(srv.url + "/_replay/stats")
    counter = {
        ccxt.DDoSProtection: "rate_limited",
        ccxt.ExchangeNotAvailable: "server_errors",
        ccxt.RequestTimeout: "timeouts",
    }[error]
    assert stats["exchanges"]["binance"]["/api/v3/klines"][counter] >= 1


def test_enforced_weight_limit_answers_429_then_418(tape: Tape) -> None:
    """depth?limit=5000 weighs 250: the 25th request in a minute exceeds 6000, the exchange
    answers 429 with Retry-After, and a client that keeps going is banned with 418."""
    with ReplayServer(tape, enforce_limits=True) as srv:
        url = srv.url + "/binance/api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=5000"
        statuses, weights = [], []
        for _ in range(24):
            status, headers, _ = _get(url)
            statuses.append(status)
            weights.append(int(headers["x-mbx-used-weight-1m"]))
        if statuses[-1] == 429:  # the minute rolled over mid-test; start a fresh window
            pytest.skip("minute boundary crossed")
        assert statuses == [200] * 24 and weights == [250 * (i + 1) for i in range(24)]
        status, headers, body = _get(url)
        assert status == 429 and int(headers["retry-after"]) >= 1 and b"-1003" in body
        ex = client(srv)
        with pytest.raises(ccxt.DDoSProtection):
            ex.fetch_order_book("BTC/USDT", limit=5000)
        statuses = [_get(url)[0] for _ in range(12)]
        assert statuses[-1] == 418
        with pytest.raises(ccxt.DDoSProtection):
            ex.fetch_order_book("BTC/USDT", limit=5)


def test_responses_have_the_recorded_shapes(server: ReplayServer) -> None:
    recorded = recorded_responses("binance")
    ex = client(server)
    ex.load_markets()
    replayed = {
        ("fetchOHLCV", "BTC/USDT"): ex.public_get_klines(
            {"symbol": "BTCUSDT", "interval": "1m", "limit": 3}
        ),
        ("fetchOHLCV", "BTC/USDT:USDT"): ex.fapipublic_get_klines(
            {"symbol": "BTCUSDT", "interval": "1m", "limit": 3}
        ),
        ("fetchOrderBook", "BTC/USDT"): ex.public_get_depth({"symbol": "BTCUSDT", "limit": 5}),
        ("fetchOrderBook", "BTC/USDT:USDT"): ex.fapipublic_get_depth(
            {"symbol": "BTCUSDT", "limit": 5}
        ),
        ("fetchTicker", "BTC/USDT"): ex.public_get_ticker_24hr({"symbol": "BTCUSDT"}),
        ("fetchTrades", "BTC/USDT"): ex.public_get_aggtrades(
            {"symbol": "BTCUSDT", "fromId": 1000, "limit": 2}
        ),
    }
    compared = 0
    for (method, symbol), response in replayed.items():
        for case in recorded[method]:
            if case["input"][0] != symbol or (method == "fetchOHLCV" and len(case["input"]) > 4):
                continue
            assert response, f"{method} {symbol}: empty replay response proves nothing"
            assert shape_differences(case["httpResponse"], response) == [], f"{method} {symbol}"
            compared += 1
    assert compared >= 5


def test_real_tapes_round_trip(real_tape_dir: Path) -> None:
    tape = Tape.load(real_tape_dir)
    try:
        with ReplayServer(tape) as srv:
            ex = client(srv)
            ex.load_markets()
            for symbol, series in tape.exchanges["binance"].symbols.items():
                for timeframe, candles in series.ohlcv.items():
                    expected = [
                        [c.ts, *(float(v) for v in c[1:])] for c in candles.rows(0, len(candles))
                    ]
                    got = ex.fetch_ohlcv(
                        symbol,
                        timeframe,
                        since=candles.first_ts,
                        params={"paginate": True, "until": candles.last_ts},
                    )
                    assert _same(got, expected), f"{symbol} {timeframe}"
                if series.trades is not None:
                    rows = series.trades.rows(0, len(series.trades))
                    got_trades = []
                    next_id = int(rows[0].id)
                    while page := ex.fetch_trades(symbol, limit=1000, params={"fromId": next_id}):
                        got_trades.extend(page)
                        next_id = int(page[-1]["id"]) + 1
                    assert [(t["id"], t["price"], t["amount"], t["side"]) for t in got_trades] == [
                        (t.id, float(t.price), float(t.amount), t.side) for t in rows
                    ]
    finally:
        tape.close()


def _same(got: list[list[float]], expected: list[list[float]]) -> bool:
    """Equal rows, NaN (unknown volume) equal to NaN."""
    return len(got) == len(expected) and all(
        all(a == b or (a != a and b != b) for a, b in zip(g, e, strict=True))
        for g, e in zip(got, expected, strict=True)
    )


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def _get_json(url: str) -> dict:
    import json

    return json.loads(_get(url)[2])
