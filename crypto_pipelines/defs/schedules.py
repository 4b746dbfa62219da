"""Daily schedules (default RUNNING: on whenever the daemon runs).

- ``daily_markets_refresh`` (00:05 UTC): one run of every ``<exchange>/markets`` and the
  catalog (``crypto_pairs``, ``crypto_perps``, ``crypto_assets``), so listings, delistings and
  the volume ranking of the universe filters are at most a day old.
- ``<exchange>_daily_recheck`` and ``<exchange>_monthly_recheck`` (00:30 UTC, after the
  incremental sensors' finalization): yesterday's partition of every series of the exchange's
  daily assets (candles under 1h, trades), and the month holding yesterday of its monthly ones
  (1h+ candles, funding), is run once more: one run per asset and block of symbols, as a
  partition range. Two schedules per exchange because a schedule targets assets of one
  partitioning. The asset resumes after the newest stored row, so the run costs little when
  the day is complete and fills its tail when it is not; the asset checks run with it, so
  every day is re-checked once it is final. Symbols delisted before that day, listed after
  it, and spot symbols for funding are left out.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from crypto_pipelines.defs.assets.catalog import CATALOG_GROUP
from crypto_pipelines.defs.partitions import symbols_partitions_name
from crypto_pipelines.defs.resources import MarketStoreResource
from crypto_pipelines.defs.run_requests import contiguous_blocks, partitions_run_request
from crypto_pipelines.defs.sensors.incremental import build_series, series_assets
from crypto_pipelines.domain.incremental import partition_date_key, partition_start
from crypto_pipelines.domain.listings import listings_from_frames
from crypto_pipelines.domain.universe import Universe
from crypto_pipelines.storage.store import MarketStore

MARKETS_SCHEDULE = "daily_markets_refresh"
RECHECK_TAG = "crypto_pipelines/recheck"
"""Tag of the re-check runs: the day re-checked (``2024-03-05``)."""
CATALOG_KEYS = (
    dg.AssetKey(["crypto_pairs"]),
    dg.AssetKey(["crypto_perps"]),
    dg.AssetKey(["crypto_assets"]),
)


def _scheduled_time(context: dg.ScheduleEvaluationContext) -> datetime:
    moment = context.scheduled_execution_time or datetime.now(UTC)
    return moment.astimezone(UTC)


def markets_refresh_schedule(universe: Universe) -> dg.ScheduleDefinition:
    keys = [dg.AssetKey([exchange, "markets"]) for exchange in universe.exchanges]
    keys += CATALOG_KEYS

    @dg.schedule(
        name=MARKETS_SCHEDULE,
        cron_schedule="5 0 * * *",
        execution_timezone="UTC",
        target=keys,
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
) -> list[dg.RunRequest]:
    """Run requests re-checking the partition holding ``day_ms`` of every series of the
    exchange's daily (or monthly) assets."""
    config = universe.exchanges[exchange]
    day = partition_date_key(partition_start(day_ms, monthly=False))
    order = instance.get_dynamic_partitions(symbols_partitions_name(exchange))
    listings = listings_from_frames(
        store.read("crypto_pairs", exchange=exchange), store.read("crypto_perps", exchange=exchange)
    )
    requests: list[dg.RunRequest] = []
    for asset in series_assets(config):
        if asset.monthly != monthly:
            continue
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


def recheck_schedule_name(exchange: str, monthly: bool) -> str:
    return f"{exchange}_{'monthly' if monthly else 'daily'}_recheck"


def previous_day_recheck_schedule(
    universe: Universe, exchange: str, *, monthly: bool
) -> dg.ScheduleDefinition | None:
    """The re-check of the exchange's daily (or monthly) assets: a schedule targets assets of
    one partitioning, so each exchange has up to two (None when it has no such asset)."""
    keys = [
        dg.AssetKey([exchange, asset.name])
        for asset in series_assets(universe.exchanges[exchange])
        if asset.monthly == monthly
    ]
    if not keys:
        return None
    what = "month holding yesterday" if monthly else "yesterday's partition"

    @dg.schedule(
        name=recheck_schedule_name(exchange, monthly),
        cron_schedule="30 0 * * *",
        execution_timezone="UTC",
        target=keys,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Runs the {what} of every {exchange} series once more (fills its tail, "
        "re-runs its checks).",
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
        )
        return requests or dg.SkipReason("no series lived yesterday")

    return _schedule


def daily_schedules(universe: Universe) -> list[dg.ScheduleDefinition]:
    schedules = [markets_refresh_schedule(universe)]
    for exchange in universe.exchanges:
        for monthly in (False, True):
            schedule = previous_day_recheck_schedule(universe, exchange, monthly=monthly)
            if schedule is not None:
                schedules.append(schedule)
    return schedules
