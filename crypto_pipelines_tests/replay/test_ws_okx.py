"""OKX v5 public and business streams through stock ccxt.pro clients against the replay
exchange, the clock moved by the test; raw frames where ccxt hides the wire."""

from __future__ import annotations

import asyncio
import json
import zlib
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

SPOT, LINEAR = "BTC/USDT", "BTC/USDT:USDT"
PUBLIC, BUSINESS = "ws.okx.com:443/ws/v5/public", "ws.okx.com:443/ws/v5/business"


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tape]:
    root = tmp_path_factory.mktemp("ws-okx")
    write_venue(root, "okx", [SPOT, LINEAR], seed=5)
    write_markets(
        root,
        "okx",
        [
            MarketSpec(SPOT, "spot", "0.1", "0.001", "0.001", None, T0),
            MarketSpec(LINEAR, "swap", "0.1", "0.001", "0.001", "0.01", T0),
        ],
    )
    loaded = Tape.load(root)
    yield loaded
    loaded.close()


def pro(server_url: str) -> ccxt.pro.Exchange:
    return point_ccxt_at(ccxt.pro.okx({"enableRateLimit": False}), server_url)


@pytest.mark.parametrize("symbol", [SPOT, LINEAR])
async def test_watch_trades_yields_the_tapes_trades_of_the_window(tape: Tape, symbol: str) -> None:
    with serve(tape) as server:
        client = pro(server.url)
        try:
            await client.load_markets()
            first = asyncio.ensure_future(client.watch_trades(symbol))
            await wait_subscribed(server, "okx")
            assert not first.done()
            clock(server).set_ms(NOW + 30_000)
            want = tape_trades(tape, "okx", symbol, NOW, NOW + 30_000)
            got = await watched_trades(client, symbol, first, len(want))
            assert ids(got) == ids(want)
            assert [(t["timestamp"], t["side"], t["price"], t["amount"]) for t in got] == [
                (t.ts, t.side, float(t.price), float(t.amount)) for t in want
            ]
            assert await nothing_more(lambda: client.watch_trades(symbol))
        finally:
            await client.close()


@pytest.mark.parametrize("symbol", [SPOT, LINEAR])
async def test_watch_ohlcv_yields_the_closed_candles(tape: Tape, symbol: str) -> None:
    with serve(tape) as server:
        client = pro(server.url)
        try:
            await client.load_markets()
            first = asyncio.ensure_future(client.watch_ohlcv(symbol, "1m"))
            await wait_subscribed(server, "okx")
            assert "/ws/v5/business" in next(iter(client.clients))
            end = NOW + 3 * MIN
            clock(server).set_ms(end)
            want = closed_candles(tape, "okx", symbol, NOW, end)
            await first
            cache = client.ohlcvs[symbol]["1m"]
            await until(lambda: any(c[0] == want[-1][0] for c in cache))
            assert [list(c) for c in cache if c[0] + MIN <= end] == want
        finally:
            await client.close()


async def test_candles_carry_confirm_and_live_on_business_only(tape: Tape) -> None:
    arg = {"channel": "candle1m", "instId": "BTC-USDT-SWAP"}
    with serve(tape) as server:
        async with websockets.connect(ws_url(server, "okx", PUBLIC)) as ws:
            await ws.send(json.dumps({"op": "subscribe", "args": [arg]}))
            refused = json.loads(await ws.recv())
            assert (refused["event"], refused["code"]) == ("error", "60018")
            assert refused["msg"].startswith("Wrong URL or channel:candle1m,instId:BTC-USDT-SWAP")
        async with websockets.connect(ws_url(server, "okx", BUSINESS)) as ws:
            await ws.send(json.dumps({"id": "c1", "op": "subscribe", "args": [arg]}))
            ack = json.loads(await ws.recv())
            assert ack == {"id": "c1", "event": "subscribe", "arg": arg, "connId": ack["connId"]}
            clock(server).set_ms(NOW + 31_000)
            frames = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
    closed, forming = (f["data"][0] for f in frames)
    start = NOW - NOW % MIN
    assert frames[0]["arg"] == arg
    assert (closed[0], closed[8], forming[0], forming[8]) == (
        str(start),
        "1",
        str(start + MIN),
        "0",
    )
    want = closed_candles(tape, "okx", LINEAR, NOW, NOW + 31_000)[0]
    # Swaps: vol in contracts (ctVal 0.01), volCcy the tape's base volume (ccxt reads it).
    assert float(closed[6]) == want[5] and float(closed[5]) == pytest.approx(want[5] / 0.01)


async def test_errors_pings_and_unsubscribe(tape: Tape) -> None:
    with serve(tape) as server:
        async with websockets.connect(ws_url(server, "okx", PUBLIC)) as ws:

            async def ask(request: Any) -> Any:
                await ws.send(request if isinstance(request, str) else json.dumps(request))
                reply = await asyncio.wait_for(ws.recv(), 5)
                return reply if reply == "pong" else json.loads(reply)

            assert await ask("ping") == "pong"
            garbage = await ask("{not json")
            assert (garbage["event"], garbage["code"]) == ("error", "60012")
            unknown = await ask(
                {"op": "subscribe", "args": [{"channel": "trades", "instId": "ETH-USDT"}]}
            )
            assert unknown["code"] == "60018" and "instId:ETH-USDT" in unknown["msg"]
            arg = {"channel": "trades", "instId": "BTC-USDT"}
            assert (await ask({"op": "subscribe", "args": [arg]}))["event"] == "subscribe"
            assert (await ask({"op": "unsubscribe", "args": [arg]}))["event"] == "unsubscribe"
            clock(server).set_ms(NOW + 5_000)
            with pytest.raises(TimeoutError):  # unsubscribed: nothing comes
                await asyncio.wait_for(ws.recv(), 0.3)
        assert counter(server, "okx", "trades", "ws_subscribed") == 1
        assert counter(server, "okx", "trades", "ws_unsubscribed") == 1
        assert counter(server, "okx", "trades", "ws_errors") == 1


def _checksum(bids: list[list[str]], asks: list[list[str]]) -> int:
    """OKX's documented book checksum, written out independently of the server's."""
    parts = []
    for i in range(25):
        if i < len(bids):
            parts += bids[i][:2]
        if i < len(asks):
            parts += asks[i][:2]
    value = zlib.crc32(":".join(parts).encode())
    return value - 2**32 if value >= 2**31 else value


@pytest.mark.parametrize("symbol", [SPOT, LINEAR])
async def test_watch_order_book_snapshot_then_sequenced_updates(tape: Tape, symbol: str) -> None:
    with serve(tape) as server:
        client = pro(server.url)
        try:
            await client.load_markets()
            book = await asyncio.wait_for(client.watch_order_book(symbol), 5)
            assert [list(b) for b in book["bids"]] == tape_book(tape, "okx", symbol, NOW)[0]
            assert await follow_book(server, tape, client, "okx", symbol) == 10
            assert book["nonce"] == (T0 + 15 * 30_000) * 1000  # seqId of the last snapshot
        finally:
            await client.close()


async def test_book_updates_chain_seq_ids_and_checksum_the_book(tape: Tape) -> None:
    with serve(tape) as server:
        async with websockets.connect(ws_url(server, "okx", PUBLIC)) as ws:
            arg = {"channel": "books", "instId": "BTC-USDT"}
            await ws.send(json.dumps({"op": "subscribe", "args": [arg]}))
            await ws.recv()
            frames = [json.loads(await asyncio.wait_for(ws.recv(), 5))]
            clock(server).set_ms(NOW + 120_000)
            frames += [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(4)]
    assert [f["action"] for f in frames] == ["snapshot"] + ["update"] * 4
    data = [f["data"][0] for f in frames]
    assert data[0]["prevSeqId"] == -1
    book: dict[str, dict[str, list[str]]] = {"bids": {}, "asks": {}}
    for before, after in zip([None, *data], data, strict=False):
        if before is not None:
            assert after["prevSeqId"] == before["seqId"]
        for side in ("bids", "asks"):
            for level in after[side]:
                if level[1] == "0":
                    book[side].pop(level[0], None)
                else:
                    book[side][level[0]] = level
        bids = sorted(book["bids"].values(), key=lambda lv: -float(lv[0]))
        asks = sorted(book["asks"].values(), key=lambda lv: float(lv[0]))
        assert after["checksum"] == _checksum(bids, asks)
