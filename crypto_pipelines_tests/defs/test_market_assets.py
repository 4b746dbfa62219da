"""Materializing real partitions against the replay exchange, into real SQLite and
PostgreSQL databases, through Dagster's own APIs."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pandas as pd
import pytest

from crypto_pipelines.defs.build import build_assets
from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.defs.universe_sync import sync_symbol_partitions
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.defs.conftest import DAY_MS, START_MS, SYMBOLS, ReplayWorld


@pytest.fixture
def instance(replay_world: ReplayWorld) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        sync_symbol_partitions(inst, replay_world.universe)
        yield inst


def _resources(world: ReplayWorld, db_url: str) -> dict[str, object]:
    return {
        "exchanges": ExchangesResource(source="replay", replay_url=world.server.url),
        "market_store": MarketStoreResource(db_url=db_url, source="replay"),
    }


def _asset(world: ReplayWorld, *key: str) -> dg.AssetsDefinition:
    for asset in build_assets(world.universe):
        if asset.key == dg.AssetKey(list(key)):
            return asset
    raise KeyError(key)


def _materialize(
    world: ReplayWorld,
    instance: dg.DagsterInstance,
    db_url: str,
    key: tuple[str, ...],
    first: str,
    last: str,
) -> dg.ExecuteInProcessResult:
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    if first == last:
        return dg.materialize(
            [_asset(world, *key)],
            instance=instance,
            resources=_resources(world, db_url),
            partition_key=first,
        )
    return dg.materialize(
        [_asset(world, *key)], instance=instance, resources=_resources(world, db_url), tags=tags
    )


def _tape_candles(
    world: ReplayWorld, exchange: str, symbol: str, timeframe: str, start: int, end: int
) -> pd.DataFrame:
    series = world.tape.exchanges[exchange].symbols[symbol].ohlcv[timeframe]
    rows = series.between(start, end - 1, 10**9)
    return pd.DataFrame(
        {
            "ts": [c.ts for c in rows],
            **{
                k: [float(getattr(c, k)) for c in rows]
                for k in ("open", "high", "low", "close", "volume")
            },
        }
    )


@pytest.mark.parametrize("exchange", sorted(SYMBOLS))
def test_ohlcv_partitions_equal_the_tape_and_rerun_changes_nothing(
    replay_world: ReplayWorld, instance: dg.DagsterInstance, db_url: str, exchange: str
) -> None:
    symbol = SYMBOLS[exchange][0]
    result = _materialize(
        replay_world,
        instance,
        db_url,
        (exchange, "ohlcv_1m"),
        f"2024-01-01|{symbol}",
        f"2024-01-03|{symbol}",
    )
    assert result.success
    with MarketStore.open(db_url) as store:
        stored = store.read("ohlcv", exchange=exchange, symbol=symbol, timeframe="1m")
    expected = _tape_candles(replay_world, exchange, symbol, "1m", START_MS, START_MS + 3 * DAY_MS)
    assert len(stored) == len(expected) > 3 * 1440 * 0.9
    assert len(expected) < 3 * 1440, (
        "the synthetic tape has missing candles; they must stay missing"
    )
    pd.testing.assert_frame_equal(
        stored[list(expected.columns)].reset_index(drop=True), expected, check_dtype=False
    )

    materializations = result.asset_materializations_for_node(f"{exchange}__ohlcv_1m")
    assert len(materializations) == 3  # one per daily partition, from one run
    meta = materializations[0].metadata
    assert meta["source"].value == "replay"
    assert meta["candles_present"].value == len(expected)
    assert meta["candles_expected"].value == 3 * 1440
    assert meta["exchange_requests"].value >= 1

    again = _materialize(
        replay_world,
        instance,
        db_url,
        (exchange, "ohlcv_1m"),
        f"2024-01-01|{symbol}",
        f"2024-01-03|{symbol}",
    )
    assert (
        again.asset_materializations_for_node(f"{exchange}__ohlcv_1m")[0]
        .metadata["rows_written"]
        .value
        == 0
    )
    with MarketStore.open(db_url) as store:
        assert store.count("ohlcv", exchange=exchange, symbol=symbol, timeframe="1m") == len(
            expected
        )


def test_monthly_hourly_candles_and_funding(
    replay_world: ReplayWorld, instance: dg.DagsterInstance, db_url: str
) -> None:
    perp = "BTC/USDT:USDT"
    assert _materialize(
        replay_world,
        instance,
        db_url,
        ("binance", "ohlcv_1h"),
        f"2024-01-01|{perp}",
        f"2024-01-01|{perp}",
    ).success
    assert _materialize(
        replay_world,
        instance,
        db_url,
        ("binance", "funding_rates"),
        f"2024-01-01|{perp}",
        f"2024-01-01|{perp}",
    ).success
    funding = replay_world.tape.exchanges["binance"].symbols[perp].funding
    assert funding is not None
    with MarketStore.open(db_url) as store:
        rates = store.read("funding_rates", exchange="binance", symbol=perp)
        hourly = store.count("ohlcv", exchange="binance", symbol=perp, timeframe="1h")
    assert rates["ts"].tolist() == funding.file.ts.tolist()
    assert rates["rate"].tolist() == [float(r.rate) for r in funding.rows(0, len(funding))]
    assert hourly == len(replay_world.tape.exchanges["binance"].symbols[perp].ohlcv["1h"])


def test_trades_partition(
    replay_world: ReplayWorld, instance: dg.DagsterInstance, db_url: str
) -> None:
    assert _materialize(
        replay_world,
        instance,
        db_url,
        ("binance", "trades"),
        "2024-01-02|BTC/USDT",
        "2024-01-02|BTC/USDT",
    ).success
    trades = replay_world.tape.exchanges["binance"].symbols["BTC/USDT"].trades
    assert trades is not None
    expected = trades.between(START_MS + DAY_MS, START_MS + 2 * DAY_MS - 1, 10**9)
    with MarketStore.open(db_url) as store:
        stored = store.read("trades", exchange="binance", symbol="BTC/USDT")
    assert stored["trade_id"].tolist() == [t.id for t in expected]
    assert stored["side"].tolist() == [t.side for t in expected]


def test_markets_and_catalog(
    replay_world: ReplayWorld, instance: dg.DagsterInstance, db_url: str
) -> None:
    assets = [
        a
        for a in build_assets(replay_world.universe)
        if a.key.path[-1] in ("markets", "crypto_pairs", "crypto_perps", "crypto_assets")
    ]
    result = dg.materialize(assets, instance=instance, resources=_resources(replay_world, db_url))
    assert result.success
    with MarketStore.open(db_url) as store:
        pairs = store.read("crypto_pairs")
        perps = store.read("crypto_perps")
        codes = set(store.read("crypto_assets")["code"])
    assert {("binance", "BTC/USDT"), ("coinbaseexchange", "BTC/USD")} <= set(
        zip(pairs["exchange"], pairs["symbol"], strict=True)
    )
    assert set(perps["exchange"]) == {"binance", "okx", "bybit"}
    assert {"BTC", "USDT", "USD"} <= codes
