"""``crypto-pipelines stream run`` as a user runs it: against the replay exchange, with the
universe and database from the environment; it stops after ``--for`` seconds or on SIGTERM,
keeps everything it received and prints its statistics as one JSON line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crypto_pipelines.replay import ReplayClock, ReplayServer
from crypto_pipelines.replay.tape import BookSnapshot
from crypto_pipelines.replay.tape.writer import write_book, write_ohlcv, write_trades
from crypto_pipelines.storage.store import MarketStore

T0 = 1_704_067_200_000


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    trades = [(T0 + i * 1000, 100 + i, "buy", "42000.5", "0.01") for i in range(600)]
    write_trades(tmp_path / "tape", "okx", "BTC/USDT", trades)
    write_ohlcv(tmp_path / "tape", "okx", "BTC/USDT", "1m", [(T0, "1", "1", "1", "1", "1")])
    books = [
        BookSnapshot(T0 + i * 1000, [(f"{42000 - i % 3}", "1.5")], [(f"{42001 + i % 2}", "2")])
        for i in range(600)
    ]
    write_book(tmp_path / "tape", "okx", "BTC/USDT", books)
    universe = tmp_path / "universe.yaml"
    universe.write_text(
        "source: replay\nexchanges:\n  okx:\n    symbols: [BTC/USDT]\n    timeframes: [1m]\n"
        "    start: 2024-01-01\n    trades: true\n    funding: false\n"
    )
    with ReplayServer(tmp_path / "tape", clock=ReplayClock(start_ms=T0 + 120_000, speed=1)) as srv:
        yield {
            **os.environ,
            "CRYPTO_PIPELINES_UNIVERSE": str(universe),
            "CRYPTO_PIPELINES_SOURCE": "replay",
            "CRYPTO_PIPELINES_REPLAY_URL": srv.url,
            "CRYPTO_PIPELINES_DB_URL": f"sqlite:///{tmp_path / 'market.db'}",
        }


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "crypto_pipelines.cli", "stream", "run", *args]


def _stored(env: dict[str, str]) -> list[int]:
    with MarketStore.open(env["CRYPTO_PIPELINES_DB_URL"]) as store:
        return sorted(int(i) for i in store.read("trades")["trade_id"])


def test_runs_for_seconds_and_prints_its_statistics(env: dict[str, str]) -> None:
    done = subprocess.run(_cli("--for", "2"), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    ids = _stored(env)
    assert ids[:121] == list(range(100, 221))  # the two minutes before "now", caught up
    assert stats["catch_up_rows"]["okx"] == len(ids)


def test_sigterm_flushes_and_exits_cleanly(env: dict[str, str]) -> None:
    process = subprocess.Popen(
        _cli(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(4)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["uptime_s"] > 0 and stats["catch_up_rows"]["okx"] >= 121
    assert len(_stored(env)) >= 121


def test_books_are_stored_with_books_on(env: dict[str, str]) -> None:
    args = _cli("--for", "3", "--books", "--book-depth", "5", "--book-every", "0.2")
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    with MarketStore.open(env["CRYPTO_PIPELINES_DB_URL"]) as store:
        books = store.read("order_book_snapshots")
    assert stats["messages"]["okx:books"] == books["ts"].nunique() >= 1, stats
    assert set(books["side"]) == {"bid", "ask"} and set(books["level"]) == {0}


def test_a_killed_stream_restarted_later_misses_no_trade(env: dict[str, str]) -> None:
    """SIGKILL (no flush, no goodbye), trades go on while nothing listens, then a new process:
    its catch-up from the newest stored trade fills the time it was dead."""
    first = subprocess.Popen(_cli(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(5)
    first.kill()
    first.wait(timeout=30)
    before = _stored(env)
    assert before and before == list(range(100, before[-1] + 1))
    time.sleep(4)  # the replay clock runs at speed 1: a trade a second, none received
    done = subprocess.run(_cli("--for", "3"), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ids = _stored(env)
    assert ids == list(range(100, ids[-1] + 1))  # every trade of the tape up to the end, once
    assert ids[-1] >= before[-1] + 4 + 3  # the dead seconds and the second run's are there
