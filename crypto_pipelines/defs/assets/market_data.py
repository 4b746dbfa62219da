"""Partitioned market-data assets: ``<exchange>/ohlcv_<timeframe>``, ``<exchange>/trades``,
``<exchange>/funding_rates``.

A backfill runs as one run per asset (``BackfillPolicy.single_run``, which is also what
``dagster asset materialize --partition-range`` needs): its partitions are grouped into
contiguous ranges per symbol and each range is fetched once, so a year of 1m candles costs
one run that streams the whole year, not 365 runs. Every asset that calls an exchange sits in that exchange's concurrency pool, so
concurrent runs never share one exchange's rate budget beyond the pool's limit.
"""

from collections.abc import Callable, Mapping
from typing import Any

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
from crypto_pipelines.exchanges.venues import get_venue

Loader = Callable[..., LoadReport]

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
    load: Callable[[Any, Any, Any, str, int, int, int, bool], LoadReport | None],
    description: str,
    extra_metadata: dict[str, Any],
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
            report = load(client, spec, store, span.symbol, span.start_ms, span.end_ms, now, resume)
            if report is None:
                context.log.info(
                    f"{exchange} {span.symbol}: no {dataset} for this market type; nothing to load"
                )
                continue
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
        spec: Any,
        store: Any,
        symbol: str,
        start: int,
        end: int,
        now: int,
        resume: bool,
    ) -> LoadReport:
        return load_ohlcv(
            client, spec, store, symbol, timeframe, start, end, now_ms=now, resume=resume
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
    def load(
        client: Any,
        spec: Any,
        store: Any,
        symbol: str,
        start: int,
        end: int,
        now: int,
        resume: bool,
    ) -> LoadReport:
        return load_trades(client, spec, store, symbol, start, end, now_ms=now, resume=resume)

    return _market_asset(
        exchange,
        config,
        "trades",
        "trades",
        is_monthly("trades"),
        load,
        f"Public trades of {exchange} (taker side), in table `trades` (exchange='{exchange}').",
        {},
    )


def funding_rates_asset(exchange: str, config: ExchangeUniverse) -> dg.AssetsDefinition:
    def load(
        client: Any,
        spec: Any,
        store: Any,
        symbol: str,
        start: int,
        end: int,
        now: int,
        resume: bool,
    ) -> LoadReport | None:
        if parse_symbol(symbol).settle is None:
            return None
        return load_funding_rates(
            client, spec, store, symbol, start, end, now_ms=now, resume=resume
        )

    return _market_asset(
        exchange,
        config,
        "funding_rates",
        "funding_rates",
        is_monthly("funding_rates"),
        load,
        f"Funding rate history of {exchange}'s perpetual swaps, in table `funding_rates`. "
        "Spot symbols have no funding: their partitions load nothing.",
        {},
    )
