"""Materializing real partitions against the replay exchange, into real SQLite and
PostgreSQL databases, through Dagster's own APIs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from crypto_pipelines.defs.build import build_assets
from crypto_pipelines.defs.partitions import perps_partitions_name, symbols_partitions_name
from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.defs.universe_sync import sync_symbol_partitions
from crypto_pipelines.domain.universe import load_universe
from crypto_pipelines.replay import ReplayClock, ReplayServer, Tape
from crypto_pipelines.replay.synth import SynthSpec, write_synthetic_tape
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.defs.conftest import DAY_MS, DAYS, START_MS, SYMBOLS, ReplayWorld

NOW_MS = START_MS + (DAYS + 1) * DAY_MS
"""The replay world's pinned "now" (``conftest.replay_world``): one day after its tape."""
FEBRUARY_MS = int(datetime(2024, 2, 1, tzinfo=UTC).timestamp() * 1000)
EDGE_START = datetime(2024, 1, 30, tzinfo=UTC)
EDGE_START_MS = int(EDGE_START.timestamp() * 1000)
EDGE_DAYS = 4
"""The month-edge tape: 2024-01-30 to 2024-02-02, two days in each of two months."""


@pytest.fixture
def instance(replay_world: ReplayWorld) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        sync_symbol_partitions(inst, replay_world.universe)
        yield inst


@pytest.fixture(scope="module")
def month_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplayWorld]:
    """Binance's two markets on a 1m tape straddling the end of January, "now" pinned at the
    tape's end: two month partitions per symbol, each holding two days of the tape."""
    root = tmp_path_factory.mktemp("month-edge")
    symbols = SYMBOLS["binance"]
    write_synthetic_tape(
        root,
        SynthSpec(
            exchanges=("binance",),
            symbols={"binance": symbols},
            timeframes=("1m",),
            start=EDGE_START,
            days=EDGE_DAYS,
            seed=11,
            trades=False,
            books=False,
            funding=False,
            open_interest=False,
        ),
    )
    path = tmp_path_factory.mktemp("month-edge-universe") / "universe.yaml"
    path.write_text(
        "source: replay\nexchanges:\n  binance:\n"
        f"    symbols: [{', '.join(symbols)}]\n    timeframes: [1m]\n    start: 2024-01-30\n"
        "    funding: false\n"
    )
    clock = ReplayClock(start_ms=EDGE_START_MS + EDGE_DAYS * DAY_MS, speed=0)
    tape = Tape.load(root)
    try:
        with ReplayServer(tape, clock=clock) as server:
            yield ReplayWorld(tape, server, load_universe(path), path)
    finally:
        tape.close()


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


def _value(materialization: dg.AssetMaterialization, key: str) -> Any:
    return materialization.metadata[key].value


def _run_totals(materializations: Sequence[dg.AssetMaterialization]) -> dg.AssetMaterialization:
    """The one materialization of a run that carries its totals (its first partition)."""
    (found,) = [m for m in materializations if "run_partitions" in m.metadata]
    return found


@pytest.mark.parametrize("exchange", sorted(SYMBOLS))
def test_ohlcv_partitions_equal_the_tape_and_rerun_changes_nothing(
    replay_world: ReplayWorld, instance: dg.DagsterInstance, db_url: str, exchange: str
) -> None:
    symbol = SYMBOLS[exchange][0]
    month = f"2024-01-01|{symbol}"  # 1m candles are monthly: the tape's 3 days are in it
    result = _materialize(replay_world, instance, db_url, (exchange, "ohlcv_1m"), month, month)
    assert result.success
    with MarketStore.open(db_url) as store:
        stored = store.read("ohlcv", exchange=exchange, symbol=symbol, timeframe="1m")
    expected = _tape_candles(replay_world, exchange, symbol, "1m", START_MS, START_MS + 3 * DAY_MS)
    assert len(stored) == len(expected) > 3 * 1440 * 0.9
    assert len(expected) < 3 * 1440, (
        "the synthetic tape has missing candles; they must stay missing"
    )
    assert len(expected) == len(replay_world.tape.exchanges[exchange].symbols[symbol].ohlcv["1m"])
    pd.testing.assert_frame_equal(
        stored[list(expected.columns)].reset_index(drop=True), expected, check_dtype=False
    )

    materializations = result.asset_materializations_for_node(f"{exchange}__ohlcv_1m")
    assert [str(m.partition) for m in materializations] == [month]  # one event for the month
    (materialization,) = materializations
    assert _value(materialization, "source") == "replay"
    assert _value(materialization, "candles_present") == len(expected)
    # The open month is expected up to the last candle closed at the replay's "now": the
    # tape's 3 days and the day after them, which the exchange has no candles for.
    assert _value(materialization, "candles_expected") == (NOW_MS - START_MS) // 60_000 == 4 * 1440
    assert _value(materialization, "candles_missing") == 4 * 1440 - len(expected)
    assert _value(_run_totals(materializations), "exchange_requests") >= 1

    again = _materialize(replay_world, instance, db_url, (exchange, "ohlcv_1m"), month, month)
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


def test_a_range_run_records_each_partitions_own_figures(
    month_edge: ReplayWorld, db_url: str
) -> None:
    """2 months x 2 symbols in one run: each partition shows its own rows, candles and first
    and last candle (as timestamps); they add up to the run's totals, which are recorded
    once, on the run's first partition. Each symbol's month range is fetched as one, so its
    batches cross the month boundary and their rows are split between the two months."""
    spot, perp = SYMBOLS["binance"]
    with dg.instance_for_test() as instance:
        sync_symbol_partitions(instance, month_edge.universe)
        result = _materialize(
            month_edge,
            instance,
            db_url,
            ("binance", "ohlcv_1m"),
            f"2024-01-01|{spot}",
            f"2024-02-01|{perp}",
        )
    assert result.success
    materializations = result.asset_materializations_for_node("binance__ohlcv_1m")
    by_key = {str(m.partition): m for m in materializations}
    end_ms = EDGE_START_MS + EDGE_DAYS * DAY_MS  # the replay's "now": the tape's end
    january = (int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000), FEBRUARY_MS)
    months = {"2024-01-01": january, "2024-02-01": (FEBRUARY_MS, end_ms)}
    keys = {f"{m}|{s}": (s, window) for s in (spot, perp) for m, window in months.items()}
    assert set(by_key) == set(keys) and len(materializations) == 4  # one event each

    present = {}
    for key, (symbol, (start, end)) in keys.items():
        tape = _tape_candles(month_edge, "binance", symbol, "1m", start, end)
        meta = by_key[key]
        slots = (end - start) // 60_000  # January whole; February up to "now"
        assert 0 < len(tape) < 2 * 1440  # two days of the tape, with holes
        assert _value(meta, "rows_fetched") == len(tape), key
        assert _value(meta, "rows_written") == len(tape), key
        assert _value(meta, "rows_present") == _value(meta, "candles_present") == len(tape)
        assert _value(meta, "candles_expected") == slots, key
        assert _value(meta, "candles_missing") == slots - len(tape), key
        assert _value(meta, "first_ts") == tape["ts"].iloc[0] / 1000  # seconds
        assert _value(meta, "last_ts") == tape["ts"].iloc[-1] / 1000
        assert isinstance(meta.metadata["first_ts"], dg.TimestampMetadataValue)
        present[key] = len(tape)
    assert len(set(present.values())) == len(present)  # no partition's figures are another's

    first = _run_totals(materializations)
    assert first.partition == f"2024-01-01|{spot}"  # the run's first partition
    totals = {k: v.value for k, v in first.metadata.items() if k.startswith("run_")}
    assert totals["run_partitions"] == 4
    for figure in ("fetched", "written", "unchanged", "rejected"):
        assert totals[f"run_rows_{figure}"] == sum(
            _value(m, f"rows_{figure}") for m in materializations
        )
    assert totals["run_rows_written"] == sum(present.values())
    assert _value(first, "exchange_requests") >= 2  # at least one per symbol
    assert len(_value(first, "ranges")) == 2  # each symbol's two months: one range
    for other in materializations:
        if other is first:
            continue
        assert not {"exchange_requests", "ranges", "run_partitions"} & set(other.metadata)


def test_funding_is_partitioned_over_the_perpetuals_only(
    replay_world: ReplayWorld, instance: dg.DagsterInstance
) -> None:
    """``<exchange>_perps`` holds the swaps of the universe; funding rates and open interest
    are partitioned over it, so no spot partition sits "missing" forever."""
    assert instance.get_dynamic_partitions(symbols_partitions_name("binance")) == list(
        SYMBOLS["binance"]
    )
    assert instance.get_dynamic_partitions(perps_partitions_name("binance")) == ["BTC/USDT:USDT"]
    assert not instance.get_dynamic_partitions(perps_partitions_name("coinbaseexchange"))
    funding = _asset(replay_world, "binance", "funding_rates").partitions_def
    assert isinstance(funding, dg.MultiPartitionsDefinition)
    keys = funding.get_partition_keys(dynamic_partitions_store=instance)
    assert keys and all(str(k).endswith("|BTC/USDT:USDT") for k in keys)
    candles = _asset(replay_world, "binance", "ohlcv_1h").partitions_def
    assert isinstance(candles, dg.MultiPartitionsDefinition)
    assert {
        str(k).split("|")[1] for k in candles.get_partition_keys(dynamic_partitions_store=instance)
    } == set(SYMBOLS["binance"])
