"""The stream end to end: trades over WebSockets from the replay exchange, parsed by stock
ccxt.pro, validated and committed through the sink into SQLite.

Targets (issue: real-time stream): at least 20,000 trades/s sustained with receive-to-commit
p99 under 50 ms and no loss. The replay exchange runs as the CLI does on core 0, the stream in
a child process on core 1; the tape holds ``SYMBOLS`` Binance spot pairs, each trading at
an equal spacing (offered rate = symbols x 1000 / spacing in ms), with ids counting up by one
(as Binance's are), and the replay clock runs in real time from the tape's start, so the offered
rate is what the exchange would send.

Loss is checked exactly: per symbol the stored ids must run from the first stored to the
newest without a hole or a duplicate, and every trade the clock released before the stream
stopped must be stored, but for those released in the last ``BEHIND_OK_MS`` (in flight when
the stream stopped, as they would be on any stop). "Behind" is how far (in trades, and in ms
of the offered rate) the committed rows trailed the replay clock when the stream stopped:
the end-to-end delay the receive-to-commit lag does not see (the server's and the socket's
backlog).

The rate is the sustained one: rows received between the end of the warm-up (``WARMUP_S``)
and the stop, per second, all of which the close commits (a run that left any uncommitted
fails the loss check); the whole run's average of committed rows, start-up and close
included, is in the JSON as ``achieved``.

Each rate runs in a child process with a hard time bound (the run, plus ``GRACE_S`` to start,
drain and close): a rate that does not finish is killed and reported as failed, with the last
progress it reported (and a ``py-spy dump`` of it when py-spy is on the PATH). A line per rate
goes to stderr as it finishes; the table and the JSON come at the end.
``CRYPTO_PIPELINES_STREAM_BENCH_S`` sets the run length (default 20 s),
``CRYPTO_PIPELINES_STREAM_BENCH_RATES`` the offered rates (comma-separated), and
``CRYPTO_PIPELINES_STREAM_BENCH_INLINE=1`` measures the writer flushing on the event loop
(``StreamSettings.flush_inline``) instead of the default worker thread.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.common import Result, ServerProcess

if TYPE_CHECKING:
    from crypto_pipelines.storage.store import MarketStore
    from crypto_pipelines.stream import StreamSettings

T0 = 1_704_067_200_000
RATES = (2_000, 10_000, 20_000)  # offered trades/s
SYMBOLS = 100
START_MS = T0 + 5_000
GRACE_S = 60.0
"""Beyond the run's length, how long a rate may take to start, drain and close."""
BEHIND_OK_MS = 200.0
"""Trades released this recently (ms of the offered rate) may be in flight at the stop: the
replay's 20 ms ticks, the socket, the last flush, the clock read over HTTP."""
PROGRESS_S = 1.0
KEEP_UP = 0.99
"""The sustained rate passes at this share of the offered 20,000/s: the stream cannot commit
faster than the exchange sends, so "at least 20,000" reads "keeps up with 20,000"."""
WARMUP_S = 2.0
"""Lags of the first seconds (imports, first validations, subscriptions) are not counted:
the target is the sustained rate."""
ROOT = Path(__file__).resolve().parent.parent


def _say(message: str) -> None:
    sys.stderr.write(f"[stream bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def _symbol_tape(
    root: Path, exchange: str, name: str, k: int, spacing_ms: float, seconds: float
) -> list[int]:
    """Write one symbol's trades (the ``k``-th symbol of the tape: its times are offset by
    ``k % 7`` ms) and a candle; the trades' times in id order (id = index + 1)."""
    from crypto_pipelines.replay.tape.writer import write_ohlcv, write_trades

    n = int(seconds * 1000 / spacing_ms) + 200
    ts = [T0 + int(i * spacing_ms) + k % 7 for i in range(n)]
    rows = ((t, i + 1, "buy" if i % 2 else "sell", "1.5", "2") for i, t in enumerate(ts))
    write_trades(root, exchange, name, rows)
    write_ohlcv(root, exchange, name, "1m", [(T0, "1.5", "1.5", "1.5", "1.5", "1")])
    return ts


def _tape(root: Path, symbols: int, spacing_ms: float, seconds: float) -> dict[str, list[int]]:
    """Write the tape; per symbol, the trades' times in id order (id = index + 1)."""
    return {
        name: _symbol_tape(root, "binance", name, k, spacing_ms, seconds)
        for k, name in ((k, f"C{k:03d}/USDT") for k in range(symbols))
    }


# --- the child: the stream service itself --------------------------------------------------


def _inline() -> bool:
    return os.environ.get("CRYPTO_PIPELINES_STREAM_BENCH_INLINE", "") == "1"


def _emit(kind: str, **payload: Any) -> None:
    sys.stdout.write(json.dumps({"kind": kind, **payload}) + "\n")
    sys.stdout.flush()


def _replay_now(url: str) -> int:
    with urllib.request.urlopen(f"{url}/binance/api.binance.com/api/v3/time", timeout=5) as r:
        return int(json.loads(r.read())["serverTime"])


TRADE_CHANNELS = ("ws:trade", "ws:aggTrade", "ws:trades", "ws:publicTrade", "ws:matches")
"""The replay's trade channels: Binance's ``trade`` or ``aggTrade`` (as the venue's stream
options ask), OKX's ``trades``, Bybit's ``publicTrade``, Coinbase Exchange's ``matches``."""


def _replay_sent_by_venue(url: str) -> dict[str, int]:
    """Trade messages the replay exchange sent, per venue (a message may hold many trades)."""
    with urllib.request.urlopen(f"{url}/_replay/stats", timeout=5) as r:
        exchanges = json.loads(r.read())["exchanges"]
    return {
        venue: sum(
            int(c.get("ws_messages", 0))
            for channel, c in counts.items()
            if channel in TRADE_CHANNELS
        )
        for venue, counts in exchanges.items()
    }


def _replay_sent(url: str) -> int:
    return _replay_sent_by_venue(url).get("binance", 0)


def _settings() -> StreamSettings:
    """The stream's settings in the benchmarks: no REST catch-up (every stored trade came
    over the WebSocket), short flushes."""
    from crypto_pipelines.stream import StreamSettings

    return StreamSettings(
        catch_up=False,
        watchdog_s=10,
        flush_ms=50,
        flush_rows=20_000,
        flush_inline=_inline(),
    )


def _stored_ids(store: MarketStore) -> dict[str, dict[str, list[int]]]:
    """Per exchange and symbol: the lowest and highest stored trade id, the rows and the
    distinct ids."""
    with store.engine.connect() as connection:
        per_symbol = connection.exec_driver_sql(
            "SELECT exchange, symbol, MIN(CAST(trade_id AS INTEGER)), "
            "MAX(CAST(trade_id AS INTEGER)), COUNT(*), COUNT(DISTINCT trade_id) "
            "FROM trades GROUP BY exchange, symbol"
        ).all()
    ids: dict[str, dict[str, list[int]]] = {}
    for r in per_symbol:
        ids.setdefault(str(r[0]), {})[str(r[1])] = [int(r[2]), int(r[3]), int(r[4]), int(r[5])]
    return ids


async def _child_run(url: str, db: Path, names: list[str], seconds: float) -> None:
    from crypto_pipelines.storage.store import MarketStore
    from crypto_pipelines.stream import StreamService

    with MarketStore.open(f"sqlite:///{db}") as store:
        service = StreamService({"binance": names}, store, settings=_settings(), replay_url=url)
        stats = service.stats
        stop = asyncio.Event()
        at_stop: dict[str, Any] = {}
        t0 = time.monotonic()

        def stopping() -> None:
            # the replay clock and what the server sent, as the stream stops receiving
            at_stop.update(
                clock_ms=_replay_now(url),
                received=sum(stats.rows_received.values()),
                at=time.monotonic() - t0,
            )
            stop.set()

        async def progress() -> None:
            warm = False
            while True:
                await asyncio.sleep(PROGRESS_S)
                if not warm and time.monotonic() - t0 >= WARMUP_S:
                    warm = True
                    stats.lags_s.clear()
                _emit(
                    "progress",
                    elapsed=round(time.monotonic() - t0, 2),
                    cpu_s=round(time.process_time(), 2),
                    stopping=stop.is_set(),
                    received=sum(stats.rows_received.values()),
                    written=stats.rows_written,
                    buffer_depth=stats.buffer_depth,
                    flushes=stats.flushes,
                    lag_ms_p99=stats.lag_ms(0.99),
                    errors=dict(stats.errors),
                )

        reporter = asyncio.create_task(progress())
        asyncio.get_running_loop().call_later(seconds, stopping)
        result = await service.run(stop)
        elapsed = time.monotonic() - t0
        reporter.cancel()
        ids = _stored_ids(store).get("binance", {})
    _emit("done", stats=result.as_json(), elapsed=elapsed, at_stop=at_stop, ids=ids)


def _child(argv: list[str]) -> None:
    url, db, names_file, seconds = argv
    names = json.loads(Path(names_file).read_text())
    asyncio.run(_child_run(url, Path(db), names, float(seconds)))


# --- the parent: one rate at a time, bounded --------------------------------------------------


def _read_lines(proc: subprocess.Popen[str], sink: list[dict[str, Any]]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        try:
            sink.append(json.loads(line))
        except json.JSONDecodeError:
            sink.append({"kind": "text", "text": line.rstrip()})


def _pyspy_dump(pid: int) -> str:
    tool = shutil.which("py-spy")
    if tool is None:
        return "py-spy not on PATH"
    try:
        out = subprocess.run(
            [tool, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"py-spy failed: {exc}"
    return (out.stdout + out.stderr)[-8_000:]


def _cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _check(
    times: Mapping[str, Sequence[int]], ids: Mapping[str, list[int]], clock_ms: int | None
) -> dict[str, Any]:
    """Holes and duplicates among the stored ids, and how many trades the clock had released
    (from the first stored of each symbol on) that were not stored at the stop; in total and
    for the symbol furthest behind (``worst_behind``, ``worst``)."""
    holes = dups = stored = released = symbols = 0
    worst, worst_behind = "", 0
    for name, ts in times.items():
        low, high, count, distinct = ids.get(name, [0, -1, 0, 0])
        stored += count
        dups += count - distinct
        if count:
            symbols += 1
            holes += (high - low + 1) - distinct
        if clock_ms is not None and count:
            out = bisect.bisect_right(ts, clock_ms) - (low - 1)
            released += out
            if not worst or out - count > worst_behind:
                worst, worst_behind = name, out - count
    return {
        "stored": stored,
        "holes": holes,
        "duplicates": dups,
        "released": released if clock_ms is not None else None,
        "symbols": symbols,
        "worst_behind": worst_behind if clock_ms is not None else None,
        "worst": worst,
    }


def _pinned(cmd: list[str], core: int = 1) -> list[str]:
    """``cmd`` run on one core (``taskset`` execs it: the process id stays the command's)."""
    if hasattr(os, "sched_setaffinity") and shutil.which("taskset"):
        return ["taskset", "-c", str(core), *cmd]
    return cmd


def _run_bounded(
    cmd: list[str],
    bound: float,
    lines: list[dict[str, Any]],
    got: dict[str, Any],
    every_s: float = 0.0,
    tick: Callable[[int], None] | None = None,
) -> None:
    """Run the child ``cmd`` (its JSON lines into ``lines``) for at most ``bound`` seconds,
    calling ``tick(pid)`` every ``every_s`` while it runs; a child still running at the bound
    is dumped (``got["dump"]``) and killed (``got["timed_out"]``)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    reader = threading.Thread(target=_read_lines, args=(proc, lines), daemon=True)
    reader.start()
    start = time.monotonic()
    deadline = start + bound
    next_tick = start + every_s if tick is not None and every_s > 0 else math.inf
    while True:
        now = time.monotonic()
        try:
            proc.wait(timeout=max(min(deadline, next_tick) - now, 0.0))
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                got["timed_out"] = True
                got["dump"] = _pyspy_dump(proc.pid)
                proc.kill()
                proc.wait()
                break
            if tick is not None:
                tick(proc.pid)
            next_tick += every_s
    reader.join(timeout=5)
    got["returncode"] = proc.returncode


def _one_rate(rate: int, seconds: float) -> dict[str, Any]:
    spacing = SYMBOLS * 1000 / rate
    bound = seconds + GRACE_S
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        times = _tape(root / "tape", SYMBOLS, spacing, seconds + 30)
        names_file = root / "names.json"
        names_file.write_text(json.dumps(list(times)))
        server = ServerProcess(root / "tape", "--now", str(START_MS), "--speed", "1")
        cmd = [sys.executable, "-m", "benchmarks.stream", server.url, str(root / "m.db")]
        cmd = _pinned([*cmd, str(names_file), str(seconds)])
        lines: list[dict[str, Any]] = []
        got: dict[str, Any] = {"rate": rate, "seconds": seconds, "bound_s": bound}
        got["writer"] = "inline" if _inline() else "thread"
        got["loadavg_before"] = os.getloadavg()
        server_cpu, wall = _cpu_s(server.proc.pid), time.monotonic()
        try:
            _run_bounded(cmd, bound, lines, got)
            got["server_sent"] = _replay_sent(server.url)
            after = _cpu_s(server.proc.pid)
            if server_cpu is not None and after is not None:
                got["server_cpu"] = (after - server_cpu) / (time.monotonic() - wall)
            got["loadavg_after"] = os.getloadavg()
        finally:
            server.stop()
    progress = [p for p in lines if p.get("kind") == "progress"]
    got["last_progress"] = progress[-1] if progress else None
    got["progress"] = progress
    done = next((p for p in lines if p.get("kind") == "done"), None)
    if done is not None:
        got.update(done)
        got.pop("kind", None)
        at_stop = done.get("at_stop") or {}
        got["check"] = _check(times, done["ids"], at_stop.get("clock_ms"))
        got.pop("ids", None)
    return got


def _summary(
    rate: int, got: dict[str, Any], symbols: int = SYMBOLS, warmup_s: float = WARMUP_S
) -> dict[str, Any]:
    """The figures of one rate: achieved rate, steady rate (after ``warmup_s``), p99, loss,
    how far behind (``got["check"]``: ``_check``'s figures, of all ``symbols``)."""
    stats = got.get("stats")
    if stats is None:  # never finished
        last = got.get("last_progress") or {}
        elapsed = float(last.get("elapsed") or 0.0)
        written = int(last.get("written") or 0)
        return {
            "finished": False,
            "achieved": written / elapsed if elapsed else 0.0,
            "p99": last.get("lag_ms_p99"),
            "lossless": False,
            "behind_ms": None,
            "how_far": last,
        }
    achieved = float(stats["rows_written"]) / float(got["elapsed"])
    steady = [p for p in got["progress"] if not p["stopping"] and p["elapsed"] >= warmup_s]
    steady_rate = stream_cpu = None
    at_stop = got.get("at_stop") or {}
    if len(steady) >= 2:
        first, last = steady[0], steady[-1]
        span = last["elapsed"] - first["elapsed"]
        stream_cpu = (last["cpu_s"] - first["cpu_s"]) / span
        # Counted as received up to the stop: all of it is committed by the close (checked
        # below), and it moves per message where the committed count jumps per flush.
        if "received" in at_stop:
            span = at_stop["at"] - first["elapsed"]
            steady_rate = (at_stop["received"] - first["received"]) / span
        else:
            steady_rate = (last["written"] - first["written"]) / span
    check = got["check"]
    behind = None if check["released"] is None else check["released"] - check["stored"]
    behind_ms = None if behind is None else behind / rate * 1000
    lossless = (
        check["holes"] == 0
        and check["duplicates"] == 0
        and stats["rows_rejected"] == 0
        and check["symbols"] == symbols
        and stats["rows_written"] == sum(stats["rows_received"].values())
        and behind_ms is not None
        and behind_ms <= BEHIND_OK_MS
    )
    return {
        "finished": True,
        "achieved": achieved,
        "steady": steady_rate,
        "p99": stats["lag_ms_p99"],
        "lossless": lossless,
        "behind": behind,
        "behind_ms": behind_ms,
        "stream_cpu": stream_cpu,
        "server_cpu": got.get("server_cpu"),
        **check,
    }


def _share(cpu: float | None) -> str:
    return "?" if cpu is None else f"{cpu:.0%}"


def stream_throughput() -> list[Result]:
    seconds = float(os.environ.get("CRYPTO_PIPELINES_STREAM_BENCH_S", "20"))
    rates_env = os.environ.get("CRYPTO_PIPELINES_STREAM_BENCH_RATES")
    rates = tuple(int(r) for r in rates_env.split(",")) if rates_env else RATES
    results: list[Result] = []
    for rate in rates:
        writer = "inline" if _inline() else "thread"
        tag = ", inline writer" if _inline() else ""
        _say(f"{rate:,} trades/s offered, {SYMBOLS} symbols, {seconds:g} s, {writer} writer ...")
        started = time.monotonic()
        got = _one_rate(rate, seconds)
        s = _summary(rate, got)
        got["summary"] = s
        p99 = s["p99"]
        if s["finished"]:
            steady = "-" if s["steady"] is None else f"{s['steady']:,.0f}"
            behind = "?" if s["behind_ms"] is None else f"{s['behind']} ({s['behind_ms']:.0f} ms)"
            _say(
                f"{rate:,} offered: {s['achieved']:,.0f} trades/s committed (steady {steady}), "
                f"p99 {p99} ms, stored {s['stored']:,} (holes {s['holes']}, dups "
                f"{s['duplicates']}, symbols {s['symbols']}, behind the clock at stop {behind}), "
                f"lossless={s['lossless']}; CPU stream {_share(s['stream_cpu'])} server "
                f"{_share(s['server_cpu'])}; load {got['loadavg_before'][0]:.2f} -> "
                f"{got['loadavg_after'][0]:.2f}; {time.monotonic() - started:.0f} s wall"
            )
        else:
            _say(
                f"{rate:,} offered: DID NOT FINISH within {got['bound_s']:g} s "
                f"(returncode {got.get('returncode')}); last progress {s['how_far']}"
            )
        target = rate == 20_000
        sustained = (s.get("steady") or 0.0) if s["finished"] else s["achieved"]
        results.append(
            Result(
                "stream",
                f"trades/s committed (sustained), {SYMBOLS} symbols, {rate:,} offered{tag}",
                sustained,
                "trades/s",
                f">= {KEEP_UP:.0%} of 20,000" if target else "",
                (s["finished"] and sustained >= KEEP_UP * rate) if target else None,
                {k: v for k, v in got.items() if k != "progress"},
            )
        )
        results.append(
            Result(
                "stream",
                f"receive-to-commit p99, {rate:,} offered{tag}",
                float(p99 or 0.0),
                "ms",
                "< 50",
                s["finished"] and p99 is not None and float(p99) < 50,
            )
        )
        results.append(
            Result(
                "stream",
                f"stored == offered (no hole, duplicate or backlog), {rate:,} offered{tag}",
                float(s["behind_ms"] or 0.0),
                "ms behind",
                f"<= {BEHIND_OK_MS:g}",
                bool(s["lossless"]),
            )
        )
    return results


if __name__ == "__main__":
    _child(sys.argv[1:])
