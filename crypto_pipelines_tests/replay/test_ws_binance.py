"""Binance streams (spot, USDⓈ-M, COIN-M) through stock ccxt.pro clients against the replay
exchange, the clock moved by the test; raw frames where ccxt hides the wire."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import ccxt
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
SPOT_WS = "stream.binance.com:9443/ws"


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tape]:
    root = tmp_path_factory.mktemp("ws-binance")
    write_venue(root, "binance", [SPOT, LINEAR, INVERSE])
    write_markets(
        root,
        "binance",
        [
            MarketSpec(SPOT, "spot", "0.1", "0.001", "0.001", None, T0),
            MarketSpec(LINEAR, "swap", "0.1", "0.001", "0.001", "1", T0),
            MarketSpec(INVERSE, "swap", "0.1", "1", "1", "100", T0),
        ],
    )
    loaded = Tape.load(root)
    yield loaded
    loaded.close()


def pro(server_url: str, exchange_id: str = "binance") -> ccxt.pro.Exchange:
    return point_ccxt_at(getattr(ccxt.pro, exchange_id)({"enableRateLimit": False}), server_url)


@pytest.mark.parametrize(
    ("symbol", "name"),
    [
        (SPOT, "trade"),
        (LINEAR, "trade"),
        (INVERSE, "trade"),
        (SPOT, "aggTrade"),
        (LINEAR, "aggTrade"),
    ],
)
async def test_watch_trades_yields_the_tapes_trades_of_the_window(
    tape: Tape, symbol: str, name: str
) -> None:
    with serve(tape) as server:
        client = pro(server.url)
        try:
            await client.load_markets()
            params = {} if name == "trade" else {"name": name}
            first = asyncio.ensure_future(client.watch_trades(symbol, params=params))
            await wait_subscribed(server, "binance")
            assert not first.done()  # the clock stands still: nothing is due
            clock(server).set_ms(NOW + 30_000)
            want = tape_trades(tape, "binance", symbol, NOW, NOW + 30_000)
            got = await watched_trades(client, symbol, first, len(want))
            assert ids(got) == ids(want)
            assert [(t["timestamp"], t["side"], t["price"], t["amount"]) for t in got] == [
                (t.ts, t.side, float(t.price), float(t.amount)) for t in want
            ]
            assert await nothing_more(lambda: client.watch_trades(symbol, params=dict(params)))
            assert counter(server, "binance", name, "ws_messages") == len(want)
        finally:
            await client.close()


async def test_usdm_and_coinm_clients_and_the_spot_url_stay_apart(tape: Tape) -> None:
    """BTCUSDT names a spot pair and a perpetual: the stream's host decides which."""
    with serve(tape) as server:
        usdm, spot = pro(server.url, "binanceusdm"), pro(server.url)
        try:
            await asyncio.gather(usdm.load_markets(), spot.load_markets())
            perp = asyncio.ensure_future(usdm.watch_trades(LINEAR))
            pair = asyncio.ensure_future(spot.watch_trades(SPOT))
            await wait_subscribed(server, "binance", 2)
            clock(server).set_ms(NOW + 1_000)
            got_perp, got_pair = await asyncio.gather(perp, pair)
            assert {t["symbol"] for t in got_perp} == {LINEAR}
            assert {t["symbol"] for t in got_pair} == {SPOT}
            assert "/fstream.binance.com/public/ws/" in next(iter(usdm.clients))
        finally:
            await asyncio.gather(usdm.close(), spot.close())


@pytest.mark.parametrize("symbol", [SPOT, LINEAR, INVERSE])
async def test_watch_ohlcv_yields_the_closed_candles(tape: Tape, symbol: str) -> None:
    with serve(tape) as server:
        client = pro(server.url)
        try:
            await client.load_markets()
            first = asyncio.ensure_future(client.watch_ohlcv(symbol, "1m"))
            await wait_subscribed(server, "binance")
            end = NOW + 3 * MIN
            clock(server).set_ms(end)
            want = closed_candles(tape, "binance", symbol, NOW, end)
            assert len(want) == 3
            await first
            cache = client.ohlcvs[symbol]["1m"]
            forming = end - end % MIN  # the minute still forming at "now" (trades made it)
            await until(lambda: {want[-1][0], forming} <= {c[0] for c in cache})
            # The closed candle replaces the forming one of its minute in ccxt's cache.
            assert [list(c) for c in cache if c[0] + MIN <= end] == want
            assert [c[0] for c in cache if c[0] + MIN > end] == [forming]
        finally:
            await client.close()


async def test_kline_frames_flag_the_closed_candle_and_forming_ones_follow_trades(
    tape: Tape,
) -> None:
    with serve(tape) as server:
        async with websockets.connect(ws_url(server, "binance", SPOT_WS)) as ws:
            await ws.send(
                json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 7})
            )
            assert json.loads(await ws.recv()) == {"result": None, "id": 7}
            clock(server).set_ms(NOW + 40_000)  # passes the end of the minute at NOW + 30 s
            frames = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
    closed, forming = (f["k"] for f in frames)
    start = NOW - NOW % MIN
    assert (closed["t"], closed["T"], closed["x"], closed["i"]) == (
        start,
        start + MIN - 1,
        True,
        "1m",
    )
    want = closed_candles(tape, "binance", SPOT, NOW, NOW + 40_000)[0]
    assert [float(closed[k]) for k in "ohlcv"] == want[1:]
    assert closed["n"] == MIN // 250
    # The next minute is forming: built from its first 40 trades (10 s at 4 a second).
    trades = tape_trades(tape, "binance", SPOT, start + MIN - 1, NOW + 40_000)
    assert (forming["t"], forming["x"], forming["n"]) == (start + MIN, False, len(trades))
    assert (forming["o"], forming["c"]) == (trades[0].price, trades[-1].price)
    assert frames[1]["E"] == trades[-1].ts


async def test_subscription_acks_errors_and_listing(tape: Tape) -> None:
    with serve(tape) as server:
        async with websockets.connect(ws_url(server, "binance", SPOT_WS)) as ws:

            async def ask(request: dict[str, object]) -> dict[str, object]:
                await ws.send(json.dumps(request))
                reply: dict[str, object] = json.loads(await asyncio.wait_for(ws.recv(), 5))
                return reply

            assert await ask({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}) == {
                "result": None,
                "id": 1,
            }
            unknown_symbol = {"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 2}
            assert await ask(unknown_symbol) == {
                "error": {"code": 2, "msg": "Invalid request: invalid stream"},
                "id": 2,
            }
            bad_channel = {"method": "SUBSCRIBE", "params": ["btcusdt@ticks"], "id": 3}
            assert (await ask(bad_channel))["error"] == {
                "code": 2,
                "msg": "Invalid request: invalid stream",
            }
            assert await ask({"method": "LIST_SUBSCRIPTIONS", "id": 4}) == {
                "result": ["btcusdt@trade"],
                "id": 4,
            }
            await asyncio.sleep(1.0)  # Binance counts requests per second
            reply = await ask({"method": "FETCH", "id": 5})
            assert reply["id"] == 5 and "unknown variant `FETCH`" in str(reply["error"])
        assert counter(server, "binance", "trade", "ws_subscribed") == 1
        assert counter(server, "binance", "ticks", "ws_errors") == 1


async def test_the_subscription_limits(tape: Tape) -> None:
    with serve(tape) as server:
        futures = ws_url(server, "binance", "fstream.binance.com/market/ws")
        async with websockets.connect(futures) as ws:
            streams = [f"btcusdt@kline_{i}" for i in range(201)]  # futures: 200 a connection
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": streams, "id": 1}))
            reply = json.loads(await ws.recv())
            assert reply["id"] == 1 and "too many streams" in reply["error"]["msg"]
        async with websockets.connect(ws_url(server, "binance", SPOT_WS)) as ws:
            for i in range(6):  # spot: 5 incoming messages a second, then the connection ends
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_streams_named_in_the_url_and_combined_frames(tape: Tape) -> None:
    with serve(tape) as server:
        url = ws_url(server, "binance", "stream.binance.com:9443/stream")
        async with websockets.connect(url + "?streams=btcusdt@trade/btcusdt@aggTrade") as ws:
            await asyncio.sleep(0.2)
            clock(server).set_ms(NOW + 250)
            frames = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
    assert sorted(f["stream"] for f in frames) == ["btcusdt@aggTrade", "btcusdt@trade"]
    trade = next(f["data"] for f in frames if f["stream"] == "btcusdt@trade")
    assert (trade["e"], trade["s"], trade["T"], trade["M"]) == ("trade", "BTCUSDT", NOW + 250, True)


async def test_a_subscription_error_surfaces_in_ccxt(tape: Tape) -> None:
    with serve(tape) as server:
        client = pro(server.url)
        try:
            await client.load_markets()
            with pytest.raises(ccxt.BaseError):
                await asyncio.wait_for(client.watch_ohlcv(SPOT, "1M"), 5)  # no monthly klines
        finally:
            await client.close()


async def test_refused_urls(tape: Tape) -> None:
    with serve(tape) as server:
        for path in ("binance/stream.binance.com:9443/api/v3", "kraken/ws.kraken.com/v2"):
            with pytest.raises(websockets.InvalidStatus):
                async with websockets.connect(server.url.replace("http", "ws") + "/" + path):
                    pass


@pytest.mark.parametrize("symbol", [SPOT, LINEAR])
async def test_watch_order_book_joins_the_rest_snapshot_and_follows_the_deltas(
    tape: Tape, symbol: str
) -> None:
    with serve(tape) as server:
        client = pro(server.url)
        try:
            await client.load_markets()
            book = await asyncio.wait_for(client.watch_order_book(symbol), 5)
            # The REST depth snapshot at NOW, joined on its lastUpdateId.
            assert book["nonce"] == (NOW - NOW % 30_000) * 1000
            assert [list(b) for b in book["bids"]] == tape_book(tape, "binance", symbol, NOW)[0]
            steps = await follow_book(server, tape, client, "binance", symbol)
            assert steps == 10 and book["nonce"] == (T0 + 15 * 30_000) * 1000
        finally:
            await client.close()


async def test_depth_frames_chain_their_update_ids(tape: Tape) -> None:
    with serve(tape) as server:
        url = ws_url(server, "binance", "fstream.binance.com/public/ws/btcusdt@depth@100ms")
        async with websockets.connect(url) as ws:
            await asyncio.sleep(0.2)
            clock(server).set_ms(NOW + 90_000)
            frames = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(3)]
    assert [f["e"] for f in frames] == ["depthUpdate"] * 3
    for before, after in zip(frames, frames[1:], strict=False):
        assert after["pu"] == before["u"] and after["U"] == before["u"] + 1
    assert frames[0]["pu"] == (NOW - NOW % 30_000) * 1000
