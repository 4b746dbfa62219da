"""Freshness policies on the assembled code location: every OHLCV asset carries the
time-window policy its timeframe gives, nothing else carries one."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from crypto_pipelines.defs.build import build_assets, build_definitions
from crypto_pipelines.defs.freshness import with_freshness_policies
from crypto_pipelines.domain.freshness import freshness_windows
from crypto_pipelines_tests.defs.conftest import ReplayWorld


def _policies(specs: list[dg.AssetSpec]) -> dict[str, dg.FreshnessPolicy | None]:
    return {spec.key.to_user_string(): spec.freshness_policy for spec in specs}


def test_each_ohlcv_asset_has_its_timeframes_policy(replay_world: ReplayWorld) -> None:
    defs = build_definitions(replay_world.universe)
    policies = _policies(list(defs.resolve_all_asset_specs()))
    ohlcv = {key: p for key, p in policies.items() if "/ohlcv_" in key}
    assert len(ohlcv) == 2 * len(replay_world.universe.exchanges)  # 1m and 1h everywhere
    for key, policy in ohlcv.items():
        windows = freshness_windows(key.rsplit("_", 1)[1])
        assert policy == dg.FreshnessPolicy.time_window(
            fail_window=windows.fail, warn_window=windows.warn
        ), key
    assert policies["binance/ohlcv_1m"] == dg.FreshnessPolicy.time_window(
        fail_window=timedelta(minutes=15), warn_window=timedelta(minutes=5)
    )
    others = {key: p for key, p in policies.items() if key not in ohlcv}
    assert others and all(p is None for p in others.values())


def test_policies_leave_the_assets_otherwise_unchanged(replay_world: ReplayWorld) -> None:
    plain = build_assets(replay_world.universe)
    fresh = with_freshness_policies(plain)
    assert [a.key for a in fresh] == [a.key for a in plain]
    for before, after in zip(plain, fresh, strict=True):
        assert after.partitions_def == before.partitions_def
        assert after.backfill_policy == before.backfill_policy
        assert after.op.tags == before.op.tags  # the pool (concurrency key) included
        assert after.specs_by_key[after.key].tags == before.specs_by_key[before.key].tags
