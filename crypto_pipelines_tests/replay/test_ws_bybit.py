"""Bybit v5 public streams (spot, linear, inverse) through stock ccxt.pro clients against the
replay exchange, the clock moved by the test; raw frames where ccxt hides the wire."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import ccxt.pro
import pytest
import websockets

from crypto_pipelines.replay import Tape, point_ccxt_at
from crypto_pipelines.replay.tape.markets import MarketSpec
from crypto_pipelines.replay.tape.writer import write_markets
from crypto_pipelines_tests.replay.ws_helpers import (
    MIN,
    NOW,
    T0,
    clock,
    closed_candles,
    counter,
    follow_book,
    ids,
    nothing_more,
    serve,
    tape_book,
    tape_trades,
    until,
    wait_subscribed,
    watched_trades,
    write_venue,
    ws_url,
)

SPOT, LINEAR, INVERSE = "BTC/USDT", "BTC/USDT:USDT", "BTC/USD:BTC"


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tape]:
    root = tmp_path_factory.mktemp("ws-bybit")
    write_venue(root, "bybit", [SPOT, LINEAR, INVERSE], seed=3)
    write_markets(
        root,
        "bybit",
        [
            MarketSpec(SPOT, "spot", "0.1", "0.001", "0.001", None, T0),
            MarketSpec(LINEAR, "swap", "0.1", "0.001", "0.001", "1", T0),
            MarketSpec(INVERSE, "swap", "0.1", "1", "1", "1", T0),
        ],
    )
    loaded = Tape.load(root)
    yield loaded
    loaded.close()


def pro(server_url: str) -> ccxt.pro.Exchange:
    return point_ccxt_at(ccxt.pro.bybit({"enableRateLimit": False}), server_url)


@pytest.mark.parametrize("symbol", [SPOT, LINEAR, INVERSE])
async def test_watch_trades_yields_the_tapes_trades_of_the_window(tape: Tape, symbol: str) -> None:
    with serve(tape) as server:
        client = pro(server.url)
        try:
            await client.load_markets()
            first = asyncio.ensure_future(client.watch_trades(symbol))
            await wait_subscribed(server, "bybit")
            assert not first.done()
            clock(server).set_ms(NOW + 30_000)
            want = tape_trades(tape, "bybit", symbol, NOW, NOW + 30_000)
            got = await watched_trades(client, symbol, first, len(want))
            assert ids(got) == ids(want)
            assert [(t["timestamp"], t["side"], t["price"], t["amount"]) for t in got] == [
                (t.ts, t.side, float(t.price), float(t.amount)) for t in want
            ]
            assert await nothing_more(lambda: client.watch_trades(symbol))
        finally:
            await client.close()


@pytest.mark.parametrize("symbol", [SPOT, LINEAR, INVERSE])
async def test_watch_ohlcv_yields_the_closed_candles(tape: Tape, symbol: str) -> None:
    with serve(tape) as server:
        client = pro(server.url)
        try:
            await client.load_markets()
            first = asyncio.ensure_future(client.watch_ohlcv(symbol, "1m"))
            await wait_subscribed(server, "bybit")
            end = NOW + 3 * MIN
            clock(server).set_ms(end)
            want = closed_candles(tape, "bybit", symbol, NOW, end)
            await first
            cache = client.ohlcvs[symbol]["1m"]
            await until(lambda: any(c[0] == want[-1][0] for c in cache))
            assert [list(c) for c in cache if c[0] + MIN <= end] == want
        finally:
            await client.close()


async def test_kline_confirm_flag(tape: Tape) -> None:
    with serve(tape) as server:
        async with websockets.connect(
            ws_url(server, "bybit", "stream.bybit.com/v5/public/linear")
        ) as ws:
            await ws.send(
                json.dumps({"op": "subscribe", "req_id": "k", "args": ["kline.1.BTCUSDT"]})
            )
            ack = json.loads(await ws.recv())
            assert (ack["success"], ack["ret_msg"], ack["req_id"], ack["op"]) == (
                True,
                "",
                "k",
                "subscribe",
            )
            clock(server).set_ms(NOW + 31_000)
            frames = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
    closed, forming = (f["data"][0] for f in frames)
    start = NOW - NOW % MIN
    assert frames[0]["topic"] == "kline.1.BTCUSDT" and frames[0]["type"] == "snapshot"
    assert (closed["start"], closed["end"], closed["confirm"], closed["interval"]) == (
        start,
        start + MIN - 1,
        True,
        "1",
    )
    assert (forming["start"], forming["confirm"]) == (start + MIN, False)


async def test_acks_errors_limits_and_pongs(tape: Tape) -> None:
    with serve(tape) as server:
        async with websockets.connect(
            ws_url(server, "bybit", "stream.bybit.com/v5/public/spot")
        ) as ws:

            async def ask(request: dict[str, Any]) -> dict[str, Any]:
                await ws.send(json.dumps(request))
                reply: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
                return reply

            ok = await ask({"op": "subscribe", "req_id": "1", "args": ["publicTrade.BTCUSDT"]})
            assert (ok["success"], ok["ret_msg"], ok["op"]) == (True, "subscribe", "subscribe")
            again = await ask({"op": "subscribe", "req_id": "2", "args": ["publicTrade.BTCUSDT"]})
            assert again["success"] is False and "already subscribed" in again["ret_msg"]
            unknown = await ask({"op": "subscribe", "req_id": "3", "args": ["publicTrade.ETHUSDT"]})
            assert (unknown["success"], unknown["ret_msg"], unknown["req_id"]) == (
                False,
                "Invalid symbol :[publicTrade.ETHUSDT]",
                "3",
            )
            bad = await ask({"op": "subscribe", "req_id": "4", "args": ["tickers.BTCUSDT"]})
            assert bad["ret_msg"] == "error:handler not found,topic:tickers.BTCUSDT"
            many = [f"kline.{i}.BTCUSDT" for i in (1, 3, 5, 15, 30, 60, 120, 240, 360, 720, "D")]
            too_many = await ask({"op": "subscribe", "req_id": "5", "args": many})
            assert too_many == {**too_many, "success": False, "ret_msg": "args size >10"}
            pong = await ask({"op": "ping", "req_id": "6"})
            assert (pong["ret_msg"], pong["op"], pong["req_id"]) == ("pong", "ping", "6")
        async with websockets.connect(
            ws_url(server, "bybit", "stream.bybit.com/v5/public/inverse")
        ) as ws:
            await ws.send(json.dumps({"op": "ping", "req_id": "7"}))
            pong = json.loads(await ws.recv())
            assert (pong["op"], pong["req_id"], pong["args"]) == ("pong", "7", [str(NOW)])
        assert counter(server, "bybit", "publicTrade", "ws_subscribed") == 1
        assert counter(server, "bybit", "publicTrade", "ws_errors") == 2


async def test_trade_batches_carry_tick_direction(tape: Tape) -> None:
    with serve(tape) as server:
        async with websockets.connect(
            ws_url(server, "bybit", "stream.bybit.com/v5/public/spot")
        ) as ws:
            await ws.send(json.dumps({"op": "subscribe", "args": ["publicTrade.BTCUSDT"]}))
            await ws.recv()
            clock(server).set_ms(NOW + 10_000)
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
    trades = frame["data"]
    assert frame["topic"] == "publicTrade.BTCUSDT" and frame["ts"] == trades[-1]["T"]
    assert len(trades) == 40 and {t["L"] for t in trades} <= {
        "PlusTick",
        "MinusTick",
        "ZeroPlusTick",
        "ZeroMinusTick",
    }
    for before, after in zip(trades, trades[1:], strict=False):
        if float(after["p"]) > float(before["p"]):
            assert after["L"] == "PlusTick"


@pytest.mark.parametrize(("symbol", "depth"), [(SPOT, 50), (LINEAR, 1), (INVERSE, 200)])
async def test_watch_order_book_snapshot_then_deltas(tape: Tape, symbol: str, depth: int) -> None:
    with serve(tape) as server:
        client = pro(server.url)
        try:
            await client.load_markets()
            book = await asyncio.wait_for(client.watch_order_book(symbol, depth), 5)
            bids, asks = tape_book(tape, "bybit", symbol, NOW)
            assert ([list(b) for b in book["bids"]], [list(a) for a in book["asks"]]) == (
                bids[:depth],
                asks[:depth],
            )
            assert await follow_book(server, tape, client, "bybit", symbol, depth) == 10
        finally:
            await client.close()


async def test_orderbook_frames_number_the_snapshots(tape: Tape) -> None:
    with serve(tape) as server:
        async with websockets.connect(
            ws_url(server, "bybit", "stream.bybit.com/v5/public/linear")
        ) as ws:
            await ws.send(json.dumps({"op": "subscribe", "args": ["orderbook.50.BTCUSDT"]}))
            await ws.recv()
            snapshot = json.loads(await asyncio.wait_for(ws.recv(), 5))
            clock(server).set_ms(NOW + 30_000)
            delta = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert (snapshot["type"], delta["type"]) == ("snapshot", "delta")
    at = NOW - NOW % 30_000
    assert (snapshot["data"]["u"], snapshot["data"]["seq"]) == (at * 1000, at * 1000)
    assert delta["data"]["u"] == (at + 30_000) * 1000 and delta["cts"] == at + 30_000
