"""The stream with its WebSocket down: it fails over to REST polling and loses nothing.

The replay exchange here answers REST only (its WebSocket side refuses connections), the
way a venue's stream is sometimes down while its REST API works: the service retries with
backoff, fails over to REST polling, and every trade the replay clock has released is stored
exactly once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crypto_pipelines.replay import ReplayClock, ReplayServer
from crypto_pipelines.replay.tape.writer import write_ohlcv, write_trades
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines.stream import StreamService, StreamSettings

T0 = 1_704_067_200_000  # 2024-01-01
SYMBOL = "BTC/USDT"
N = 600  # one trade every 500 ms for five minutes


def _trades() -> list[tuple[int, int, str, str, str]]:
    return [
        (T0 + i * 500, 5000 + i, "buy" if i % 2 else "sell", "42000.5", "0.01") for i in range(N)
    ]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ReplayServer]:
    write_trades(tmp_path, "binance", SYMBOL, _trades())
    write_ohlcv(tmp_path, "binance", SYMBOL, "1m", [(T0, "1", "1", "1", "1", "1")])
    # the clock runs in real time from one minute into the tape
    with ReplayServer(tmp_path, clock=ReplayClock(start_ms=T0 + 60_000, speed=1)) as srv:
        yield srv


async def test_websocket_down_fails_over_to_rest_and_stores_every_trade(
    server: ReplayServer, tmp_path: Path
) -> None:
    settings = StreamSettings(
        failover_after=2, backoff_base_s=0.05, backoff_max_s=0.1, poll_s=0.3, ws_retry_s=1.0
    )
    with MarketStore.open(f"sqlite:///{tmp_path / 'market.db'}") as store:
        service = StreamService(
            {"binance": [SYMBOL]}, store, settings=settings, replay_url=server.url
        )
        started = time.monotonic()
        stats = await service.run_for(3.0)
        elapsed = time.monotonic() - started
        stored = store.read("trades", exchange="binance", symbol=SYMBOL)
    ids = sorted(int(i) for i in stored["trade_id"])
    assert stats.failovers["binance"] >= 1 and stats.reconnects["binance"] >= 2
    # everything up to the newest stored trade, without a hole, each once
    assert ids == list(range(5000, ids[-1] + 1))
    # the first minute at once (catch-up), then what the clock released while polling
    assert ids[-1] - 5000 + 1 >= 120 + 2 * int(elapsed - 1.5)
    assert stats.catch_up_rows["binance"] == len(ids), stats.as_json()
