"""With ``CRYPTO_PIPELINES_REDIS_URL`` set, the Dagster layer spends from the budget kept in
Redis (``exchanges.budget_redis``), per exchange and egress id: the real Redis at
``CRYPTO_PIPELINES_TEST_REDIS_URL`` (skipped when unreachable) and a real materialization
against the replay exchange."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import redis

from crypto_pipelines.defs.build import build_assets
from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.defs.universe_sync import sync_symbol_partitions
from crypto_pipelines.domain.redis_url import REDIS_URL_ENV
from crypto_pipelines.exchanges.budget import attached
from crypto_pipelines.exchanges.budget_redis import EGRESS_ID_ENV, KEY_PREFIX
from crypto_pipelines_tests.defs.conftest import ReplayWorld

REDIS_URL = os.environ.get("CRYPTO_PIPELINES_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    yield client
    client.close()


@pytest.fixture
def egress(redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The environment of a deployment sharing its budgets in Redis, with an egress id of
    this test's own; its keys are deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv(REDIS_URL_ENV, REDIS_URL)
    monkeypatch.setenv(EGRESS_ID_ENV, name)
    yield name
    keys = list(redis_client.scan_iter(match=f"{KEY_PREFIX}:{name}*", count=1000))
    if keys:
        redis_client.delete(*keys)


def test_the_resource_takes_the_budget_from_redis_with_its_margin(
    replay_world: ReplayWorld, egress: str
) -> None:
    url = replay_world.server.url
    resource = ExchangesResource(source="replay", replay_url=url, rate_budget_margin=0.5)
    budget = attached(resource.client("coinbaseexchange"))
    assert budget is not None and budget.path is None
    assert budget.limits() == {"public requests": (5, 1_000)}
    assert f"{KEY_PREFIX}:{egress}:coinbaseexchange:replay:" in repr(budget)


def test_a_materialization_spends_from_the_redis_budget(
    replay_world: ReplayWorld, egress: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    url = replay_world.server.url
    asset = next(
        a
        for a in build_assets(replay_world.universe)
        if a.key.to_user_string() == "binance/ohlcv_1m"
    )
    with dg.instance_for_test() as instance:
        sync_symbol_partitions(instance, replay_world.universe)
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
    where = f"{KEY_PREFIX}:{egress}:binance:replay:{url.split('://', 1)[1]}"
    # as in the SQLite budget (test_rate_budget): exchangeInfo 20, the server time 1, five
    # klines pages of weight 2; one entry per unit, stamped within the last minute
    assert redis_client.zcard(f"{where}:spot_request_weight:60000") == 20 + 1 + 2 * 5
    assert redis_client.zcard(f"{where}:usd_m_request_weight:60000") == 1
