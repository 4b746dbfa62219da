"""A run killed mid-way (SIGKILL) and re-run ends complete without duplicates; the
``dagster asset materialize --partition-range`` CLI path loads a range in one run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

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
                f"run ended before it could be killed: {proc.stdout.read() if proc.stdout else ''}"
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
