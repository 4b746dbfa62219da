"""One end-to-end load in its own process, so its peak memory is its own:
``python -m benchmarks.ingest_worker EXCHANGE SYMBOL URL DB_URL START_MS END_MS [--rate-limit]``
prints a JSON line with rows, seconds and peak RSS."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from crypto_pipelines.domain.datasets import SeriesKey
from crypto_pipelines.exchanges import get_venue, make_client
from crypto_pipelines.ingest import load_series
from crypto_pipelines.storage.store import MarketStore


def _peak_rss_mb() -> float:
    """This process's own peak (VmHWM). Not ``ru_maxrss``: Linux carries that across fork and
    exec, so a worker would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str]) -> None:
    exchange, symbol, url, db_url, start, end = argv[:6]
    rate_limit = "--rate-limit" in argv
    client = make_client(exchange, replay_url=url, enable_rate_limit=rate_limit)
    client.load_markets()
    with MarketStore.open(db_url) as store:
        t0 = time.perf_counter()
        series = SeriesKey(exchange, symbol, "ohlcv", "1m")
        report = load_series(
            client, get_venue(exchange), store, series, int(start), int(end), refetch=True
        )
        elapsed = time.perf_counter() - t0
    peak_mb = _peak_rss_mb()
    print(
        json.dumps(
            {
                "rows": report.rows_fetched,
                "present": report.present,
                "seconds": elapsed,
                "requests": report.requests,
                "retries": report.retries,
                "peak_rss_mb": peak_mb,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
