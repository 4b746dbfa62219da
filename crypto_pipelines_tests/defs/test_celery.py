"""Steps executed on Celery workers (``CRYPTO_PIPELINES_EXECUTOR=celery``), end to end on the
machine's real RabbitMQ (broker), Redis (result backend) and PostgreSQL (Dagster instance and
market database), with two real ``crypto-pipelines worker`` processes.

Runs are launched as an operator launches them (``dagster asset materialize``, one run per
asset range: what a backfill of these single-run assets launches), so every step reaches a
worker through the broker and the worker executes it against the shared instance. The cheap
tests first: how the executor and the workers' settings are chosen, without infrastructure."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from crypto_pipelines.defs.executor import (
    BACKEND_ENV,
    BROKER_ENV,
    DEFAULT_BROKER,
    EXECUTOR_ENV,
    CelerySettings,
    celery_settings,
    executor_from_env,
)
from crypto_pipelines.defs.universe_sync import sync_symbol_partitions
from crypto_pipelines.domain.universe import load_universe
from crypto_pipelines.replay import FaultConfig, ReplayClock, ReplayServer, Tape
from crypto_pipelines.replay.synth import SynthSpec, write_synthetic_tape
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.conftest import PG_SKIP_REASON, PG_URL_ENV, postgres_schema_url
from crypto_pipelines_tests.defs.celery_helpers import (
    BIN,
    RABBITMQ,
    REDIS,
    Worker,
    busy_worker,
    postgres_database,
    rabbitmq_vhost,
    reachable,
    start_worker,
    wait_until_ready,
)
from crypto_pipelines_tests.defs.conftest import DAY_MS, DAYS, START_MS, SYMBOLS, ReplayWorld
from crypto_pipelines_tests.test_layers import imported_by

RUN_TIMEOUT_S = 150
"""A run whose step was lost (no late acknowledgement) waits for it forever: this long."""
LONG_START = datetime(2024, 1, 1, tzinfo=UTC)
LONG_DAYS = 12
"""Binance BTC/USDT 1m over 12 days: one month partition of ~17,000 candles, fetched in ~19
requests and stored in chunks of up to 10,000, so a step can be caught with part of it stored."""


def test_the_executor_is_in_process_unless_celery_is_asked_for() -> None:
    default = dg.in_process_executor
    for environ in ({}, {EXECUTOR_ENV: "in_process"}):
        chosen = executor_from_env(default, environ)
        # the in-process executor, wrapped to stop on signals while waiting for a pool slot
        assert chosen.name == "in_process" and chosen is not default
        assert (
            chosen.config_schema.as_field().config_type
            == default.config_schema.as_field().config_type
        )
    celery = executor_from_env(default, {EXECUTOR_ENV: " Celery "})
    assert celery is not default and celery.name == "celery"
    with pytest.raises(ValueError, match=EXECUTOR_ENV):  # a typo must not run steps here
        executor_from_env(default, {EXECUTOR_ENV: "celeri"})


def test_the_default_code_location_does_not_import_celery() -> None:
    loaded = imported_by("crypto_pipelines.definitions")
    assert "crypto_pipelines.defs.executor" in loaded
    assert not {m.split(".")[0] for m in loaded} & {"celery", "kombu", "dagster_celery"}


def test_celery_settings_default_to_the_local_rabbitmq_and_follow_a_redis_broker() -> None:
    assert celery_settings({}) == CelerySettings(DEFAULT_BROKER, "rpc://")
    redis = celery_settings({BROKER_ENV: "redis://h:6379/1"})
    assert (redis.broker, redis.backend) == ("redis://h:6379/1", "redis://h:6379/1")
    both = celery_settings({BROKER_ENV: "amqp://u:p@h//", BACKEND_ENV: "redis://h/2"})
    assert (both.broker, both.backend) == ("amqp://u:p@h//", "redis://h/2")
    config = both.executor_config()["config_source"]
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]


def test_a_worker_refuses_a_queue_the_code_location_does_not_have(
    replay_world: ReplayWorld,
) -> None:
    env = {**os.environ, "CRYPTO_PIPELINES_UNIVERSE": str(replay_world.universe_path)}
    env.pop("CRYPTO_PIPELINES_SOURCE", None)
    done = subprocess.run(
        [str(BIN / "crypto-pipelines"), "worker", "--queues", "binance,binanse"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "unknown queue(s) ['binanse']" in done.stderr
    assert "'coinbaseexchange', 'dagster'" in done.stderr  # the queues it has


@pytest.fixture(scope="module")
def infrastructure() -> None:
    if not reachable(RABBITMQ):
        pytest.skip(f"RabbitMQ unreachable on {RABBITMQ[0]}:{RABBITMQ[1]} (the Celery broker)")
    if not reachable(REDIS):
        pytest.skip(f"Redis unreachable on {REDIS[0]}:{REDIS[1]} (the Celery result backend)")
    if not os.environ.get(PG_URL_ENV, "").strip():
        pytest.skip(f"{PG_SKIP_REASON} (the workers share a PostgreSQL Dagster instance)")


@dataclass
class Cluster:
    """What every machine shares through the environment ``env``: the broker, the Dagster
    instance, the market database and the replay exchange; and two workers."""

    env: dict[str, str]
    broker: str
    db_url: str
    instance: dg.DagsterInstance
    workers: list[Worker]


@contextmanager
def cluster(
    tmp: Path, tape: Tape, universe: Path, now_ms: int, latency_ms: float
) -> Iterator[Cluster]:
    base = os.environ[PG_URL_ENV]
    clock = ReplayClock(start_ms=now_ms, speed=0)
    faults = FaultConfig(latency_ms=latency_ms)  # steps long enough to see them running
    with (
        rabbitmq_vhost() as vhost,
        postgres_database(base) as dagster_db,
        postgres_schema_url(base) as db_url,
        ReplayServer(tape, clock=clock, faults=faults) as server,
        pytest.MonkeyPatch.context() as patch,
    ):
        home = tmp / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(
            f"telemetry:\n  enabled: false\nstorage:\n  postgres:\n    postgres_url: {dagster_db}\n"
        )
        broker = f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/{vhost}"
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "CRYPTO_PIPELINES_UNIVERSE": str(universe),
            "CRYPTO_PIPELINES_REPLAY_URL": server.url,
            "CRYPTO_PIPELINES_DB_URL": db_url,
            EXECUTOR_ENV: "celery",
            BROKER_ENV: broker,
            BACKEND_ENV: f"redis://{REDIS[0]}:{REDIS[1]}/0",
        }
        env.pop("CRYPTO_PIPELINES_SOURCE", None)
        patch.setenv("DAGSTER_HOME", str(home))
        workers = [start_worker(env, name, tmp) for name in ("worker-a", "worker-b")]
        try:
            with dg.DagsterInstance.get() as instance:
                sync_symbol_partitions(instance, load_universe(universe))
                wait_until_ready(broker, workers)
                yield Cluster(env, broker, db_url, instance, workers)
        finally:
            for worker in workers:
                worker.stop()


@contextmanager
def launched(env: dict[str, str], asset: str, partition: str) -> Iterator[subprocess.Popen[str]]:
    """``dagster asset materialize`` of one partition (the run's orchestrating process), killed
    if the test leaves before it ended."""
    run = subprocess.Popen(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "crypto_pipelines.definitions"]
        + ["--select", asset, "--partition", partition],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield run
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()


def finish(run: subprocess.Popen[str], workers: list[Worker]) -> None:
    try:
        output, _ = run.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        run.kill()
        output, _ = run.communicate()
        logs = "\n".join(f"--- {w.node}\n{w.output()}" for w in workers)
        pytest.fail(f"run still running after {RUN_TIMEOUT_S} s:\n{output[-3000:]}\n{logs}")
    assert run.returncode == 0, output[-5000:]


def workers_of(instance: dg.DagsterInstance, key: dg.AssetKey) -> list[str]:
    """The ``worker`` (hostname:pid) of each materialization of ``key``."""
    records = instance.fetch_materializations(key, limit=100).records
    found = []
    for record in records:
        materialization = record.asset_materialization
        assert materialization is not None
        found.append(str(materialization.metadata["worker"].value))
    return found


def owner(workers: list[Worker], worker_id: str) -> Worker:
    host, pid = worker_id.rsplit(":", 1)
    assert host == socket.gethostname()
    (found,) = [w for w in workers if w.owns(int(pid))]
    return found


def assert_equals_tape(db_url: str, tape: Tape, exchange: str, symbol: str) -> None:
    with MarketStore.open(db_url) as store:
        stored = store.read("ohlcv", exchange=exchange, symbol=symbol, timeframe="1m")
    series = tape.exchanges[exchange].symbols[symbol].ohlcv["1m"]
    assert stored["ts"].is_unique
    assert stored["ts"].tolist() == series.file.ts.tolist()
    assert stored["close"].tolist() == [float(c.close) for c in series.rows(0, len(series))]


@pytest.mark.usefixtures("infrastructure")
def test_a_backfill_over_the_four_venues_runs_on_both_workers_and_equals_the_tape(
    replay_world: ReplayWorld, synth_tape: Tape, tmp_path: Path
) -> None:
    now = START_MS + (DAYS + 1) * DAY_MS
    with cluster(tmp_path, synth_tape, replay_world.universe_path, now, latency_ms=300) as c:
        with ExitStack() as stack:
            runs = [
                stack.enter_context(
                    launched(c.env, f"{exchange}/ohlcv_1m", f"2024-01-01|{symbols[0]}")
                )
                for exchange, symbols in SYMBOLS.items()
            ]
            for run in runs:
                finish(run, c.workers)
        used: set[str] = set()
        for exchange, symbols in SYMBOLS.items():
            assert_equals_tape(c.db_url, synth_tape, exchange, symbols[0])
            (worker_id,) = workers_of(c.instance, dg.AssetKey([exchange, "ohlcv_1m"]))
            used.add(owner(c.workers, worker_id).node)
    assert used == {w.node for w in c.workers}


# --- SIGKILL: a worker killed mid-step (only the worker processes this test started) -------


@pytest.fixture(scope="module")
def long_tape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tape]:
    root = tmp_path_factory.mktemp("celery-long")
    spec = SynthSpec(
        exchanges=("binance",),
        symbols={"binance": ("BTC/USDT",)},
        timeframes=("1m",),
        start=LONG_START,
        days=LONG_DAYS,
        trades=False,
        books=False,
        funding=False,
        open_interest=False,
    )
    write_synthetic_tape(root, spec)
    tape = Tape.load(root)
    yield tape
    tape.close()


@pytest.mark.usefixtures("infrastructure")
def test_sigkill_of_the_worker_mid_step_retries_the_step_on_the_other_worker(
    long_tape: Tape, tmp_path: Path
) -> None:
    """SIGKILL mid-step (the worker and its pool process, as a lost machine): the step's task
    was not acknowledged (``task_acks_late``), so the broker hands it to the other worker,
    which resumes from coverage; the run succeeds and the data is exact, without duplicates."""
    universe = tmp_path / "universe.yaml"
    universe.write_text(
        "source: replay\nexchanges:\n  binance:\n    symbols: [BTC/USDT]\n"
        "    timeframes: [1m]\n    start: 2024-01-01\n    funding: false\n"
    )
    now = int(LONG_START.timestamp() * 1000) + (LONG_DAYS + 1) * DAY_MS
    expected = len(long_tape.exchanges["binance"].symbols["BTC/USDT"].ohlcv["1m"])
    with (
        cluster(tmp_path, long_tape, universe, now, latency_ms=250) as c,
        launched(c.env, "binance/ohlcv_1m", "2024-01-01|BTC/USDT") as run,
    ):
        victim = busy_worker(c.broker, c.workers, timeout_s=90)
        (survivor,) = [w for w in c.workers if w is not victim]
        with MarketStore.open(c.db_url) as store:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not store.count("ohlcv", exchange="binance"):
                time.sleep(0.05)  # until its first chunk is stored
            victim.kill()
            partial = store.count("ohlcv", exchange="binance")
        assert 0 < partial < expected, (partial, expected)  # killed with part of it stored
        finish(run, c.workers)
        assert_equals_tape(c.db_url, long_tape, "binance", "BTC/USDT")
        (worker_id,) = workers_of(c.instance, dg.AssetKey(["binance", "ohlcv_1m"]))
        assert owner(c.workers, worker_id) is survivor
        assert victim.process.returncode == -signal.SIGKILL
