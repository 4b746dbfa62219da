"""Helpers for the sensor and schedule tests: a movable replay clock, a small universe, and
running what a sensor or schedule requested the way the daemon would (same partitions, same
tags) with ``dg.materialize``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from crypto_pipelines.defs.build import build_assets
from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.defs.run_requests import RANGE_END_TAG, RANGE_START_TAG
from crypto_pipelines.domain.universe import Universe, load_universe
from crypto_pipelines.replay import ReplayClock, ReplayServer, Tape
from crypto_pipelines_tests.defs.conftest import DAY_MS, START_MS

MINUTE_MS = 60_000


def at(day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    """Epoch ms of 2024-01-<day> hh:mm:ss UTC (the synthetic tape starts on 2024-01-01)."""
    return START_MS + (day - 1) * DAY_MS + ((hour * 60 + minute) * 60 + second) * 1000


def write_universe(path: Path, exchanges: Mapping[str, str]) -> Universe:
    """A replay universe from per-exchange YAML bodies (indented under the exchange)."""
    lines = ["source: replay", "exchanges:"]
    for exchange, body in exchanges.items():
        lines.append(f"  {exchange}:")
        lines += [f"    {line}" for line in body.strip().splitlines()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return load_universe(path)


@dataclass
class Exchange:
    """A replay exchange whose clock the test moves (``speed=0``: time stands still)."""

    server: ReplayServer
    clock: ReplayClock

    def move_to(self, ms: int) -> None:
        self.clock.start_ms = ms


@contextmanager
def replay_exchange(tape: Tape, now_ms: int) -> Iterator[Exchange]:
    clock = ReplayClock(start_ms=now_ms, speed=0)
    with ReplayServer(tape, clock=clock) as server:
        yield Exchange(server, clock)


def resources(server: ReplayServer, db_url: str) -> dict[str, object]:
    return {
        "exchanges": ExchangesResource(source="replay", replay_url=server.url),
        "market_store": MarketStoreResource(db_url=db_url, source="replay"),
    }


def asset_of(universe: Universe, key: dg.AssetKey) -> dg.AssetsDefinition:
    for asset in build_assets(universe):
        if asset.key == key:
            return asset
    raise KeyError(key)


def requested_partitions(
    request: dg.RunRequest, universe: Universe, instance: dg.DagsterInstance
) -> set[tuple[str, str]]:
    """``(asset path, partition key)`` of every partition a request covers, resolved by
    Dagster's own partitions definition (a range is the product of its dimensions)."""
    assert request.asset_selection is not None and len(request.asset_selection) == 1
    key = request.asset_selection[0]
    name = "/".join(key.path)
    if request.partition_key is not None:
        return {(name, request.partition_key)}
    tags = request.tags
    partitions = asset_of(universe, key).partitions_def
    assert isinstance(partitions, dg.MultiPartitionsDefinition)
    keys = partitions.get_partition_keys_in_range(
        dg.PartitionKeyRange(tags[RANGE_START_TAG], tags[RANGE_END_TAG]),
        dynamic_partitions_store=instance,
    )
    return {(name, str(k)) for k in keys}


def all_partitions(
    requests: Sequence[dg.RunRequest], universe: Universe, instance: dg.DagsterInstance
) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for request in requests:
        out |= requested_partitions(request, universe, instance)
    return out


def execute(
    request: dg.RunRequest,
    universe: Universe,
    instance: dg.DagsterInstance,
    run_resources: Mapping[str, object],
) -> dg.ExecuteInProcessResult:
    """Run one request as the daemon would: its asset, its partition key or range tags."""
    assert request.asset_selection is not None
    assets = [asset_of(universe, key) for key in request.asset_selection]
    tags = {k: str(v) for k, v in request.tags.items()}
    if request.partition_key is not None:
        result = dg.materialize(
            assets,
            instance=instance,
            resources=dict(run_resources),
            partition_key=request.partition_key,
            tags=tags,
        )
    else:
        result = dg.materialize(assets, instance=instance, resources=dict(run_resources), tags=tags)
    assert result.success
    return result
