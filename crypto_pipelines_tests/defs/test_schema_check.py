"""The ``schema`` check on real assets loaded from the replay exchange into SQLite and
PostgreSQL: it passes on what the pipeline stored, and rows corrupted afterwards with plain SQL
(the only way past the store's validation) are each reported under the right rule, with their
``ts``, while the check leaves every row as it found it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import dagster as dg
import pandas as pd
import pytest

from crypto_pipelines.defs.build import build_assets
from crypto_pipelines.defs.checks.schema import SCHEMA_CHECK, schema_checks
from crypto_pipelines.defs.universe_sync import sync_symbol_partitions
from crypto_pipelines_tests.defs.conftest import DAY_MS, START_MS, ReplayWorld
from crypto_pipelines_tests.defs.quality_helpers import Quality, evaluations, meta, rows_by_ts

JAN = "2024-01-01|BTC/USDT"  # candles are partitioned monthly: the tape's three days
FEB = "2024-02-01|BTC/USDT"  # after the tape: a partition with nothing in it
DAY2 = "2024-01-02|BTC/USDT"  # trades are partitioned daily
DAY2_MS = START_MS + DAY_MS
FEB_MS = 1_706_745_600_000
OHLCV = ("binance", "ohlcv_1m")


@pytest.fixture
def quality(replay_world: ReplayWorld, db_url: str) -> Iterator[Quality]:
    with dg.instance_for_test() as instance:
        sync_symbol_partitions(instance, replay_world.universe)
        yield Quality(replay_world, instance, db_url)


@pytest.fixture
def loaded(quality: Quality) -> Quality:
    """binance BTC/USDT 1m for two months (the tape's days and an empty month), loaded in one
    run with its schema check."""
    result = quality.materialize([OHLCV], [quality.check(SCHEMA_CHECK, *OHLCV)], (JAN, FEB))
    assert result.success
    found = evaluations(result, SCHEMA_CHECK, *OHLCV)
    assert set(found) == {JAN, FEB} and all(e.passed for e in found.values())
    return quality


def _stored_ts(quality: Quality, start: int, end: int) -> list[int]:
    frame = quality.read(
        "ohlcv", exchange="binance", symbol="BTC/USDT", timeframe="1m", start_ts=start, end_ts=end
    )
    return frame["ts"].tolist()


def test_every_dataset_asset_has_a_blocking_schema_check(replay_world: ReplayWorld) -> None:
    checks = schema_checks(replay_world.universe)
    checked = {key.asset_key: c for c in checks for key in c.check_keys}
    assets = build_assets(replay_world.universe)
    assert {a.key for a in assets} == set(checked)
    for check in checks:
        (spec,) = check.check_specs
        assert spec.name == SCHEMA_CHECK and spec.blocking
    partitioned = {a.key: a.partitions_def for a in assets if a.partitions_def is not None}
    for key, partitions_def in partitioned.items():
        (spec,) = checked[key].check_specs
        assert spec.partitions_def == partitions_def


def test_a_range_run_checks_each_partition_and_passes(loaded: Quality) -> None:
    # `loaded` ran the asset and its check over two monthly partitions in one run.
    result = loaded.run_checks([loaded.check(SCHEMA_CHECK, *OHLCV)], (JAN, FEB))
    assert result.success
    found = evaluations(result, SCHEMA_CHECK, *OHLCV)
    assert set(found) == {JAN, FEB}
    for key, start, end in ((JAN, START_MS, FEB_MS), (FEB, FEB_MS, FEB_MS + 29 * DAY_MS)):
        assert found[key].passed
        assert meta(found[key], "rows_checked") == len(_stored_ts(loaded, start, end))
        assert meta(found[key], "failures_by_rule") == {}
    assert meta(found[JAN], "rows_checked") > 3 * 1000
    assert meta(found[FEB], "rows_checked") == 0


def test_corrupted_rows_are_found_by_their_rules_and_left_untouched(
    loaded: Quality, db_url: str
) -> None:
    before = loaded.table("ohlcv")
    month = _stored_ts(loaded, START_MS, FEB_MS)
    ts = _stored_ts(loaded, DAY2_MS, DAY2_MS + DAY_MS)
    high_below_low, negative_volume, misaligned_from, wrong_type = ts[10], ts[20], ts[30], ts[40]
    where = "exchange='binance' AND symbol='BTC/USDT' AND timeframe='1m' AND ts=:ts"
    loaded.sql(f"UPDATE ohlcv SET high = low - 1 WHERE {where}", ts=high_below_low)
    loaded.sql(f"UPDATE ohlcv SET volume = -5 WHERE {where}", ts=negative_volume)
    loaded.sql(
        "INSERT INTO ohlcv (exchange, symbol, timeframe, ts, open, high, low, close, volume) "
        "SELECT exchange, symbol, timeframe, ts + 30000, open, high, low, close,"
        f" volume FROM ohlcv WHERE {where}",
        ts=misaligned_from,
    )
    expected = {
        high_below_low: ["high_ge_open_close"],
        negative_volume: ["volume_non_negative"],
        misaligned_from + 30_000: ["ts_aligned"],
    }
    sqlite = db_url.startswith("sqlite")
    if sqlite:  # only SQLite lets a text into a REAL column
        loaded.sql(f"UPDATE ohlcv SET close = 'n/a' WHERE {where}", ts=wrong_type)
        expected[wrong_type] = ["close:dtype"]
    corrupted = loaded.table("ohlcv")

    check = loaded.check(SCHEMA_CHECK, *OHLCV)
    result = loaded.run_checks([check], (JAN, FEB))
    assert not result.success  # blocking: a failed ERROR evaluation fails the step
    found = evaluations(result, SCHEMA_CHECK, *OHLCV)
    assert found[FEB].passed
    bad = found[JAN]
    assert not bad.passed and bad.severity == dg.AssetCheckSeverity.ERROR
    assert meta(bad, "failures_by_rule") == {rules[0]: 1 for rules in expected.values()}
    assert meta(bad, "rows_checked") == len(month) + 1
    assert meta(bad, "rows_failed") == len(expected)
    assert rows_by_ts(meta(bad, "failing_rows")) == expected
    table = meta(bad, "failing_rows_table")
    assert "high_ge_open_close" in table and "2024-01-02T00:10:00.000+00:00" in table

    # The same partition alone: Dagster's own AssetCheckResult, recorded for the partition.
    single = loaded.run_checks([check], JAN)
    (evaluation,) = evaluations(single, SCHEMA_CHECK, *OHLCV).values()
    assert evaluation.partition == JAN and not evaluation.passed
    assert rows_by_ts(meta(evaluation, "failing_rows")) == expected

    # The check read; it changed nothing, and the rows that were never touched are as loaded.
    pd.testing.assert_frame_equal(loaded.table("ohlcv"), corrupted)
    touched = set(expected) | {misaligned_from + 30_000}
    untouched = before[~before["ts"].isin(touched)].reset_index(drop=True)
    after = corrupted[~corrupted["ts"].isin(touched)].reset_index(drop=True)
    pd.testing.assert_frame_equal(after, untouched, check_dtype=False)


def test_a_duplicate_key_in_a_table_without_its_primary_key(loaded: Quality, db_url: str) -> None:
    """The PK makes a literal duplicate impossible; a table recreated without it (another
    tool, a manual restore) can hold one, and then both copies fail ``unique_key``."""
    if db_url.startswith("sqlite"):
        loaded.sql("CREATE TABLE ohlcv_copy AS SELECT * FROM ohlcv")
        loaded.sql("DROP TABLE ohlcv")
        loaded.sql("ALTER TABLE ohlcv_copy RENAME TO ohlcv")
    else:
        loaded.sql("ALTER TABLE ohlcv DROP CONSTRAINT pk_ohlcv")
    copied = _stored_ts(loaded, DAY2_MS, DAY2_MS + DAY_MS)[100]
    loaded.sql(
        "INSERT INTO ohlcv SELECT * FROM ohlcv WHERE exchange='binance' AND symbol='BTC/USDT'"
        " AND timeframe='1m' AND ts=:ts",
        ts=copied,
    )
    result = loaded.run_checks([loaded.check(SCHEMA_CHECK, *OHLCV)], JAN)
    (evaluation,) = evaluations(result, SCHEMA_CHECK, *OHLCV).values()
    assert not evaluation.passed
    assert meta(evaluation, "failures_by_rule") == {"unique_key": 2}
    sample = meta(evaluation, "failing_rows")
    assert [row["ts"] for row in sample] == [copied, copied]
    assert all(row["rules"] == ["unique_key"] for row in sample)


def test_a_trade_stored_again_under_another_spelling_of_its_id(quality: Quality) -> None:
    trades = ("binance", "trades")
    check = quality.check(SCHEMA_CHECK, *trades)
    assert quality.materialize([trades], [check], DAY2).success
    stored = quality.read("trades", exchange="binance", symbol="BTC/USDT")
    original = stored.iloc[5]
    quality.sql(
        "INSERT INTO trades (exchange, symbol, trade_id, ts, side, price, amount) "
        "SELECT exchange, symbol, '00' || trade_id, ts, side, price, amount"
        " FROM trades WHERE exchange='binance' AND symbol='BTC/USDT' AND trade_id=:id",
        id=original["trade_id"],
    )
    result = quality.run_checks([check], DAY2)
    (evaluation,) = evaluations(result, SCHEMA_CHECK, *trades).values()
    assert not evaluation.passed
    assert meta(evaluation, "failures_by_rule") == {"unique_trade_id": 2}
    ids = sorted(row["trade_id"] for row in meta(evaluation, "failing_rows"))
    assert ids == sorted([original["trade_id"], "00" + original["trade_id"]])
    assert meta(evaluation, "rows_checked") == len(stored) + 1


def test_rows_after_the_check_time_are_outside_the_partition(quality: Quality) -> None:
    """A candle that has not closed yet, or one from the future, lies outside every complete
    partition: found in the current month's partition."""
    now = int(time.time() * 1000)
    if now % 60_000 > 45_000:  # the current minute could close before the check runs
        time.sleep((60_000 - now % 60_000) / 1000 + 0.05)
        now = int(time.time() * 1000)
    this_month = time.strftime("%Y-%m-01", time.gmtime(now / 1000))
    day_start = now - now % DAY_MS
    current_minute = now - now % 60_000  # its candle is still open
    last_minute = day_start + DAY_MS - 60_000  # open or in the future
    outside = {current_minute, last_minute}
    closed = {current_minute - 120_000} if current_minute - 120_000 >= day_start else set()
    for ts in outside | closed:
        quality.sql(
            "INSERT INTO ohlcv (exchange, symbol, timeframe, ts, open, high, low, close, volume) "
            "VALUES ('binance', 'BTC/USDT', '1m', :ts, 1, 2, 0.5, 1.5, 3)",
            ts=ts,
        )
    result = quality.run_checks([quality.check(SCHEMA_CHECK, *OHLCV)], f"{this_month}|BTC/USDT")
    (evaluation,) = evaluations(result, SCHEMA_CHECK, *OHLCV).values()
    assert meta(evaluation, "failures_by_rule") == {"inside_partition": len(outside)}
    assert set(rows_by_ts(meta(evaluation, "failing_rows"))) == outside
    assert meta(evaluation, "rows_checked") == len(outside | closed)


def test_trades_and_funding_partitions_pass(quality: Quality) -> None:
    perp = "2024-01-01|BTC/USDT:USDT"
    for key, partition, dataset in (
        (("okx", "trades"), DAY2, "trades"),
        (("binance", "funding_rates"), perp, "funding_rates"),
    ):
        check = quality.check(SCHEMA_CHECK, *key)
        result = quality.materialize([key], [check], partition)
        assert result.success
        (evaluation,) = evaluations(result, SCHEMA_CHECK, *key).values()
        assert evaluation.passed and evaluation.partition == partition
        stored = quality.read(dataset, exchange=key[0], symbol=partition.split("|")[1])
        assert meta(evaluation, "rows_checked") == len(stored) > 0


def test_bad_markets_block_the_catalog(quality: Quality) -> None:
    keys = [("binance", "markets"), ("crypto_pairs",), ("crypto_perps",), ("crypto_assets",)]
    checks = [quality.check(SCHEMA_CHECK, *key) for key in keys]
    first = quality.materialize(keys, checks)
    assert first.success
    assert all(e.passed for e in first.get_asset_check_evaluations())

    # A pair the exchange does not list (so the next load cannot overwrite it), broken twice.
    quality.sql(
        "INSERT INTO crypto_pairs VALUES ('binance', 'FOO/USDT', 'FOO', 'USDT', -0.01, 0.001,"
        " 0, true, NULL, NULL)"
    )
    second = quality.materialize(keys, checks)
    assert not second.success
    markets = evaluations(second, SCHEMA_CHECK, "binance", "markets")[None]
    assert not markets.passed
    assert meta(markets, "failures_by_rule") == {"step_positive": 1}
    assert meta(markets, "failures_by_table") == {"crypto_pairs": {"step_positive": 1}}
    (row,) = meta(markets, "failing_rows")
    assert (row["symbol"], row["price_tick"], row["rules"]) == (
        "FOO/USDT",
        -0.01,
        ["step_positive"],
    )
    materialized = {m.asset_key for m in second.get_asset_materialization_events() if m.asset_key}
    assert materialized == {dg.AssetKey(["binance", "markets"])}  # the catalog was not rebuilt

    alone = quality.run_checks([quality.check(SCHEMA_CHECK, "crypto_pairs")])
    pairs = evaluations(alone, SCHEMA_CHECK, "crypto_pairs")[None]
    assert meta(pairs, "failures_by_rule") == {"step_positive": 1}
