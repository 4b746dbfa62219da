"""The Dagster layer paces exchange requests with the budget shared across processes."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from crypto_pipelines.defs.build import build_assets
from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.defs.universe_sync import sync_symbol_partitions
from crypto_pipelines.exchanges.budget import RATE_BUDGET_DIR_ENV, attached, budget_path
from crypto_pipelines_tests.defs.conftest import ReplayWorld


def test_the_resource_shares_the_budget_and_turns_ccxts_own_off(
    replay_world: ReplayWorld,
) -> None:
    url = replay_world.server.url
    shared = ExchangesResource(source="replay", replay_url=url).client("okx")
    assert attached(shared) is not None and shared.enableRateLimit is False
    own = ExchangesResource(source="replay", replay_url=url, rate_budget=False).client("okx")
    assert attached(own) is None and own.enableRateLimit is True
    both = ExchangesResource(source="replay", replay_url=url, ccxt_rate_limit=True).client("okx")
    assert attached(both) is not None and both.enableRateLimit is True
    margin = ExchangesResource(source="replay", replay_url=url, rate_budget_margin=0.5)
    budget = attached(margin.client("coinbaseexchange"))
    assert budget is not None and budget.limits() == {"public requests": (5, 1_000)}


@pytest.fixture
def instance(replay_world: ReplayWorld) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        sync_symbol_partitions(inst, replay_world.universe)
        yield inst


def test_a_materialization_spends_from_the_shared_budget(
    replay_world: ReplayWorld,
    instance: dg.DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(RATE_BUDGET_DIR_ENV, str(tmp_path / "budgets"))
    url = replay_world.server.url
    asset = next(
        a
        for a in build_assets(replay_world.universe)
        if a.key.to_user_string() == "binance/ohlcv_1m"
    )
    result = dg.materialize(
        [asset],
        instance=instance,
        resources={
            "exchanges": ExchangesResource(source="replay", replay_url=url),
            "market_store": MarketStoreResource(
                db_url=f"sqlite:///{tmp_path / 'market.db'}", source="replay"
            ),
        },
        partition_key="2024-01-01|BTC/USDT",
    )
    assert result.success
    path = budget_path("binance", url)
    assert path.parent == tmp_path / "budgets"
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("select name from sqlite_master where type='table'")]
        units = {t: conn.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables}
    # The month partition asks for January up to "now": klines walks the tape's candles in
    # 1,000-candle pages until a short page ends it (the tape's 3 days: 4 full pages and a
    # short one). Each page weighs 2, exchangeInfo 20 and the server time 1.
    candles = replay_world.tape.exchanges["binance"].symbols["BTC/USDT"].ohlcv["1m"]
    pages = len(candles) // 1000 + 1
    assert pages == 5
    assert units["budget_spot_request_weight_60000"] == 20 + 1 + 2 * pages
    assert units["budget_usd_m_request_weight_60000"] == 1  # fapi exchangeInfo (markets)
