"""Helpers for the ``schema`` and ``cross_exchange`` check tests: the real assets and checks
of the replay universe, materialized and checked through ``dg.materialize`` on a real
instance, and the market table read and written with plain SQL (how corrupted rows get in)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from crypto_pipelines.defs.build import build_assets
from crypto_pipelines.defs.checks.cross_exchange import CrossExchangeResource, cross_exchange_checks
from crypto_pipelines.defs.checks.schema import schema_checks
from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.defs.conftest import ReplayWorld

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
PARTITION = "dagster/partition"


@dataclass
class Quality:
    """The replay world's assets and checks bound to one database and instance."""

    world: ReplayWorld
    instance: dg.DagsterInstance
    db_url: str
    max_bps: float = 50.0

    @property
    def resources(self) -> dict[str, object]:
        return {
            "exchanges": ExchangesResource(source="replay", replay_url=self.world.server.url),
            "market_store": MarketStoreResource(db_url=self.db_url, source="replay"),
            "cross_exchange": CrossExchangeResource(max_deviation_bps=self.max_bps),
        }

    def asset(self, *key: str) -> dg.AssetsDefinition:
        wanted = dg.AssetKey(list(key))
        return next(a for a in build_assets(self.world.universe) if a.key == wanted)

    def check(self, name: str, *key: str) -> dg.AssetChecksDefinition:
        wanted = dg.AssetCheckKey(dg.AssetKey(list(key)), name)
        checks = [*schema_checks(self.world.universe), *cross_exchange_checks(self.world.universe)]
        return next(c for c in checks if wanted in c.check_keys)

    def materialize(
        self,
        keys: Sequence[tuple[str, ...]],
        checks: Sequence[dg.AssetChecksDefinition],
        partitions: tuple[str, str] | str | None = None,
    ) -> dg.ExecuteInProcessResult:
        """Materialize assets with the given checks in the same run."""
        return dg.materialize(
            [*(self.asset(*key) for key in keys), *checks],
            instance=self.instance,
            resources=self.resources,
            tags=_partition_tags(partitions),
            raise_on_error=False,
        )

    def run_checks(
        self,
        checks: Sequence[dg.AssetChecksDefinition],
        partitions: tuple[str, str] | str | None = None,
    ) -> dg.ExecuteInProcessResult:
        """Execute only the checks (a check-only run, as the UI launches one)."""
        targets = {key.asset_key for check in checks for key in check.check_keys}
        return dg.materialize(
            [*(self.asset(*key.path) for key in targets), *checks],
            selection=dg.AssetSelection.checks(*checks),
            instance=self.instance,
            resources=self.resources,
            tags=_partition_tags(partitions),
            raise_on_error=False,
        )

    def sql(self, statement: str, **params: Any) -> None:
        """One statement in its own transaction (the database migrated first, as the assets
        would have done)."""
        with MarketStore.open(self.db_url) as store, store.engine.begin() as connection:
            connection.execute(sa.text(statement), params)

    def table(self, name: str) -> pd.DataFrame:
        """Every row of a table as stored (raw values), in key order."""
        with MarketStore.open(self.db_url) as store:
            return store.read(name, typed=False)

    def read(self, dataset: str, **filters: Any) -> pd.DataFrame:
        with MarketStore.open(self.db_url) as store:
            return store.read(dataset, **filters)


def _partition_tags(partitions: tuple[str, str] | str | None) -> dict[str, str]:
    if partitions is None:
        return {}
    if isinstance(partitions, str):
        return {PARTITION: partitions}
    return {RANGE_START: partitions[0], RANGE_END: partitions[1]}


def evaluations(
    result: dg.ExecuteInProcessResult, name: str, *key: str
) -> dict[str | None, dg.AssetCheckEvaluation]:
    """The run's evaluations of one check, by partition."""
    wanted = dg.AssetKey(list(key))
    return {
        e.partition: e
        for e in result.get_asset_check_evaluations()
        if e.asset_key == wanted and e.check_name == name
    }


def meta(evaluation: dg.AssetCheckEvaluation, name: str) -> Any:
    """A metadata entry's plain value."""
    return evaluation.metadata[name].value


def rows_by_ts(sample: Iterable[Mapping[str, Any]]) -> dict[int, list[str]]:
    return {int(row["ts"]): list(row["rules"]) for row in sample}
