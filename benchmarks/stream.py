"""The stream end to end: trades over WebSockets from the replay exchange, parsed by stock
ccxt.pro, validated and committed through the sink into SQLite.

Targets (issue: real-time stream): at least 20,000 trades/s sustained with receive-to-commit
p99 under 50 ms and no loss. The replay exchange runs as the CLI does on core 0, the stream in
this process on core 1; the tape holds ``SYMBOLS`` Binance spot pairs trading every
``SPACING_MS`` (offered rate = symbols x 1000 / spacing) and the replay clock runs in real time
from the tape's start, so the offered rate is what the exchange would send. Loss is checked
exactly: every trade the clock released before the stream stopped must be stored once.
``CRYPTO_PIPELINES_STREAM_BENCH_S`` sets the run length (default 20 s).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import Result, ServerProcess
from crypto_pipelines.replay.tape.writer import write_ohlcv, write_trades
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines.stream import StreamService, StreamSettings

T0 = 1_704_067_200_000
RATES = (2_000, 10_000, 20_000)  # offered trades/s
SYMBOLS = 100


def _tape(root: Path, symbols: int, spacing_ms: float, seconds: float) -> list[str]:
    names = [f"C{i:03d}/USDT" for i in range(symbols)]
    n = int(seconds * 1000 / spacing_ms) + 200
    for k, name in enumerate(names):
        rows = [
            (T0 + int(i * spacing_ms) + k % 7, 10 * i + 1, "buy" if i % 2 else "sell", "1.5", "2")
            for i in range(n)
        ]
        write_trades(root, "binance", name, sorted(rows))
        write_ohlcv(root, "binance", name, "1m", [(T0, "1.5", "1.5", "1.5", "1.5", "1")])
    return names


async def _run(url: str, db: Path, names: list[str], seconds: float) -> dict[str, object]:
    with MarketStore.open(f"sqlite:///{db}") as store:
        settings = StreamSettings(catch_up=False, watchdog_s=10, flush_ms=50, flush_rows=20_000)
        service = StreamService({"binance": names}, store, settings=settings, replay_url=url)
        t0 = time.monotonic()
        stats = await service.run_for(seconds)
        elapsed = time.monotonic() - t0
        stored = store.count("trades")
    return {"stats": stats.as_json(), "elapsed": elapsed, "stored": stored}


def stream_throughput() -> list[Result]:
    seconds = float(os.environ.get("CRYPTO_PIPELINES_STREAM_BENCH_S", "20"))
    results: list[Result] = []
    for rate in RATES:
        spacing = SYMBOLS * 1000 / rate
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            names = _tape(root / "tape", SYMBOLS, spacing, seconds + 30)
            server = ServerProcess(root / "tape", "--now", str(T0 + 5_000), "--speed", "1")
            try:
                got = asyncio.run(_run(server.url, root / "m.db", names, seconds))
            finally:
                server.stop()
        stats = got["stats"]
        assert isinstance(stats, dict)
        achieved = float(stats["rows_written"]) / float(got["elapsed"])  # type: ignore[arg-type]
        p99 = stats["lag_ms_p99"]
        results.append(
            Result(
                "stream",
                f"trades/s committed, {SYMBOLS} symbols, {rate:,} offered",
                achieved,
                "trades/s",
                ">= 20,000" if rate == 20_000 else "",
                achieved >= 20_000 if rate == 20_000 else None,
                got,
            )
        )
        results.append(
            Result(
                "stream",
                f"receive-to-commit p99, {rate:,} offered",
                float(p99 or 0.0),  # type: ignore[arg-type]
                "ms",
                "< 50",
                p99 is not None and float(p99) < 50,  # type: ignore[arg-type]
            )
        )
    return results
