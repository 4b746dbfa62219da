"""Building the code location: quiet about the Dagster features it uses on purpose, and with
named jobs per exchange that load by hand through the same assets, checks and pools."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator

import dagster as dg
import pytest

from crypto_pipelines.defs.build import (
    ACCEPTED_DAGSTER_WARNINGS,
    build_assets,
    build_definitions,
)
from crypto_pipelines.defs.checks.gaps import gaps_checks
from crypto_pipelines.defs.checks.schema import schema_checks
from crypto_pipelines.defs.jobs import exchange_load_jobs
from crypto_pipelines.defs.universe_sync import sync_symbol_partitions
from crypto_pipelines.exchanges.routing import REPLAY_URL_ENV
from crypto_pipelines.storage.engine import DB_URL_ENV
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.defs.conftest import ReplayWorld

BETA_OR_PREVIEW = (dg.BetaWarning, dg.PreviewWarning)


def _beta_or_preview(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, BETA_OR_PREVIEW)]


def test_building_the_definitions_emits_no_beta_or_preview_warning(
    replay_world: ReplayWorld,
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        defs = build_definitions(replay_world.universe)
        defs.get_repository_def()  # what the UI and the daemon load, resolved
    assert _beta_or_preview(caught) == []


def test_without_the_filter_dagster_emits_exactly_what_it_filters(
    replay_world: ReplayWorld,
) -> None:
    """The same assets and checks built outside ``build_definitions`` warn: each accepted
    warning is really emitted (so the test above can fail), and nothing else Beta/Preview."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_assets(replay_world.universe)
        schema_checks(replay_world.universe)
        gaps_checks(replay_world.universe)
    emitted = _beta_or_preview(caught)
    for category, pattern in ACCEPTED_DAGSTER_WARNINGS:
        assert any(
            issubclass(w.category, category) and re.match(pattern, str(w.message)) for w in caught
        ), pattern
    unexpected = [
        m for m in emitted if not any(re.match(p, m) for _c, p in ACCEPTED_DAGSTER_WARNINGS)
    ]
    assert unexpected == []


def test_named_jobs_per_exchange_one_per_partitioning(replay_world: ReplayWorld) -> None:
    defs = build_definitions(replay_world.universe)
    names = set(defs.get_repository_def().job_names)
    assert {
        "markets_refresh",
        "binance_load_daily",  # trades
        "binance_load_monthly",  # candles of every timeframe (1m and 1h)
        "binance_load_perps_monthly",  # funding rates, over binance_perps
        "coinbaseexchange_load_daily",
        "coinbaseexchange_load_monthly",
    } <= names
    assert "coinbaseexchange_load_perps_monthly" not in names  # no perpetuals there
    repository = defs.get_repository_def()
    for name in names:  # every job resolves: one partitioning each (schedules' jobs too)
        assert repository.get_job(name).name == name

    assets = build_assets(replay_world.universe)
    jobs = {job.name: job for job in exchange_load_jobs(replay_world.universe)}
    daily = jobs["binance_load_daily"].selection.resolve(assets)
    assert daily == {dg.AssetKey(["binance", "trades"])}
    monthly = jobs["binance_load_monthly"].selection.resolve(assets)
    assert monthly == {dg.AssetKey(["binance", "ohlcv_1m"]), dg.AssetKey(["binance", "ohlcv_1h"])}
    coinbase_daily = jobs["coinbaseexchange_load_daily"].selection.resolve(assets)
    assert coinbase_daily == {dg.AssetKey(["coinbaseexchange", "trades"])}
    # Pools belong to the assets' ops, which the jobs run unchanged.
    for asset in assets:
        if asset.key in daily | monthly:
            assert asset.node_def.pools == {"binance"}
    candles = defs.resolve_job_def("binance_load_monthly").partitions_def
    assert isinstance(candles, dg.MultiPartitionsDefinition)
    (dates,) = [d.partitions_def for d in candles.partitions_defs if d.name == "date"]
    assert isinstance(dates, dg.MonthlyPartitionsDefinition)
    assert defs.resolve_job_def("markets_refresh").partitions_def is None
    perps = defs.resolve_job_def("binance_load_perps_monthly").partitions_def
    assert isinstance(perps, dg.MultiPartitionsDefinition)
    (symbols,) = [d.partitions_def for d in perps.partitions_defs if d.name == "symbol"]
    assert isinstance(symbols, dg.DynamicPartitionsDefinition)
    assert symbols.name == "binance_perps"


@pytest.fixture
def routed(
    replay_world: ReplayWorld, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The code location's own resources, pointed at the replay exchange and ``db_url``."""
    monkeypatch.setenv(REPLAY_URL_ENV, replay_world.server.url)
    monkeypatch.setenv(DB_URL_ENV, db_url)
    yield db_url


def test_a_perps_load_job_runs_a_funding_partition(replay_world: ReplayWorld, routed: str) -> None:
    job = build_definitions(replay_world.universe).resolve_job_def("binance_load_perps_monthly")
    with dg.instance_for_test() as instance:
        sync_symbol_partitions(instance, replay_world.universe)
        result = job.execute_in_process(instance=instance, partition_key="2024-01-01|BTC/USDT:USDT")
    assert result.success
    (materialization,) = result.asset_materializations_for_node("binance__funding_rates")
    (schema,) = result.get_asset_check_evaluations()  # the asset's checks come with it
    assert schema.check_name == "schema" and schema.passed
    assert materialization.partition == "2024-01-01|BTC/USDT:USDT"
    present = materialization.metadata["rows_present"].value
    assert isinstance(present, int) and present > 0
    with MarketStore.open(routed) as store:
        assert store.count("funding_rates", exchange="binance") == present
