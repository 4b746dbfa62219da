"""Freshness policies of the OHLCV assets, from their timeframes.

Dagster 1.13's current API: a ``FreshnessPolicy.time_window`` attached to the asset (the
freshness-check factories such as ``build_last_update_freshness_checks`` are superseded by it).
The daemon evaluates it, on by default, and the UI shows each asset as fresh, WARN or FAIL
from the time since its last materialization. The windows come from
``crypto_pipelines.domain.freshness`` (1m: warn after 5 minutes, fail after 15).

What it measures: an asset's latest materialization of *any* partition. The incremental
sensor materializes the newest partition once per closed candle, so a stalled exchange, pool
or daemon turns the asset stale; a backfill of old partitions also counts as a
materialization, and one stalled symbol among several fresh ones is the ``gaps`` check's to
find, not this policy's.
"""

from collections.abc import Sequence

import dagster as dg

from crypto_pipelines.domain.freshness import freshness_windows


def ohlcv_freshness_policy(timeframe: str) -> dg.FreshnessPolicy:
    windows = freshness_windows(timeframe)
    return dg.FreshnessPolicy.time_window(fail_window=windows.fail, warn_window=windows.warn)


def with_freshness_policies(
    assets: Sequence[dg.AssetsDefinition | dg.AssetSpec],
) -> list[dg.AssetsDefinition | dg.AssetSpec]:
    """``assets`` with a freshness policy on every OHLCV asset (tag ``dataset=ohlcv``, its
    ``timeframe`` in the definition metadata); other assets (stream-fed specs included)
    unchanged."""

    def attach(spec: dg.AssetSpec) -> dg.AssetSpec:
        if spec.tags.get("dataset") != "ohlcv":
            return spec
        policy = ohlcv_freshness_policy(str(spec.metadata["timeframe"]))
        return dg.apply_freshness_policy(spec, policy)

    return list(dg.map_asset_specs(attach, assets))
