"""Bybit replay: trades, order books, funding, tickers, time and the async client, answered
relative to the pinned replay "now" (tape and helpers in test_bybit.py)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import ccxt.async_support as ccxt_async
import pytest

from crypto_pipelines.replay import ReplayClock, ReplayServer, Tape, point_ccxt_at
from crypto_pipelines_tests.replay.test_bybit import (
    DAY,
    FUNDING_START,
    HOUR,
    MIN,
    NOW,
    T0,
    build_tape,
    candles,
    client,
    requests_to,
)


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tape]:
    loaded = Tape.load(build_tape(tmp_path_factory.mktemp("bybit-tape")))
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def server(tape: Tape) -> Iterator[ReplayServer]:
    with ReplayServer(tape, clock=ReplayClock(start_ms=NOW, speed=0)) as srv:
        yield srv


# -- trades -------------------------------------------------------------------------------------
def _trade_rows(tape: Tape, symbol: str) -> list[Any]:
    series = tape.exchanges["bybit"].symbols[symbol].trades
    assert series is not None
    return series.rows(0, len(series))


def _unified(rows: list[Any]) -> list[tuple[Any, ...]]:
    return [(t.ts, t.id, t.side, float(t.price), float(t.amount)) for t in rows]


def _got(trades: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(t["timestamp"], t["id"], t["side"], t["price"], t["amount"]) for t in trades]


def test_trades_are_the_newest_at_now_capped_per_category(server: ReplayServer, tape: Tape) -> None:
    ex = client(server)
    linear = [t for t in _trade_rows(tape, "BTC/USDT:USDT") if t.ts <= NOW]
    assert _got(ex.fetch_trades("BTC/USDT:USDT", limit=5000)) == _unified(
        linear[-1000:]
    )  # cap 1000
    assert _got(ex.fetch_trades("BTC/USDT:USDT")) == _unified(linear[-500:])  # default 500
    spot = [t for t in _trade_rows(tape, "BTC/USDT") if t.ts <= NOW]
    assert _got(ex.fetch_trades("BTC/USDT", limit=1000)) == _unified(spot[-60:])  # spot: 60 at most
    raw = ex.public_get_v5_market_recent_trade(
        {"category": "linear", "symbol": "BTCUSDT", "limit": 3}
    )
    assert [r["execId"] for r in raw["result"]["list"]] == [t.id for t in reversed(linear[-3:])]
    assert raw["result"]["list"][0]["side"] in ("Buy", "Sell") and raw["result"]["list"][0][
        "time"
    ] == str(linear[-1].ts)


def test_trades_since_only_filters_client_side(server: ReplayServer, tape: Tape) -> None:
    """ccxt never sends since (it sends limit): the exchange answers the latest ``limit``
    trades and ccxt keeps those at or after since, so an older since finds nothing older."""
    ex = client(server)
    linear = [t for t in _trade_rows(tape, "BTC/USDT:USDT") if t.ts <= NOW]
    assert _got(ex.fetch_trades("BTC/USDT:USDT", since=linear[-5].ts, limit=10)) == _unified(
        linear[-5:]
    )
    assert _got(ex.fetch_trades("BTC/USDT:USDT", since=T0 - DAY, limit=10)) == _unified(
        linear[-10:]
    )
    assert _got(ex.fetch_trades("BTC/USDT:USDT", since=linear[-100].ts)) == _unified(linear[-100:])
    # paginate is not supported for fetchTrades: ccxt forwards it as a query parameter
    assert len(ex.fetch_trades("BTC/USDT:USDT", params={"paginate": True})) == 500


def test_trades_history_by_walking_the_replay_clock(tape: Tape) -> None:
    """Bybit has no public trade history paging: a recorder sees the latest 1000 trades at
    each moment. Walking "now" back through the tape, those pages cover every trade."""
    clock = ReplayClock(start_ms=NOW, speed=0)
    expected = [t for t in _trade_rows(tape, "BTC/USDT:USDT") if t.ts <= NOW]
    got: list[dict[str, Any]] = []
    with ReplayServer(tape, clock=clock) as srv:
        ex = client(srv)
        while page := ex.fetch_trades("BTC/USDT:USDT", limit=1000):
            got = page + got
            clock.start_ms = page[0]["timestamp"] - 1
    assert _got(got) == _unified(expected) and len(got) == 5000


# -- order book ---------------------------------------------------------------------------------
def test_order_book_is_the_snapshot_at_or_before_now(server: ReplayServer, tape: Tape) -> None:
    ex = client(server)
    for symbol, limit, cap in (
        ("BTC/USDT", None, 50),
        ("BTC/USDT", 1000, 200),
        ("BTC/USDT:USDT", None, 25),
        ("BTC/USDT:USDT", 1000, 500),
    ):
        book = ex.fetch_order_book(symbol, limit=limit)
        series = tape.exchanges["bybit"].symbols[symbol].book
        assert series is not None
        snap = series.at(NOW)
        assert snap is not None and snap.ts == min(T0 + 2 * DAY + 5 * MIN, int(series.ts[-1]))
        assert book["bids"] == [[float(p), float(a)] for p, a in snap.bids[:cap]], (symbol, limit)
        assert book["asks"] == [[float(p), float(a)] for p, a in snap.asks[:cap]], (symbol, limit)
        assert book["timestamp"] == snap.ts and book["nonce"] is None
    raw = ex.public_get_v5_market_orderbook({"category": "linear", "symbol": "BTCUSDT", "limit": 1})
    result = raw["result"]
    assert set(result) == {"s", "b", "a", "ts", "u", "seq", "cts"} and result["s"] == "BTCUSDT"
    assert (
        all(isinstance(result[k], int) for k in ("ts", "u", "seq", "cts")) and len(result["b"]) == 1
    )
    assert ex.public_get_v5_market_orderbook({"category": "spot", "symbol": "BTCUSDT"})["result"][
        "b"
    ] == [["42000.5", "1.25"]]


# -- funding ------------------------------------------------------------------------------------
def _funding(tape: Tape, symbol: str) -> list[tuple[int, float]]:
    series = tape.exchanges["bybit"].symbols[symbol].funding
    assert series is not None
    return [(r.ts, float(r.rate)) for r in series.rows(0, len(series)) if r.ts <= NOW]


def _rates(got: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(r["timestamp"], r["fundingRate"]) for r in got]


def test_funding_history_newest_and_windows(server: ReplayServer, tape: Tape) -> None:
    ex = client(server)
    rates = _funding(tape, "BTC/USDT:USDT")
    assert _rates(ex.fetch_funding_rate_history("BTC/USDT:USDT")) == rates[-200:]
    # ccxt sends startTime=since, endTime=since+limit*8h: that window holds limit+1 settlements
    # when since is one, and Bybit answers the newest limit of them, so the one at since is lost
    since = rates[10][0]
    assert (
        _rates(ex.fetch_funding_rate_history("BTC/USDT:USDT", since=since, limit=3)) == rates[11:14]
    )
    assert (
        _rates(ex.fetch_funding_rate_history("BTC/USDT:USDT", since=since - 1, limit=3))
        == rates[10:13]
    )
    # the window may end after now: the answer stops at now
    assert (
        _rates(ex.fetch_funding_rate_history("BTC/USDT:USDT", since=rates[-2][0] - 1)) == rates[-2:]
    )
    assert (
        _rates(ex.fetch_funding_rate_history("BTC/USDT:USDT", params={"until": rates[50][0]}))
        == rates[:51]
    )
    series = tape.exchanges["bybit"].symbols["BTC/USDT:USDT"].funding
    assert series is not None
    raw = ex.public_get_v5_market_funding_history(
        {"category": "linear", "symbol": "BTCUSDT", "limit": 2}
    )
    assert raw["result"]["list"] == [
        {"symbol": "BTCUSDT", "fundingRate": r.rate, "fundingRateTimestamp": str(r.ts)}
        for r in reversed(series.between(None, NOW, 2, newest=True))
    ]
    inverse = _funding(tape, "BTC/USD:BTC")
    assert (
        _rates(ex.fetch_funding_rate_history("BTC/USD:BTC", since=inverse[0][0] - 1, limit=5))
        == inverse[:5]
    )


def test_funding_history_paginate_backwards(server: ReplayServer, tape: Tape) -> None:
    ex = client(server)
    rates = _funding(tape, "BTC/USDT:USDT")
    before = requests_to(server, "/v5/market/funding/history")
    got = ex.fetch_funding_rate_history(
        "BTC/USDT:USDT", since=FUNDING_START, params={"paginate": True}
    )
    assert _rates(got) == rates and len(rates) == 507
    assert requests_to(server, "/v5/market/funding/history") - before == 3  # 200 + 200 + 107


# -- tickers, funding rates, time, status ----------------------------------------------------------
def _day(tape: Tape, symbol: str, timeframe: str) -> list[Any]:
    series = tape.exchanges["bybit"].symbols[symbol].ohlcv[timeframe]
    last = series.between(None, NOW, 1, newest=True)[0]
    anchor = min(NOW, last.ts + series.timeframe_ms - 1)
    return series.between(anchor - DAY + 1, anchor, 10**6)


def test_spot_and_contract_tickers(server: ReplayServer, tape: Tape) -> None:
    ex = client(server)
    spot = ex.fetch_ticker("BTC/USDT")
    day = _day(tape, "BTC/USDT", "1m")
    assert spot["symbol"] == "BTC/USDT" and "openInterestValue" not in spot["info"]
    assert (spot["last"], spot["open"]) == (float(day[-1].close), float(day[0].open))
    assert spot["high"] == max(float(c.high) for c in day) and spot["low"] == min(
        float(c.low) for c in day
    )
    assert spot["baseVolume"] == float(sum(Decimal(c.volume) for c in day))
    change = (Decimal(day[-1].close) - Decimal(day[0].open)) / Decimal(day[0].open)
    assert spot["percentage"] == float(round(change, 4) * 100)
    assert (spot["bid"], spot["ask"], spot["bidVolume"]) == (42000.5, 42001.5, 1.25)  # book top
    linear = ex.fetch_ticker("BTC/USDT:USDT")
    assert linear["symbol"] == "BTC/USDT:USDT" and linear["info"]["openInterestValue"] == "0"
    assert (
        linear["markPrice"] == linear["last"] == float(_day(tape, "BTC/USDT:USDT", "1m")[-1].close)
    )
    tickers = ex.fetch_tickers(["BTC/USDT:USDT"])
    assert set(tickers) == {"BTC/USDT:USDT"}
    inverse = ex.fetch_ticker("BTC/USD:BTC")
    assert inverse["symbol"] == "BTC/USD:BTC" and inverse["quoteVolume"] == float(
        sum(Decimal(c.volume) for c in _day(tape, "BTC/USD:BTC", "1h"))
    )


def test_funding_rate_is_the_next_settlement(server: ReplayServer, tape: Tape) -> None:
    ex = client(server)
    series = tape.exchanges["bybit"].symbols["BTC/USDT:USDT"].funding
    assert series is not None
    upcoming = series.between(NOW + 1, None, 1)[0]
    rate = ex.fetch_funding_rate("BTC/USDT:USDT")
    assert (rate["fundingRate"], rate["fundingTimestamp"], rate["interval"], rate["timestamp"]) == (
        float(upcoming.rate),
        upcoming.ts,
        "8h",
        NOW,
    )
    # ccxt asks for the first symbol's category only: the inverse one is not in the answer
    rates = ex.fetch_funding_rates(["BTC/USDT:USDT", "BTC/USD:BTC"])
    assert set(rates) == {"BTC/USDT:USDT"} and rates["BTC/USDT:USDT"]["fundingRate"] == float(
        upcoming.rate
    )
    inverse = ex.fetch_funding_rates(["BTC/USD:BTC"])["BTC/USD:BTC"]
    assert (
        inverse["interval"] == "4h"
        and inverse["fundingTimestamp"] == NOW - NOW % (4 * HOUR) + 4 * HOUR
    )


def test_time_and_status(server: ReplayServer) -> None:
    ex = client(server)
    assert ex.fetch_time() == NOW
    assert ex.fetch_status()["status"] == "ok"
    raw = ex.public_get_v5_market_time()
    assert raw["result"] == {"timeSecond": str(NOW // 1000), "timeNano": str(NOW * 1_000_000)}


# -- async ---------------------------------------------------------------------------------------
async def test_async_client_reads_the_same(server: ReplayServer, tape: Tape) -> None:
    ex = point_ccxt_at(ccxt_async.bybit({"enableRateLimit": False}), server.url)
    try:
        markets = await ex.load_markets()
        got = await ex.fetch_ohlcv(
            "BTC/USDT:USDT", "1m", since=T0, params={"paginate": True, "until": T0 + 2 * DAY - 1}
        )
        trades = await ex.fetch_trades("BTC/USDT:USDT", limit=1000)
        book = await ex.fetch_order_book("BTC/USDT", limit=3)
        funding = await ex.fetch_funding_rate_history(
            "BTC/USDT:USDT", since=FUNDING_START, params={"paginate": True}
        )
        ticker = await ex.fetch_ticker("BTC/USDT")
        now = await ex.fetch_time()
    finally:
        await ex.close()
    assert markets["BTC/USD:BTC"]["inverse"] and markets["BTC/USDT"]["spot"]
    assert got == candles(tape, "BTC/USDT:USDT", "1m", T0, T0 + 2 * DAY - 1)
    assert _got(trades) == _unified(
        [t for t in _trade_rows(tape, "BTC/USDT:USDT") if t.ts <= NOW][-1000:]
    )
    assert book["bids"] == [[42000.5, 1.25], [41999.5, 2.25], [41998.5, 3.25]]
    assert _rates(funding) == _funding(tape, "BTC/USDT:USDT")
    assert ticker["symbol"] == "BTC/USDT" and now == NOW
