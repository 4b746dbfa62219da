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
"""

from collections.abc import Mapping

import dagster as dg

from crypto_pipelines.defs.metadata import definition_metadata, load_metadata
from crypto_pipelines.defs.partitions import market_partitions, symbol_ranges
from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.domain.datasets import MarketDataset
from crypto_pipelines.domain.universe import ExchangeUniverse
from crypto_pipelines.exchanges.loader import exchange_time_ms
from crypto_pipelines.exchanges.venues import get_venue
from crypto_pipelines.ingest import LoadReport, load_series

REFETCH_TAG = "crypto_pipelines/refetch"
"""A run tagged ``crypto_pipelines/refetch=true`` refetches its partitions whole instead of
only what coverage lacks: how gap repair asks the exchange for the gaps again."""


def is_refetch(tags: Mapping[str, str]) -> bool:
    return tags.get(REFETCH_TAG, "").lower() == "true"


def _description(exchange: str, spec: MarketDataset, timeframe: str | None) -> str:
    what = f"{timeframe} {spec.description}" if timeframe else spec.description
    where = f"exchange='{exchange}'" + (f", timeframe='{timeframe}'" if timeframe else "")
    markets = "" if "spot" in spec.market_types else " Spot symbols have none: they load nothing."
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
        partitions_def=market_partitions(exchange, config.start.isoformat(), monthly=monthly),
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=exchange,
        kinds={"ccxt", "pandas", "sql"},
        deps=[dg.AssetKey([exchange, "markets"])],
        description=_description(exchange, spec, timeframe),
        metadata=definition_metadata(spec.name, exchange=exchange, **extra),
        tags={"exchange": exchange, "dataset": spec.name},
    )
    def _asset(
        context: dg.AssetExecutionContext,
        exchanges: ExchangesResource,
        market_store: MarketStoreResource,
    ) -> dg.MaterializeResult:
        client = exchanges.client(exchange)
        venue = get_venue(exchange)
        store = market_store.store()
        now = exchange_time_ms(client)
        refetch = is_refetch(context.run.tags)
        reports: list[LoadReport] = []
        for span in symbol_ranges(context.partition_keys, monthly=monthly):
            if not spec.has_market(span.symbol):
                context.log.info(f"{exchange} {span.symbol}: no {spec.name} for this market type")
                continue
            series = spec.series(exchange, span.symbol, timeframe)
            report = load_series(
                client,
                venue,
                store,
                series,
                span.start_ms,
                span.end_ms,
                now_ms=now,
                refetch=refetch,
            )
            context.log.info(
                f"{series} [{span.start_ms}, {span.end_ms}): fetched {len(report.spans)} "
                f"uncovered span(s), {report.rows_fetched} rows, {report.rows_written} written, "
                f"{report.rows_rejected} rejected, {report.requests} requests, "
                f"{report.retries} retries"
            )
            reports.append(report)
        return dg.MaterializeResult(metadata=load_metadata(reports, exchanges.source))

    return _asset


def market_assets(exchange: str, config: ExchangeUniverse) -> list[dg.AssetsDefinition]:
    """Every market-data asset the universe enables on ``exchange``."""
    return [market_asset(exchange, config, spec, tf) for spec, tf in config.series_datasets()]
