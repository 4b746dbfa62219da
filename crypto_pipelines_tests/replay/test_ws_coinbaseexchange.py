"""Coinbase Exchange's feed through a stock ccxt.pro client against the replay exchange, the
clock moved by the test; raw frames where ccxt hides the wire."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import ccxt.pro
import pytest
import websockets

from crypto_pipelines.replay import Tape, point_ccxt_at
from crypto_pipelines_tests.replay.ws_helpers import (
    NOW,
    clock,
    counter,
    follow_book,
    ids,
    nothing_more,
    serve,
    tape_book,
    tape_trades,
    wait_subscribed,
    watched_trades,
    write_venue,
    ws_url,
)

SYMBOL = "BTC/USD"
FEED = "ws-feed.exchange.coinbase.com"


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tape]:
    root = tmp_path_factory.mktemp("ws-coinbase")
    write_venue(root, "coinbaseexchange", [SYMBOL], seed=9)
    loaded = Tape.load(root)
    yield loaded
    loaded.close()


def pro(server_url: str, **config: Any) -> ccxt.pro.Exchange:
    options = {"enableRateLimit": False, **config}
    return point_ccxt_at(ccxt.pro.coinbaseexchange(options), server_url)


async def test_watch_trades_yields_the_tapes_trades_of_the_window(tape: Tape) -> None:
    with serve(tape) as server:
        client = pro(server.url)
        try:
            await client.load_markets()
            first = asyncio.ensure_future(client.watch_trades(SYMBOL))
            await wait_subscribed(server, "coinbaseexchange")
            assert not first.done()
            clock(server).set_ms(NOW + 30_000)
            want = tape_trades(tape, "coinbaseexchange", SYMBOL, NOW, NOW + 30_000)
            got = await watched_trades(client, SYMBOL, first, len(want))
            assert ids(got) == ids(want)
            # ccxt turns the maker side the feed sends back into the taker's, the tape's.
            assert [(t["timestamp"], t["side"], t["price"], t["amount"]) for t in got] == [
                (t.ts, t.side, float(t.price), float(t.amount)) for t in want
            ]
            assert await nothing_more(lambda: client.watch_trades(SYMBOL))
        finally:
            await client.close()


async def test_no_candle_channel() -> None:
    client = ccxt.pro.coinbaseexchange()
    try:
        assert client.has["watchOHLCV"] is False
        with pytest.raises(ccxt.NotSupported):
            await client.watch_ohlcv(SYMBOL, "1m")
    finally:
        await client.close()


async def test_subscriptions_last_match_heartbeat_and_errors(tape: Tape) -> None:
    with serve(tape) as server:
        async with websockets.connect(ws_url(server, "coinbaseexchange", FEED)) as ws:

            async def send(request: dict[str, Any]) -> dict[str, Any]:
                await ws.send(json.dumps(request))
                reply: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
                return reply

            listing = await send(
                {
                    "type": "subscribe",
                    "product_ids": ["BTC-USD"],
                    "channels": ["matches", "heartbeat"],
                }
            )
            assert listing == {
                "type": "subscriptions",
                "channels": [
                    {"name": "matches", "product_ids": ["BTC-USD"], "account_ids": None},
                    {"name": "heartbeat", "product_ids": ["BTC-USD"], "account_ids": None},
                ],
            }
            last = json.loads(await ws.recv())
            newest = tape_trades(tape, "coinbaseexchange", SYMBOL, NOW - 1_000, NOW)[-1]
            assert (last["type"], last["trade_id"]) == ("last_match", int(newest.id))
            heartbeat = json.loads(await asyncio.wait_for(ws.recv(), 3))
            assert (heartbeat["type"], heartbeat["last_trade_id"]) == ("heartbeat", int(newest.id))
            bad_product = await send(
                {"type": "subscribe", "product_ids": ["ETH-USD"], "channels": ["matches"]}
            )
            assert bad_product == {
                "type": "error",
                "message": "Failed to subscribe",
                "reason": "ETH-USD is not a valid product",
            }
            bad_channel = await send(
                {"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["candles"]}
            )
            assert bad_channel["reason"] == "candles is not a valid channel"
            gone = await send(
                {
                    "type": "unsubscribe",
                    "channels": [{"name": "heartbeat", "product_ids": ["BTC-USD"]}],
                }
            )
            assert [c["name"] for c in gone["channels"]] == ["matches"]
            clock(server).set_ms(NOW + 500)
            match = json.loads(await asyncio.wait_for(ws.recv(), 5))
        trade = tape_trades(tape, "coinbaseexchange", SYMBOL, NOW, NOW + 500)[0]
        assert (match["type"], match["trade_id"], match["product_id"]) == (
            "match",
            int(trade.id),
            "BTC-USD",
        )
        assert match["side"] != trade.side and match["time"].endswith("000Z")
        assert counter(server, "coinbaseexchange", "matches", "ws_errors") == 1


async def test_watch_order_book_level2_snapshot_then_updates(tape: Tape) -> None:
    # ccxt.pro signs level2 subscriptions (the real feed wants them authenticated): any
    # credentials do for the replay.
    credentials = {"apiKey": "key", "secret": "c2VjcmV0", "password": "pass"}
    with serve(tape) as server:
        client = pro(server.url, **credentials)
        try:
            await client.load_markets()
            book = await asyncio.wait_for(client.watch_order_book(SYMBOL), 5)
            assert [list(b) for b in book["bids"]] == tape_book(
                tape, "coinbaseexchange", SYMBOL, NOW
            )[0]
            assert await follow_book(server, tape, client, "coinbaseexchange", SYMBOL) == 10
        finally:
            await client.close()
