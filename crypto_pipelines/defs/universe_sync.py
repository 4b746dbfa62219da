"""Keeping each exchange's ``<exchange>_symbols`` dynamic partitions equal to the universe.

Used by ``crypto-pipelines partitions sync`` (before the daemon runs) and by the
``universe_partitions_sensor`` (once it does), so symbols appear in the UI without a manual
step. Adding is idempotent; symbols dropped from the universe are removed from the partition
set (their stored data and materialization history stay).
"""

from dataclasses import dataclass

import dagster as dg

from crypto_pipelines.defs.partitions import symbols_partitions_name
from crypto_pipelines.domain.universe import Universe


@dataclass(frozen=True)
class SyncResult:
    exchange: str
    added: tuple[str, ...]
    removed: tuple[str, ...]


def plan_symbol_partitions(
    instance: dg.DagsterInstance, universe: Universe, *, remove: bool = True
) -> list[SyncResult]:
    """What must change for the partitions to equal the universe (nothing is changed)."""
    results = []
    for exchange, config in universe.exchanges.items():
        existing = set(instance.get_dynamic_partitions(symbols_partitions_name(exchange)))
        added = tuple(s for s in config.symbols if s not in existing)
        removed = tuple(sorted(existing - set(config.symbols))) if remove else ()
        results.append(SyncResult(exchange, added, removed))
    return results


def sync_symbol_partitions(
    instance: dg.DagsterInstance, universe: Universe, *, remove: bool = True
) -> list[SyncResult]:
    """Apply the plan directly (the CLI's path, usable without a daemon)."""
    results = plan_symbol_partitions(instance, universe, remove=remove)
    for result in results:
        name = symbols_partitions_name(result.exchange)
        if result.added:
            instance.add_dynamic_partitions(name, list(result.added))
        for symbol in result.removed:
            instance.delete_dynamic_partition(name, symbol)
    return results


def universe_partitions_sensor(universe: Universe) -> dg.SensorDefinition:
    """Registers the universe's symbols as dynamic partitions when the daemon runs, through
    the sensor's own dynamic-partition requests so every change shows in the sensor's log."""

    @dg.sensor(
        name="universe_partitions_sensor",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Keeps <exchange>_symbols dynamic partitions equal to the universe file.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
        for result in plan_symbol_partitions(context.instance, universe):
            name = symbols_partitions_name(result.exchange)
            if result.added:
                requests.append(dg.AddDynamicPartitionsRequest(name, list(result.added)))
            if result.removed:
                requests.append(dg.DeleteDynamicPartitionsRequest(name, list(result.removed)))
        if not requests:
            return dg.SkipReason("symbol partitions already match the universe")
        return dg.SensorResult(dynamic_partitions_requests=requests)

    return _sensor
