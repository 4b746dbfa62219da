"""Quarantine through Dagster: an exchange page with invalid rows among valid ones, for
candles, trades, funding and open interest, served by the replay exchange. The valid rows
are stored exactly, the invalid ones kept in ``rejected_rows`` with their rules, the
materialization succeeds with ``rows_rejected``, the partition's ``schema`` check fails
naming each row, and a corrected refetch resolves them. For candles, the rejected candle
counts as missing for ``gaps``; an exchange that keeps sending it invalid leaves a confirmed
gap whose reason names the rule."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from crypto_pipelines.defs.assets.market_data import REFETCH_TAG
from crypto_pipelines.defs.build import build_assets, build_definitions
from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.defs.universe_sync import sync_symbol_partitions
from crypto_pipelines.domain.universe import Universe, load_universe
from crypto_pipelines.replay import ReplayClock, ReplayServer
from crypto_pipelines.replay.tape.writer import (
    write_funding,
    write_ohlcv,
    write_open_interest,
    write_trades,
)
from crypto_pipelines.storage.gaps import GapStore
from crypto_pipelines.storage.rejections import rejections
from crypto_pipelines.storage.store import MarketStore

T0 = 1_706_659_200_000  # 2024-01-31: the tape's two days straddle a month boundary
M = 60_000
DAY = 1440 * M
JANUARY, FEBRUARY = "2024-01-01", "2024-02-01"  # the candles' (and funding's) months
DAY_1 = "2024-01-31"  # trades' and open interest's first day
SPOT, PERP = "BTC/USDT", "BTC/USDT:USDT"
BAD_CANDLES = {100: "high", 200: "volume"}  # minute -> what is wrong with it


def _tape(root: Path, *, bad: bool) -> Path:
    candles = []
    for i in range(2 * 1440):
        high, volume = "101.0", "2.5"
        if bad and BAD_CANDLES.get(i) == "high":
            high = "98.0"  # below the low
        if bad and BAD_CANDLES.get(i) == "volume":
            volume = "-1.0"
        candles.append((T0 + i * M, "100.0", high, "99.0", "100.5", volume))
    write_ohlcv(root, "binance", SPOT, "1m", candles)
    write_ohlcv(root, "binance", PERP, "1m", candles)
    trades = [
        (T0 + i * 1000, 1000 + i, "buy", "100.5", "-0.5" if bad and i == 7 else "0.5")
        for i in range(20)
    ]
    write_trades(root, "binance", SPOT, trades)
    funding = [(T0 + k * 8 * 3_600_000, "5.0" if bad and k == 2 else "0.0001") for k in range(6)]
    write_funding(root, "binance", PERP, funding)
    interest = [
        (T0 + k * 5 * M, "-3.0" if bad and k == 4 else "1500.0", "150000000.0")
        for k in range(2 * 288)
    ]
    write_open_interest(root, "binance", PERP, interest)
    return root


@dataclass
class World:
    bad: ReplayServer
    good: ReplayServer
    universe: Universe


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    # "Now" is the tape's end: every candle on it is closed, none is due after it.
    clock = ReplayClock(start_ms=T0 + 2 * DAY, speed=0)
    path = tmp_path_factory.mktemp("universe") / "universe.yaml"
    path.write_text(
        "source: replay\nexchanges:\n  binance:\n"
        f"    symbols: [{SPOT}, {PERP}]\n    timeframes: [1m]\n    start: 2024-01-01\n"
        "    trades: true\n    funding: true\n    open_interest: true\n"
    )
    bad = _tape(tmp_path_factory.mktemp("bad"), bad=True)
    good = _tape(tmp_path_factory.mktemp("good"), bad=False)
    with ReplayServer(bad, clock=clock) as b, ReplayServer(good, clock=clock) as g:
        yield World(b, g, load_universe(path))


def _run(
    world: World,
    instance: dg.DagsterInstance,
    db_url: str,
    name: str,
    partition: str,
    *,
    server: ReplayServer,
    refetch: bool = False,
) -> dg.ExecuteInProcessResult:
    [asset] = [a for a in build_assets(world.universe) if a.key.path == ["binance", name]]
    checks = [
        c
        for c in build_definitions(world.universe).asset_checks or []
        if isinstance(c, dg.AssetChecksDefinition)
        and any(k.asset_key == asset.key for k in c.check_keys)
    ]
    return dg.materialize(
        [asset, *checks],
        instance=instance,
        resources={
            "exchanges": ExchangesResource(source="replay", replay_url=server.url),
            "market_store": MarketStoreResource(db_url=db_url, source="replay"),
        },
        partition_key=partition,
        tags={REFETCH_TAG: "true"} if refetch else None,
        raise_on_error=False,
    )


def _evaluation(result: dg.ExecuteInProcessResult, check: str) -> dg.AssetCheckEvaluation:
    [found] = [e for e in result.get_asset_check_evaluations() if e.check_name == check]
    return found


CASES = [
    # asset, partition, dataset, symbol, timeframe, rejected ts -> rules
    (
        "ohlcv_1m",
        f"{JANUARY}|{SPOT}",
        "ohlcv",
        SPOT,
        "1m",
        {T0 + 100 * M: ("high_ge_open_close",), T0 + 200 * M: ("volume_non_negative",)},
    ),
    ("trades", f"{DAY_1}|{SPOT}", "trades", SPOT, "", {T0 + 7000: ("amount_positive",)}),
    (
        "funding_rates",
        f"{JANUARY}|{PERP}",
        "funding_rates",
        PERP,
        "",
        {T0 + 16 * 3_600_000: ("rate_bounded",)},
    ),
    (
        "open_interest",
        f"{DAY_1}|{PERP}",
        "open_interest",
        PERP,
        "",
        {T0 + 20 * M: ("open_interest_non_negative",)},
    ),
]


@pytest.mark.parametrize(("name", "partition", "dataset", "symbol", "timeframe", "bad"), CASES)
def test_invalid_rows_quarantined_checked_and_resolved(
    world: World,
    db_url: str,
    name: str,
    partition: str,
    dataset: str,
    symbol: str,
    timeframe: str,
    bad: dict[int, tuple[str, ...]],
) -> None:
    with dg.instance_for_test() as instance:
        sync_symbol_partitions(instance, world.universe)
        first = _run(world, instance, db_url, name, partition, server=world.bad)
        [materialization] = first.asset_materializations_for_node(f"binance__{name}")
        schema = _evaluation(first, "schema")
        with MarketStore.open(db_url) as store:
            stored = store.read(dataset, exchange="binance", symbol=symbol)
            quarantined = rejections(store.engine, dataset=dataset)
        fixed = _run(world, instance, db_url, name, partition, server=world.good, refetch=True)
        with MarketStore.open(db_url) as store:
            left = rejections(store.engine, dataset=dataset)
            resolved = rejections(store.engine, dataset=dataset, open_only=False)
            after = store.read(dataset, exchange="binance", symbol=symbol)

    assert materialization.metadata["rows_rejected"].value == len(bad)
    assert {r.ts: r.rules for r in quarantined} == bad
    assert all(r.series.timeframe == timeframe and r.source == "rest" for r in quarantined)
    assert not set(bad) & set(stored["ts"])  # the valid rows only ...
    assert len(stored) + len(bad) == len(after)  # ... and every one of them
    assert not schema.passed and schema.severity == dg.AssetCheckSeverity.ERROR
    assert schema.metadata["rows_rejected"].value == len(bad)
    for ts, rules in bad.items():
        assert str(ts) in (schema.description or "") and rules[0] in (schema.description or "")
    assert _evaluation(fixed, "schema").passed
    assert (
        left == []
        and all(r.resolved_at is not None for r in resolved)
        and len(resolved) == len(bad)
    )


def test_a_rejected_candle_is_a_gap_and_stays_a_confirmed_one_with_its_reason(
    world: World, db_url: str
) -> None:
    partition = f"{FEBRUARY}|{SPOT}"  # the bad tape's February has valid candles only ...
    with dg.instance_for_test() as instance:
        sync_symbol_partitions(instance, world.universe)
        first = _run(world, instance, db_url, "ohlcv_1m", f"{JANUARY}|{SPOT}", server=world.bad)
        gaps = _evaluation(first, "gaps")
        again = _run(
            world,
            instance,
            db_url,
            "ohlcv_1m",
            f"{JANUARY}|{SPOT}",
            server=world.bad,
            refetch=True,
        )
        confirmed = _evaluation(again, "gaps")
        with MarketStore.open(db_url) as store:
            records = GapStore(store.engine).records(status="confirmed")
        other = _run(world, instance, db_url, "ohlcv_1m", partition, server=world.bad)
    assert not gaps.passed
    assert gaps.metadata["missing_ranges"].value == [[T0 + 100 * M] * 2, [T0 + 200 * M] * 2]
    assert confirmed.passed and confirmed.severity == dg.AssetCheckSeverity.WARN
    assert [(r.start, r.end) for r in records] == [(T0 + 100 * M,) * 2, (T0 + 200 * M,) * 2]
    assert "high_ge_open_close" in (records[0].reason or "")
    assert "volume_non_negative" in (records[1].reason or "")
    assert _evaluation(other, "gaps").passed and _evaluation(other, "schema").passed
    assert _evaluation(other, "gaps").metadata["present_candles"].value == 1440  # Feb 1, whole
