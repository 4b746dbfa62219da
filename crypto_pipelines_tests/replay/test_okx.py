"""OKX v5 market data through stock ccxt clients (sync and async) against the replay exchange.

"Now" is pinned inside the tape, so every "latest" answer is definite. The tape holds gaps
(omitted candles), an unknown (``nan``) volume, trade ids with holes, a linear and an inverse
swap with contract sizes, more than 100 funding rates, and a spot market whose trade ids are
not integers (as when a Bybit recording is served under OKX).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
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

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
MISSING = {3, 4, 700, 2885}  # minutes without a candle
NAN_AT = 9  # minute whose volume is unknown
NOW = T0 + 2 * DAY + 10 * MIN + 30_000  # minute 2890 is still forming
SPOT, LINEAR, INVERSE, ODD = "BTC/USDT", "BTC/USDT:USDT", "BTC/USD:BTC", "ETH/BTC"
H8 = 8 * HOUR
FUNDING0 = T0 - 50 * DAY


def build_tape(root: Path) -> Path:
    """The tape every OKX test module serves (each writes its own copy)."""
    spot = []
    for i in range(3 * 1440):
        if i in MISSING:
            continue
        p = 42000 + i % 89
        volume = "nan" if i == NAN_AT else f"{i % 17}.{i % 1000:03d}1"
        spot.append(
            (T0 + i * MIN, f"{p}.{i % 7}5", f"{p + 3}.5", f"{p - 2}.25", f"{p + 1}.{i % 9}", volume)
        )
    write_ohlcv(root, "okx", SPOT, "1m", spot)
    trades = [
        (
            T0 + i * 90_000,
            5000 + 3 * i,
            "buy" if i % 3 else "sell",
            f"{42000 + i % 50}.{i % 10}",
            f"0.{i % 97 + 1:04d}",
        )
        for i in range(3000)
    ]
    write_trades(root, "okx", SPOT, trades)
    levels = range(30)
    write_book(
        root,
        "okx",
        SPOT,
        [
            BookSnapshot(
                T0 + 2 * DAY + k * MIN,
                [(f"{42000 - j}.{k}", f"{j + 1}.25") for j in levels],
                [(f"{42001 + j}.{k}", f"{j + 2}.5") for j in levels],
            )
            for k in range(10)
        ],
    )
    hourly = [
        (
            T0 + h * HOUR,
            f"{42000 + h}",
            f"{42100 + h}.5",
            f"{41900 + h}",
            f"{42000 + h}.5",
            f"{h % 7 + 1}.5",
        )
        for h in range(120)
    ]
    write_ohlcv(root, "okx", LINEAR, "1h", hourly)
    write_ohlcv(root, "okx", INVERSE, "1h", hourly)
    write_funding(
        root,
        "okx",
        LINEAR,
        [(FUNDING0 + k * H8, f"0.000{k % 9 + 1}{k % 7}") for k in range(160)],
    )
    write_book(root, "okx", LINEAR, [BookSnapshot(T0, [("42000.5", "12")], [("42001", "3")])])
    write_trades(
        root,
        "okx",
        ODD,
        [
            (T0 + (i // 2) * 1000, f"e{i:03d}x", "sell" if i % 2 else "buy", "0.05", "1.5")
            for i in range(300)
        ],
    )
    write_markets(
        root,
        "okx",
        [
            MarketSpec(SPOT, "spot", "0.01", "0.00000001", "0.00001", None, T0),
            MarketSpec(LINEAR, "swap", "0.1", "0.01", "0.01", "0.01", T0),
            MarketSpec(INVERSE, "swap", "0.1", "1", "1", "100", T0),
        ],
    )
    return root


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tape]:
    loaded = Tape.load(build_tape(tmp_path_factory.mktemp("okx-tape")))
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def server(tape: Tape) -> Iterator[ReplayServer]:
    with ReplayServer(tape, clock=ReplayClock(start_ms=NOW, speed=0)) as srv:
        yield srv


def client(server: ReplayServer, exchange_id: str = "okx", **config: Any) -> Any:
    options = {"enableRateLimit": False, "enableLastJsonResponse": True, **config}
    return point_ccxt_at(getattr(ccxt, exchange_id)(options), server.url)


def series(tape: Tape, symbol: str) -> Any:
    return tape.exchanges["okx"].symbols[symbol]


def candles(
    tape: Tape, symbol: str, timeframe: str, start: int = 0, end: int = 2**62
) -> list[list[float]]:
    """Tape candles with start <= ts < end, as ccxt reports them."""
    s = series(tape, symbol).ohlcv[timeframe]
    return [[c.ts, *(float(v) for v in c[1:])] for c in s.rows(0, len(s)) if start <= c.ts < end]


def same(got: Sequence[Sequence[float]], expected: Sequence[Sequence[float]]) -> bool:
    """Equal rows, an unknown (NaN) volume equal to NaN."""
    return len(got) == len(expected) and all(
        len(g) == len(e)
        and all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(g, e, strict=True))
        for g, e in zip(got, expected, strict=True)
    )


def tape_trades(
    tape: Tape, symbol: str, upto: int = NOW
) -> list[tuple[str, int, str, float, float]]:
    t = series(tape, symbol).trades
    return [
        (r.id, r.ts, r.side, float(r.price), float(r.amount))
        for r in t.rows(0, len(t))
        if r.ts <= upto
    ]


def as_tuples(trades: list[dict[str, Any]]) -> list[tuple[str, int, str, float, float]]:
    return [(t["id"], t["timestamp"], t["side"], t["price"], t["amount"]) for t in trades]


def test_load_markets_lists_spot_and_both_swaps(server: ReplayServer) -> None:
    ex = client(server)
    markets = ex.load_markets()
    assert set(markets) == {SPOT, LINEAR, INVERSE, ODD}
    spot, linear, inverse = markets[SPOT], markets[LINEAR], markets[INVERSE]
    assert (spot["id"], spot["type"], spot["spot"], spot["contract"]) == (
        "BTC-USDT",
        "spot",
        True,
        False,
    )
    assert spot["precision"] == {"amount": 1e-08, "price": 0.01}
    assert spot["limits"]["amount"]["min"] == 0.00001 and spot["created"] == T0
    assert (linear["id"], linear["type"], linear["linear"], linear["inverse"]) == (
        "BTC-USDT-SWAP",
        "swap",
        True,
        False,
    )
    assert (linear["contractSize"], linear["settle"], linear["precision"]["amount"]) == (
        0.01,
        "USDT",
        0.01,
    )
    assert (
        inverse["id"],
        inverse["linear"],
        inverse["inverse"],
        inverse["contractSize"],
        inverse["settle"],
    ) == ("BTC-USD-SWAP", False, True, 100.0, "BTC")
    # FUTURES and OPTION (per underlying) answer empty lists: the tape has none.
    assert ex.public_get_public_instruments({"instType": "FUTURES"})["data"] == []
    assert ex.public_get_public_instruments({"instType": "OPTION", "uly": "BTC-USD"})["data"] == []
    swaps = ex.public_get_public_instruments({"instType": "SWAP", "uly": "BTC-USD"})["data"]
    assert [r["instId"] for r in swaps] == ["BTC-USD-SWAP"]


def test_ohlcv_without_since_is_the_newest_100_up_to_now(server: ReplayServer, tape: Tape) -> None:
    ex = client(server)
    got = ex.fetch_ohlcv(SPOT, "1m")
    assert "market/candles?" in ex.last_request_url
    assert same(got, candles(tape, SPOT, "1m", end=NOW + 1)[-100:])
    raw = ex.last_json_response["data"]
    assert raw[0][0] == str(NOW - 30_000) and raw[0][8] == "0"  # newest first; still forming
    assert all(row[8] == "1" for row in raw[1:]) and len(raw[0]) == 9
    assert str(T0 + 2885 * MIN) not in {row[0] for row in raw}  # the missing minute stays missing


def test_ohlcv_since_and_limit_keep_omitted_candles_omitted(
    server: ReplayServer, tape: Tape
) -> None:
    ex = client(server)
    got = ex.fetch_ohlcv(SPOT, "1m", since=T0, limit=12)
    assert "market/history-candles?" in ex.last_request_url  # ccxt: since older than 1439 bars
    assert same(got, candles(tape, SPOT, "1m", T0, T0 + 12 * MIN)) and len(got) == 10
    assert math.isnan(got[7][5]) and ex.last_json_response["data"][2][5:8] == ["nan", "nan", "nan"]
    # since without limit: ccxt asks for 300 rows but bounds the window to 100 bars.
    assert same(
        ex.fetch_ohlcv(SPOT, "1m", since=T0 + 600 * MIN),
        candles(tape, SPOT, "1m", T0 + 600 * MIN, T0 + 700 * MIN),
    )
    # limit above 300: ccxt clamps to 300, and so does the exchange for raw requests.
    assert same(
        ex.fetch_ohlcv(SPOT, "1m", since=T0 + 500 * MIN, limit=1000),
        candles(tape, SPOT, "1m", T0 + 500 * MIN, T0 + 800 * MIN),
    )
    raw = ex.public_get_market_history_candles(
        {"instId": "BTC-USDT", "bar": "1m", "limit": "1000", "after": str(T0 + 2000 * MIN)}
    )
    assert [int(r[0]) for r in raw["data"]] == [T0 + (2000 - k) * MIN for k in range(1, 301)]


def test_ohlcv_since_with_until_keeps_the_newest_rows_before_until(
    server: ReplayServer, tape: Tape
) -> None:
    """ccxt sends before=since-1 and after=until; OKX answers the newest ``limit`` rows of that
    range, so the client gets the rows just before ``until``, not those after ``since``."""
    ex = client(server)
    got = ex.fetch_ohlcv(SPOT, "1m", since=T0, limit=5, params={"until": T0 + 60 * MIN})
    assert same(got, candles(tape, SPOT, "1m", T0 + 55 * MIN, T0 + 60 * MIN))


def test_ohlcv_until_alone_reads_candles_which_hold_only_1440_bars(
    server: ReplayServer, tape: Tape
) -> None:
    ex = client(server)
    recent = NOW - 1000 * MIN
    assert same(
        ex.fetch_ohlcv(SPOT, "1m", params={"until": recent}),
        candles(tape, SPOT, "1m", end=recent)[-100:],
    )
    assert "market/candles?" in ex.last_request_url
    assert (
        ex.fetch_ohlcv(SPOT, "1m", params={"until": T0 + 100 * MIN}) == []
    )  # older than the latest 1440 bars
    assert ex.fetch_ohlcv(SPOT, "1m", since=T0, limit=3, params={"type": "Candles"}) == []
    assert ex.fetch_ohlcv(SPOT, "1h") == []  # no such series on the tape: an empty list, no error


def test_swap_ohlcv_volume_is_the_base_volume_and_contracts_are_derived(
    server: ReplayServer, tape: Tape
) -> None:
    ex = client(server)
    for symbol, ct_val in ((LINEAR, "0.01"), (INVERSE, "100")):
        got = ex.fetch_ohlcv(symbol, "1h", since=T0, limit=48)
        assert same(got, candles(tape, symbol, "1h", T0, T0 + 48 * HOUR))
        row = ex.last_json_response["data"][-1]  # oldest: ts T0
        volume, close = Decimal(row[6]), Decimal(row[4])
        contracts = (
            volume / Decimal(ct_val) if symbol == LINEAR else volume * close / Decimal(ct_val)
        )
        assert (row[0], row[6], Decimal(row[5]), Decimal(row[7])) == (
            str(T0),
            "1.5",
            contracts,
            volume * close,
        )


def test_ohlcv_paginate_over_six_days_near_the_wall_clock(tmp_path: Path) -> None:
    """ccxt's deterministic paginate starts at most 10 x 200 bars before the *wall clock*, so a
    tape ending now is needed; with ``until`` every window sends after=until and OKX answers
    the same newest 200 rows each time."""
    m5 = 5 * MIN
    start = int(time.time() * 1000) // m5 * m5 - 8 * DAY
    tape_dir = tmp_path / "recent"
    write_ohlcv(
        tape_dir,
        "okx",
        SPOT,
        "5m",
        [
            (start + i * m5, f"{100 + i % 7}.5", "108", "99", f"{101 + i % 5}.25", f"{i}.5")
            for i in range(8 * 288)
            if i % 50 != 7
        ],
    )
    with ReplayServer(tape_dir) as srv:
        tape = srv.tape
        ex = client(srv)
        since = start + 2 * DAY
        got = ex.fetch_ohlcv(SPOT, "5m", since=since, params={"paginate": True})
        assert same(got, candles(tape, SPOT, "5m", since)) and len(got) > 1600
        stats = srv.app.stats.snapshot()["exchanges"]["okx"]
        assert (
            stats["/api/v5/market/candles"]["ok"] >= 1
            and stats["/api/v5/market/history-candles"]["ok"] >= 1
        )
        until = since + 4 * DAY
        got = ex.fetch_ohlcv(SPOT, "5m", since=since, params={"paginate": True, "until": until})
        assert same(got, candles(tape, SPOT, "5m", since, until)[-200:])


def test_ticker_time_status_and_the_myokx_alias(server: ReplayServer, tape: Tape) -> None:
    ex = client(server)
    day = [c for c in candles(tape, SPOT, "1m", end=NOW + 1) if c[0] > NOW - DAY]
    ticker = ex.fetch_ticker(SPOT)
    assert (ticker["open"], ticker["last"], ticker["timestamp"]) == (day[0][1], day[-1][4], NOW)
    assert (ticker["high"], ticker["low"]) == (max(c[2] for c in day), min(c[3] for c in day))
    assert ticker["baseVolume"] == pytest.approx(sum(c[5] for c in day))
    snap = series(tape, SPOT).book.at(NOW)
    assert (ticker["bid"], ticker["ask"]) == (float(snap.bids[0][0]), float(snap.asks[0][0]))
    swap = ex.fetch_ticker(LINEAR)
    assert swap["info"]["instType"] == "SWAP" and Decimal(swap["info"]["vol24h"]) == Decimal(
        swap["info"]["volCcy24h"]
    ) / Decimal("0.01")
    assert ex.fetch_time() == NOW and ex.fetch_status()["status"] == "ok"
    alias = client(server, "myokx")
    assert same(
        alias.fetch_ohlcv(SPOT, "1m", since=T0, limit=3),
        candles(tape, SPOT, "1m", T0, T0 + 3 * MIN),
    )


async def test_async_client_reads_the_same(server: ReplayServer, tape: Tape) -> None:
    ex = point_ccxt_at(ccxt_async.okx({"enableRateLimit": False}), server.url)
    try:
        markets = await ex.load_markets()  # five instruments requests, concurrently
        ohlcv = await ex.fetch_ohlcv(LINEAR, "1h", since=T0, limit=30)
        trades = await ex.fetch_trades(
            SPOT, limit=50, params={"method": "publicGetMarketHistoryTrades", "after": "5300"}
        )
        book = await ex.fetch_order_book(SPOT, 3)
        rates = await ex.fetch_funding_rate_history(LINEAR, limit=7)
    finally:
        await ex.close()
    assert markets[INVERSE]["inverse"] and markets[LINEAR]["contractSize"] == 0.01
    assert same(ohlcv, candles(tape, LINEAR, "1h", T0, T0 + 30 * HOUR))
    assert as_tuples(trades) == [t for t in tape_trades(tape, SPOT) if int(t[0]) < 5300][-50:]
    assert book["bids"] == [
        [float(p), float(a), 0] for p, a in series(tape, SPOT).book.at(NOW).bids[:3]
    ]
    f = series(tape, LINEAR).funding
    assert [r["fundingRate"] for r in rates] == [
        float(r.rate) for r in f.rows(0, len(f)) if r.ts <= NOW
    ][-7:]
