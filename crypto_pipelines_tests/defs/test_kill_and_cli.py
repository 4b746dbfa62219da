"""A run killed mid-way (SIGKILL) and re-run ends complete without duplicates; the
``dagster asset materialize --partition-range`` CLI path loads a range in one run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import dagster as dg
import pytest

from crypto_pipelines.defs.sensors.dead_runs import process_exists, worker_pid, zombie
from crypto_pipelines.replay import ReplayClock, ReplayServer, Tape
from crypto_pipelines.replay.synth import SynthSpec, write_synthetic_tape
from crypto_pipelines.storage.store import MarketStore

START = datetime(2024, 1, 20, tzinfo=UTC)
DAYS = 20  # 2024-01-20 to 2024-02-08: two month partitions of 1m candles
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def long_tape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tape]:
    root = tmp_path_factory.mktemp("long")
    spec = SynthSpec(
        exchanges=("binance",),
        symbols={"binance": ("BTC/USDT",)},
        timeframes=("1m",),
        start=START,
        days=DAYS,
        trades=False,
        books=False,
        funding=False,
    )
    write_synthetic_tape(root, spec)
    tape = Tape.load(root)
    yield tape
    tape.close()


def _env(tmp: Path, server: ReplayServer, db_url: str) -> dict[str, str]:
    universe = tmp / "universe.yaml"
    universe.write_text(
        "source: replay\nexchanges:\n  binance:\n    symbols: [BTC/USDT]\n    timeframes: [1m]\n    start: 2024-01-01\n    funding: false\n"
    )
    home = tmp / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = dict(os.environ)
    env.update(
        {
            "DAGSTER_HOME": str(home),
            "CRYPTO_PIPELINES_UNIVERSE": str(universe),
            "CRYPTO_PIPELINES_REPLAY_URL": server.url,
            "CRYPTO_PIPELINES_DB_URL": db_url,
        }
    )
    env.pop("CRYPTO_PIPELINES_SOURCE", None)
    subprocess.run(
        [str(BIN / "crypto-pipelines"), "partitions", "sync"],
        env=env,
        check=True,
        capture_output=True,
    )
    return env


def _materialize_cmd(partition_args: list[str]) -> list[str]:
    return [
        str(BIN / "dagster"),
        "asset",
        "materialize",
        "-m",
        "crypto_pipelines.definitions",
        "--select",
        "binance/ohlcv_1m",
        *partition_args,
    ]


def _set_latency(server: ReplayServer, ms: float) -> None:
    body = json.dumps({"latency_ms": ms, "seed": 1}).encode()
    urllib.request.urlopen(
        urllib.request.Request(server.url + "/_replay/faults", data=body, method="PUT"), timeout=10
    ).read()


def test_sigkill_mid_run_then_rerun_completes_without_duplicates(
    long_tape: Tape, tmp_path: Path, db_url: str
) -> None:
    clock = ReplayClock(start_ms=int(START.timestamp() * 1000) + (DAYS + 1) * 86_400_000, speed=0)
    expected = len(long_tape.exchanges["binance"].symbols["BTC/USDT"].ohlcv["1m"])
    with ReplayServer(long_tape, clock=clock) as server:
        env = _env(tmp_path, server, db_url)
        rng = ["--partition-range", "2024-01-01|BTC/USDT...2024-02-01|BTC/USDT"]
        _set_latency(
            server, 150
        )  # ~29 requests: several seconds, chunks of 10,000 stored as they come
        proc = subprocess.Popen(
            _materialize_cmd(rng),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        store = MarketStore.open(db_url)
        try:
            deadline = time.monotonic() + 120
            stored = 0
            while time.monotonic() < deadline and proc.poll() is None:
                stored = store.count("ohlcv", exchange="binance")
                if stored >= 10_000:
                    break
                time.sleep(0.05)
            assert proc.poll() is None, (
                f"run ended before it could be killed: {proc.stdout.read().decode() if proc.stdout else ''}"
            )
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            partial = store.count("ohlcv", exchange="binance")
            assert 0 < partial < expected, (partial, expected)

            _set_latency(server, 0)
            done = subprocess.run(
                _materialize_cmd(rng), env=env, capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            frame = store.read("ohlcv", exchange="binance", symbol="BTC/USDT", timeframe="1m")
        finally:
            store.close()
    assert len(frame) == expected and frame["ts"].is_unique and frame["ts"].is_monotonic_increasing
    february = int(datetime(2024, 2, 1, tzinfo=UTC).timestamp() * 1000)
    assert frame["ts"].iloc[0] < february <= frame["ts"].iloc[-1]  # both months of the range
    series = long_tape.exchanges["binance"].symbols["BTC/USDT"].ohlcv["1m"]
    assert frame["ts"].tolist() == series.file.ts.tolist()
    assert frame["close"].tolist() == [float(c.close) for c in series.rows(0, len(series))]


def test_refetch_from_the_cli_brings_back_what_coverage_hides(
    long_tape: Tape, tmp_path: Path
) -> None:
    """Rows lost from the store after their range was covered: a plain re-run fetches nothing
    (coverage says the exchange answered); ``crypto-pipelines refetch`` asks again, in a run
    tagged as gap repair's are."""
    import dagster as dg
    import sqlalchemy as sa

    db_url = f"sqlite:///{tmp_path / 'market.db'}"
    clock = ReplayClock(start_ms=int(START.timestamp() * 1000) + (DAYS + 1) * 86_400_000, speed=0)
    series = long_tape.exchanges["binance"].symbols["BTC/USDT"].ohlcv["1m"]
    cli = str(BIN / "crypto-pipelines")
    jan = "2024-01-01|BTC/USDT"
    with ReplayServer(long_tape, clock=clock) as server:
        env = _env(tmp_path, server, db_url)

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)

        first = run(
            cli, "refetch", "binance/ohlcv_1m", "--partition-range", f"{jan}...2024-02-01|BTC/USDT"
        )
        assert first.returncode == 0 and "success" in first.stdout, first.stderr[-3000:]
        with MarketStore.open(db_url) as store:
            assert store.count("ohlcv", exchange="binance") == len(series)
            lost = series.file.ts.tolist()[100:125]
            with store.engine.begin() as connection:
                connection.execute(
                    sa.text(f"DELETE FROM ohlcv WHERE ts IN ({', '.join(map(str, lost))})")
                )
            plain = run(*_materialize_cmd(["--partition", jan]))
            assert plain.returncode == 0, plain.stderr[-3000:]
            assert store.count("ohlcv", exchange="binance") == len(series) - len(lost)

            again = run(cli, "refetch", "binance/ohlcv_1m", "--partition", jan)
            assert again.returncode == 0, again.stderr[-3000:]
            assert store.count("ohlcv", exchange="binance") == len(series)
        both = run(
            cli, "refetch", "binance/ohlcv_1m", "--partition", jan, "--partition-range", "a...b"
        )
        unknown = run(cli, "refetch", "binance/ohlcv_7m", "--partition", jan)
    assert both.returncode == 2 and "exactly one" in both.stderr
    assert unknown.returncode == 2 and "no asset 'binance/ohlcv_7m'" in unknown.stderr
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
        with dg.DagsterInstance.get() as instance:
            runs = instance.get_run_records()
    refetches = [r for r in runs if r.dagster_run.tags.get("crypto_pipelines/refetch") == "true"]
    assert len(refetches) == 2 and all(r.dagster_run.status.value == "SUCCESS" for r in refetches)


def test_a_killed_run_is_marked_failed_and_frees_its_pool_slot(
    long_tape: Tape, tmp_path: Path
) -> None:
    """With the project's dagster.yaml (one op per exchange pool), a run killed with SIGKILL
    kept its slot and the re-run waited forever; the dead-runs sensor's tick marks it failed
    and frees the slot, and the re-run completes, exact."""
    import shutil

    import dagster as dg

    from crypto_pipelines.defs.sensors.dead_runs import dead_runs_sensor

    db_url = f"sqlite:///{tmp_path / 'market.db'}"
    clock = ReplayClock(start_ms=int(START.timestamp() * 1000) + (DAYS + 1) * 86_400_000, speed=0)
    series = long_tape.exchanges["binance"].symbols["BTC/USDT"].ohlcv["1m"]
    rng = ["--partition-range", "2024-01-01|BTC/USDT...2024-02-01|BTC/USDT"]
    with ReplayServer(long_tape, clock=clock) as server:
        env = _env(tmp_path, server, db_url)
        project = Path(__file__).resolve().parents[2] / "dagster.yaml"
        shutil.copy(project, Path(env["DAGSTER_HOME"]) / "dagster.yaml")
        _set_latency(server, 500)
        proc = subprocess.Popen(
            _materialize_cmd(rng),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        with MarketStore.open(db_url) as store:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and store.count("ohlcv", exchange="binance") == 0:
                time.sleep(0.05)
            assert proc.poll() is None
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        _set_latency(server, 0)

        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
            with dg.DagsterInstance.get() as instance:
                (killed,) = instance.get_run_records()
                assert killed.dagster_run.status == dg.DagsterRunStatus.STARTED
                with dg.build_sensor_context(instance=instance) as context:
                    skip = dead_runs_sensor()(context)
                assert isinstance(skip, dg.SkipReason) and "1 dead run" in str(skip.skip_message)
                run = instance.get_run_by_id(killed.dagster_run.run_id)
                assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
                with dg.build_sensor_context(instance=instance) as context:
                    again = dead_runs_sensor()(context)
                assert isinstance(again, dg.SkipReason) and again.skip_message == "no dead runs"

        done = subprocess.run(
            _materialize_cmd(rng), env=env, capture_output=True, text=True, timeout=240
        )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with MarketStore.open(db_url) as store:
        frame = store.read("ohlcv", exchange="binance", symbol="BTC/USDT", timeframe="1m")
    assert frame["ts"].tolist() == series.file.ts.tolist()


JANUARY = "2024-01-01|BTC/USDT"
FEBRUARY_MS = int(datetime(2024, 2, 1, tzinfo=UTC).timestamp() * 1000)
BOUND_S = 120
"""The issue's bound: a dead run frees its slot, a signalled run stops, within 2 minutes."""
DEAD_HOLDER = "0" * 32
"""The run id holding binance's slot in the signal test: no such run, as for a killed run whose
record is gone; only its claim is real."""


def _wait(what: str, check: Callable[[], bool], timeout_s: float = BOUND_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.2)


def _project_instance(env: dict[str, str]) -> Path:
    """The project's dagster.yaml (pools of one slot, run monitoring) in the test's home."""
    home = Path(env["DAGSTER_HOME"])
    shutil.copy(Path(__file__).resolve().parents[2] / "dagster.yaml", home / "dagster.yaml")
    return home


def _january(tape: Tape) -> list[int]:
    ts: list[int] = tape.exchanges["binance"].symbols["BTC/USDT"].ohlcv["1m"].file.ts.tolist()
    return [t for t in ts if t < FEBRUARY_MS]


def _stored(db_url: str) -> list[int]:
    with MarketStore.open(db_url) as store:
        frame = store.read("ohlcv", exchange="binance", symbol="BTC/USDT", timeframe="1m")
    return list(frame["ts"].tolist())


def _blocked(output: Path) -> bool:
    """Whether the CLI's output says its step waits for a slot of binance's pool."""
    return "blocked by limit for pool binance" in output.read_text()


def _pool_users(instance: dg.DagsterInstance, pool: str) -> tuple[list[str], list[str]]:
    """The runs holding ``pool``'s slots, and those with a step queued for one."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    return [s.run_id for s in info.claimed_slots], [p.run_id for p in info.pending_steps]


def test_a_step_blocked_on_a_pool_stops_on_sigterm_and_sigint(
    long_tape: Tape, tmp_path: Path
) -> None:
    """With binance's only slot held by a run that died, ``dagster asset materialize`` waited
    ("Step blocked by limit for pool binance") and ignored SIGTERM, SIGINT and the UI's
    Terminate. Now each ends it (exit status 128 + the signal), its run is failed (canceled,
    after a Terminate) with the reason, and it leaves no claim in the pool's queue; the held
    slot is untouched, and once it is freed a run of the same partition completes, exact."""
    db_url = f"sqlite:///{tmp_path / 'market.db'}"
    clock = ReplayClock(start_ms=int(START.timestamp() * 1000) + (DAYS + 1) * 86_400_000, speed=0)
    with ReplayServer(long_tape, clock=clock) as server:
        env = _env(tmp_path, server, db_url)
        home = _project_instance(env)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            storage = instance.event_log_storage
            storage.initialize_concurrency_limit_to_default("binance")
            assert storage.claim_concurrency_slot("binance", DEAD_HOLDER, "held").is_claimed

        # SIGTERM as from `kill`; SIGINT after the run is marked CANCELING: the UI's Terminate.
        for signum, terminate in ((signal.SIGTERM, False), (signal.SIGINT, True)):
            output = tmp_path / f"{signum.name}.log"
            with output.open("w") as out:
                proc = subprocess.Popen(
                    _materialize_cmd(["--partition", JANUARY]),
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            try:
                _wait("the step blocked on the pool", partial(_blocked, output))
                if terminate:
                    with dg.DagsterInstance.from_config(str(home)) as instance:
                        instance.report_run_canceling(instance.get_run_records()[0].dagster_run)
                proc.send_signal(signum)
                assert proc.wait(timeout=BOUND_S) == 128 + signum, output.read_text()[-3000:]
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

        with dg.DagsterInstance.from_config(str(home)) as instance:
            canceled, failed = (r.dagster_run for r in instance.get_run_records())
            assert canceled.status == dg.DagsterRunStatus.CANCELED
            assert failed.status == dg.DagsterRunStatus.FAILURE
            for run, end, name in (
                (canceled, dg.DagsterEventType.RUN_CANCELED, "SIGINT"),
                (failed, dg.DagsterEventType.RUN_FAILURE, "SIGTERM"),
            ):
                (record,) = instance.get_records_for_run(run.run_id, of_type=end).records
                reason = record.event_log_entry.message
                assert name in reason and "binance__ohlcv_1m on pool binance" in reason, reason
            assert _pool_users(instance, "binance") == ([DEAD_HOLDER], [DEAD_HOLDER])
            instance.event_log_storage.free_concurrency_slots_for_run(DEAD_HOLDER)

        done = subprocess.run(
            _materialize_cmd(["--partition", JANUARY]),
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert _stored(db_url) == _january(long_tape)


def _launch(env: dict[str, str], workspace: Path, partition: str) -> str:
    """Submit a run of ``binance_load_monthly`` as the UI does: queued, for the daemon to
    launch (``DefaultRunLauncher``: a run worker under the daemon's code server)."""
    run_id = str(uuid.uuid4())
    launched = subprocess.run(
        [
            str(BIN / "dagster"),
            "job",
            "launch",
            "-w",
            str(workspace),
            "-j",
            "binance_load_monthly",
            "--run-id",
            run_id,
            "--tags",
            json.dumps({"dagster/partition": partition}),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    return run_id


def test_a_daemon_launched_run_killed_mid_step_is_failed_and_frees_its_slot(
    long_tape: Tape, tmp_path: Path
) -> None:
    """A real ``dagster-daemon`` on the project's dagster.yaml launches a run; its run worker is
    killed with SIGKILL while it stores candles. Within 2 minutes the run is failed and holds
    no slot of binance's pool (one slot); the run launched next for the same partition gets
    it and completes, exact."""
    db_url = f"sqlite:///{tmp_path / 'market.db'}"
    clock = ReplayClock(start_ms=int(START.timestamp() * 1000) + (DAYS + 1) * 86_400_000, speed=0)
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - python_module:\n      module_name: crypto_pipelines.definitions\n"
    )
    with ReplayServer(long_tape, clock=clock) as server:
        env = _env(tmp_path, server, db_url)
        home = _project_instance(env)
        # Sensors that would launch runs of their own for binance in the middle of the test.
        for sensor in ("binance_incremental_sensor", "gap_repair_sensor"):
            subprocess.run(
                [str(BIN / "dagster"), "sensor", "stop", "-w", str(workspace), sensor],
                env=env,
                check=True,
                capture_output=True,
                timeout=180,
            )
        with (tmp_path / "daemon.log").open("w") as out:
            daemon = subprocess.Popen(
                [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)],
                env=env,
                cwd=tmp_path,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the daemon and its code server: one group to stop
            )
        try:
            _set_latency(server, 500)  # ~13 requests: several seconds to kill it in
            killed = _launch(env, workspace, JANUARY)
            with dg.DagsterInstance.from_config(str(home)) as instance:

                def status(run_id: str) -> dg.DagsterRunStatus | None:
                    run = instance.get_run_by_id(run_id)
                    return None if run is None else run.status

                with MarketStore.open(db_url) as store:
                    _wait(
                        "the launched run storing candles",
                        lambda: store.count("ohlcv", exchange="binance") > 0,
                        timeout_s=240,
                    )
                assert status(killed) == dg.DagsterRunStatus.STARTED
                pid = worker_pid(instance, killed)
                assert pid is not None and pid not in (daemon.pid, os.getpid())
                os.kill(pid, signal.SIGKILL)

                _wait(
                    "the killed run failed, its slot freed",
                    lambda: (
                        status(killed) == dg.DagsterRunStatus.FAILURE
                        and killed not in sum(_pool_users(instance, "binance"), [])
                    ),
                )
                assert 0 < len(_stored(db_url)) < len(_january(long_tape))

                _set_latency(server, 0)
                rerun = _launch(env, workspace, JANUARY)
                _wait(
                    "the re-run finished",
                    lambda: (run := instance.get_run_by_id(rerun)) is not None and run.is_finished,
                    timeout_s=240,
                )
                assert status(rerun) == dg.DagsterRunStatus.SUCCESS
                assert _pool_users(instance, "binance") == ([], [])
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()
    assert _stored(db_url) == _january(long_tape)


def test_a_killed_worker_not_yet_collected_counts_as_dead() -> None:
    """A killed process whose parent has not collected it (a zombie) still answers signal 0:
    the dead-runs sensor must not take such a run worker for alive."""
    child = subprocess.Popen(["sleep", "60"])
    try:
        assert process_exists(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        _wait("the killed child a zombie", partial(zombie, child.pid), timeout_s=30)
        assert not process_exists(child.pid)
    finally:
        child.kill()
        child.wait()
