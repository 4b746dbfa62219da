"""The stream with many busy symbols on one exchange, over real WebSockets from the replay
exchange: every symbol is delivered (none starved by the busier ones), and a venue whose ids
jump on every trade makes a bounded number of REST repairs, not one per trade, and the
service still stops."""

from __future__ import annotations

import asyncio
from pathlib import Path

from crypto_pipelines.replay import ReplayClock, ReplayServer
from crypto_pipelines.replay.tape.writer import write_ohlcv, write_trades
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines.stream import StreamService, StreamSettings, StreamStats

T0 = 1_704_067_200_000
START = T0 + 5_000
STEP_MS = 20  # 50 trades/s per symbol
N = 2_000  # 40 s of tape


def _tape(root: Path, symbols: list[str], id_step: int) -> Path:
    for k, symbol in enumerate(symbols):
        rows = [
            (T0 + i * STEP_MS + k % 7, 1 + i * id_step, "buy" if i % 2 else "sell", "1.5", "2")
            for i in range(N)
        ]
        write_trades(root, "binance", symbol, rows)
        write_ohlcv(root, "binance", symbol, "1m", [(T0, "1.5", "1.5", "1.5", "1.5", "1")])
    return root


async def _stream(
    url: str, db: Path, symbols: list[str], seconds: float
) -> tuple[StreamStats, dict[str, list[int]]]:
    settings = StreamSettings(catch_up=False, watchdog_s=10, flush_ms=50)
    with MarketStore.open(f"sqlite:///{db}") as store:
        service = StreamService({"binance": symbols}, store, settings=settings, replay_url=url)
        # a guard against a hang (the failure this file is about), not a timing check
        stats = await asyncio.wait_for(service.run_for(seconds), timeout=240)
        stored = {
            s: sorted(
                int(i) for i in store.read("trades", exchange="binance", symbol=s)["trade_id"]
            )
            for s in symbols
        }
    return stats, stored


async def test_every_busy_symbol_is_delivered(tmp_path: Path) -> None:
    """ccxt.pro's watch_trades_for_symbols hands out one symbol per call: with 40 symbols
    trading at once the first few won every call and the rest overflowed unseen."""
    symbols = [f"C{i:03d}/USDT" for i in range(40)]
    tape = _tape(tmp_path / "tape", symbols, id_step=1)
    with ReplayServer(tape, clock=ReplayClock(start_ms=START, speed=1.0)) as server:
        stats, stored = await _stream(server.url, tmp_path / "m.db", symbols, 5.0)
    for symbol, ids in stored.items():
        assert ids, f"{symbol}: nothing stored ({stats.as_json()})"
        assert ids == list(range(ids[0], ids[-1] + 1)), f"{symbol}: a hole or a duplicate"
    assert not stats.id_jumps, stats.as_json()
    assert stats.rows_written == sum(len(ids) for ids in stored.values())


async def test_ids_jumping_on_every_trade_make_few_repairs(tmp_path: Path) -> None:
    """Ids counting up by 10 on a venue whose ids count up by one: every trade is a jump.
    Repairs are merged per symbol (one REST fetch per symbol and round), so the REST side
    stays far behind the jumps in count and the service stops when asked."""
    symbols = [f"C{i:03d}/USDT" for i in range(5)]
    tape = _tape(tmp_path / "tape", symbols, id_step=10)
    with ReplayServer(tape, clock=ReplayClock(start_ms=START, speed=1.0)) as server:
        stats, stored = await _stream(server.url, tmp_path / "m.db", symbols, 4.0)
        counts = server.app.stats.snapshot()["exchanges"]["binance"]
    trade_requests = sum(
        c.get("requests", 0) for endpoint, c in counts.items() if "Trades" in endpoint
    )
    jumps = stats.id_jumps["binance"]
    assert jumps >= 100, stats.as_json()
    assert 0 < trade_requests < jumps / 2, (trade_requests, jumps)
    assert all(stored.values()), stats.as_json()
