"""One backfill process of the soak (``benchmarks.soak``): loads 1m candles of one symbol from
the replay exchange into its own SQLite file, over and over (later passes upsert rows that
are already stored), from ``--start-at`` (epoch s) for ``--seconds``, then prints one JSON
line: candles fetched and upserted, rows new to the file, requests, retries, the budget units
it spent inside the measured interval and the time it waited for them.

    python -m benchmarks.soak_worker EXCHANGE SYMBOL URL DB_URL START_MS END_MS \\
        --start-at T --seconds S [--budget-dir DIR] [--margin M] [--no-budget] [--ccxt-limiter]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from crypto_pipelines.exchanges import FetchStats, RetriesExhausted, get_venue, make_client
from crypto_pipelines.exchanges.budget import DEFAULT_MARGIN, SharedBudget
from crypto_pipelines.exchanges.loader import fetch_markets, iter_ohlcv
from crypto_pipelines.storage.store import MarketStore


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks.soak_worker")
    for name in ("exchange", "symbol", "url", "db_url"):
        parser.add_argument(name)
    parser.add_argument("start_ms", type=int)
    parser.add_argument("end_ms", type=int)
    parser.add_argument("--start-at", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--budget-dir", default=None)
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN)
    parser.add_argument("--no-budget", action="store_true")
    parser.add_argument("--ccxt-limiter", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = _args(argv)
    budget = (
        None
        if args.no_budget
        else SharedBudget.for_venue(
            args.exchange, replay_url=args.url, directory=args.budget_dir, margin=args.margin
        )
    )
    client = make_client(
        args.exchange,
        replay_url=args.url,
        enable_rate_limit=args.ccxt_limiter,
        rate_budget=budget or False,
    )
    spec = get_venue(args.exchange)
    fetch_markets(client)  # before the measured interval, paid from the budget like any call
    spent_before = budget.spent if budget else {}
    stats = FetchStats()
    rows = written = 0
    error = None
    time.sleep(max(0.0, args.start_at - time.time()))
    deadline = args.start_at + args.seconds
    with MarketStore.open(args.db_url) as store:
        try:
            while time.time() < deadline:
                # one request per chunk, so the deadline is checked after every request
                for chunk in iter_ohlcv(
                    client, spec, args.symbol, "1m", args.start_ms, args.end_ms,
                    stats=stats, chunk_rows=1,
                ):  # fmt: skip
                    written += store.upsert("ohlcv", chunk)
                    rows += len(chunk)
                    if time.time() >= deadline:
                        break
        except RetriesExhausted as exc:  # reported, not raised: the soak counts refusals
            error = str(exc)
    spent_after = budget.spent if budget else {}
    report: dict[str, Any] = {
        "symbol": args.symbol,
        "rows": rows,
        "rows_new": written,
        "requests": stats.requests,
        "retries": stats.retries,
        "budget_wait_s": stats.budget_wait_s,
        "spent": {k: v - spent_before.get(k, 0) for k, v in spent_after.items()},
        "error": error,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
