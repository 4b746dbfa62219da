"""``crypto-pipelines replay record``: the installed console script, run as a user would, against
an in-process ReplayServer (routed by CRYPTO_PIPELINES_REPLAY_URL or --replay-url). The client
keeps ccxt's real rate limiter here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from crypto_pipelines.replay import REPLAY_URL_ENV, ReplayClock, ReplayServer, Tape
from crypto_pipelines_tests.replay.record_helpers import (
    LINEAR,
    NOW,
    SPOT,
    T0,
    all_rows,
    values,
    write_source,
)

SCRIPT = Path(sys.executable).parent / "crypto-pipelines"


def run(args: list[str], env_url: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != REPLAY_URL_ENV}
    if env_url is not None:
        env[REPLAY_URL_ENV] = env_url
    return subprocess.run(
        [str(SCRIPT), "replay", "record", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    source = tmp_path / "source"
    write_source(source, "binance", [SPOT, LINEAR])
    with ReplayServer(source, clock=ReplayClock(NOW, speed=0)) as server:
        yield source, server


def test_record_via_env_url(served: tuple[Path, ReplayServer], tmp_path: Path) -> None:
    """Spot only: Binance futures' aggTrades weigh 20 (1 s apart under ccxt's limiter)."""
    source, server = served
    out = tmp_path / "out"
    since = "2023-11-13T23:00:00Z"  # ISO, an hour before the data
    args = ["--exchange", "binance", "--symbols", "BTC/USDT", "--since", since, str(out)]
    result = run([*args, "--timeframes", "1h", "--timeframes", "1m"], server.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "binance BTC/USDT ohlcv 1h: 45 rows",
        "binance BTC/USDT ohlcv 1m: 1525 rows",
        "binance BTC/USDT trades: 1200 rows",
        "binance BTC/USDT book: 1 rows",
    ]
    assert server.app.stats.snapshot()["totals"]["ok"] > 10  # it really went through the server
    src, rec = Tape.load(source), Tape.load(out)
    a, b = (
        src.exchanges["binance"].symbols["BTC/USDT"],
        rec.exchanges["binance"].symbols["BTC/USDT"],
    )
    for tf in ("1m", "1h"):
        assert all_rows(b.ohlcv[tf]) == all_rows(a.ohlcv[tf])
    assert all_rows(b.trades) == all_rows(a.trades)
    markets = rec.exchanges["binance"].markets
    assert list(markets) == ["BTC/USDT"]  # the recorded symbols only
    assert markets["BTC/USDT"] == src.exchanges["binance"].markets["BTC/USDT"]


def test_record_replay_url_option_and_switches(
    served: tuple[Path, ReplayServer], tmp_path: Path
) -> None:
    """--replay-url without the env var; --no-trades/--no-book; ms times; --gzip."""
    source, server = served
    out = tmp_path / "out"
    until = T0 + 86_400_000
    args = ["--exchange", "binance", "--symbols", "BTC/USDT:USDT", "--timeframes", "1h"]
    switches = ["--no-trades", "--no-book", "--gzip", "--no-progress"]
    times = ["--since", str(T0), "--until", str(until)]
    result = run([*args, *times, *switches, "--replay-url", server.url, str(out)], None)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "binance BTC/USDT:USDT ohlcv 1h: 22 rows",  # 24 h minus hours 5 and 6
        "binance BTC/USDT:USDT funding: 3 rows",
    ]
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [
        "binance/BTC_USDT_USDT/funding.csv.gz",
        "binance/BTC_USDT_USDT/ohlcv_1h.csv.gz",
        "binance/markets.json",
    ]
    a = Tape.load(source).exchanges["binance"].symbols["BTC/USDT:USDT"]
    b = Tape.load(out).exchanges["binance"].symbols["BTC/USDT:USDT"]
    assert a.funding is not None
    assert all_rows(b.funding) == [values(tuple(r)) for r in a.funding.between(T0, until - 1, 10)]


def test_record_failure_exits_1_with_named_problem(
    served: tuple[Path, ReplayServer], tmp_path: Path
) -> None:
    _, server = served
    out = tmp_path / "out"
    result = run(
        ["--exchange", "binance", "--symbols", "DOGE/USDT", "--since", str(T0), str(out)],
        server.url,
    )
    assert result.returncode == 1
    assert "error: binance DOGE/USDT markets: the exchange does not list DOGE/USDT" in result.stderr
    assert not out.exists() or not any(out.rglob("*"))
    bad = run(
        ["--exchange", "binance", "--symbols", "BTC/USDT", "--since", "yesterday", str(out)],
        server.url,
    )
    assert bad.returncode == 2 and "not a time" in bad.stderr
