"""A one-year backfill of one symbol's 1m candles, launched as the UI does.

The webserver and the daemon run as ``make dev`` runs them; the backfill is submitted with
the same GraphQL mutation the UI's "Materialize" dialog sends (``launchPartitionBackfill``,
365 partitions), and the clock runs until the daemon reports the backfill complete. Target
(issue: historical assets): under 60 s with rate limits off.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.common import CLI, Result, ServerProcess
from crypto_pipelines.replay.synth import SynthSpec, write_synthetic_tape
from crypto_pipelines.storage.store import MarketStore

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
START = datetime(2024, 1, 1, tzinfo=UTC)
DAYS = 365
MUTATION = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
  }
}"""
STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status numPartitions runs(limit: 100) { runId status startTime endTime } }
    ... on PythonError { message }
  }
}"""


def _graphql(url: str, query: str, variables: dict[str, object]) -> dict:
    body = json.dumps({"query": query, "variables": variables}).encode()
    req = urllib.request.Request(
        url + "/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/server_info", timeout=2).read()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("dagster webserver did not start")


def one_year_backfill() -> list[Result]:
    """Instance storage as ``make dev`` has it: SQLite under DAGSTER_HOME."""
    return _backfill("dagster_backfill", None)


def one_year_backfill_postgres() -> list[Result]:
    """The same with dagster-postgres instance storage (``dagster.postgres.yaml``), in a
    throwaway database on the PostgreSQL server of ``CRYPTO_PIPELINES_BENCH_PG`` (default:
    postgres@127.0.0.1:5432)."""
    import psycopg

    server = os.environ.get(
        "CRYPTO_PIPELINES_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    name = f"dagster_bench_{os.getpid()}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        info = psycopg.conninfo.conninfo_to_dict(server)
        pg_env = {
            "DAGSTER_PG_HOST": str(info.get("host", "127.0.0.1")),
            "DAGSTER_PG_PORT": str(info.get("port", "5432")),
            "DAGSTER_PG_USER": str(info.get("user", "postgres")),
            "DAGSTER_PG_PASSWORD": str(info.get("password", "")),
            "DAGSTER_PG_DB": name,
        }
        return _backfill("dagster_backfill_pg", pg_env)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _backfill(label: str, pg_env: dict[str, str] | None) -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
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
        write_synthetic_tape(root / "tape", spec)
        now = (START + timedelta(days=DAYS + 1)).isoformat()
        server = ServerProcess(root / "tape", "--now", now, "--speed", "0")
        home = root / "dagster_home"
        home.mkdir()
        instance_yaml = "dagster.postgres.yaml" if pg_env else "dagster.yaml"
        (home / "dagster.yaml").write_text((ROOT / instance_yaml).read_text())
        universe = root / "universe.yaml"
        universe.write_text(
            "source: replay\nexchanges:\n  binance:\n    symbols: [BTC/USDT]\n    timeframes: [1m]\n    start: 2024-01-01\n    funding: false\n"
        )
        db = root / "market.db"
        env = dict(
            os.environ,
            DAGSTER_HOME=str(home),
            CRYPTO_PIPELINES_UNIVERSE=str(universe),
            CRYPTO_PIPELINES_REPLAY_URL=server.url,
            CRYPTO_PIPELINES_DB_URL=f"sqlite:///{db}",
        )
        env.pop("CRYPTO_PIPELINES_SOURCE", None)
        env.update(pg_env or {})
        subprocess.run([CLI, "partitions", "sync"], env=env, check=True, capture_output=True)
        port = _free_port()
        web = subprocess.Popen(
            [
                str(BIN / "dagster-webserver"),
                "-w",
                str(ROOT / "workspace.yaml"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_http(url)
            keys = [
                f"{(START + timedelta(days=d)).date().isoformat()}|BTC/USDT" for d in range(DAYS)
            ]
            params = {
                "partitionNames": keys,
                "assetSelection": [{"path": ["binance", "ohlcv_1m"]}],
                "fromFailure": False,
            }
            t0 = time.monotonic()
            launched = _graphql(url, MUTATION, {"params": params})["data"][
                "launchPartitionBackfill"
            ]
            if launched["__typename"] != "LaunchBackfillSuccess":
                raise RuntimeError(f"backfill not launched: {launched}")
            backfill_id = launched["backfillId"]
            status: dict = {}
            data_done: float | None = None
            while time.monotonic() - t0 < 600:
                status = _graphql(url, STATUS, {"id": backfill_id})["data"][
                    "partitionBackfillOrError"
                ]
                runs_now = status.get("runs") or []
                if (
                    data_done is None
                    and runs_now
                    and all(r["status"] == "SUCCESS" for r in runs_now)
                ):
                    data_done = time.monotonic() - t0
                if status.get("status") in (
                    "COMPLETED",
                    "COMPLETED_SUCCESS",
                    "COMPLETED_FAILED",
                    "FAILED",
                    "CANCELED",
                ):
                    break
                time.sleep(0.5)
            elapsed = time.monotonic() - t0
        finally:
            for proc in (daemon, web):
                proc.terminate()
            for proc in (daemon, web):
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            server.stop()
        with MarketStore.open(f"sqlite:///{db}") as store:
            stored = store.count("ohlcv", exchange="binance", symbol="BTC/USDT", timeframe="1m")
    runs = status.get("runs") or []
    ok = status.get("status") in ("COMPLETED", "COMPLETED_SUCCESS") and stored > 0
    run_s = [r["endTime"] - r["startTime"] for r in runs if r.get("endTime") and r.get("startTime")]
    return [
        Result(
            label,
            "launch -> every partition materialized (run succeeded)",
            data_done if data_done is not None else float("nan"),
            "s",
            "< 60",
            data_done is not None and data_done < 60,
        ),
        Result(label, "time inside the run (start -> end)", sum(run_s), "s"),
        Result(
            label,
            "launch -> backfill marked complete by the daemon",
            elapsed,
            "s",
            "",
            ok,
            {"status": status.get("status"), "runs": len(runs), "candles_stored": stored},
        ),
        Result(label, "runs launched", len(runs), "runs", "a handful"),
        Result(label, "candles stored", stored, "candles"),
    ]
