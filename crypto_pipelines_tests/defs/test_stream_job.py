"""Job ``market_stream`` on a real instance against the replay exchange (its REST side: the
stream fails over to polling), and its supervisor sensor: the op stores the trades, reports
the stream-fed partitions as materializations with rows and lag, and stops cleanly; the
supervisor starts a run only while none is active."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.defs.stream import STREAM_JOB, stream_job, stream_supervisor
from crypto_pipelines.domain.universe import Universe, load_universe
from crypto_pipelines.replay import ReplayClock, ReplayServer
from crypto_pipelines.replay.tape.writer import write_ohlcv, write_trades
from crypto_pipelines.storage.store import MarketStore

T0 = 1_704_067_200_000


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Universe, ReplayServer]]:
    trades = [(T0 + i * 1000, 100 + i, "buy", "42000.5", "0.01") for i in range(900)]
    write_trades(tmp_path / "tape", "okx", "BTC/USDT", trades)
    write_ohlcv(tmp_path / "tape", "okx", "BTC/USDT", "1m", [(T0, "1", "1", "1", "1", "1")])
    path = tmp_path / "universe.yaml"
    path.write_text(
        "source: replay\nexchanges:\n  okx:\n    symbols: [BTC/USDT]\n    timeframes: [1m]\n"
        "    start: 2024-01-01\n    trades: true\n    funding: false\n"
    )
    clock = ReplayClock(start_ms=T0 + 300_000, speed=1)
    with ReplayServer(tmp_path / "tape", clock=clock) as server:
        yield load_universe(path), server


def _run(
    universe: Universe,
    server: ReplayServer,
    instance: dg.DagsterInstance,
    db_url: str,
    seconds: float,
) -> dg.ExecuteInProcessResult:
    return stream_job(universe).execute_in_process(
        instance=instance,
        resources={
            "exchanges": ExchangesResource(source="replay", replay_url=server.url),
            "market_store": MarketStoreResource(db_url=db_url, source="replay"),
        },
        run_config={
            "ops": {"run_market_stream": {"config": {"stop_after_s": seconds, "report_every_s": 1}}}
        },
    )


def test_the_job_streams_stores_and_reports_partitions(
    world: tuple[Universe, ReplayServer], tmp_path: Path
) -> None:
    universe, server = world
    db_url = f"sqlite:///{tmp_path / 'market.db'}"
    with dg.instance_for_test() as instance:
        result = _run(universe, server, instance, db_url, 3)
        assert result.success
        events = result.get_asset_materialization_events()
    with MarketStore.open(db_url) as store:
        ids = sorted(int(i) for i in store.read("trades")["trade_id"])
    assert ids[:301] == list(range(100, 401))  # the five minutes before "now", caught up
    assert ids == list(range(100, ids[-1] + 1))
    reported = [e.materialization for e in events]
    assert {m.asset_key for m in reported} == {dg.AssetKey(["okx", "trades"])}
    assert {m.partition for m in reported} == {"2024-01-01|BTC/USDT"}
    # every stored trade was reported (a trade both streamed and caught up counts twice)
    assert sum(int(m.metadata["rows_received"].value) for m in reported) >= len(ids)  # type: ignore[arg-type]
    assert all(m.metadata["source"].value == "stream" for m in reported)
    assert len(reported) <= 5  # a few events per run, never one per message


def test_the_supervisor_starts_a_run_only_when_none_is_active(
    world: tuple[Universe, ReplayServer], tmp_path: Path
) -> None:
    universe, server = world
    sensor = stream_supervisor()
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance) as context:
            first = sensor(context)
        assert isinstance(first, dg.RunRequest)
        running = threading.Thread(
            target=_run, args=(universe, server, instance, f"sqlite:///{tmp_path / 'm.db'}", 6)
        )
        running.start()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not instance.get_runs(
                filters=dg.RunsFilter(job_name=STREAM_JOB, statuses=[dg.DagsterRunStatus.STARTED])
            ):
                time.sleep(0.1)
            with dg.build_sensor_context(instance=instance) as context:
                busy = sensor(context)
        finally:
            # The op ends at 6 s; on a loaded machine Dagster's in-process run teardown (its
            # compute-log tail processes) has been seen to take over a minute more.
            running.join(timeout=240)
        assert not running.is_alive(), "the stream run did not end"
        with dg.build_sensor_context(instance=instance) as context:
            after = sensor(context)
    assert isinstance(busy, dg.SkipReason) and STREAM_JOB in str(busy.skip_message)
    assert isinstance(after, dg.RunRequest)  # the run ended: start another


def test_an_interrupted_run_flushes_and_keeps_what_it_received(
    world: tuple[Universe, ReplayServer], tmp_path: Path
) -> None:
    """``dagster job execute`` of the real code location, interrupted as a terminated run is:
    Dagster raises DagsterExecutionInterruptedError in the op, which stops the service, flushes
    and closes; every trade it had received is stored."""
    _universe, server = world
    home = tmp_path / "dagster_home"
    home.mkdir()
    db = tmp_path / "interrupted.db"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CRYPTO_PIPELINES_UNIVERSE": str(tmp_path / "universe.yaml"),
        "CRYPTO_PIPELINES_SOURCE": "replay",
        "CRYPTO_PIPELINES_REPLAY_URL": server.url,
        "CRYPTO_PIPELINES_DB_URL": f"sqlite:///{db}",
    }
    dagster = str(Path(sys.executable).parent / "dagster")
    process = subprocess.Popen(
        [dagster, "job", "execute", "-m", "crypto_pipelines.definitions", "-j", STREAM_JOB],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if db.exists():
                with MarketStore.open(f"sqlite:///{db}") as store:
                    if store.count("trades") >= 301:  # caught up and streaming
                        break
            time.sleep(0.3)
        time.sleep(1.5)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert "final stream statistics" in output, output[-3000:]
    text = output.split("final stream statistics: ", 1)[1]
    final, _end = json.JSONDecoder().raw_decode(text)
    with MarketStore.open(f"sqlite:///{db}") as store:
        ids = sorted(int(i) for i in store.read("trades")["trade_id"])
    assert ids == list(range(100, ids[-1] + 1)) and len(ids) >= 301
    assert final["catch_up_rows"]["okx"] >= 301
