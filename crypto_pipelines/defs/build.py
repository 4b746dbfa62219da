"""Everything the code location defines, built from the universe."""

from __future__ import annotations

import dagster as dg

from crypto_pipelines.defs.assets.catalog import catalog_assets, markets_asset
from crypto_pipelines.defs.assets.market_data import market_assets
from crypto_pipelines.defs.checks.cross_exchange import (
    cross_exchange_checks,
    cross_exchange_resource,
)
from crypto_pipelines.defs.checks.gaps import gaps_checks
from crypto_pipelines.defs.checks.schema import schema_checks
from crypto_pipelines.defs.freshness import with_freshness_policies
from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.defs.schedules import daily_schedules
from crypto_pipelines.defs.sensors.gap_repair import gap_repair_sensor
from crypto_pipelines.defs.sensors.incremental import incremental_sensors
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
1m backfill: see ``python -m benchmarks dagster_backfill``."""


def build_assets(universe: Universe) -> list[dg.AssetsDefinition]:
    assets: list[dg.AssetsDefinition] = []
    for exchange, config in universe.exchanges.items():
        assets.append(markets_asset(exchange, config))
        assets.extend(market_assets(exchange, config))
    assets.extend(catalog_assets(list(universe.exchanges)))
    return assets


def build_definitions(universe: Universe) -> dg.Definitions:
    return dg.Definitions(
        executor=EXECUTOR,
        assets=with_freshness_policies(build_assets(universe)),
        asset_checks=[
            *gaps_checks(universe),
            *schema_checks(universe),
            *cross_exchange_checks(universe),
        ],
        sensors=[universe_partitions_sensor(universe), gap_repair_sensor(universe)]
        + incremental_sensors(universe),
        schedules=daily_schedules(universe),
        resources={
            "exchanges": ExchangesResource(source=universe.source),
            # No db_url: the store resolves $CRYPTO_PIPELINES_DB_URL when a run first uses
            # it, so the database is the run's, not the one set when the code location loaded.
            "market_store": MarketStoreResource(source=universe.source),
            "cross_exchange": cross_exchange_resource(),
        },
    )
