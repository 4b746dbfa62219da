"""Named jobs for loading by hand, so the UI's Jobs page lists what one would launch.

- ``<exchange>_load_<daily|monthly>``: every market-data asset of the exchange partitioned by
  that cadence over ``<exchange>_symbols`` (candles under 1h and trades daily; 1h+ candles
  monthly); ``<exchange>_load_perps_<daily|monthly>``: those over ``<exchange>_perps`` (open
  interest daily, funding rates monthly). A Dagster job has one partitions definition, so an
  exchange's market data is up to four jobs, one per partitioning; each job's partitions tab
  launches a backfill of all its assets at once (one run per asset range, as the assets'
  ``BackfillPolicy.single_run`` says).
- ``markets_refresh``: every ``<exchange>/markets`` and the catalog (what the
  ``daily_markets_refresh`` schedule runs).

The assets' checks come with them, and every op stays in its exchange's concurrency pool
(pools belong to the assets, not the jobs).
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from crypto_pipelines.defs.assets.catalog import CATALOG_GROUP
from crypto_pipelines.defs.partitions import symbol_set
from crypto_pipelines.defs.stream_fed import rest_series_datasets
from crypto_pipelines.domain.universe import Universe

MARKETS_JOB = "markets_refresh"
CATALOG_KEYS = (
    dg.AssetKey(["crypto_pairs"]),
    dg.AssetKey(["crypto_perps"]),
    dg.AssetKey(["crypto_assets"]),
)


def load_job_name(exchange: str, partitions: str, monthly: bool) -> str:
    """``binance_load_daily`` (``binance_symbols``), ``binance_load_perps_monthly``."""
    which = partitions.removeprefix(f"{exchange}_")
    infix = "" if which == "symbols" else f"{which}_"
    return f"{exchange}_load_{infix}{'monthly' if monthly else 'daily'}"


def exchange_load_jobs(universe: Universe) -> list[Any]:
    """The load jobs of every exchange: one per partitioning of its market-data assets."""
    jobs = []
    for exchange, config in universe.exchanges.items():
        by_job: dict[str, list[dg.AssetKey]] = {}
        for spec, timeframe in rest_series_datasets(exchange, config):
            partitions = symbol_set(exchange, spec).name
            name = load_job_name(exchange, partitions, spec.is_monthly(timeframe))
            by_job.setdefault(name, []).append(dg.AssetKey([exchange, spec.asset_name(timeframe)]))
        for name, keys in sorted(by_job.items()):
            assets = ", ".join(key.path[-1] for key in keys)
            jobs.append(
                dg.define_asset_job(
                    name,
                    selection=dg.AssetSelection.assets(*keys),
                    description=f"Loads {exchange}'s {assets} for the partitions you pick "
                    "(with their checks); a range is one run per asset.",
                    tags={"exchange": exchange},
                )
            )
    return jobs


def markets_keys(universe: Universe) -> list[dg.AssetKey]:
    return [dg.AssetKey([exchange, "markets"]) for exchange in universe.exchanges] + list(
        CATALOG_KEYS
    )


def markets_refresh_job(universe: Universe) -> Any:
    """Every exchange's listing and the instrument catalog, in one run."""
    return dg.define_asset_job(
        MARKETS_JOB,
        selection=dg.AssetSelection.assets(*markets_keys(universe)),
        description=f"Refreshes every exchange's markets and the {CATALOG_GROUP}.",
    )


def load_jobs(universe: Universe) -> list[Any]:
    """The named jobs of the code location (gap repair's come with its sensor)."""
    return [markets_refresh_job(universe), *exchange_load_jobs(universe)]
