"""Gap repair: partitions whose ``gaps`` check failed are refetched, a bounded number of
times with exponential backoff, until their gaps are filled or confirmed.

How the sensor sees failed checks: the check writes what it finds to the ``gaps`` table in the
same step that emits its evaluation (an unconfirmed gap is an ``open`` row). Dagster 1.13
offers no public way to read asset check evaluations back from the instance (only
materializations, observations and run records), so the table, which the check keeps equal to
its latest evaluation, is the channel; it also holds the attempt count, so attempts survive a
sensor reset.

Each tick requests one run per due partition (oldest first, at most ``max_runs_per_tick``),
tagged ``crypto_pipelines/refetch=true`` so the asset refetches the partition whole instead of
resuming after its newest row, with the run key ``gap-repair:<asset>:<partition>:<attempt>``
(unique, so a repeated tick never launches a run twice). The ``gaps`` check runs in the same
run: what the refetch filled becomes ``filled``, what is still missing was just asked of the
exchange and came back empty, so it becomes ``confirmed`` and is never refetched again; the
check then passes with WARN. A repair run that fails leaves its gaps open, retried after
``backoff_seconds * 2**(attempt - 1)`` up to ``max_attempts`` times; after that the failed
check stays visible in the UI for a person. Partitions with a repair run still queued or in
progress are skipped.

The cursor records the last tick and the runs requested so far (JSON), for the sensor's page.
"""

import json
import time
from datetime import UTC, date, datetime
from typing import Any

import dagster as dg

from crypto_pipelines.defs.assets.market_data import REFETCH_TAG
from crypto_pipelines.defs.checks.gaps import gap_checked_assets
from crypto_pipelines.defs.partitions import partition_window, symbol_set
from crypto_pipelines.defs.resources import MarketStoreResource
from crypto_pipelines.domain.universe import Universe
from crypto_pipelines.storage.gaps import GapStore, RepairTarget

# Tags of repair runs (besides the refetch tag): the asset key repaired, and the attempt.
GAP_REPAIR_TAG = "crypto_pipelines/gap_repair"
ATTEMPT_TAG = "crypto_pipelines/gap_repair_attempt"
PARTITION_TAG = "dagster/partition"

_UNFINISHED = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def target_asset_key(target: RepairTarget) -> dg.AssetKey:
    series = target.series
    name = series.spec.asset_name(series.timeframe_or_none)
    return dg.AssetKey([series.exchange, name])


def target_partition_key(target: RepairTarget) -> str:
    """``<date>|<symbol>``: the window's start is the date partition's start (daily or
    monthly, both keyed ``YYYY-MM-DD``)."""
    day = datetime.fromtimestamp(target.window_start / 1000, tz=UTC).strftime("%Y-%m-%d")
    return f"{day}|{target.series.symbol}"


def repair_run_key(asset_key: dg.AssetKey, partition_key: str, attempt: int) -> str:
    return f"gap-repair:{asset_key.to_user_string()}:{partition_key}:{attempt}"


def _in_flight(instance: dg.DagsterInstance) -> set[tuple[str, str]]:
    """(asset, partition) of repair runs not finished yet."""
    records = instance.get_run_records(
        dg.RunsFilter(statuses=_UNFINISHED, tags={REFETCH_TAG: "true"})
    )
    return {
        (r.dagster_run.tags.get(GAP_REPAIR_TAG, ""), r.dagster_run.tags.get(PARTITION_TAG, ""))
        for r in records
    }


def _cursor(previous: str | None, now_ms: int, requested: int) -> str:
    total = 0
    if previous:
        try:
            total = int(json.loads(previous).get("requested", 0))
        except (ValueError, AttributeError):
            total = 0
    return json.dumps({"last_tick_ms": now_ms, "requested": total + requested})


def repair_job_name(exchange: str, monthly: bool) -> str:
    return f"gap_repair_{exchange}_{'monthly' if monthly else 'daily'}"


def gap_repair_jobs(universe: Universe) -> list[Any]:
    """One job per exchange and partition cadence over the checked assets (a job needs one
    partitions definition); a repair run selects the one asset it repairs, and its checks."""
    by_job: dict[str, tuple[bool, list[dg.AssetKey]]] = {}
    for key, monthly in gap_checked_assets(universe):
        name = repair_job_name(key.path[0], monthly)
        by_job.setdefault(name, (monthly, []))[1].append(key)
    return [
        dg.define_asset_job(
            name,
            selection=dg.AssetSelection.assets(*keys),
            description="Refetches partitions whose `gaps` check failed (gap_repair_sensor).",
        )
        for name, (_monthly, keys) in sorted(by_job.items())
    ]


def gap_repair_sensor(
    universe: Universe,
    *,
    max_attempts: int = 3,
    backoff_seconds: int = 900,
    max_runs_per_tick: int = 10,
    minimum_interval_seconds: int = 120,
) -> dg.SensorDefinition:
    """The ``gap_repair_sensor`` over every asset the ``gaps`` check covers (on by default
    when the daemon runs); its jobs come with it."""
    checked = dict(gap_checked_assets(universe))
    starts = {exchange: config.start for exchange, config in universe.exchanges.items()}

    @dg.sensor(
        name="gap_repair_sensor",
        jobs=gap_repair_jobs(universe),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Refetches partitions whose `gaps` check found unconfirmed gaps (run tag "
            f"{REFETCH_TAG}=true), at most {max_attempts} times with exponential backoff from "
            f"{backoff_seconds} s; gaps still empty after a refetch become confirmed."
        ),
    )
    def _sensor(
        context: dg.SensorEvaluationContext, market_store: MarketStoreResource
    ) -> dg.SensorResult:
        now = int(time.time() * 1000)
        gaps = GapStore(market_store.store().engine)
        busy = _in_flight(context.instance)
        requests: list[dg.RunRequest] = []
        skipped = 0
        for target in gaps.due(now, max_attempts=max_attempts, backoff_ms=backoff_seconds * 1000):
            if len(requests) >= max_runs_per_tick:
                break
            asset_key = target_asset_key(target)
            partition_key = target_partition_key(target)
            if not _known(context.instance, asset_key, target, checked, starts):
                skipped += 1
                continue
            if (asset_key.to_user_string(), partition_key) in busy:
                continue
            requests.append(
                dg.RunRequest(
                    run_key=repair_run_key(asset_key, partition_key, target.attempt),
                    job_name=repair_job_name(asset_key.path[0], checked[asset_key]),
                    asset_selection=[asset_key],
                    partition_key=partition_key,
                    tags={
                        REFETCH_TAG: "true",
                        GAP_REPAIR_TAG: asset_key.to_user_string(),
                        ATTEMPT_TAG: str(target.attempt),
                    },
                )
            )
            gaps.mark_attempt(target, now)
        if skipped:
            context.log.info(f"{skipped} windows with open gaps are outside the universe")
        cursor = _cursor(context.cursor, now, len(requests))
        if not requests:
            return dg.SensorResult(
                skip_reason="no partition with gaps due for repair", cursor=cursor
            )
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return _sensor


def _known(
    instance: dg.DagsterInstance,
    asset_key: dg.AssetKey,
    target: RepairTarget,
    checked: dict[dg.AssetKey, bool],
    starts: dict[str, date],
) -> bool:
    """Whether the window is still a partition of a checked asset: gaps recorded before the
    universe changed (a symbol or timeframe dropped) are left alone."""
    series = target.series
    if asset_key not in checked:
        return False
    start = starts.get(series.exchange)
    if start is None:
        return False
    if checked[asset_key]:  # monthly partitions begin on the 1st of the start's month
        start = start.replace(day=1)
    if datetime.fromtimestamp(target.window_start / 1000, tz=UTC).date() < start:
        return False
    # A window recorded under another partitioning (daily 1m candles, before candles became
    # monthly) is no partition of the asset: a request for it would fail the whole tick.
    window = partition_window(target_partition_key(target), monthly=checked[asset_key])
    if window != (target.window_start, target.window_end):
        return False
    partitions = symbol_set(series.exchange, series.spec).name
    return instance.has_dynamic_partition(partitions, series.symbol)
