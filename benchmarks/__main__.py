"""``python -m benchmarks [replay_throughput replay_memory ...]``: run, print a table, write JSON."""

from __future__ import annotations

import sys
from collections.abc import Callable

from benchmarks.common import Result, print_table, write_json


def _registry() -> dict[str, Callable[[], list[Result]]]:
    from benchmarks import (
        api,
        dagster_backfill,
        fetch,
        ingest,
        replay_server,
        soak,
        storage,
        stream,
        stream_soak,
    )

    return {
        "replay_throughput": replay_server.throughput,
        "replay_memory": replay_server.memory,
        "fetch": fetch.fetch_throughput,
        "storage_upsert": storage.upsert_throughput,
        "ingest_e2e": ingest.end_to_end,
        "ingest_limits": ingest.with_limits,
        "dagster_backfill": dagster_backfill.one_year_backfill,
        "dagster_backfill_pg": dagster_backfill.one_year_backfill_postgres,
        "stream": stream.stream_throughput,  # CRYPTO_PIPELINES_STREAM_BENCH_S=20 per rate
        # 10 minutes, 200 symbols on four venues; CRYPTO_PIPELINES_STREAM_SOAK_S=60 to try it
        "stream_soak": stream_soak.stream_soak,
        "api": api.api_throughput,  # CRYPTO_PIPELINES_API_BENCH_S=10 per database
        "soak": soak.soak,  # 5 minutes; CRYPTO_PIPELINES_SOAK_S=60 for a quick run
    }


def main(argv: list[str]) -> int:
    registry = _registry()
    names = argv or list(registry)
    unknown = [n for n in names if n not in registry]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(registry)}",
            file=sys.stderr,
        )
        return 2
    results: list[Result] = []
    for name in names:
        got = registry[name]()
        write_json(name, got)
        results.extend(got)
    print_table(results)
    return 0 if all(r.passed is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
