"""Fetch throughput: candles per second through ``iter_ohlcv`` from the replay exchange.

The issue's target is 100,000 candles/s end to end (fetch + validate + store) for
Binance-shaped data on a 2-core machine with rate limits off; this measures the fetch side
alone (requests, parsing, validation, DataFrame chunks), for each venue, and ccxt's own
``fetch_ohlcv`` loop on the same data as the baseline the vectorized parsing replaces.

The server runs as the CLI does, in its own process pinned to core 0; the loader runs here,
pinned to core 1. Every venue serves the same 1m candles (one tape file, linked into each
venue's folder), so the figures differ only by page size and wire format: Binance and Bybit
1,000 candles a request, Coinbase 300, OKX 100 (history-candles, as any backfill older than
the latest 1,440 bars uses).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import Result, ServerProcess
from benchmarks.replay_server import MIN, T0, write_candle_tape
from crypto_pipelines.exchanges import FetchStats, get_venue, iter_ohlcv, make_client

#: venue -> (symbol, tape folder, candles to fetch)
VENUES = {
    "binance": ("BTC/USDT", "BTC_USDT", 1_000_000),
    "bybit": ("BTC/USDT", "BTC_USDT", 1_000_000),
    "coinbaseexchange": ("BTC/USD", "BTC_USD", 300_000),
    "okx": ("BTC/USDT", "BTC_USDT", 200_000),
}
TARGET = 100_000


def _pin_client() -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})


def _tape(root: Path, n: int) -> None:
    source = write_candle_tape(root, n)
    for exchange, (_, folder, _) in VENUES.items():
        target = root / exchange / folder / "ohlcv_1m.csv"
        if target != source:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(source, target)


def _loader(url: str, exchange: str, symbol: str, n: int) -> tuple[int, float, FetchStats]:
    client = make_client(exchange, replay_url=url, enable_rate_limit=False)
    client.load_markets()
    stats = FetchStats()
    t0 = time.perf_counter()
    rows = 0
    for chunk in iter_ohlcv(
        client, get_venue(exchange), symbol, "1m", T0, T0 + n * MIN, stats=stats
    ):
        rows += len(chunk)
    return rows, time.perf_counter() - t0, stats


def _ccxt_baseline(url: str, n: int) -> tuple[int, float]:
    """ccxt's unified ``fetch_ohlcv`` (per-row parsing) over the same Binance candles."""
    client = make_client("binance", replay_url=url, enable_rate_limit=False)
    client.load_markets()
    t0 = time.perf_counter()
    rows, since = 0, T0
    while since < T0 + n * MIN:
        page = client.fetch_ohlcv("BTC/USDT", "1m", since=since, limit=1000)
        if not page:
            break
        rows += len(page)
        since = page[-1][0] + MIN
    return rows, time.perf_counter() - t0


def fetch_throughput() -> list[Result]:
    _pin_client()
    results: list[Result] = []
    n_tape = max(n for _, _, n in VENUES.values())
    with tempfile.TemporaryDirectory() as tmp:
        _tape(Path(tmp), n_tape)
        server = ServerProcess(Path(tmp))
        try:
            _loader(server.url, "binance", "BTC/USDT", 20_000)  # warm-up
            for exchange, (symbol, _, n) in VENUES.items():
                rows, seconds, stats = _loader(server.url, exchange, symbol, n)
                rate = rows / seconds
                binance = exchange == "binance"
                results.append(
                    Result(
                        f"fetch_{exchange}",
                        "candles/s (iter_ohlcv, fetch + validate, limits off)",
                        rate,
                        "candles/s",
                        f">= {TARGET:,}" if binance else "",
                        rate >= TARGET if binance else None,
                        {
                            "candles": rows,
                            "seconds": seconds,
                            "requests": stats.requests,
                            "candles_per_request": rows / max(1, stats.requests),
                        },
                    )
                )
            rows, seconds = _ccxt_baseline(server.url, 300_000)
            results.append(
                Result(
                    "fetch_binance_ccxt_unified",
                    "candles/s (ccxt fetch_ohlcv loop, baseline)",
                    rows / seconds,
                    "candles/s",
                    details={"candles": rows, "seconds": seconds},
                )
            )
        finally:
            server.stop()
    return results
