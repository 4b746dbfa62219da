"""The served API as a user runs it (``crypto-pipelines api`` in its own process): rows
answered 201 survive a SIGKILL of the server right after the answer, and the universe file,
database and keys come from the environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from crypto_pipelines.api.settings import KEYS_ENV
from crypto_pipelines.domain.universe import UNIVERSE_ENV
from crypto_pipelines.storage.engine import DB_URL_ENV
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.api.conftest import free_port

SECRET = "kill-test-secret-0123456789"
T0 = 1_704_067_200_000


def test_rows_answered_201_survive_sigkill(tmp_path: Path, db_url: str) -> None:
    universe = tmp_path / "universe.yaml"
    universe.write_text(
        "source: replay\nexchanges:\n  binance:\n    symbols: [BTC/USDT]\n    timeframes: [1m]\n"
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    port = free_port()
    env = {
        **os.environ,
        KEYS_ENV: f"feed:{SECRET}",
        UNIVERSE_ENV: str(universe),
        DB_URL_ENV: db_url,
        "DAGSTER_HOME": str(home),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "crypto_pipelines.cli", "api", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)

        def post(i: int) -> int:
            row = [T0 + i * 60_000, 10.0, 11.0, 9.0, 10.5, 1.0]
            body = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m", "rows": [row]}
            headers = {"Authorization": f"Bearer {SECRET}"}
            return httpx.post(f"{url}/v1/ohlcv", json=body, headers=headers, timeout=30).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(post, range(300)))
        server.send_signal(signal.SIGKILL)  # right after the last 201
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
        if server.stdout:
            server.stdout.close()
    assert codes == [201] * 300
    with MarketStore.open(db_url) as store:
        frame = store.read("ohlcv", exchange="binance", symbol="BTC/USDT", timeframe="1m")
    assert frame["ts"].tolist() == [T0 + i * 60_000 for i in range(300)]
