"""Keeping each exchange's dynamic symbol partitions equal to the universe:
``<exchange>_symbols`` (every market) and, where its datasets need it, ``<exchange>_perps``
(the perpetual swaps among them: funding rates, open interest), both from the same symbols,
each holding the kinds of market its datasets exist for (``defs.partitions.SymbolSet``).

Used by ``crypto-pipelines partitions sync`` (before the daemon runs) and by the
``universe_partitions_sensor`` (once it does), so symbols appear in the UI without a manual
step. Adding is idempotent; symbols dropped from the universe are removed from the partition
set (their stored data and materialization history stay).

Where the universe configures ``filters`` for an exchange, the sensor adds the markets of the
stored listing (``crypto_pairs`` / ``crypto_perps``, refreshed by ``<exchange>/markets``) that
match them, ranked by the 24-hour volumes ``<exchange>/markets`` recorded when ``top_n_by_volume``
is set: a new listing joins without editing the file. The partitions then equal the explicit
symbols plus the current selection, so a market that leaves it (delisted, out of the top N,
filters changed) is removed like a symbol dropped from the file. A listing is judged at the
exchange's clock (one ``fetch_time`` per filtered exchange per tick). The CLI, which has no
exchange at hand, only adds the explicit symbols and never removes from a filtered exchange.

Symbols added or removed through the API (``universe_changes`` in the market store) count as
if the file said so: the sensor reads them from its ``market_store`` every tick, so a change
reaches the partitions within a tick without reloading the code location (whose definitions
stay those of the file). A removed symbol is also kept out of what the filters select: the
API removal means "do not load it", whichever way it entered. The partition *sets* are still
those the file's definitions declare: an API-added perpetual swap on an exchange whose file
lists none joins ``<exchange>_symbols`` only, as no ``<exchange>_perps`` asset exists there.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import ccxt
import dagster as dg
from sqlalchemy import exc as sa_exc

from crypto_pipelines.defs.partitions import symbol_sets
from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.defs.sensors.incremental import exchange_clock_ms
from crypto_pipelines.domain.listings import (
    VOLUME_RANKING_METADATA,
    select_listings,
    volumes_from_ranking,
)
from crypto_pipelines.domain.universe import ExchangeUniverse, Universe, with_changes
from crypto_pipelines.exchanges.errors import FetchError
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines.storage.universe_changes import UniverseChange, universe_changes


@dataclass(frozen=True)
class SyncResult:
    exchange: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    partitions: str
    """The dynamic partitions set changed (``<exchange>_symbols``, ``<exchange>_perps``)."""


def plan_symbol_partitions(
    instance: dg.DagsterInstance,
    universe: Universe,
    *,
    remove: bool = True,
    selected: Mapping[str, Sequence[str]] | None = None,
    changes: Sequence[UniverseChange] = (),
) -> list[SyncResult]:
    """What must change for the partitions to equal the universe (nothing is changed).

    ``selected`` holds the symbols the filters select, per exchange; for an exchange with
    filters but no selection given, nothing is removed (its selection is unknown).
    ``changes`` (``universe_changes``) are applied to the file's symbols, and the symbols
    they remove are dropped from the selection too; the partition sets stay the file's."""
    selected = selected or {}
    effective = with_changes(universe, ((c.exchange, c.symbol, c.action) for c in changes))
    hidden = {(c.exchange, c.symbol) for c in changes if c.action == "remove"}
    results = []
    for exchange, config in universe.exchanges.items():
        chosen = (s for s in selected.get(exchange, ()) if (exchange, s) not in hidden)
        symbols = [*effective.exchanges[exchange].symbols, *chosen]
        known = config.filters is None or exchange in selected
        for partitions in symbol_sets(exchange, config):
            existing = set(instance.get_dynamic_partitions(partitions.name))
            wanted = partitions.members(symbols)
            added = tuple(s for s in wanted if s not in existing)
            removed = tuple(sorted(existing - set(wanted))) if remove and known else ()
            results.append(SyncResult(exchange, added, removed, partitions.name))
    return results


def sync_symbol_partitions(
    instance: dg.DagsterInstance,
    universe: Universe,
    *,
    remove: bool = True,
    store: MarketStore | None = None,
) -> list[SyncResult]:
    """Apply the plan directly (the CLI's path, usable without a daemon). With ``store``,
    the API's changes stored there are applied as the sensor applies them; without, the
    file alone is the universe (so a caller with no market database never opens one)."""
    changes = universe_changes(store.engine) if store is not None else []
    results = plan_symbol_partitions(instance, universe, remove=remove, changes=changes)
    for result in results:
        name = result.partitions
        if result.added:
            instance.add_dynamic_partitions(name, list(result.added))
        for symbol in result.removed:
            instance.delete_dynamic_partition(name, symbol)
    return results


def recorded_volumes(instance: dg.DagsterInstance, exchange: str) -> dict[str, float]:
    """The 24h USD volumes the latest ``<exchange>/markets`` materialization ranked."""
    event = instance.get_latest_materialization_event(dg.AssetKey([exchange, "markets"]))
    materialization = event.asset_materialization if event is not None else None
    if materialization is None:
        return {}
    value = materialization.metadata.get(VOLUME_RANKING_METADATA)
    return volumes_from_ranking(getattr(value, "value", None))


def filter_selection(
    instance: dg.DagsterInstance,
    exchange: str,
    config: ExchangeUniverse,
    store: MarketStore,
    now_ms: int,
) -> tuple[str, ...]:
    """The symbols ``config.filters`` select from the stored listing at ``now_ms``."""
    if config.filters is None:
        return ()
    listings = store.listings(exchange)
    volumes = recorded_volumes(instance, exchange) if config.filters.top_n_by_volume else None
    return select_listings(config.filters, listings.values(), now_ms, volumes)


def universe_partitions_sensor(universe: Universe) -> dg.SensorDefinition:
    """Registers the universe's symbols (explicit and selected by filters) as dynamic
    partitions when the daemon runs, through the sensor's own dynamic-partition requests so
    every change shows in the sensor's log.

    The API's stored changes are read from ``market_store`` each tick. A tick that cannot
    read them is skipped, naming why, rather than planned from the file alone: that would
    remove every symbol the API added (and bring back every one it removed) until the
    database is back."""

    @dg.sensor(
        name="universe_partitions_sensor",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Keeps the <exchange>_symbols (and <exchange>_perps: perpetual swaps "
        "only) dynamic partitions equal to the universe file with the symbols added or "
        "removed through the API, plus the stored markets its filters select.",
    )
    def _sensor(
        context: dg.SensorEvaluationContext,
        exchanges: ExchangesResource,
        market_store: MarketStoreResource,
    ) -> dg.SensorResult | dg.SkipReason:
        try:
            store = market_store.store()
            changes = universe_changes(store.engine)
        except (dg.Failure, sa_exc.SQLAlchemyError) as exc:
            note = getattr(exc, "description", None) or str(exc)
            context.log.warning(
                f"universe changes unavailable, partitions left as they are: {note}"
            )
            return dg.SkipReason(f"market store unavailable, universe changes unknown: {note}")
        selected: dict[str, tuple[str, ...]] = {}
        unreachable: list[str] = []
        for exchange, config in universe.exchanges.items():
            if config.filters is None:
                continue
            try:
                now = exchange_clock_ms(exchanges, exchange)
            except (ccxt.BaseError, FetchError) as exc:
                note = f"{exchange} clock unavailable, filters not applied: {exc}"
                context.log.warning(note)
                unreachable.append(note)
                continue
            selected[exchange] = filter_selection(context.instance, exchange, config, store, now)
        requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
        plans = plan_symbol_partitions(
            context.instance, universe, selected=selected, changes=changes
        )
        for result in plans:
            if result.added:
                requests.append(
                    dg.AddDynamicPartitionsRequest(result.partitions, list(result.added))
                )
            if result.removed:
                requests.append(
                    dg.DeleteDynamicPartitionsRequest(result.partitions, list(result.removed))
                )
        if not requests:
            # Say why nothing changed: an unreachable exchange's filters were not applied.
            return dg.SkipReason(
                "; ".join(unreachable) or "symbol partitions already match the universe"
            )
        return dg.SensorResult(dynamic_partitions_requests=requests)

    return _sensor
