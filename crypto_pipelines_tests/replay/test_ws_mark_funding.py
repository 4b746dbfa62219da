"""Mark price and funding channels of perpetuals (Binance ``@markPrice``, OKX ``mark-price``
and ``funding-rate``, Bybit ``tickers``) through stock ccxt.pro clients against the replay
exchange, the clock moved by the test across the tape's funding times.

The tape settles funding every 8 h: before it (F0), at T0 + 8 h (F1) and T0 + 16 h (F2). What
the venues must announce: before a funding time, that time's tape rate; after the last row,
the last settled rate for the next 8 h grid point. The mark is the close of the newest closed
1m candle."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import ccxt
import ccxt.pro
import pytest
import websockets

from crypto_pipelines.replay import Tape, point_ccxt_at
from crypto_pipelines.replay.tape.markets import MarketSpec
from crypto_pipelines.replay.tape.writer import write_funding, write_markets
from crypto_pipelines_tests.replay.ws_helpers import (
    MIN,
    MINUTES,
    NOW,
    T0,
    clock,
    counter,
    serve,
    until,
    wait_subscribed,
    write_venue,
    ws_url,
)

SPOT, LINEAR, INVERSE = "BTC/USDT", "BTC/USDT:USDT", "BTC/USD:BTC"
H8 = 8 * 3_600_000
#: (funding time, rate) rows of every perpetual; rates differ per symbol (see ``rates``)
FUNDING_TIMES = (T0 - H8, T0 + H8, T0 + 2 * H8)


def rates(symbol: str) -> list[str]:
    n = [LINEAR, INVERSE].index(symbol) + 1
    return [f"0.0000{n}123", f"0.000{n}4567", f"-0.0000{n}89"]


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tape]:
    root = tmp_path_factory.mktemp("ws-marks")
    for exchange in ("binance", "okx", "bybit"):
        perps = [LINEAR] if exchange == "okx" else [LINEAR, INVERSE]
        write_venue(root, exchange, [SPOT, *perps])
        for symbol in perps:
            write_funding(root, exchange, symbol, zip(FUNDING_TIMES, rates(symbol), strict=True))
        write_markets(
            root,
            exchange,
            [
                MarketSpec(SPOT, "spot", "0.1", "0.001", "0.001", None, T0),
                MarketSpec(LINEAR, "swap", "0.1", "0.001", "0.001", "1", T0),
                MarketSpec(INVERSE, "swap", "0.1", "1", "1", "100", T0),
            ][: len(perps) + 1],
        )
    loaded = Tape.load(root)
    yield loaded
    loaded.close()


def pro(exchange: str, server_url: str) -> ccxt.pro.Exchange:
    return point_ccxt_at(getattr(ccxt.pro, exchange)({"enableRateLimit": False}), server_url)


def mark(tape: Tape, exchange: str, symbol: str, t: int) -> str:
    """Close of the tape's 1m candle that closed last at or before ``t`` (the tape's candles
    run T0 .. T0 + 10 min, so later times take the last one)."""
    minute = min((t - T0) // MIN - 1, MINUTES - 1)
    candle = (
        tape.exchanges[exchange].symbols[symbol].ohlcv["1m"].between(T0 + minute * MIN, None, 1)
    )
    return candle[0].close


#: replay times the tests move to, with the funding (time, rate index) announced then;
#: rate index 2 after the last row: the last settled rate, for the 8 h grid point after it.
STEPS = [
    (NOW + 1_000, T0 + H8, 1),
    (T0 + H8 - 1_000, T0 + H8, 1),
    (T0 + H8 + 1_000, T0 + 2 * H8, 2),
    (T0 + 2 * H8 + 1_000, T0 + 3 * H8, 2),
]


@pytest.mark.parametrize("symbol", [LINEAR, INVERSE])
async def test_binance_watch_mark_price_follows_the_tape(tape: Tape, symbol: str) -> None:
    with serve(tape) as server:
        client = pro("binance", server.url)
        try:
            await client.load_markets()
            first = asyncio.ensure_future(client.watch_mark_price(symbol))
            await wait_subscribed(server, "binance")
            for n, (t, funding_time, rate) in enumerate(STEPS):
                clock(server).set_ms(t)
                if n == 0:
                    await asyncio.wait_for(first, 5)

                def reached(at: int = t) -> bool:
                    return bool(client.tickers[symbol]["timestamp"] == at)

                await until(reached)
                ticker = client.tickers[symbol]
                want = mark(tape, "binance", symbol, t)
                assert ticker["markPrice"] == ticker["indexPrice"] == float(want)
                info = ticker["info"]
                assert (info["p"], info["i"], info["P"]) == (want, want, want)
                assert (info["r"], info["T"], info["E"]) == (rates(symbol)[rate], funding_time, t)
            assert counter(server, "binance", "markPrice", "ws_messages") >= len(STEPS)
        finally:
            await client.close()


async def test_binance_mark_price_streams_periods_and_refusals(tape: Tape) -> None:
    """``@markPrice`` every 3 s, ``!markPrice@arr@1s`` every second listing each perpetual of
    the endpoint; a jump keeps the last frame before a funding time; spot is refused."""
    with serve(tape) as server:
        url = ws_url(server, "binance", "fstream.binance.com/market/stream")
        streams = "btcusdt@markPrice/!markPrice@arr@1s"
        async with websockets.connect(f"{url}?streams={streams}") as ws:
            await asyncio.sleep(0.2)
            clock(server).set_ms(NOW + 3_000)
            frames = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(4)]
            by_stream: dict[str, list[Any]] = {}
            for f in frames:
                by_stream.setdefault(f["stream"], []).append(f["data"])
            assert [d[0]["E"] for d in by_stream["!markPrice@arr@1s"]] == [
                NOW + 1_000,
                NOW + 2_000,
                NOW + 3_000,
            ]
            assert [d["s"] for d in by_stream["!markPrice@arr@1s"][0]] == ["BTCUSDT"]
            (single,) = by_stream["btcusdt@markPrice"]
            assert single["E"] == NOW + 3_000 and single["r"] == rates(LINEAR)[1]
            # A jump past F1 longer than the frames a poll sends (120): the newest are sent,
            # and the last frame before F1, so the rate announced for F1 is not skipped.
            end = T0 + H8 + 10 * MIN
            clock(server).set_ms(end)
            got: list[Any] = []
            arr_end = 0
            # read both streams to their end (unread frames would hold up the close handshake)
            while not got or got[-1]["E"] < end or arr_end < end:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if frame["stream"] == "btcusdt@markPrice":
                    got.append(frame["data"])
                else:
                    arr_end = frame["data"][0]["E"]
            before = [d for d in got if d["E"] < T0 + H8]
            assert [d["E"] for d in before][-1:] == [T0 + H8 - 3_000]
            assert before[-1]["r"] == rates(LINEAR)[1] and before[-1]["T"] == T0 + H8
            assert [d["E"] for d in got[len(before) :]] == list(
                range(end - 119 * 3_000, end + 1, 3_000)
            )
            assert got[-1]["r"] == rates(LINEAR)[2] and got[-1]["T"] == T0 + 2 * H8
        async with websockets.connect(
            ws_url(server, "binance", "stream.binance.com:9443/ws")
        ) as ws:
            await ws.send(
                json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@markPrice@1s"], "id": 1})
            )
            refused = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert refused == {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 1}


async def test_okx_mark_price_and_funding_rate_follow_the_tape(tape: Tape) -> None:
    with serve(tape) as server:
        client = pro("okx", server.url)
        try:
            await client.load_markets()
            ticker = await asyncio.wait_for(client.watch_mark_price(LINEAR), 5)
            assert ticker["markPrice"] == float(mark(tape, "okx", LINEAR, NOW))
            assert ticker["info"] == {
                "instId": "BTC-USDT-SWAP",
                "instType": "SWAP",
                "markPx": mark(tape, "okx", LINEAR, NOW),
                "ts": str(NOW),
            }
            fr = await asyncio.wait_for(client.watch_funding_rate(LINEAR), 5)
            assert (fr["fundingRate"], fr["fundingTimestamp"], fr["nextFundingTimestamp"]) == (
                float(rates(LINEAR)[1]),
                T0 + H8,
                T0 + 2 * H8,
            )
            assert fr["interval"] == "8h" and fr["info"]["settFundingRate"] == rates(LINEAR)[0]
            clock(server).set_ms(T0 + H8 + 1_000)
            await until(lambda: client.fundingRates[LINEAR]["fundingTimestamp"] == T0 + 2 * H8)
            fr = client.fundingRates[LINEAR]
            assert fr["fundingRate"] == float(rates(LINEAR)[2])
            assert fr["nextFundingTimestamp"] == T0 + 3 * H8  # after the tape: the 8 h grid
            assert fr["info"]["settFundingRate"] == rates(LINEAR)[1]
            await until(lambda: client.tickers[LINEAR]["info"]["ts"] == str(T0 + H8))
            assert client.tickers[LINEAR]["markPrice"] == float(mark(tape, "okx", LINEAR, T0 + H8))
            assert counter(server, "okx", "funding-rate", "ws_messages") >= 2
            with pytest.raises(ccxt.BaseError, match="60018"):  # spot: no such channel
                await asyncio.wait_for(client.watch_mark_price(SPOT), 5)
        finally:
            await client.close()


@pytest.mark.parametrize("symbol", [LINEAR, INVERSE])
async def test_bybit_ticker_carries_mark_and_funding(tape: Tape, symbol: str) -> None:
    with serve(tape) as server:
        client = pro("bybit", server.url)
        try:
            await client.load_markets()
            ticker = await asyncio.wait_for(client.watch_ticker(symbol), 5)
            want = mark(tape, "bybit", symbol, NOW)
            assert ticker["timestamp"] == NOW and ticker["markPrice"] == float(want)
            info = ticker["info"]
            assert (info["markPrice"], info["indexPrice"]) == (want, want)
            assert (info["fundingRate"], info["nextFundingTime"]) == (
                rates(symbol)[1],
                str(T0 + H8),
            )
            for t, funding_time, rate in STEPS[1:]:
                # Deltas come only when something changed (the tape ends at T0 + 10 min), so
                # wait for the state, not for a frame at t.
                clock(server).set_ms(t)
                want_state = (
                    rates(symbol)[rate],
                    str(funding_time),
                    mark(tape, "bybit", symbol, t),
                )

                def reached(want: tuple[str, str, str] = want_state) -> bool:
                    info = client.tickers[symbol]["info"]
                    return (info["fundingRate"], info["nextFundingTime"], info["markPrice"]) == want

                await until(reached)
                assert client.tickers[symbol]["timestamp"] <= t
        finally:
            await client.close()


async def test_bybit_ticker_frames_snapshot_then_deltas_and_spot_refused(tape: Tape) -> None:
    with serve(tape) as server:
        async with websockets.connect(
            ws_url(server, "bybit", "stream.bybit.com/v5/public/linear")
        ) as ws:
            await ws.send(json.dumps({"op": "subscribe", "args": ["tickers.BTCUSDT"]}))
            assert json.loads(await ws.recv())["success"] is True
            snapshot = json.loads(await asyncio.wait_for(ws.recv(), 5))
            clock(server).set_ms(NOW + 1_000)
            delta = json.loads(await asyncio.wait_for(ws.recv(), 5))
        async with websockets.connect(
            ws_url(server, "bybit", "stream.bybit.com/v5/public/spot")
        ) as ws:
            await ws.send(json.dumps({"op": "subscribe", "args": ["tickers.BTCUSDT"]}))
            refused = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert counter(server, "bybit", "tickers", "ws_messages") == 2
    assert (snapshot["topic"], snapshot["type"], snapshot["ts"]) == (
        "tickers.BTCUSDT",
        "snapshot",
        NOW,
    )
    assert {"lastPrice", "bid1Price", "openInterestValue", "fundingRate"} <= set(snapshot["data"])
    assert (delta["type"], delta["ts"], delta["data"]["symbol"]) == (
        "delta",
        NOW + 1_000,
        "BTCUSDT",
    )
    assert "fundingRate" not in delta["data"] and len(delta["data"]) < len(snapshot["data"])
    assert (refused["success"], refused["ret_msg"]) == (
        False,
        "error:handler not found,topic:tickers.BTCUSDT",
    )
