"""Replay exchange throughput and memory.

Targets (issue: replay exchange): at least 500 kline requests of 1,000 candles each per
second on one core, and a 10-million-candle tape served with under 1 GB resident.

The server runs as the CLI does, in its own process pinned to core 0; the load comes from an
asyncio HTTP client on the other core that reads whole responses without parsing them, so the
figure is the server's, not ccxt's.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

from benchmarks.common import Result, ServerProcess

MIN = 60_000
T0 = 1_577_836_800_000  # 2020-01-01


def write_candle_tape(root: Path, n: int, symbol_dir: str = "BTC_USDT") -> Path:
    """A candles-only Binance tape of ``n`` 1m candles, written in chunks (bounded memory)."""
    folder = root / "binance" / symbol_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ohlcv_1m.csv"
    rng = np.random.default_rng(1)
    price = 30000.0
    with path.open("w") as fh:
        fh.write("ts,open,high,low,close,volume\n")
        chunk = 1_000_000
        for lo in range(0, n, chunk):
            m = min(chunk, n - lo)
            steps = rng.normal(0, 5, m).cumsum() + price
            price = float(steps[-1])
            ts = T0 + (np.arange(lo, lo + m, dtype=np.int64) * MIN)
            o = np.round(steps, 2)
            c = np.round(steps + rng.normal(0, 2, m), 2)
            h = np.round(np.maximum(o, c) + rng.random(m) * 3, 2)
            lw = np.round(np.minimum(o, c) - rng.random(m) * 3, 2)
            v = np.round(rng.random(m) * 10, 5)
            lines = [
                f"{t},{a:.2f},{b:.2f},{d:.2f},{e:.2f},{f:.5f}\n"
                for t, a, b, d, e, f in zip(
                    ts.tolist(),
                    o.tolist(),
                    h.tolist(),
                    lw.tolist(),
                    c.tolist(),
                    v.tolist(),
                    strict=True,
                )
            ]
            fh.writelines(lines)
    return path


async def _load(url: str, n_candles: int, seconds: float, concurrency: int) -> tuple[int, int]:
    """Requests of 1,000 candles at random offsets for ``seconds``; returns (requests, bytes)."""
    rng = np.random.default_rng(2)
    done = 0
    nbytes = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal done, nbytes
            while time.monotonic() < deadline:
                start = T0 + int(rng.integers(0, max(1, n_candles - 1000))) * MIN
                async with session.get(
                    f"{url}/binance/api.binance.com/api/v3/klines",
                    params={
                        "symbol": "BTCUSDT",
                        "interval": "1m",
                        "startTime": str(start),
                        "limit": "1000",
                    },
                ) as resp:
                    body = await resp.read()
                    assert resp.status == 200 and body.count(b"],[") == 999, resp.status
                done += 1
                nbytes += len(body)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, nbytes


def _pin_client() -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})


def throughput(n_candles: int = 1_000_000, seconds: float = 10.0) -> list[Result]:
    _pin_client()
    with tempfile.TemporaryDirectory() as tmp:
        write_candle_tape(Path(tmp), n_candles)
        server = ServerProcess(Path(tmp))
        try:
            asyncio.run(_load(server.url, n_candles, 1.0, 8))  # warm-up
            t0 = time.monotonic()
            done, nbytes = asyncio.run(_load(server.url, n_candles, seconds, 8))
            elapsed = time.monotonic() - t0
        finally:
            server.stop()
    rps = done / elapsed
    return [
        Result(
            "replay_klines",
            "requests/s (1,000 candles each, 1 core)",
            rps,
            "req/s",
            ">= 500",
            rps >= 500,
            {"requests": done, "seconds": elapsed, "MB/s": nbytes / elapsed / 1e6},
        ),
        Result(
            "replay_klines",
            "candles/s",
            rps * 1000,
            "candles/s",
            ">= 500,000",
            rps * 1000 >= 500_000,
        ),
    ]


def memory(n_candles: int = 10_000_000, requests: int = 2000) -> list[Result]:
    _pin_client()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        write_candle_tape(Path(tmp), n_candles)
        written = time.monotonic() - t0
        t0 = time.monotonic()
        server = ServerProcess(Path(tmp))
        load_s = time.monotonic() - t0
        try:
            rss_loaded, _ = server.rss_mb()
            t0 = time.monotonic()
            done = 0
            while done < requests:
                got, _ = asyncio.run(_load(server.url, n_candles, 2.0, 8))
                done += got
            rss_served, peak = server.rss_mb()
        finally:
            server.stop()
    return [
        Result(
            "replay_memory",
            f"peak RSS serving a {n_candles:,}-candle tape",
            peak,
            "MB",
            "< 1024",
            peak < 1024,
            {
                "rss_after_load_mb": rss_loaded,
                "rss_after_serving_mb": rss_served,
                "requests": done,
                "tape_write_s": written,
                "server_start_s": load_s,
            },
        ),
        Result("replay_memory", "server start (load + validate)", load_s, "s"),
    ]
