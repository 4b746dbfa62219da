"""The Redis hot cache against the machine's real Redis: the latest trade, candles and order
book per symbol as JSON, and every batch published on its channel."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from crypto_pipelines.stream.cache import RedisCache
from crypto_pipelines.stream.events import StreamBatch, book_rows, candle_rows, trade_rows

URL = os.environ.get("CRYPTO_PIPELINES_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T0 = 1_704_067_200_000


@pytest.fixture
async def cache() -> AsyncIterator[RedisCache]:
    import redis.asyncio as redis

    probe = redis.from_url(URL)
    try:
        await probe.ping()
    except (OSError, redis.ConnectionError):
        pytest.skip(f"no Redis at {URL}")
    finally:
        await probe.aclose()
    found = RedisCache(URL, prefix=f"test-{uuid.uuid4().hex[:8]}", ttl_s=60)
    yield found
    keys = await found.client.keys(f"{found.prefix}:*")
    if keys:
        await found.client.delete(*keys)
    await found.close()


async def test_latest_state_and_pubsub(cache: RedisCache) -> None:
    pubsub = cache.client.pubsub()
    await pubsub.subscribe(cache.key("trades", "okx", "BTC/USDT"))
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    trades = [
        {"id": i, "timestamp": T0 + i, "side": "buy", "price": 10.0 + i, "amount": 1.0}
        for i in range(3)
    ]
    rows = trade_rows("okx", "BTC/USDT", trades)
    await cache.handle(StreamBatch("trades", "okx", "BTC/USDT", rows, time.monotonic()))
    forming = candle_rows("okx", "BTC/USDT", "1m", [[T0, 1, 2, 0.5, 1.5, 10]])
    await cache.handle(StreamBatch("forming", "okx", "BTC/USDT", forming, time.monotonic(), "1m"))

    latest = json.loads(await cache.client.get(cache.key("trade", "okx", "BTC/USDT")))
    assert latest["trade_id"] == "2" and latest["price"] == 12.0
    candle = json.loads(await cache.client.get(cache.key("candle", "okx", "BTC/USDT", "1m")))
    assert candle["ts"] == T0 and candle["close"] == 1.5
    message = None
    for _ in range(20):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message:
            break
        await asyncio.sleep(0.05)
    assert message is not None
    assert [r["trade_id"] for r in json.loads(message["data"])] == ["0", "1", "2"]
    await pubsub.aclose()


async def test_latest_book_is_the_whole_snapshot(cache: RedisCache) -> None:
    bids, asks = [[99.5, 1.0], [99.0, 2.0]], [[100.0, 0.5]]
    rows = book_rows("binance", "BTC/USDT", T0, bids, asks, depth=10)
    await cache.handle(StreamBatch("books", "binance", "BTC/USDT", rows, time.monotonic()))
    book = json.loads(await cache.client.get(cache.key("book", "binance", "BTC/USDT")))
    assert [(r["side"], r["level"], r["price"]) for r in book] == [
        ("bid", 0, 99.5),
        ("bid", 1, 99.0),
        ("ask", 0, 100.0),
    ]
    assert await cache.client.get(cache.key("candle", "binance", "BTC/USDT", "")) is None
