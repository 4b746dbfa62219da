"""End-to-end loads: ccxt fetch from the replay exchange, validation, upsert into SQLite.

Targets (issue: historical assets): >= 100,000 candles/s for Binance-shaped data with limits
off (twice Binance's own REST ceiling of ~50,000 candles/s); with ``--enforce-limits``, 1
million 1m candles within 1.25x the exchange's rate-limit floor (Binance spot: 1,000 requests
x weight 2 / 6,000 per minute = 20 s); peak resident memory under 400 MB while loading 1
million candles. Each load runs in its own process (pinned to core 1) so its peak RSS is its
own; the replay server runs as the CLI does, pinned to core 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import Result, ServerProcess
from benchmarks.fetch import VENUES, _tape
from benchmarks.replay_server import MIN, T0

N = 1_000_000
BINANCE_SPOT_FLOOR_S = (N / 1000) * 2 / 6000 * 60  # requests x weight / weight per minute


def _worker(
    exchange: str, symbol: str, url: str, db: Path, n: int, rate_limit: bool
) -> dict[str, float]:
    cmd = [
        "taskset",
        "-c",
        "1",
        sys.executable,
        "-m",
        "benchmarks.ingest_worker",
        exchange,
        symbol,
        url,
        f"sqlite:///{db}",
        str(T0),
        str(T0 + n * MIN),
    ]
    if rate_limit:
        cmd.append("--rate-limit")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def end_to_end() -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _tape(root / "tape", N)
        server = ServerProcess(root / "tape")
        try:
            for exchange, (symbol, _, _) in VENUES.items():
                got = _worker(
                    exchange, symbol, server.url, root / f"{exchange}.db", N, rate_limit=False
                )
                rate = got["rows"] / got["seconds"]
                target = exchange == "binance"
                results.append(
                    Result(
                        "ingest_e2e",
                        f"{exchange} candles/s into SQLite (limits off)",
                        rate,
                        "candles/s",
                        ">= 100,000" if target else "",
                        rate >= 100_000 if target else None,
                        got,
                    )
                )
                results.append(
                    Result(
                        "ingest_e2e",
                        f"{exchange} peak RSS loading 1M candles",
                        got["peak_rss_mb"],
                        "MB",
                        "< 400",
                        got["peak_rss_mb"] < 400,
                    )
                )
        finally:
            server.stop()
    return results


def with_limits() -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _tape(root / "tape", N)
        server = ServerProcess(root / "tape", "--enforce-limits")
        try:
            got = _worker("binance", "BTC/USDT", server.url, root / "limits.db", N, rate_limit=True)
            stats = json.loads(
                subprocess.run(
                    ["curl", "-s", server.url + "/_replay/stats"], capture_output=True, text=True
                ).stdout
                or "{}"
            )
        finally:
            server.stop()
    ratio = got["seconds"] / BINANCE_SPOT_FLOOR_S
    refused = stats.get("totals", {}).get("rate_limited", 0) + stats.get("totals", {}).get(
        "banned", 0
    )
    return [
        Result(
            "ingest_limits",
            "binance 1M 1m candles, --enforce-limits, ccxt limiter on",
            got["seconds"],
            "s",
            f"<= {1.25 * BINANCE_SPOT_FLOOR_S:.0f} (1.25x floor)",
            ratio <= 1.25,
            got,
        ),
        Result("ingest_limits", "time / rate-limit floor", ratio, "x", "<= 1.25", ratio <= 1.25),
        Result("ingest_limits", "429/418 answers", refused, "answers", "0", refused == 0),
    ]
