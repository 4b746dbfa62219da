"""Partitioned market-data assets, one per exchange and dataset: ``<exchange>/ohlcv_<tf>``,
``<exchange>/trades``, ``<exchange>/funding_rates``, ``<exchange>/open_interest``.

Every asset is the same body driven by the dataset's descriptor
(``domain.datasets.MarketDataset``): its partitions, the markets it exists for, its fetcher.
A backfill runs as one run per asset (``BackfillPolicy.single_run``, which is also what
``dagster asset materialize --partition-range`` needs): its partitions are grouped into
contiguous ranges per symbol and each range is loaded once through the ingestion core, which
fetches only what coverage lacks. Rows an exchange sent that break the dataset's rules are
quarantined (``rows_rejected``), not a failed materialization. Every asset that calls an
exchange sits in that exchange's concurrency pool.

Partitions are ``date x symbol`` over the symbols the dataset exists for (``<exchange>_perps``
for funding rates and open interest). Each partition's materialization carries its own figures
(``defs.partition_figures``), set with ``context.add_asset_metadata(..., partition_key=...)``:
in Dagster 1.13 that is the public way to give the partitions of one run their own metadata
(``MaterializeResult`` has no partition, and an ``AssetMaterialization`` yielded for the
asset's own key would be recorded besides the output's, doubling the events). The run's totals
are logged and recorded once, on the run's first partition.
"""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from crypto_pipelines.defs.executor import exchange_op_tags, worker_id
from crypto_pipelines.defs.metadata import (
    definition_metadata,
    partition_metadata,
    run_metadata,
    run_summary,
)
from crypto_pipelines.defs.partition_figures import PartitionTally, range_figures
from crypto_pipelines.defs.partitions import market_partitions, symbol_ranges
from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.defs.retries import retry_transient
from crypto_pipelines.defs.stream_fed import is_stream_fed
from crypto_pipelines.domain.datasets import MarketDataset
from crypto_pipelines.domain.universe import ExchangeUniverse
from crypto_pipelines.exchanges.loader import exchange_time_ms
from crypto_pipelines.exchanges.venues import get_venue
from crypto_pipelines.ingest import LoadReport, load_series

PER_PARTITION_METADATA_MAX = 1000
"""Per-partition figures are recorded for runs of at most this many partitions. Dagster 1.13
validates each ``add_asset_metadata(partition_key=...)`` against the run's whole range (two
instance queries and the range's keys built again per call), so the cost grows with the square
of the range. Measured on this machine (``date x symbol`` partitions, SQLite instance): 366
partitions 2.6 s against the 7.7 s Dagster spends recording their materializations anyway;
732 partitions 6.1 s against 10.2 s. Candles and funding rates are monthly (a year is 12
partitions per symbol), so only long ranges of daily trades or open interest come near the cap,
and those spend far longer fetching. A larger run keeps its totals on the first partition
with a note; the checks still report every partition."""

REFETCH_TAG = "crypto_pipelines/refetch"
"""A run tagged ``crypto_pipelines/refetch=true`` refetches its partitions whole instead of
only what coverage lacks: how gap repair asks the exchange for the gaps again."""


def is_refetch(tags: Mapping[str, str]) -> bool:
    return tags.get(REFETCH_TAG, "").lower() == "true"


def _description(exchange: str, spec: MarketDataset, timeframe: str | None) -> str:
    what = f"{timeframe} {spec.description}" if timeframe else spec.description
    where = f"exchange='{exchange}'" + (f", timeframe='{timeframe}'" if timeframe else "")
    markets = "" if "spot" in spec.market_types else " Partitioned over the perpetual swaps only."
    return (
        f"{what.capitalize()} of {exchange}, in table `{spec.name}` ({where}). Rows the "
        f"exchange does not have are absent, never invented; rows breaking the model are kept "
        f"in `rejected_rows`.{markets}"
    )


def market_asset(
    exchange: str, config: ExchangeUniverse, spec: MarketDataset, timeframe: str | None = None
) -> dg.AssetsDefinition:
    """The asset of ``spec`` (and ``timeframe`` for candles) on ``exchange``."""
    name = spec.asset_name(timeframe)
    monthly = spec.is_monthly(timeframe)
    extra = {"timeframe": timeframe} if timeframe else {}

    @dg.asset(
        key=[exchange, name],
        group_name=exchange,
        partitions_def=market_partitions(exchange, config.start.isoformat(), spec, timeframe),
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=exchange,
        kinds={"ccxt", "pandas", "sql"},
        deps=[dg.AssetKey([exchange, "markets"])],
        description=_description(exchange, spec, timeframe),
        metadata=definition_metadata(spec.name, exchange=exchange, **extra),
        tags={"exchange": exchange, "dataset": spec.name},
        op_tags=exchange_op_tags(exchange),
    )
    def _asset(
        context: dg.AssetExecutionContext,
        exchanges: ExchangesResource,
        market_store: MarketStoreResource,
    ) -> dg.MaterializeResult:
        tallies: list[PartitionTally] = []

        def committed() -> int:
            return sum(f.fetched for tally in tallies for f in tally.figures)

        with retry_transient(context, progress=committed):
            client = exchanges.client(exchange)
            venue = get_venue(exchange)
            store = market_store.store()
            now = exchange_time_ms(client)
            refetch = is_refetch(context.run.tags)
            keys = [str(k) for k in context.partition_keys]
            reports: list[LoadReport] = []
            metadata: dict[str, dict[str, Any]] = {}
            for span in symbol_ranges(keys, monthly=monthly):
                if not spec.has_market(span.symbol):
                    note = f"{exchange} {span.symbol}: no {spec.name} for this market type"
                    context.log.info(note)
                    metadata.update(
                        {
                            k: {"source": exchanges.source, "notes": note}
                            for k in span.partition_keys
                        }
                    )
                    continue
                series = spec.series(exchange, span.symbol, timeframe)
                tally = PartitionTally(store, span, monthly=monthly)
                tallies.append(tally)
                report = load_series(
                    client,
                    venue,
                    store,
                    series,
                    span.start_ms,
                    span.end_ms,
                    now_ms=now,
                    refetch=refetch,
                    sink=tally,
                )
                context.log.info(
                    f"{series} [{span.start_ms}, {span.end_ms}): fetched {len(report.spans)} "
                    f"uncovered span(s), {report.rows_fetched} rows, {report.rows_written} written, "
                    f"{report.rows_rejected} rejected, {report.requests} requests, "
                    f"{report.retries} retries"
                )
                reports.append(report)
                for figures in range_figures(tally, store, series, venue, span, now, report.notes):
                    metadata[figures.key] = partition_metadata(figures, spec.unit, exchanges.source)
            context.log.info(
                f"{context.asset_key.to_user_string()}: {run_summary(reports, len(keys))}"
            )
            # The run's totals once, on its first partition: on every partition they would read
            # as each partition's own (what range runs used to show).
            metadata[keys[0]] = {**metadata.get(keys[0], {}), **run_metadata(reports, len(keys))}
            if len(keys) > PER_PARTITION_METADATA_MAX:
                note = (
                    f"a run of {len(keys)} partitions records per-partition figures only up to "
                    f"{PER_PARTITION_METADATA_MAX} partitions (Dagster's cost per call grows with "
                    "the run's size); the checks still report every partition"
                )
                metadata[keys[0]]["per_partition_figures"] = note
                keys = keys[:1]
            worker = worker_id()
            for key in keys:
                context.add_asset_metadata(
                    {**metadata.get(key, {}), "worker": worker}, partition_key=key
                )
        return dg.MaterializeResult()

    return _asset


def stream_fed_asset(exchange: str, config: ExchangeUniverse, spec: MarketDataset) -> dg.AssetSpec:
    """``<exchange>/<dataset>`` where only the stream can fill it (``defs.stream_fed``): the
    same key, partitions, group and metadata as a loaded asset, but no REST body, so nothing
    offers to "materialize" a day the exchange cannot serve; ``market_stream`` reports its
    partitions as it commits their rows."""
    return dg.AssetSpec(
        key=[exchange, spec.asset_name(None)],
        group_name=exchange,
        partitions_def=market_partitions(exchange, config.start.isoformat(), spec, None),
        kinds={"ccxt", "websocket", "sql"},
        deps=[dg.AssetKey([exchange, "markets"])],
        description=(
            f"{_description(exchange, spec, None)} {exchange} serves no history of them over "
            "REST: filled by the stream only (job `market_stream`, sensor "
            "`market_stream_supervisor`), which reports each partition as it commits rows."
        ),
        metadata=definition_metadata(spec.name, exchange=exchange, fed_by="market_stream"),
        tags={"exchange": exchange, "dataset": spec.name, "fed_by": "stream"},
    )


def market_assets(
    exchange: str, config: ExchangeUniverse
) -> list[dg.AssetsDefinition | dg.AssetSpec]:
    """Every market-data asset the universe enables on ``exchange``: loaded ones, and the
    stream-fed ones where the venue keeps no REST history."""
    return [
        stream_fed_asset(exchange, config, spec)
        if is_stream_fed(exchange, spec)
        else market_asset(exchange, config, spec, tf)
        for spec, tf in config.series_datasets()
    ]
