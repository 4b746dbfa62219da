"""The instrument catalog: ``<exchange>/markets`` per exchange, and the cross-exchange
``crypto_assets``, ``crypto_pairs`` and ``crypto_perps`` built from them."""

from collections import Counter
from collections.abc import Sequence
from typing import Any

import dagster as dg

from crypto_pipelines.defs.executor import exchange_op_tags, worker_id
from crypto_pipelines.defs.metadata import definition_metadata
from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.defs.retries import retry_transient
from crypto_pipelines.domain.instruments import instruments_from_ccxt_markets
from crypto_pipelines.domain.listings import VOLUME_RANKING_METADATA, rank_by_volume, ranking_keep
from crypto_pipelines.domain.universe import ExchangeUniverse
from crypto_pipelines.exchanges.calls import FetchStats, iso
from crypto_pipelines.exchanges.listing import with_first_candles
from crypto_pipelines.exchanges.loader import fetch_markets
from crypto_pipelines.exchanges.tickers import fetch_usd_volumes

CATALOG_GROUP = "catalog"


def markets_asset(exchange: str, config: ExchangeUniverse) -> dg.AssetsDefinition:
    @dg.asset(
        key=[exchange, "markets"],
        group_name=exchange,
        pool=exchange,
        kinds={"ccxt", "sql"},
        description=f"{exchange}'s spot and perpetual-swap instruments (ccxt load_markets), upserted into "
        "`crypto_pairs` and `crypto_perps`. With universe filters `top_n_by_volume`, also the 24h USD "
        f"volume ranking of the markets the filters could add (metadata `{VOLUME_RANKING_METADATA}`).",
        tags={"exchange": exchange},
        op_tags=exchange_op_tags(exchange),
    )
    def _markets(
        context: dg.AssetExecutionContext,
        exchanges: ExchangesResource,
        market_store: MarketStoreResource,
    ) -> dg.MaterializeResult:
        client = exchanges.client(exchange)
        store = market_store.store()
        with retry_transient(context):
            markets = fetch_markets(client)
            instruments, probed = with_first_candles(
                client,
                instruments_from_ccxt_markets(exchange, markets),
                set(config.symbols),
                {
                    symbol: listing.listed_ms
                    for symbol, listing in store.listings(exchange).items()
                    if listing.listed_ms is not None
                },
                config.timeframes[0] if config.timeframes else "1d",
                config.start_ms,
                stats=FetchStats(),
            )
        written = store.upsert_instruments(pairs=instruments.pairs, perps=instruments.perps)
        listed = {pair.symbol for pair in instruments.pairs} | {
            perp.symbol for perp in instruments.perps
        }
        missing = [s for s in config.symbols if s not in listed]
        if missing:
            context.log.warning(f"{exchange} does not list universe symbols {missing}")
        metadata: dict[str, Any] = {
            "source": exchanges.source,
            "pairs": len(instruments.pairs),
            "perps": len(instruments.perps),
            "skipped_other_types": len(instruments.skipped),
            "rows_written": sum(written.values()),
            "universe_symbols_not_listed": dg.MetadataValue.json(missing),
            # listing dates the catalog lacks, read from each market's first candle (once)
            "listed_from_first_candle": dg.MetadataValue.json(
                {symbol: iso(ms) for symbol, ms in sorted(probed.items())}
            ),
            "worker": worker_id(),
        }
        filters = config.filters
        if filters is not None and filters.top_n_by_volume is not None:
            # Ranked here, once per listing refresh, so the universe sensor needs no exchange call.
            candidates = [
                m
                for m in markets
                if m.get("active") is not False
                and filters.matches(str(m["symbol"]), str(m["quote"]), str(m["type"]))
            ]
            volumes = fetch_usd_volumes(exchanges.client(exchange), candidates)
            metadata[VOLUME_RANKING_METADATA] = dg.MetadataValue.json(
                rank_by_volume(volumes, ranking_keep(filters))
            )
        return dg.MaterializeResult(metadata=metadata)

    return _markets


def catalog_assets(exchanges: Sequence[str]) -> list[dg.AssetsDefinition]:
    deps = [dg.AssetKey([exchange, "markets"]) for exchange in exchanges]
    built = []
    for table, what in (
        ("crypto_pairs", "spot pairs"),
        ("crypto_perps", "perpetual swaps"),
        ("crypto_assets", "currencies"),
    ):
        built.append(_catalog_asset(table, what, deps))
    return built


def _catalog_asset(table: str, what: str, deps: list[dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.asset(
        key=[table],
        group_name=CATALOG_GROUP,
        deps=deps,
        kinds={"pandas", "sql"},
        description=f"All exchanges' {what} (table `{table}`), validated against its Pandera model.",
        metadata=definition_metadata(table),
    )
    def _catalog(
        context: dg.AssetExecutionContext, market_store: MarketStoreResource
    ) -> dg.MaterializeResult:
        frame = market_store.store().read(table)
        meta: dict[str, Any] = {
            "rows": len(frame),
            "dagster/row_count": len(frame),
            "worker": worker_id(),
        }
        if "exchange" in frame.columns:
            meta["by_exchange"] = dg.MetadataValue.json(dict(Counter(frame["exchange"])))
        if "quote" in frame.columns:
            meta["by_quote"] = dg.MetadataValue.json(dict(Counter(frame["quote"]).most_common(10)))
        return dg.MaterializeResult(metadata=meta)

    return _catalog
