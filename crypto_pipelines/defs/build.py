"""Everything the code location defines, built from the universe."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from crypto_pipelines.defs.assets.catalog import catalog_assets, markets_asset
from crypto_pipelines.defs.assets.market_data import market_assets
from crypto_pipelines.defs.checks.cross_exchange import (
    cross_exchange_checks,
    cross_exchange_resource,
)
from crypto_pipelines.defs.checks.gaps import gaps_checks
from crypto_pipelines.defs.checks.schema import schema_checks
from crypto_pipelines.defs.executor import executor_from_env
from crypto_pipelines.defs.freshness import with_freshness_policies
from crypto_pipelines.defs.jobs import exchange_load_jobs
from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.defs.schedules import daily_schedules
from crypto_pipelines.defs.sensors.dead_runs import dead_runs_sensor
from crypto_pipelines.defs.sensors.gap_repair import gap_repair_sensor
from crypto_pipelines.defs.sensors.incremental import incremental_sensors
from crypto_pipelines.defs.stream import stream_job, stream_supervisor
from crypto_pipelines.defs.universe_sync import universe_partitions_sensor
from crypto_pipelines.domain.universe import Universe

EXECUTOR = dg.in_process_executor
"""Runs execute their steps in the run's own process, one after another.

A run here is one asset's partition range (or a few assets of one exchange) and its checks.
Dagster's default multiprocess executor would start a fresh Python per step, each importing
Dagster, pandas, Pandera and ccxt again (2-4 s apiece on two cores), then run the checks side
by side against the same SQLite files, where they contend for the database lock. The steps
cannot usefully run in parallel anyway: every asset that calls an exchange is in that
exchange's concurrency pool (one op at a time), and different exchanges' ranges are
different runs, which do run in parallel (``max_concurrent_runs``). Measured on a one-year
1m backfill: see ``python -m benchmarks dagster_backfill``. ``CRYPTO_PIPELINES_EXECUTOR=celery``
runs the steps on Celery workers instead (``defs.executor``)."""


ACCEPTED_DAGSTER_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # ``BackfillPolicy.single_run`` on every market-data asset (beta in 1.13): a backfill is
    # one run that streams each symbol's range once instead of one run per partition, and
    # ``dagster asset materialize --partition-range`` needs it.
    (dg.BetaWarning, r"Parameter `backfill_policy` of function `asset` is currently in beta"),
    # ``partitions_def`` on the ``schema``, ``gaps`` and ``cross_exchange`` asset checks
    # (preview in 1.13): their results are kept per partition, so a failed day shows as that
    # day (``checks/results.py``).
    (
        dg.PreviewWarning,
        r"Specifying a partitions_def on an AssetCheckSpec is currently in preview",
    ),
)
"""The Dagster warnings about features used on purpose, silenced where the definitions are
built (each builds once per code-location load, so every asset and check repeated them)."""


@contextmanager
def accepted_dagster_warnings() -> Iterator[None]:
    """Silence exactly ``ACCEPTED_DAGSTER_WARNINGS`` inside the block; every other warning,
    including other Beta/Preview ones a future change brings in, still shows. Scoped (not a
    process-wide filter) so code that builds assets by other means sees them as Dagster
    emits them."""
    with warnings.catch_warnings():
        for category, message in ACCEPTED_DAGSTER_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


def build_assets(universe: Universe) -> list[dg.AssetsDefinition | dg.AssetSpec]:
    assets: list[dg.AssetsDefinition | dg.AssetSpec] = []
    for exchange, config in universe.exchanges.items():
        assets.append(markets_asset(exchange, config))
        assets.extend(market_assets(exchange, config))
    assets.extend(catalog_assets(list(universe.exchanges)))
    return assets


def build_definitions(universe: Universe) -> dg.Definitions:
    """The code location. Named jobs: the per-exchange load jobs (the re-check schedules run
    them too); ``markets_refresh`` comes with its schedule, the gap repair jobs with their
    sensor."""
    with accepted_dagster_warnings():
        return _definitions(universe)


def _definitions(universe: Universe) -> dg.Definitions:
    load_jobs = exchange_load_jobs(universe)  # one definition each, shared with the schedules
    return dg.Definitions(
        executor=executor_from_env(EXECUTOR),
        assets=with_freshness_policies(build_assets(universe)),
        asset_checks=[
            *gaps_checks(universe),
            *schema_checks(universe),
            *cross_exchange_checks(universe),
        ],
        jobs=[*load_jobs, stream_job(universe)],
        sensors=[
            universe_partitions_sensor(universe),
            gap_repair_sensor(universe),
            dead_runs_sensor(),
        ]
        + incremental_sensors(universe)
        + [stream_supervisor()],
        schedules=daily_schedules(universe, load_jobs),
        resources={
            "exchanges": ExchangesResource(source=universe.source),
            # No db_url: the store resolves $CRYPTO_PIPELINES_DB_URL when a run first uses
            # it, so the database is the run's, not the one set when the code location loaded.
            "market_store": MarketStoreResource(source=universe.source),
            "cross_exchange": cross_exchange_resource(),
        },
    )
