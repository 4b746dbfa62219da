"""Ingestion API throughput: single-candle POSTs and bulk bodies, on SQLite and PostgreSQL.

Targets (issue: ingestion API): single-candle POSTs at 5,000 requests/s or more with p99
under 200 ms (2 workers), each answered only after its commit; bulk at 400,000 candles/s or
more. The server is ``crypto-pipelines api --workers 2`` in its own process tree, as a user
runs it; the load is an asyncio client (aiohttp, keep-alive connections) in this process.
Afterwards the stored rows are counted: every 201 must be in the database.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import orjson

from benchmarks.common import CLI, Result, free_port

SECRET = "bench-secret-0123456789"
T0 = 1_704_067_200_000
MIN = 60_000
DURATION_S = float(os.environ.get("CRYPTO_PIPELINES_API_BENCH_S", "10"))
CONCURRENCY = int(os.environ.get("CRYPTO_PIPELINES_API_BENCH_CONNECTIONS", "64"))
PG_URL = os.environ.get(
    "CRYPTO_PIPELINES_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@contextmanager
def api_server(db_url: str, workers: int = 2) -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        universe = root / "universe.yaml"
        universe.write_text(
            "source: replay\nexchanges:\n  binance:\n    symbols: [BTC/USDT, ETH/USDT]\n"
            "    timeframes: [1m]\n    start: 2020-01-01\n"
        )
        (root / "home").mkdir()
        port = free_port()
        env = {
            **os.environ,
            "CRYPTO_PIPELINES_API_KEYS": f"bench:{SECRET}",
            "CRYPTO_PIPELINES_API_RATE_PER_S": "1000000",
            "CRYPTO_PIPELINES_UNIVERSE": str(universe),
            "CRYPTO_PIPELINES_DB_URL": db_url,
            "DAGSTER_HOME": str(root / "home"),
        }
        cmd = [CLI, "api", "--port", str(port), "--workers", str(workers)]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        url = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(_wait_up(url, proc))
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


async def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"api server exited: {err[-2000:]}")
            try:
                async with session.get(f"{url}/openapi.json") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("api server did not come up")


async def _single_candles(
    url: str, seconds: float, connections: int, first: int = 0
) -> tuple[int, list[float], int]:
    """(201 answers, latencies in s, other answers) of single-candle POSTs for ``seconds``."""
    headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    latencies: list[float] = []
    counter = iter(range(first, 10**9))
    failures = 0
    ok = 0
    stop = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            nonlocal failures, ok
            while time.monotonic() < stop:
                i = next(counter)
                row = [T0 + i * MIN, 10.0, 11.0, 9.0, 10.5, 1.0]
                body = orjson.dumps(
                    {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m", "rows": [row]}
                )
                start = time.perf_counter()
                async with session.post(f"{url}/v1/ohlcv", data=body) as response:
                    await response.read()
                    if response.status == 201:
                        ok += 1
                        latencies.append(time.perf_counter() - start)
                    else:
                        failures += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
    return ok, latencies, failures


async def _bulk(url: str, bodies: int, rows: int, parallel: int) -> tuple[float, int]:
    """(seconds, candles) to POST ``bodies`` bodies of ``rows`` candles, ``parallel`` at once."""
    headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    payloads = []
    for b in range(bodies):
        base = T0 + b * rows * MIN
        candles = [[base + i * MIN, 10.0, 11.0, 9.0, 10.5, 1.0] for i in range(rows)]
        payloads.append(
            orjson.dumps(
                {"exchange": "binance", "symbol": "ETH/USDT", "timeframe": "1m", "rows": candles}
            )
        )
    queue = list(payloads)
    stored = 0
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal stored
            while queue:
                body = queue.pop()
                async with session.post(f"{url}/v1/ohlcv", data=body) as response:
                    answer = await response.json()
                    if response.status != 201:
                        raise RuntimeError(f"bulk POST answered {response.status}: {answer}")
                    stored += answer["inserted"] + answer["updated"]

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(parallel)))
        return time.perf_counter() - start, stored


def _count(db_url: str, symbol: str) -> int:
    from crypto_pipelines.storage.store import MarketStore

    with MarketStore.open(db_url) as store:
        return store.count("ohlcv", exchange="binance", symbol=symbol)


@contextmanager
def _database(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/market.db"
        return
    from crypto_pipelines_tests.conftest import postgres_schema_url

    with postgres_schema_url(PG_URL) as url:
        yield url


def _run(kind: str) -> list[Result]:
    results = []
    with _database(kind) as db_url, api_server(db_url) as url:
        asyncio.run(_single_candles(url, 2, CONCURRENCY))  # warm-up (schema, pools)
        warm = _count(db_url, "BTC/USDT")
        ok, latencies, failures = asyncio.run(
            _single_candles(url, DURATION_S, CONCURRENCY, first=10_000_000)
        )
        stored = _count(db_url, "BTC/USDT") - warm
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else float("nan")
        rate = ok / DURATION_S
        details = {
            "connections": CONCURRENCY,
            "seconds": DURATION_S,
            "answered_201": ok,
            "other_answers": failures,
            "new_rows_stored": stored,
            "p50_ms": statistics.median(latencies) * 1000 if latencies else None,
            "p99_ms": p99,
        }
        results.append(
            Result(
                f"api_single_{kind}", "requests/s", rate, "req/s", ">= 5000", rate >= 5000, details
            )
        )
        results.append(
            Result(f"api_single_{kind}", "p99 latency", p99, "ms", "< 200", p99 < 200, details)
        )
        results.append(
            Result(
                f"api_single_{kind}",
                "201s not stored",
                ok - stored if ok >= stored else 0,
                "rows",
                "0",
                ok <= stored,
                details,
            )
        )
        seconds, candles = asyncio.run(_bulk(url, bodies=10, rows=100_000, parallel=2))
        bulk_rate = candles / seconds
        results.append(
            Result(
                f"api_bulk_{kind}",
                "candles/s",
                bulk_rate,
                "candles/s",
                ">= 400000",
                bulk_rate >= 400_000,
                {"bodies": 10, "rows_per_body": 100_000, "seconds": seconds},
            )
        )
    return results


def api_throughput() -> list[Result]:
    return _run("sqlite") + _run("postgresql")


__all__ = ["api_throughput"]
