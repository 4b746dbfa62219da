"""A small Dagster world for the ``gaps`` check and gap repair: a universe, the real assets,
checks and sensor bound to a replay exchange and a market database, a real instance, and the
steps a daemon would take (materialize, tick the sensor, launch what it requests)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from crypto_pipelines.defs.build import build_assets
from crypto_pipelines.defs.checks.gaps import gaps_checks
from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.defs.sensors.gap_repair import gap_repair_sensor
from crypto_pipelines.defs.universe_sync import sync_symbol_partitions
from crypto_pipelines.domain.gaps import Range
from crypto_pipelines.domain.universe import ExchangeUniverse, Universe

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def universe(**exchanges: ExchangeUniverse) -> Universe:
    return Universe(source="replay", exchanges=exchanges)


def series(
    symbol: str, timeframes: tuple[str, ...], start: date, trades: bool = False
) -> ExchangeUniverse:
    return ExchangeUniverse(
        symbols=(symbol,), timeframes=timeframes, start=start, trades=trades, funding=False
    )


@dataclass
class GapWorld:
    universe: Universe
    instance: dg.DagsterInstance
    defs: dg.Definitions
    sensor: dg.SensorDefinition
    resources: dict[str, Any]
    cursor: str | None = None
    run_keys: list[str] = field(default_factory=list)

    def asset(self, exchange: str, name: str) -> dg.AssetsDefinition:
        key = dg.AssetKey([exchange, name])
        return next(
            a for a in self.defs.assets or () if isinstance(a, dg.AssetsDefinition) and a.key == key
        )

    def check(self, exchange: str, name: str) -> dg.AssetChecksDefinition:
        key = dg.AssetKey([exchange, name])
        return next(
            c
            for c in self.defs.asset_checks or ()
            if isinstance(c, dg.AssetChecksDefinition) and next(iter(c.check_keys)).asset_key == key
        )

    def materialize(
        self, exchange: str, name: str, first: str, last: str, tags: Mapping[str, str] | None = None
    ) -> dg.ExecuteInProcessResult:
        """The asset and its ``gaps`` check over a partition range, in one run."""
        return dg.materialize(
            [self.asset(exchange, name), self.check(exchange, name)],
            instance=self.instance,
            resources=self.resources,
            tags={RANGE_START: first, RANGE_END: last, **(tags or {})},
        )

    def tick(self, sensor: dg.SensorDefinition | None = None) -> dg.SensorResult:
        """One sensor evaluation, as the daemon does it (the cursor carried over); another
        configuration of the sensor may stand in for this tick."""
        with dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources=self.resources
        ) as context:
            result = (sensor or self.sensor)(context)
        assert isinstance(result, dg.SensorResult)
        self.cursor = result.cursor
        self.run_keys += [r.run_key for r in result.run_requests or [] if r.run_key]
        return result

    def launch(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        """What the daemon does with a run request: the sensor's job, subset to the request's
        assets (their checks come along), with its partition and tags."""
        assert request.job_name is not None
        job = self.defs.resolve_job_def(request.job_name)
        return job.execute_in_process(
            instance=self.instance,
            partition_key=request.partition_key,
            tags=dict(request.tags),
            asset_selection=list(request.asset_selection or []),
        )


@contextmanager
def gap_world(
    the_universe: Universe, server_url: str, db_url: str, **sensor_options: Any
) -> Iterator[GapWorld]:
    resources: dict[str, Any] = {
        "exchanges": ExchangesResource(source="replay", replay_url=server_url),
        "market_store": MarketStoreResource(db_url=db_url, source="replay"),
    }
    sensor = gap_repair_sensor(the_universe, **sensor_options)
    defs = dg.Definitions(
        assets=build_assets(the_universe),
        asset_checks=gaps_checks(the_universe),
        sensors=[sensor],
        resources=resources,
    )
    with dg.instance_for_test() as instance:
        sync_symbol_partitions(instance, the_universe)
        yield GapWorld(the_universe, instance, defs, sensor, resources)


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    """The run's ``gaps`` evaluations by partition key."""
    found = {}
    for evaluation in result.get_asset_check_evaluations():
        assert evaluation.check_name == "gaps" and evaluation.partition is not None
        found[evaluation.partition] = evaluation
    return found


def ranges_of(evaluation: dg.AssetCheckEvaluation, key: str = "missing_ranges") -> list[Range]:
    value = evaluation.metadata[key].value
    assert isinstance(value, list)
    return [(int(first), int(last)) for first, last in value]


def tape_runs(path: Path, step: int) -> list[Range]:
    """Runs of missing candles between a tape's first and last candle, slot by slot."""
    ts = pd.read_csv(path)["ts"].tolist()
    runs: list[Range] = []
    for before, after in zip(ts, ts[1:], strict=False):
        if after - before > step:
            runs.append((before + step, after - step))
    return runs


def trailing_run(path: Path, step: int, end_ms: int) -> list[Range]:
    """The run from after a tape's last candle to ``end_ms`` (exclusive): a closed partition
    whose exchange answered nothing there has those candles missing too."""
    last = int(pd.read_csv(path)["ts"].iloc[-1])
    return [(last + step, end_ms - step)] if last + step < end_ms else []


def month_keys(first: str, days: int, symbol: str) -> list[str]:
    """The month partition keys (``YYYY-MM-01|symbol``) of ``days`` days from ``first``."""
    start = pd.Timestamp(first)
    months = {(start + pd.Timedelta(days=i)).strftime("%Y-%m-01") for i in range(days)}
    return [f"{month}|{symbol}" for month in sorted(months)]


def day_keys(first: str, days: int, symbol: str) -> list[str]:
    start = pd.Timestamp(first)
    return [f"{(start + pd.Timedelta(days=i)).date().isoformat()}|{symbol}" for i in range(days)]
