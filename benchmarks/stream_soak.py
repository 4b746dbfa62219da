"""Soak: the stream over 200 symbols on the four venues at once, for ten minutes.

Targets (issue: real-time stream, Performance): "200 symbols across the four venues at once"
and "resident memory flat (within 10%) over a 10-minute run". The tape holds ``UNIVERSE``:
Binance, OKX and Bybit with 25 spot pairs and 25 linear perpetuals each, Coinbase Exchange
(spot only) with 50 pairs; every symbol trades at an equal spacing (the offered rate, 10,000
trades/s by default, spread evenly), ids counting up by one. The replay exchange runs on core
0, the stream (one ``StreamService`` for all four venues, the settings of
``benchmarks/stream.py``) in a child process on core 1, both as in ``benchmarks/stream.py``,
whose helpers this reuses (the tape, the child's bounded run, the exact loss check, the
summary).

Every ``SAMPLE_S`` the parent reads the stream process's resident set (``VmRSS`` in
``/proc/<pid>/status``) and prints a line: RSS, the rate received in the period, the
receive-to-commit p99 of the period (the worst second), buffer depth, tasks. Reported: RSS
at the first sample after the warm-up (``WARMUP_S``, counted on the stream's own clock), RSS
at the stop (read by the stream process itself from the same file as it stops receiving,
before the close), the largest sample, and growth = stop / warm-up (target <= 1.10; the
table shows it in percent, <= 110); the sustained rate (received between the warm-up and the
stop, all of it committed by the close), the p99 of every lag after the warm-up (a fixed
histogram in the child: the stream keeps only its latest lags, and storing all of them would
grow the heap being measured), and the loss check of ``benchmarks/stream.py`` per venue and
symbol: ids without hole or duplicate, and every trade the replay clock released before the
stop stored, but for the last ``BEHIND_OK_MS`` of in-flight trades (in total, and for the
symbol furthest behind, at its own rate).

``CRYPTO_PIPELINES_STREAM_SOAK_S`` sets the run length (default 600 s),
``CRYPTO_PIPELINES_STREAM_SOAK_RATE`` the offered rate (default 10,000 trades/s in total),
``CRYPTO_PIPELINES_STREAM_SOAK_WARMUP_S`` the warm-up (default 60 s, at most a third of the
run, so a short smoke run still has samples after it).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks.common import Result, ServerProcess
from benchmarks.stream import (
    BEHIND_OK_MS,
    GRACE_S,
    KEEP_UP,
    PROGRESS_S,
    START_MS,
    _check,
    _cpu_s,
    _emit,
    _pinned,
    _replay_now,
    _replay_sent_by_venue,
    _run_bounded,
    _settings,
    _stored_ids,
    _summary,
    _symbol_tape,
)

SECONDS_ENV = "CRYPTO_PIPELINES_STREAM_SOAK_S"
RATE_ENV = "CRYPTO_PIPELINES_STREAM_SOAK_RATE"
WARMUP_ENV = "CRYPTO_PIPELINES_STREAM_SOAK_WARMUP_S"
SECONDS = 600.0
RATE = 10_000
WARMUP_S = 60.0
SAMPLE_S = 10.0
GROWTH_OK = 1.10
LAG_OK_MS = 50.0
UNIVERSE: dict[str, tuple[int, int]] = {
    "binance": (25, 25),
    "okx": (25, 25),
    "bybit": (25, 25),
    "coinbaseexchange": (50, 0),
}
"""Per venue: spot pairs, linear perpetuals (Coinbase Exchange has none): 200 symbols."""
QUOTE = {"coinbaseexchange": "USD"}
LAG_BUCKET_MS = 1.0
LAG_BUCKETS = 60_000
"""The child's lag histogram: 1 ms buckets up to a minute (the last takes anything longer)."""


def _say(message: str) -> None:
    sys.stderr.write(f"[stream soak {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def _universe() -> dict[str, list[str]]:
    """Per venue, its symbols: ``S000/USDT``... spot, ``S000/USDT:USDT``... perpetuals."""
    out: dict[str, list[str]] = {}
    for venue, (spot, perps) in UNIVERSE.items():
        quote = QUOTE.get(venue, "USDT")
        out[venue] = [f"S{i:03d}/{quote}" for i in range(spot)]
        out[venue] += [f"S{i:03d}/{quote}:{quote}" for i in range(perps)]
    return out


def _rss_mb(pid: int) -> tuple[float, float] | None:
    """(VmRSS, VmHWM) of a process in MB, from ``/proc/<pid>/status``; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {
        key: float(value.split()[0]) / 1024
        for key, value in (line.split(":", 1) for line in status.splitlines() if ":" in line)
        if key in ("VmRSS", "VmHWM")
    }
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def _files_mb(db: Path) -> float:
    """The SQLite database's size with its WAL, in MB."""
    size = 0
    for path in (db, db.with_name(db.name + "-wal")):
        try:
            size += path.stat().st_size
        except OSError:
            pass
    return size / 2**20


# --- the child: the stream service itself --------------------------------------------------


class LagHistogram:
    """Receive-to-commit lags in fixed buckets: percentiles of a whole run in constant memory."""

    def __init__(self) -> None:
        self.counts = [0] * (LAG_BUCKETS + 1)
        self.total = 0
        self.max_ms = 0.0

    def add(self, lags_s: Iterable[float]) -> None:
        for lag in lags_s:
            ms = lag * 1000
            self.counts[min(int(ms / LAG_BUCKET_MS), LAG_BUCKETS)] += 1
            self.total += 1
            self.max_ms = max(self.max_ms, ms)

    def quantile_ms(self, q: float) -> float | None:
        """The upper edge of the bucket holding the ``q`` quantile (None without lags)."""
        if not self.total:
            return None
        rank = min(self.total, max(1, math.ceil(q * self.total)))
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return (index + 1) * LAG_BUCKET_MS
        return self.max_ms


def _p99_ms(lags_s: list[float]) -> float | None:
    if not lags_s:
        return None
    ordered = sorted(lags_s)
    return round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 2)


async def _child_run(
    url: str, db: Path, venues: dict[str, list[str]], seconds: float, warmup_s: float
) -> None:
    from crypto_pipelines.storage.store import MarketStore
    from crypto_pipelines.stream import StreamService

    with MarketStore.open(f"sqlite:///{db}") as store:
        service = StreamService(venues, store, settings=_settings(), replay_url=url)
        stats = service.stats
        stop = asyncio.Event()
        at_stop: dict[str, Any] = {}
        run_lags = LagHistogram()
        t0 = time.monotonic()
        warm_at: list[float] = []

        def stopping() -> None:
            # the replay clock, what the stream received and its resident set, as it stops
            rss = _rss_mb(os.getpid())
            at_stop.update(
                clock_ms=_replay_now(url),
                received=sum(stats.rows_received.values()),
                at=time.monotonic() - t0,
                rss_mb=None if rss is None else rss[0],
            )
            stop.set()

        async def progress() -> None:
            while True:
                await asyncio.sleep(PROGRESS_S)
                elapsed = time.monotonic() - t0
                # the stream keeps its latest lags only: each second's go into the histogram
                lags = list(stats.lags_s)
                stats.lags_s.clear()
                if warm_at:
                    run_lags.add(lags)
                elif elapsed >= warmup_s:
                    warm_at.append(elapsed)
                _emit(
                    "progress",
                    elapsed=round(elapsed, 2),
                    cpu_s=round(time.process_time(), 2),
                    stopping=stop.is_set(),
                    received=sum(stats.rows_received.values()),
                    by_venue={k.split(":")[0]: v for k, v in stats.rows_received.items()},
                    written=stats.rows_written,
                    buffer_depth=stats.buffer_depth,
                    flushes=stats.flushes,
                    lag_ms_p99=_p99_ms(lags),
                    lag_ms_p99_run=run_lags.quantile_ms(0.99),
                    tasks=len(asyncio.all_tasks()),
                    blocks=sys.getallocatedblocks(),
                    reconnects=dict(stats.reconnects),
                    errors=dict(stats.errors),
                )

        reporter = asyncio.create_task(progress())
        asyncio.get_running_loop().call_later(seconds, stopping)
        result = await service.run(stop)
        elapsed = time.monotonic() - t0
        reporter.cancel()
        if warm_at:  # the lags of the close's last flushes
            run_lags.add(stats.lags_s)
        ids = _stored_ids(store)
    rss = _rss_mb(os.getpid())
    _emit(
        "done",
        stats=result.as_json(),
        elapsed=elapsed,
        at_stop=at_stop,
        ids=ids,
        warm_at=warm_at[0] if warm_at else None,
        lags={
            "count": run_lags.total,
            "p50_ms": run_lags.quantile_ms(0.5),
            "p99_ms": run_lags.quantile_ms(0.99),
            "p999_ms": run_lags.quantile_ms(0.999),
            "max_ms": round(run_lags.max_ms, 2),
        },
        hwm_mb=None if rss is None else rss[1],
    )


def _child(argv: list[str]) -> None:
    url, db, venues_file, seconds, warmup_s = argv
    venues = json.loads(Path(venues_file).read_text())
    asyncio.run(_child_run(url, Path(db), venues, float(seconds), float(warmup_s)))


# --- the parent ------------------------------------------------------------------------------


def _latest(lines: list[dict[str, Any]]) -> dict[str, Any] | None:
    for line in reversed(lines):
        if line.get("kind") == "progress":
            return line
    return None


class Sampler:
    """Every ``SAMPLE_S``: the stream process's RSS (and the server's), with the stream's
    latest progress, one line to stderr."""

    def __init__(self, lines: list[dict[str, Any]], server: ServerProcess, db: Path) -> None:
        self.lines = lines
        self.server = server
        self.db = db
        self.samples: list[dict[str, Any]] = []
        self.start = time.monotonic()

    def __call__(self, pid: int) -> None:
        rss = _rss_mb(pid)
        if rss is None:
            return
        server = _rss_mb(self.server.proc.pid)
        last = _latest(self.lines) or {}
        seen = [p for p in self.lines[-int(SAMPLE_S / PROGRESS_S) - 1 :] if "lag_ms_p99" in p]
        lag = max((float(p["lag_ms_p99"]) for p in seen if p["lag_ms_p99"] is not None), default=0)
        before = self.samples[-1] if self.samples else None
        rate = None
        if before is not None and last and last["elapsed"] > before["stream_s"]:
            rate = (last["received"] - before["received"]) / (last["elapsed"] - before["stream_s"])
        sample = {
            "wall_s": round(time.monotonic() - self.start, 1),
            "stream_s": float(last.get("elapsed") or 0.0),
            "stopping": bool(last.get("stopping")),
            "rss_mb": round(rss[0], 1),
            "hwm_mb": round(rss[1], 1),
            "server_rss_mb": round(server[0], 1) if server else None,
            "received": int(last.get("received") or 0),
            "written": int(last.get("written") or 0),
            "rate": rate,
            "lag_ms_p99_period": lag,
            "lag_ms_p99_run": last.get("lag_ms_p99_run"),
            "buffer_depth": last.get("buffer_depth"),
            "tasks": last.get("tasks"),
            "py_blocks": last.get("blocks"),
            "db_mb": round(_files_mb(self.db), 1),
            "reconnects": last.get("reconnects"),
        }
        self.samples.append(sample)
        _say(
            f"t={sample['stream_s']:6.1f} s  RSS {rss[0]:7.1f} MB (server "
            f"{sample['server_rss_mb']} MB)  "
            f"{'-' if rate is None else f'{rate:,.0f}'} trades/s  received "
            f"{sample['received']:,}  written {sample['written']:,}  p99 {lag:.0f} ms "
            f"(run {sample['lag_ms_p99_run']})  buffer {sample['buffer_depth']}  tasks "
            f"{sample['tasks']}  Python blocks {sample['py_blocks'] or 0:,}  db "
            f"{sample['db_mb']:.0f} MB{'  stopping' if sample['stopping'] else ''}"
            f"{'  reconnects ' + str(sample['reconnects']) if sample['reconnects'] else ''}"
        )


def _run(rate: int, seconds: float, warmup_s: float) -> dict[str, Any]:
    venues = _universe()
    symbols = sum(len(names) for names in venues.values())
    spacing = symbols * 1000 / rate
    bound = seconds + GRACE_S + 60
    got: dict[str, Any] = {"rate": rate, "seconds": seconds, "warmup_s": warmup_s}
    got.update(bound_s=bound, symbols=symbols, spacing_ms=spacing, universe=UNIVERSE)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.monotonic()
        times: dict[str, dict[str, list[int]]] = {}
        k = 0
        for venue, names in venues.items():
            times[venue] = {}
            for name in names:
                times[venue][name] = _symbol_tape(
                    root / "tape", venue, name, k, spacing, seconds + 30
                )
                k += 1
        _say(f"tape written in {time.monotonic() - started:.0f} s; starting the replay exchange")
        venues_file = root / "venues.json"
        venues_file.write_text(json.dumps(venues))
        server = ServerProcess(root / "tape", "--now", str(START_MS), "--speed", "1")
        cmd = [sys.executable, "-m", "benchmarks.stream_soak", server.url, str(root / "m.db")]
        cmd = _pinned([*cmd, str(venues_file), str(seconds), str(warmup_s)])
        lines: list[dict[str, Any]] = []
        sampler = Sampler(lines, server, root / "m.db")
        got["loadavg_before"] = os.getloadavg()
        server_cpu, wall = _cpu_s(server.proc.pid), time.monotonic()
        try:
            _run_bounded(cmd, bound, lines, got, SAMPLE_S, sampler)
            got["server_sent_messages"] = _replay_sent_by_venue(server.url)
            after = _cpu_s(server.proc.pid)
            if server_cpu is not None and after is not None:
                got["server_cpu"] = (after - server_cpu) / (time.monotonic() - wall)
            got["server_rss_mb"] = _rss_mb(server.proc.pid)
            got["loadavg_after"] = os.getloadavg()
        finally:
            server.stop()
    got["samples"] = sampler.samples
    progress = [p for p in lines if p.get("kind") == "progress"]
    got["last_progress"] = progress[-1] if progress else None
    got["progress"] = progress
    done = next((p for p in lines if p.get("kind") == "done"), None)
    if done is None:
        return got
    got.update(done)
    got.pop("kind", None)
    clock_ms = (done.get("at_stop") or {}).get("clock_ms")
    ids = got.pop("ids")
    per_venue = {v: _check(times[v], ids.get(v, {}), clock_ms) for v in venues}
    got["per_venue"] = per_venue
    total: dict[str, Any] = {
        key: sum(c[key] for c in per_venue.values())
        for key in ("stored", "holes", "duplicates", "symbols")
    }
    total["released"] = None if clock_ms is None else sum(c["released"] for c in per_venue.values())
    worst = max(per_venue.items(), key=lambda item: item[1]["worst_behind"] or 0)
    total["worst_behind"] = worst[1]["worst_behind"]
    total["worst"] = f"{worst[0]} {worst[1]['worst']}"
    got["check"] = total
    return got


def _memory(got: dict[str, Any], warmup_s: float) -> dict[str, Any]:
    """RSS after the warm-up, at the stop, the largest sample, and their ratio."""
    running = [s for s in got.get("samples", []) if not s["stopping"]]
    warm = next((s for s in running if s["stream_s"] >= warmup_s), None)
    at_stop = (got.get("at_stop") or {}).get("rss_mb")
    end = at_stop if at_stop is not None else (running[-1]["rss_mb"] if running else None)
    seen = [s["rss_mb"] for s in running] + ([at_stop] if at_stop is not None else [])
    warm_mb = None if warm is None else warm["rss_mb"]
    ratio = None if warm_mb is None or end is None else end / warm_mb
    return {
        "warm_mb": warm_mb,
        "warm_at_s": None if warm is None else warm["stream_s"],
        "end_mb": end,
        "max_mb": max(seen) if seen else None,
        "hwm_mb": got.get("hwm_mb"),
        "ratio": ratio,
    }


def stream_soak() -> list[Result]:
    seconds = float(os.environ.get(SECONDS_ENV, SECONDS))
    rate = int(os.environ.get(RATE_ENV, RATE))
    warmup_s = float(os.environ.get(WARMUP_ENV, min(WARMUP_S, seconds / 3)))
    venues = _universe()
    symbols = sum(len(names) for names in venues.values())
    _say(
        f"{symbols} symbols on {len(venues)} venues, {rate:,} trades/s offered, {seconds:g} s "
        f"(warm-up {warmup_s:g} s, RSS every {SAMPLE_S:g} s); load {os.getloadavg()[0]:.2f}"
    )
    started = time.monotonic()
    got = _run(rate, seconds, warmup_s)
    tag = f"{symbols} symbols, 4 venues, {rate:,} offered, {seconds:g} s"
    if "check" not in got:
        _say(
            f"DID NOT FINISH within {got['bound_s']:g} s (returncode {got.get('returncode')}); "
            f"last progress {got.get('last_progress')}"
        )
        s: dict[str, Any] = _summary(rate, got, symbols, warmup_s)
    else:
        s = _summary(rate, got, symbols, warmup_s)
        s["p99"] = got["lags"]["p99_ms"]  # every lag after the warm-up, not the last second's
    memory = _memory(got, warmup_s)
    check = got.get("check") or {}
    worst = check.get("worst_behind")
    worst_ms = None if worst is None else worst / (rate / symbols) * 1000
    lossless = bool(s["lossless"]) and worst_ms is not None and worst_ms <= BEHIND_OK_MS
    got["summary"] = {**s, "memory": memory, "worst_behind_ms": worst_ms, "lossless": lossless}
    sustained = float(s.get("steady") or 0.0) if s["finished"] else float(s["achieved"])
    if s["finished"]:
        _say(
            f"RSS after warm-up {memory['warm_mb']} MB (t={memory['warm_at_s']} s), at stop "
            f"{memory['end_mb']} MB, max {memory['max_mb']} MB (peak {memory['hwm_mb']}), "
            f"growth {memory['ratio'] or 0:.3f}; {sustained:,.0f} trades/s sustained, p99 "
            f"{s['p99']} ms; stored {s['stored']:,} (holes {s['holes']}, dups "
            f"{s['duplicates']}, symbols {s['symbols']}/{symbols}, behind {s['behind']} = "
            f"{s['behind_ms'] or 0:.0f} ms, worst {check.get('worst')}: {worst} = "
            f"{worst_ms or 0:.0f} ms), lossless={lossless}; load "
            f"{got['loadavg_before'][0]:.2f} -> {got['loadavg_after'][0]:.2f}; "
            f"{time.monotonic() - started:.0f} s wall"
        )
    details = {k: v for k, v in got.items() if k not in ("progress", "last_progress")}
    ratio = memory["ratio"]
    return [
        Result(
            "stream_soak",
            f"RSS at stop / RSS after {warmup_s:g} s warm-up, {tag}",
            float(ratio or 0.0) * 100,  # the table shows one decimal: a ratio in percent
            "%",
            f"<= {GROWTH_OK * 100:g}",
            s["finished"] and ratio is not None and ratio <= GROWTH_OK,
            details,
        ),
        Result("stream_soak", "RSS after warm-up", float(memory["warm_mb"] or 0.0), "MB"),
        Result("stream_soak", "RSS at stop", float(memory["end_mb"] or 0.0), "MB"),
        Result("stream_soak", "RSS max (of the samples)", float(memory["max_mb"] or 0.0), "MB"),
        Result(
            "stream_soak",
            f"trades/s received (sustained, all committed), {tag}",
            sustained,
            "trades/s",
            f">= {KEEP_UP:.0%} of {rate:,}",
            s["finished"] and sustained >= KEEP_UP * rate,
        ),
        Result(
            "stream_soak",
            "receive-to-commit p99 after warm-up",
            float(s["p99"] or 0.0),
            "ms",
            f"< {LAG_OK_MS:g}",
            s["finished"] and s["p99"] is not None and float(s["p99"]) < LAG_OK_MS,
        ),
        Result(
            "stream_soak",
            "stored == released per venue and symbol (no hole, duplicate or backlog)",
            float(s.get("behind_ms") or 0.0),
            "ms behind",
            f"<= {BEHIND_OK_MS:g} (worst symbol too)",
            lossless,
        ),
    ]


if __name__ == "__main__":
    _child(sys.argv[1:])
