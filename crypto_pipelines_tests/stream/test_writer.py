"""The store writer: batches flushed by size and by age through the sink (so duplicates are
stored once and invalid rows quarantined), lag recorded, nothing left in the buffer at close;
on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import pytest

from crypto_pipelines.storage.rejections import rejections
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines.stream import StoreWriter, StreamBatch, StreamStats
from crypto_pipelines.stream.events import candle_rows, trade_rows

T0 = 1_704_067_200_000


def _trades(first: int, n: int, **change: object) -> StreamBatch:
    trades = [
        {"id": first + i, "timestamp": T0 + first + i, "side": "buy", "price": 10.0, "amount": 1.0}
        for i in range(n)
    ]
    for trade in trades:
        trade.update(change)
    return StreamBatch(
        "trades", "okx", "BTC/USDT", trade_rows("okx", "BTC/USDT", trades), time.monotonic()
    )


@pytest.mark.parametrize("inline", [False, True], ids=["thread", "inline"])
async def test_flushes_by_size_and_by_age_and_dedupes(db_url: str, inline: bool) -> None:
    """The same contract whether flushes run in the worker thread or on the event loop."""
    stats = StreamStats()
    with MarketStore.open(db_url) as store:
        writer = StoreWriter(store, stats, flush_ms=200, flush_rows=100, inline=inline)
        await writer.handle(_trades(0, 60))
        await writer.handle(_trades(50, 60))  # reaches 120 rows: flushed at once
        assert stats.flushes == 1 and writer.depth == 0
        assert store.count("trades") == 110  # ids 50..59 seen twice, stored once
        await writer.handle(_trades(110, 5))
        assert store.count("trades") == 110 and writer.depth == 5
        await asyncio.sleep(0.4)  # older than flush_ms: the ticker flushed it
        assert store.count("trades") == 115 and writer.depth == 0
        await writer.handle(_trades(115, 3))
        await writer.close()  # what is buffered is written at close
        assert store.count("trades") == 118
    assert stats.rows_written == 118 and stats.lag_ms(0.99) is not None
    assert stats.drain_touched() == {("trades", "okx", "BTC/USDT", "", T0): [128, T0 + 117]}
    assert stats.touched == {}
    assert len(stats.lags_s) == 4 and stats.flushes == 3


async def test_invalid_stream_rows_are_quarantined_with_source_stream(db_url: str) -> None:
    stats = StreamStats()
    with MarketStore.open(db_url) as store:
        writer = StoreWriter(store, stats, flush_ms=50, flush_rows=10_000)
        await writer.handle(_trades(0, 3))
        await writer.handle(_trades(3, 2, side="unknown"))
        candles = candle_rows(
            "okx", "BTC/USDT", "1m", [[T0, 1, 2, 0.5, 1.5, 10], [T0 + 60_000, 1, 0.5, 2, 1, 3]]
        )
        await writer.handle(
            StreamBatch("candles", "okx", "BTC/USDT", candles, time.monotonic(), "1m")
        )
        await writer.close()
        quarantined = rejections(store.engine)
        assert store.count("trades") == 3 and store.count("ohlcv") == 1
    assert {(r.series.dataset, r.key, r.source) for r in quarantined} == {
        ("trades", "3", "stream"),
        ("trades", "4", "stream"),
        ("ohlcv", str(T0 + 60_000), "stream"),
    }
    assert stats.rows_rejected == 3
