"""``DagsterStreamControl`` against a real Dagster: ``dagster-webserver`` and ``dagster-daemon``
processes on a temporary instance (the project's dagster.yaml), the real code location, and
the stream job launched through them against a replay exchange: start, conflict, status with
the statistics the running stream logs, stop (the run is terminated and ends CANCELED), and
the same through the API's routes over HTTP."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from crypto_pipelines.api import ApiServices, ApiSettings
from crypto_pipelines.api.routes.stream import StreamStart
from crypto_pipelines.api.services import StreamConflict, StreamUnavailable
from crypto_pipelines.defs.api_stream_control import DagsterStreamControl, parse_statistics
from crypto_pipelines.defs.stream import StreamConfig
from crypto_pipelines.domain.universe import load_universe
from crypto_pipelines.replay import ReplayClock, ReplayServer
from crypto_pipelines.replay.tape.writer import write_ohlcv, write_trades
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.api.conftest import DESK, api_universe, free_port, serve_api

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
T0 = 1_704_067_200_000
DAEMON_QUERY = (
    '{ instance { daemonHealth { daemonStatus(daemonType: "QUEUED_RUN_COORDINATOR") '
    "{ healthy } } } }"
)


@dataclass
class Dagster:
    url: str
    db_url: str
    universe_path: Path


def _wait(what: str, check: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.25)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def dagster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dagster]:
    """Webserver and daemon on a fresh instance, serving the project's workspace with a
    universe of one okx symbol on a replay exchange (900 trades, one a second)."""
    root = tmp_path_factory.mktemp("dagster-stream")
    trades = [(T0 + i * 1000, 100 + i, "buy", "42000.5", "0.01") for i in range(900)]
    write_trades(root / "tape", "okx", "BTC/USDT", trades)
    write_ohlcv(root / "tape", "okx", "BTC/USDT", "1m", [(T0, "1", "1", "1", "1", "1")])
    universe_path = root / "universe.yaml"
    universe_path.write_text(
        "source: replay\nexchanges:\n  okx:\n    symbols: [BTC/USDT]\n    timeframes: [1m]\n"
        "    start: 2024-01-01\n    trades: true\n    funding: false\n"
    )
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    db_url = f"sqlite:///{root / 'market.db'}"
    port = free_port()
    clock = ReplayClock(start_ms=T0 + 300_000, speed=1)
    with ExitStack() as stack:  # unwound in reverse: daemon, webserver, log files, replay
        server = stack.enter_context(ReplayServer(root / "tape", clock=clock))
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "CRYPTO_PIPELINES_UNIVERSE": str(universe_path),
            "CRYPTO_PIPELINES_SOURCE": "replay",
            "CRYPTO_PIPELINES_REPLAY_URL": server.url,
            "CRYPTO_PIPELINES_DB_URL": db_url,
        }
        workspace = ["-w", str(ROOT / "workspace.yaml")]
        logs = root / "logs"
        logs.mkdir()
        webserver = subprocess.Popen(
            [str(BIN / "dagster-webserver"), *workspace, "-h", "127.0.0.1", "-p", str(port)],
            env=env,
            cwd=root,
            stdout=stack.enter_context((logs / "webserver.log").open("wb")),
            stderr=subprocess.STDOUT,
        )
        stack.callback(_stop, webserver)
        url = f"http://127.0.0.1:{port}"

        def serving() -> bool:
            assert webserver.poll() is None, (logs / "webserver.log").read_text()[-3000:]
            try:
                return httpx.get(f"{url}/server_info", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        # the webserver first: it creates the fresh instance's tables, which a daemon
        # starting at the same moment would try to create too (and die of)
        _wait("the webserver", serving, 60)
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", *workspace],
            env=env,
            cwd=root,
            stdout=stack.enter_context((logs / "daemon.log").open("wb")),
            stderr=subprocess.STDOUT,
        )
        stack.callback(_stop, daemon)

        def dequeuing() -> bool:
            assert daemon.poll() is None, (logs / "daemon.log").read_text()[-3000:]
            answer = httpx.post(f"{url}/graphql", json={"query": DAEMON_QUERY}, timeout=10)
            return bool(
                answer.json()["data"]["instance"]["daemonHealth"]["daemonStatus"]["healthy"]
            )

        _wait("the daemon's run queue", dequeuing, 60)
        yield Dagster(url, db_url, universe_path)


@pytest.fixture
def control(dagster: Dagster) -> Iterator[DagsterStreamControl]:
    """A control on the shared webserver; any run a test leaves active is stopped (and
    waited for), so one failing test does not leave the next a conflict."""
    made = DagsterStreamControl(dagster.url)
    yield made
    if made.status()["running"]:
        try:
            made.stop()
        except StreamConflict:  # already stopping
            pass
        _wait("the left-over run to end", lambda: not made.status()["running"], 60)


def _trades(db_url: str) -> int:
    with MarketStore.open(db_url) as store:
        return store.count("trades")


def test_start_status_and_stop_a_real_stream_run(
    dagster: Dagster, control: DagsterStreamControl
) -> None:
    assert control.status() == {"running": False, "job": "market_stream"}
    with pytest.raises(StreamConflict, match="no market_stream run is active"):
        control.stop()

    started = control.start({"report_every_s": 1, "flush_ms": 100})
    run_id = started["run_id"]
    assert started["running"] is True and started["status"] in ("QUEUED", "STARTING", "STARTED")
    assert started["run_url"] == f"{dagster.url}/runs/{run_id}"
    with pytest.raises(StreamConflict, match=run_id):
        control.start(None)

    # the daemon launches the run; its op catches up the five minutes before "now" (301
    # trades) and logs statistics every second, which status reads back from the run's log
    def caught_up() -> Mapping[str, Any] | None:
        state = control.status()
        stats = state["statistics"]
        if stats is not None and stats["catch_up_rows"].get("okx", 0) >= 301:
            return state
        return None

    running = _wait("statistics of the caught-up stream", caught_up, 50)
    assert running["run_id"] == run_id and running["status"] == "STARTED"
    assert running["running"] is True and running["started_at"] > time.time() - 120
    assert running["statistics_at"] >= running["started_at"]

    stopped = control.stop()
    assert stopped["run_id"] == run_id and stopped["status"] in ("CANCELING", "CANCELED")

    def ended() -> Mapping[str, Any] | None:
        state = control.status()
        return state if not state["running"] else None

    final = _wait("the terminated run to end", ended, 50)
    assert final["run_id"] == run_id and final["status"] == "CANCELED"
    # the statistics the op logged last, as it flushed and closed: later than the running ones
    stats = final["statistics"]
    assert final["statistics_at"] >= running["statistics_at"]
    assert stats["uptime_s"] >= running["statistics"]["uptime_s"]
    assert stats["catch_up_rows"]["okx"] >= 301 and _trades(dagster.db_url) >= 301
    with pytest.raises(StreamConflict, match="no market_stream run is active"):
        control.stop()


def test_the_api_routes_drive_the_stream_through_dagster(
    dagster: Dagster, control: DagsterStreamControl, tmp_path: Path
) -> None:
    settings = ApiSettings(keys=(DESK,))
    universe = load_universe(dagster.universe_path)
    with MarketStore.open(f"sqlite:///{tmp_path / 'api.db'}") as store:
        services = ApiServices(store=store, universe=universe, stream=control)
        with serve_api(settings, services) as api, api.client() as client:
            refused = client.post("/v1/stream/start", json={"exchanges": ["binance"]})
            assert refused.status_code == 422, refused.text
            started = client.post("/v1/stream/start", json={"exchanges": ["okx"]})
            assert started.status_code == 202, started.text
            run_id = started.json()["run_id"]
            again = client.post("/v1/stream/start")
            assert again.status_code == 409 and run_id in again.json()["detail"]
            _wait(
                "the run to start",
                lambda: client.get("/v1/stream/status").json()["status"] == "STARTED",
                40,
            )
            stopped = client.post("/v1/stream/stop")
            assert stopped.status_code == 200, stopped.text
            assert stopped.json()["run_id"] == run_id
            final = _wait(
                "the run to end",
                lambda: (s := client.get("/v1/stream/status").json())["running"] is False and s,
                50,
            )
            assert final["status"] == "CANCELED" and final["run_id"] == run_id
            assert client.post("/v1/stream/stop").status_code == 409


def test_an_unreachable_dagster_is_reported_not_raised_as_is() -> None:
    control = DagsterStreamControl(f"http://127.0.0.1:{free_port()}")
    for call in (control.status, control.stop, lambda: control.start(None)):
        with pytest.raises(StreamUnavailable, match=r"Dagster at http://127\.0\.0\.1:\d+"):
            call()


def test_the_api_answers_503_when_dagster_is_down(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with MarketStore.open(f"sqlite:///{tmp_path / 'api.db'}") as store:
        services = ApiServices(
            store=store, universe=api_universe(), stream=DagsterStreamControl(url)
        )
        with serve_api(ApiSettings(keys=(DESK,)), services) as api, api.client() as client:
            answers = [client.post("/v1/stream/start"), client.get("/v1/stream/status")]
    for answer in answers:
        assert answer.status_code == 503
        assert answer.json()["detail"].startswith(f"Dagster at {url}: query failed: Connection")


def test_the_api_start_body_has_exactly_the_stream_jobs_config_fields() -> None:
    """The API package cannot import the job's ``StreamConfig`` (no Dagster there): its copy
    must not drift from it."""
    assert set(StreamStart.model_fields) == set(StreamConfig.model_fields)


def test_statistics_are_read_from_the_ops_log_messages_only() -> None:
    assert parse_statistics('stream statistics: {"rows_written": 3}') == {"rows_written": 3}
    assert parse_statistics('final stream statistics: {"rows_written": 4} x') == {"rows_written": 4}
    assert parse_statistics("streaming 1 symbols of ['okx']") is None
    assert parse_statistics('user said "stream statistics: {}"') is None
    assert parse_statistics("stream statistics: not json") is None
