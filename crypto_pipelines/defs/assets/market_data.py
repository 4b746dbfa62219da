"""Partitioned market-data assets: ``<exchange>/ohlcv_<timeframe>``, ``<exchange>/trades``,
``<exchange>/funding_rates``.

A backfill runs as one run per asset (``BackfillPolicy.single_run``, which is also what
``dagster asset materialize --partition-range`` needs): its partitions are grouped into
contiguous ranges per symbol and each range is fetched once, so a year of 1m candles costs
one run that streams the whole year, not 365 runs. Every asset that calls an exchange sits in that exchange's concurrency pool, so
concurrent runs never share one exchange's rate budget beyond the pool's limit.
"""

from collections.abc import Mapping
from typing import Any, Protocol

import dagster as dg

from crypto_pipelines.defs.metadata import definition_metadata, load_metadata
from crypto_pipelines.defs.partitions import is_monthly, market_partitions, symbol_ranges
from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.domain.symbols import parse_symbol
from crypto_pipelines.domain.universe import ExchangeUniverse
from crypto_pipelines.exchanges.ingest import (
    LoadReport,
    load_funding_rates,
    load_ohlcv,
    load_trades,
)
from crypto_pipelines.exchanges.loader import exchange_time_ms
from crypto_pipelines.exchanges.venues import VenueSpec, get_venue
from crypto_pipelines.storage.store import MarketStore


class Loader(Protocol):
    """``ingest.load_trades`` / ``load_funding_rates`` shape (ohlcv binds its timeframe)."""

    def __call__(
        self,
        client: Any,
        spec: VenueSpec,
        store: MarketStore,
        symbol: str,
        start_ms: int,
        end_ms: int,
        *,
        now_ms: int | None = None,
        resume: bool = True,
    ) -> LoadReport: ...


REFETCH_TAG = "crypto_pipelines/refetch"
"""A run tagged ``crypto_pipelines/refetch=true`` refetches its partitions whole instead of
resuming after the newest stored row: how gap repair asks the exchange for the gaps again."""


def is_refetch(tags: Mapping[str, str]) -> bool:
    return tags.get(REFETCH_TAG, "").lower() == "true"


def _market_asset(
    exchange: str,
    config: ExchangeUniverse,
    name: str,
    dataset: str,
    monthly: bool,
    load: Loader,
    description: str,
    extra_metadata: dict[str, Any],
    *,
    perpetuals_only: bool = False,
) -> dg.AssetsDefinition:
    @dg.asset(
        key=[exchange, name],
        group_name=exchange,
        partitions_def=market_partitions(exchange, config.start.isoformat(), monthly=monthly),
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=exchange,
        kinds={"ccxt", "pandas", "sql"},
        deps=[dg.AssetKey([exchange, "markets"])],
        description=description,
        metadata=definition_metadata(dataset, exchange=exchange, **extra_metadata),
        tags={"exchange": exchange, "dataset": dataset},
    )
    def _asset(
        context: dg.AssetExecutionContext,
        exchanges: ExchangesResource,
        market_store: MarketStoreResource,
    ) -> dg.MaterializeResult:
        client = exchanges.client(exchange)
        spec = get_venue(exchange)
        store = market_store.store()
        now = exchange_time_ms(client)
        resume = not is_refetch(context.run.tags)
        reports: list[LoadReport] = []
        for span in symbol_ranges(context.partition_keys, monthly=monthly):
            if perpetuals_only and parse_symbol(span.symbol).settle is None:
                context.log.info(
                    f"{exchange} {span.symbol}: no {dataset} for this market type; nothing to load"
                )
                continue
            report = load(
                client,
                spec,
                store,
                span.symbol,
                span.start_ms,
                span.end_ms,
                now_ms=now,
                resume=resume,
            )
            context.log.info(
                f"{exchange} {span.symbol} {dataset} [{span.start_ms}, {span.end_ms}): {report.rows_fetched} rows fetched, "
                f"{report.rows_written} written, {report.requests} requests, {report.retries} retries"
            )
            reports.append(report)
        return dg.MaterializeResult(metadata=load_metadata(reports, exchanges.source))

    return _asset


def ohlcv_asset(exchange: str, config: ExchangeUniverse, timeframe: str) -> dg.AssetsDefinition:
    def load(
        client: Any,
        spec: VenueSpec,
        store: MarketStore,
        symbol: str,
        start_ms: int,
        end_ms: int,
        *,
        now_ms: int | None = None,
        resume: bool = True,
    ) -> LoadReport:
        return load_ohlcv(
            client, spec, store, symbol, timeframe, start_ms, end_ms, now_ms=now_ms, resume=resume
        )

    return _market_asset(
        exchange,
        config,
        f"ohlcv_{timeframe}",
        "ohlcv",
        is_monthly("ohlcv", timeframe),
        load,
        f"{timeframe} candles of {exchange}, closed candles only, in table `ohlcv` "
        f"(exchange='{exchange}', timeframe='{timeframe}'). Candles the exchange does not have are absent.",
        {"timeframe": timeframe},
    )


def trades_asset(exchange: str, config: ExchangeUniverse) -> dg.AssetsDefinition:
    return _market_asset(
        exchange,
        config,
        "trades",
        "trades",
        is_monthly("trades"),
        load_trades,
        f"Public trades of {exchange} (taker side), in table `trades` (exchange='{exchange}').",
        {},
    )


def funding_rates_asset(exchange: str, config: ExchangeUniverse) -> dg.AssetsDefinition:
    return _market_asset(
        exchange,
        config,
        "funding_rates",
        "funding_rates",
        is_monthly("funding_rates"),
        load_funding_rates,
        f"Funding rate history of {exchange}'s perpetual swaps, in table `funding_rates`. "
        "Spot symbols have no funding: their partitions load nothing.",
        {},
        perpetuals_only=True,
    )
