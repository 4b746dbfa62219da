"""Daily schedules (default RUNNING: on whenever the daemon runs).

- ``daily_markets_refresh`` (00:05 UTC): one run of the ``markets_refresh`` job, every
  ``<exchange>/markets`` and the catalog (``crypto_pairs``, ``crypto_perps``,
  ``crypto_assets``), so listings, delistings and the volume ranking of the universe filters
  are at most a day old.
- ``<exchange>_daily_recheck`` and ``<exchange>_monthly_recheck`` (00:30 UTC, after the
  incremental sensors' finalization), and ``<exchange>_perps_daily_recheck`` /
  ``<exchange>_perps_monthly_recheck`` for the perpetuals-only datasets: yesterday's
  partition of every series of the exchange's daily assets (trades, open
  interest), and the month holding yesterday of its monthly ones (candles, funding), is
  run once more: one run per asset and block of symbols, as a partition range. Up to four
  schedules per exchange because a schedule runs one job, a job has one partitioning, and
  the exchange's assets have up to four (daily or monthly, over ``<exchange>_symbols`` or
  ``<exchange>_perps``); each runs the matching ``<exchange>_load_...`` job. The asset resumes after the newest stored row, so the run costs little when
  the day is complete and fills its tail when it is not; the asset checks run with it, so
  every day is re-checked once it is final. Symbols delisted before that day or listed after
  it are left out; each asset's symbols are those of its own partition set
  (``<exchange>_perps`` for funding rates and open interest).
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from crypto_pipelines.defs.assets.catalog import CATALOG_GROUP
from crypto_pipelines.defs.jobs import CATALOG_KEYS as CATALOG_KEYS  # re-exported
from crypto_pipelines.defs.jobs import (
    exchange_load_jobs,
    load_job_name,
    markets_keys,
    markets_refresh_job,
)
from crypto_pipelines.defs.partitions import symbol_sets, symbols_partitions_name
from crypto_pipelines.defs.resources import MarketStoreResource
from crypto_pipelines.defs.run_requests import contiguous_blocks, partitions_run_request
from crypto_pipelines.defs.sensors.incremental import (
    build_series,
    partition_orders,
    series_assets,
)
from crypto_pipelines.domain.incremental import partition_date_key, partition_start
from crypto_pipelines.domain.universe import Universe
from crypto_pipelines.storage.store import MarketStore

MARKETS_SCHEDULE = "daily_markets_refresh"
RECHECK_TAG = "crypto_pipelines/recheck"
"""Tag of the re-check runs: the day re-checked (``2024-03-05``)."""


def _scheduled_time(context: dg.ScheduleEvaluationContext) -> datetime:
    moment = context.scheduled_execution_time or datetime.now(UTC)
    return moment.astimezone(UTC)


def markets_refresh_schedule(universe: Universe) -> dg.ScheduleDefinition:
    """Runs the ``markets_refresh`` job daily; the job comes into the code location with it."""
    keys = markets_keys(universe)

    @dg.schedule(
        name=MARKETS_SCHEDULE,
        cron_schedule="5 0 * * *",
        execution_timezone="UTC",
        job=markets_refresh_job(universe),
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Refreshes every exchange's markets and the {CATALOG_GROUP} once a day.",
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = _scheduled_time(context).date().isoformat()
        return dg.RunRequest(run_key=f"markets:{day}", asset_selection=keys)

    return _schedule


def recheck_requests(
    universe: Universe,
    instance: dg.DagsterInstance,
    store: MarketStore,
    day_ms: int,
    *,
    exchange: str,
    monthly: bool,
    symbols: str | None = None,
) -> list[dg.RunRequest]:
    """Run requests re-checking the partition holding ``day_ms`` of every series of the
    exchange's daily (or monthly) assets partitioned over the ``symbols`` set (None: all)."""
    config = universe.exchanges[exchange]
    day = partition_date_key(partition_start(day_ms, monthly=False))
    orders = partition_orders(instance, exchange, config)
    listings = store.listings(exchange)
    requests: list[dg.RunRequest] = []
    for asset in series_assets(exchange, config):
        if asset.monthly != monthly or symbols not in (None, asset.symbols):
            continue
        order = orders.get(asset.symbols, ())
        start = partition_start(day_ms, monthly)
        live = []
        for symbol in order:
            series = build_series(config, asset, symbol, listings.get(symbol))
            if series is not None and series.lives_in(start):
                live.append(symbol)
        date_key = partition_date_key(start)
        for block in contiguous_blocks(live, order):
            requests.append(
                partitions_run_request(
                    dg.AssetKey([exchange, asset.name]),
                    date_key,
                    date_key,
                    block,
                    run_key=f"recheck:{exchange}/{asset.name}:{day}:{block[0]}..{block[-1]}",
                    tags={RECHECK_TAG: day, "exchange": exchange},
                )
            )
    return requests


def recheck_schedule_name(exchange: str, monthly: bool, symbols: str | None = None) -> str:
    """``binance_daily_recheck`` (``binance_symbols``), ``binance_perps_monthly_recheck``."""
    which = (symbols or symbols_partitions_name(exchange)).removeprefix(f"{exchange}_")
    infix = "" if which == "symbols" else f"{which}_"
    return f"{exchange}_{infix}{'monthly' if monthly else 'daily'}_recheck"


def previous_day_recheck_schedule(
    universe: Universe,
    exchange: str,
    *,
    monthly: bool,
    symbols: str | None = None,
    jobs: Sequence[Any] | None = None,
) -> dg.ScheduleDefinition | None:
    """The re-check of the exchange's daily (or monthly) assets over one symbol set
    (``symbols``, default ``<exchange>_symbols``). A schedule runs one job and a job has one
    partitioning, so it runs that partitioning's load job (``defs.jobs``, taken from ``jobs``
    when given so the code location holds one definition of it): up to four per exchange.
    None when the exchange has no such assets."""
    symbols = symbols or symbols_partitions_name(exchange)
    wanted = load_job_name(exchange, symbols, monthly)
    job = next((j for j in (jobs or exchange_load_jobs(universe)) if j.name == wanted), None)
    if job is None:
        return None
    what = "month holding yesterday" if monthly else "yesterday's partition"

    @dg.schedule(
        name=recheck_schedule_name(exchange, monthly, symbols),
        cron_schedule="30 0 * * *",
        execution_timezone="UTC",
        job=job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Runs the {what} of every {exchange} series over {symbols} once more "
        "(fills its tail, re-runs its checks).",
        tags={"exchange": exchange},
    )
    def _schedule(
        context: dg.ScheduleEvaluationContext, market_store: MarketStoreResource
    ) -> list[dg.RunRequest] | dg.SkipReason:
        yesterday = _scheduled_time(context) - timedelta(days=1)
        day_ms = int(yesterday.timestamp() * 1000)
        requests = recheck_requests(
            universe,
            context.instance,
            market_store.store(),
            day_ms,
            exchange=exchange,
            monthly=monthly,
            symbols=symbols,
        )
        return requests or dg.SkipReason("no series lived yesterday")

    return _schedule


def daily_schedules(
    universe: Universe, jobs: Sequence[Any] | None = None
) -> list[dg.ScheduleDefinition]:
    """The markets refresh and every re-check schedule; ``jobs``: the load jobs the re-checks
    run (``defs.jobs.exchange_load_jobs``, built once by the caller that also lists them)."""
    jobs = list(jobs) if jobs is not None else exchange_load_jobs(universe)
    schedules = [markets_refresh_schedule(universe)]
    for exchange, config in universe.exchanges.items():
        for partitions in symbol_sets(exchange, config):
            for monthly in (False, True):
                schedule = previous_day_recheck_schedule(
                    universe, exchange, monthly=monthly, symbols=partitions.name, jobs=jobs
                )
                if schedule is not None:
                    schedules.append(schedule)
    return schedules
