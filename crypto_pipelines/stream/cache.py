"""The optional hot cache: the latest state per exchange and symbol in Redis, with pub/sub.

With ``CRYPTO_PIPELINES_REDIS_URL`` set, ``RedisCache`` (a stream handler) keeps, for each
exchange and symbol, the latest trade (``<prefix>:trade:<exchange>:<symbol>``), the forming
and the last closed candle of each timeframe (``<prefix>:candle:<exchange>:<symbol>:<tf>``,
``...:closed``), the latest order book snapshot (``<prefix>:book:<exchange>:<symbol>``,
all its levels) and, for perpetuals, the mark price with the announced funding rate and next
funding time (``<prefix>:mark:<exchange>:<symbol>``), as JSON strings, and publishes every batch on
``<prefix>:<kind>:<exchange>:<symbol>`` so a dashboard or a strategy can subscribe. One
pipelined round trip per batch. Off by default: an embedded setup needs no Redis.
"""

from __future__ import annotations

import json
from typing import Any, Final

from crypto_pipelines.stream.events import StreamBatch

DEFAULT_PREFIX: Final = "crypto_pipelines"


class RedisCache:
    """See the module docstring. ``ttl_s`` expires the latest-state keys of a symbol that
    stopped trading (None: never)."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, ttl_s: int | None = 86_400):
        import redis.asyncio as redis  # imported when a cache is configured

        self.client: Any = redis.from_url(url)
        self.prefix = prefix
        self.ttl_s = ttl_s

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def handle(self, batch: StreamBatch) -> None:
        if not batch.rows:
            return
        latest = json.dumps(batch.rows[-1], default=str)
        pipe = self.client.pipeline(transaction=False)
        if batch.kind == "trades":
            pipe.set(self.key("trade", batch.exchange, batch.symbol), latest, ex=self.ttl_s)
        elif batch.kind == "mark":
            pipe.set(self.key("mark", batch.exchange, batch.symbol), latest, ex=self.ttl_s)
        elif batch.kind == "books":  # one snapshot is all of its rows
            book = json.dumps(batch.rows, default=str)
            pipe.set(self.key("book", batch.exchange, batch.symbol), book, ex=self.ttl_s)
        else:
            name = self.key("candle", batch.exchange, batch.symbol, batch.timeframe)
            if batch.kind == "candles":
                name += ":closed"
            pipe.set(name, latest, ex=self.ttl_s)
        channel = self.key(batch.kind, batch.exchange, batch.symbol)
        pipe.publish(channel, json.dumps(batch.rows, default=str))
        await pipe.execute()

    async def close(self) -> None:
        await self.client.aclose()
