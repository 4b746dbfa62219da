"""Gap repair end to end on a real instance: a hole punched into the store (the exchange still
has the rows) fails the check, the sensor requests a refetch of exactly that partition, the
run fills the hole and the check passes. Attempts are bounded, backed off and keyed so that
no run is requested twice.

Candles are partitioned monthly: the tape spans a month's end (2024-01-31 to 2024-02-02) and
the universe starts mid-month (2024-01-31), so holes fall into two month partitions, the
first of which begins before the universe's start."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from crypto_pipelines.defs.assets.market_data import REFETCH_TAG
from crypto_pipelines.defs.sensors.gap_repair import ATTEMPT_TAG, gap_repair_sensor
from crypto_pipelines.domain.timeframes import MINUTE_MS
from crypto_pipelines.replay import FaultConfig, ReplayClock, ReplayServer, Tape
from crypto_pipelines.replay.synth import SynthSpec, write_synthetic_tape
from crypto_pipelines.storage.gaps import GapStore, Series
from crypto_pipelines.storage.schema import table_for
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.defs.gap_helpers import (
    GapWorld,
    evaluations,
    gap_world,
    ranges_of,
    series,
    universe,
)

T0 = int(datetime(2024, 1, 31, tzinfo=UTC).timestamp() * 1000)  # the tape's first candle
DAY = 1440 * MINUTE_MS
FEB = T0 + DAY
# The month partitions: January holds the tape's day 0 (01-31), February its days 1 and 2.
MONTHS = ("2024-01-01|BTC/USDT", "2024-02-01|BTC/USDT")
UNIVERSE = universe(binance=series("BTC/USDT", ("1m",), date(2024, 1, 31)))


def _month(ts: int) -> str:
    """The month partition holding ``ts``."""
    return MONTHS[0] if ts < FEB else MONTHS[1]


@pytest.fixture(scope="module")
def complete_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplayServer]:
    """A synthetic binance BTC/USDT tape without a single missing candle, from 2024-01-31 to
    2024-02-02; the exchange's clock stands at its end, so everything it answers is closed
    and complete."""
    root = tmp_path_factory.mktemp("complete")
    write_synthetic_tape(
        root,
        SynthSpec(
            exchanges=("binance",),
            symbols={"binance": ("BTC/USDT",)},
            timeframes=("1m",),
            start=datetime(2024, 1, 31, tzinfo=UTC),
            days=3,
            seed=9,
            trades=False,
            books=False,
            funding=False,
            gap_rate=0.0,
            outages_per_day=0.0,
        ),
    )
    tape = Tape.load(root)
    assert len(tape.exchanges["binance"].symbols["BTC/USDT"].ohlcv["1m"]) == 3 * 1440
    with ReplayServer(tape, clock=ReplayClock(start_ms=T0 + 3 * DAY, speed=0)) as server:
        yield server
    tape.close()


def _punch_store(db_url: str, first: int, last: int) -> None:
    with MarketStore.open(db_url) as store, store.engine.begin() as connection:
        ohlcv = table_for("ohlcv")
        deleted = connection.execute(
            sa.delete(ohlcv).where(ohlcv.c.ts >= first, ohlcv.c.ts <= last)
        ).rowcount
    assert deleted == (last - first) // MINUTE_MS + 1


def _stored(db_url: str, day: int) -> list[int]:
    with MarketStore.open(db_url) as store:
        return store.timestamps(
            "ohlcv",
            exchange="binance",
            symbol="BTC/USDT",
            timeframe="1m",
            start_ts=T0 + day * DAY,
            end_ts=T0 + (day + 1) * DAY,
        )


def _loaded_with_holes(world: GapWorld, db_url: str, holes: list[tuple[int, int]]) -> None:
    """Both months loaded (no gaps), then holes punched into the store (one per month) and
    each holed month loaded again: resuming where coverage ends refills nothing, so its check
    fails."""
    first = evaluations(world.materialize("binance", "ohlcv_1m", MONTHS[0], MONTHS[-1]))
    assert set(first) == set(MONTHS)
    assert all(e.passed and ranges_of(e) == [] for e in first.values())
    for hole in holes:
        _punch_store(db_url, *hole)
        month = _month(hole[0])
        result = world.materialize("binance", "ohlcv_1m", month, month)
        (materialization,) = result.asset_materializations_for_node("binance__ohlcv_1m")
        assert materialization.metadata["rows_written"].value == 0
        (evaluation,) = evaluations(result).values()
        assert evaluation.partition == month
        assert not evaluation.passed and ranges_of(evaluation) == [hole]


def test_hole_in_the_store_is_refetched_and_the_check_passes(
    complete_server: ReplayServer, db_url: str
) -> None:
    hole = (T0 + DAY + 100 * MINUTE_MS, T0 + DAY + 109 * MINUTE_MS)
    with gap_world(UNIVERSE, complete_server.url, db_url) as world:
        _loaded_with_holes(world, db_url, [hole])
        assert len(_stored(db_url, 1)) == 1440 - 10

        tick = world.tick()
        (request,) = tick.run_requests or []
        assert request.partition_key == MONTHS[1]  # the month holding the hole
        assert request.asset_selection == [dg.AssetKey(["binance", "ohlcv_1m"])]
        assert request.tags[REFETCH_TAG] == "true"
        assert request.run_key == "gap-repair:binance/ohlcv_1m:2024-02-01|BTC/USDT:1"
        assert json.loads(tick.cursor or "")["requested"] == 1

        run = world.launch(request)
        assert run.success
        (evaluation,) = evaluations(run).values()
        assert evaluation.passed and evaluation.metadata["missing_candles"].value == 0
        assert ranges_of(evaluation) == [] and ranges_of(evaluation, "confirmed_gaps") == []
        assert _stored(db_url, 1) == [T0 + DAY + i * MINUTE_MS for i in range(1440)]
        assert [len(_stored(db_url, day)) for day in range(3)] == [1440] * 3
        with MarketStore.open(db_url) as store:
            (row,) = GapStore(store.engine).records()
        assert (row.start, row.end, row.status, row.attempts) == (*hole, "filled", 1)

        # nothing left: no request, and the cursor still moves on
        before = json.loads(world.cursor or "")
        assert not world.tick().run_requests
        after = json.loads(world.cursor or "")
        assert after["requested"] == 1 and after["last_tick_ms"] >= before["last_tick_ms"]
        assert len(world.run_keys) == len(set(world.run_keys)) == 1


def test_attempts_are_bounded_backed_off_and_keyed(
    complete_server: ReplayServer, db_url: str
) -> None:
    holes = [
        (T0 + 5 * MINUTE_MS, T0 + 5 * MINUTE_MS),
        (T0 + 2 * DAY + 7 * MINUTE_MS, T0 + 2 * DAY + 9 * MINUTE_MS),
    ]
    with gap_world(
        UNIVERSE, complete_server.url, db_url, max_attempts=3, backoff_seconds=0
    ) as world:
        _loaded_with_holes(world, db_url, holes)

        # one run per tick at most: the oldest partition first (January, although its month
        # starts before the universe does)
        one = gap_repair_sensor(UNIVERSE, max_runs_per_tick=1, backoff_seconds=0)
        assert [r.partition_key for r in world.tick(one).run_requests or []] == [MONTHS[0]]
        assert [r.partition_key for r in world.tick(one).run_requests or []] == [MONTHS[1]]
        # with a backoff, an attempt is not repeated at once
        patient = gap_repair_sensor(UNIVERSE, backoff_seconds=3600)
        assert not world.tick(patient).run_requests

        # the requested runs never ran (or failed): attempts 2 and 3 follow, then no more
        attempts = []
        for _ in range(3):
            requests = world.tick().run_requests or []
            attempts.append(
                sorted(
                    (r.partition_key, r.tags["crypto_pipelines/gap_repair_attempt"])
                    for r in requests
                )
            )
        assert attempts == [
            [(MONTHS[0], "2"), (MONTHS[1], "2")],
            [(MONTHS[0], "3"), (MONTHS[1], "3")],
            [],
        ]
        assert len(world.run_keys) == len(set(world.run_keys)) == 6
        assert json.loads(world.cursor or "")["requested"] == 6
        with MarketStore.open(db_url) as store:
            rows = GapStore(store.engine).records()
        assert [(r.status, r.attempts) for r in rows] == [("open", 3), ("open", 3)]

        # a refetch run launched by hand (the tag) still repairs the partition
        result = world.materialize(
            "binance", "ohlcv_1m", MONTHS[1], MONTHS[1], tags={REFETCH_TAG: "true"}
        )
        (evaluation,) = evaluations(result).values()
        assert evaluation.passed and ranges_of(evaluation) == []
        assert len(_stored(db_url, 2)) == 1440


def test_a_partition_being_repaired_is_not_requested_again(
    complete_server: ReplayServer, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'market.db'}"
    hole = (T0 + 50 * MINUTE_MS, T0 + 60 * MINUTE_MS)
    with gap_world(UNIVERSE, complete_server.url, db_url, backoff_seconds=0) as world:
        _loaded_with_holes(world, db_url, [hole])
        (request,) = world.tick().run_requests or []
        runs: list[dg.ExecuteInProcessResult] = []
        complete_server.set_faults(FaultConfig(latency_ms=700))  # a slow exchange
        try:
            worker = threading.Thread(target=lambda: runs.append(world.launch(request)))
            worker.start()
            deadline = time.monotonic() + 60
            started = dg.RunsFilter(
                statuses=[dg.DagsterRunStatus.STARTED], tags={REFETCH_TAG: "true"}
            )
            while not world.instance.get_run_records(started) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert world.instance.get_run_records(started)
            # attempt 2 would be due now (no backoff), but attempt 1 is still running
            assert not world.tick().run_requests
            worker.join(timeout=120)
        finally:
            complete_server.set_faults(FaultConfig())
        (run,) = runs
        assert run.success
        assert len(_stored(db_url, 0)) == 1440
        assert not world.tick().run_requests


def test_windows_outside_the_universe_are_left_alone(
    complete_server: ReplayServer, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'market.db'}"
    hole = (T0 + DAY + 5 * MINUTE_MS, T0 + DAY + 5 * MINUTE_MS)
    with gap_world(UNIVERSE, complete_server.url, db_url) as world:
        _loaded_with_holes(world, db_url, [hole])
        world.instance.delete_dynamic_partition("binance_symbols", "BTC/USDT")
        assert not world.tick().run_requests  # a symbol dropped from the universe
        world.instance.add_dynamic_partitions("binance_symbols", ["BTC/USDT"])
        (request,) = world.tick().run_requests or []
        assert request.partition_key == MONTHS[1]
        # a timeframe dropped from the universe: its gaps are not requested either
        hourly = universe(binance=series("BTC/USDT", ("1h",), date(2024, 1, 31)))
        with MarketStore.open(db_url) as store:
            GapStore(store.engine).record_window(
                Series("binance", "BTC/USDT", "ohlcv", "5m"),
                FEB,
                FEB + 29 * DAY,
                [(FEB, FEB)],
                step=5 * MINUTE_MS,
                now_ms=0,
                refetched=False,
            )
        assert not world.tick(gap_repair_sensor(hourly)).run_requests
        # nor a window that is no partition of the asset: one recorded when 1m candles were
        # partitioned daily (a request for "2024-02-02|BTC/USDT" would fail the whole tick)
        with MarketStore.open(db_url) as store:
            GapStore(store.engine).record_window(
                Series("binance", "BTC/USDT", "ohlcv", "1m"),
                T0 + 2 * DAY,
                T0 + 3 * DAY,
                [(T0 + 2 * DAY, T0 + 2 * DAY)],
                step=MINUTE_MS,
                now_ms=0,
                refetched=False,
            )
            assert len(GapStore(store.engine).due(0, max_attempts=3, backoff_ms=0)) == 2
        asset = world.asset("binance", "ohlcv_1m").partitions_def
        assert asset is not None
        retry = gap_repair_sensor(UNIVERSE, backoff_seconds=0)
        (retried,) = world.tick(retry).run_requests or []  # attempt 2 of February, only
        assert (retried.partition_key, retried.tags[ATTEMPT_TAG]) == (MONTHS[1], "2")
        keys = asset.get_partition_keys(dynamic_partitions_store=world.instance)
        assert retried.partition_key in keys and "2024-02-02|BTC/USDT" not in keys
