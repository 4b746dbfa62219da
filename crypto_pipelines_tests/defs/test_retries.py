"""A transient exchange failure that outlives the loader's own retries becomes a Dagster step
retry, which resumes and completes the run exactly; other failures are not retried."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from crypto_pipelines.defs.retries import STEP_RETRIES, retry_wait_s
from crypto_pipelines.defs.universe_sync import sync_symbol_partitions
from crypto_pipelines.replay import FaultConfig, ReplayClock, ReplayServer, Tape
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.defs.automation import asset_of, resources
from crypto_pipelines_tests.defs.conftest import DAY_MS, DAYS, START_MS, ReplayWorld

OHLCV = dg.AssetKey(["binance", "ohlcv_1m"])
JAN = "2024-01-01|BTC/USDT"


@pytest.fixture
def failing(synth_tape: Tape) -> Iterator[ReplayServer]:
    """The replay exchange answering every request with a 5xx until told otherwise."""
    clock = ReplayClock(start_ms=START_MS + (DAYS + 1) * DAY_MS, speed=0)
    with ReplayServer(synth_tape, clock=clock, faults=FaultConfig(server_error=1.0)) as server:
        yield server


def _heal_after(server: ReplayServer, failures: int) -> threading.Thread:
    """Clear the faults once ``failures`` requests have been refused: the loader's own
    attempts for one request are spent by then, and the step retry finds the exchange back."""

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if server.app.stats.snapshot()["totals"]["server_errors"] >= failures:
                server.set_faults(FaultConfig())
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_retry_waits_grow_and_are_bounded() -> None:
    assert [retry_wait_s(n) for n in range(STEP_RETRIES)] == [5.0, 10.0, 20.0]
    assert retry_wait_s(10) == 120.0


def test_a_step_retry_resumes_after_the_exchange_recovers(
    replay_world: ReplayWorld, failing: ReplayServer, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'market.db'}"
    healer = _heal_after(failing, failures=6)  # the loader's six attempts of its first request
    with dg.instance_for_test() as instance:
        sync_symbol_partitions(instance, replay_world.universe)
        result = dg.materialize(
            [asset_of(replay_world.universe, OHLCV)],
            instance=instance,
            resources=resources(failing, db_url),
            partition_key=JAN,
        )
    healer.join(timeout=1)
    assert result.success
    kinds = [event.event_type_value for event in result.all_events]
    assert kinds.count("STEP_UP_FOR_RETRY") == 1 and kinds.count("STEP_RESTARTED") == 1
    with MarketStore.open(db_url) as store:
        stored = store.read("ohlcv", exchange="binance", symbol="BTC/USDT", timeframe="1m")
    candles = replay_world.tape.exchanges["binance"].symbols["BTC/USDT"].ohlcv["1m"]
    assert len(stored) == len(candles) and int(stored["ts"].iloc[0]) == candles.first_ts


def test_a_failure_that_retrying_cannot_change_is_not_retried(
    replay_world: ReplayWorld, tmp_path: Path
) -> None:
    """A market the exchange does not list is a configuration error: it fails at once."""
    with dg.instance_for_test() as instance:
        sync_symbol_partitions(instance, replay_world.universe)
        instance.add_dynamic_partitions("binance_symbols", ["DOGE/USDT"])
        result = dg.materialize(
            [asset_of(replay_world.universe, OHLCV)],
            instance=instance,
            resources=resources(replay_world.server, f"sqlite:///{tmp_path / 'm.db'}"),
            partition_key="2024-01-01|DOGE/USDT",
            raise_on_error=False,
        )
    assert not result.success
    kinds = [event.event_type_value for event in result.all_events]
    assert "STEP_UP_FOR_RETRY" not in kinds and "STEP_FAILURE" in kinds


TRADES = dg.AssetKey(["okx", "trades"])


def _fail_after_each_commit(
    server: ReplayServer, db: Path, cycles: int, done: threading.Event
) -> threading.Thread:
    """``cycles`` times: once the run has committed rows it had not before, refuse every
    request until one request's six attempts are spent, then heal. Each failing attempt has
    made progress first."""

    def stored() -> int:
        if not db.exists():
            return 0
        with MarketStore.open(f"sqlite:///{db}") as store:
            return store.count("trades")

    def watch() -> None:
        last = 0
        deadline = time.monotonic() + 240
        for _ in range(cycles):
            while time.monotonic() < deadline and not done.is_set() and stored() <= last:
                time.sleep(0.05)
            before = server.app.stats.snapshot()["totals"]["server_errors"]
            server.set_faults(FaultConfig(server_error=1.0))
            while (
                time.monotonic() < deadline
                and not done.is_set()
                and server.app.stats.snapshot()["totals"]["server_errors"] < before + 6
            ):
                time.sleep(0.02)
            server.set_faults(FaultConfig())
            last = stored()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_attempts_that_commit_rows_keep_being_retried(
    replay_world: ReplayWorld, tmp_path: Path
) -> None:
    """Five exhausted requests in one run, more than ``STEP_RETRIES``, each after the attempt
    had committed rows: the run completes, exactly, where a fixed count failed it."""
    db = tmp_path / "market.db"
    partitions = [f"2024-01-0{d}|BTC/USDT" for d in (1, 2, 3)]
    done = threading.Event()
    clock = ReplayClock(start_ms=START_MS + (DAYS + 1) * DAY_MS, speed=0)
    with ReplayServer(replay_world.tape, clock=clock) as server:
        breaker = _fail_after_each_commit(server, db, cycles=STEP_RETRIES + 2, done=done)
        with dg.instance_for_test() as instance:
            sync_symbol_partitions(instance, replay_world.universe)
            result = dg.materialize(
                [asset_of(replay_world.universe, TRADES)],
                instance=instance,
                resources=resources(server, f"sqlite:///{db}"),
                tags={
                    "dagster/asset_partition_range_start": partitions[0],
                    "dagster/asset_partition_range_end": partitions[-1],
                },
                raise_on_error=False,
            )
        done.set()
        breaker.join(timeout=5)
    assert result.success
    kinds = [event.event_type_value for event in result.all_events]
    assert kinds.count("STEP_UP_FOR_RETRY") == STEP_RETRIES + 2
    with MarketStore.open(f"sqlite:///{db}") as store:
        stored = store.read("trades", exchange="okx", symbol="BTC/USDT")
    tape = replay_world.tape.exchanges["okx"].symbols["BTC/USDT"].trades
    assert tape is not None
    expected = [str(fields[1]) for fields in tape.file.fields(0, len(tape.file))]
    assert sorted(stored["trade_id"].astype(str)) == sorted(expected)


def test_attempts_that_commit_nothing_give_up_after_three_retries(
    replay_world: ReplayWorld, failing: ReplayServer, tmp_path: Path
) -> None:
    """An exchange that answers nothing: three retries in a row that commit nothing (the
    streak read back from the run's log), then the step fails."""
    with dg.instance_for_test() as instance:
        sync_symbol_partitions(instance, replay_world.universe)
        result = dg.materialize(
            [asset_of(replay_world.universe, OHLCV)],
            instance=instance,
            resources=resources(failing, f"sqlite:///{tmp_path / 'm.db'}"),
            partition_key=JAN,
            raise_on_error=False,
        )
    assert not result.success
    kinds = [event.event_type_value for event in result.all_events]
    assert kinds.count("STEP_UP_FOR_RETRY") == STEP_RETRIES and "STEP_FAILURE" in kinds
