"""The offline demo (``make demo``): a synthetic tape, the replay exchange serving it with its
clock near the tape's end, and the Dagster UI and daemon on a home of their own.

What a newcomer should see within minutes is the product working on data that exists: the
universe starts on the tape's first day and names exactly the tape's markets, and the replay
clock runs (at real speed) from a little before the tape's end, so the incremental sensors
load days that hold data, never years of empty partitions, and the last minutes of the tape
arrive live. The demo's ``DAGSTER_HOME`` is its own (``.demo/dagster_home`` by default), so
its runs, checks and sensor ticks never mix with a live setup's.

Plain Python: the UI and daemon are ``dagster dev`` in a child process, the replay exchange
runs in this one; Ctrl-C (or SIGTERM) stops both.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Final

from crypto_pipelines.replay.clock import ReplayClock
from crypto_pipelines.replay.server import ReplayServer
from crypto_pipelines.replay.synth import SynthSpec, write_synthetic_tape

log = logging.getLogger(__name__)

DEMO_SYMBOLS: Mapping[str, tuple[str, ...]] = {
    "binance": ("BTC/USDT", "ETH/USDT", "BTC/USDT:USDT"),
    "okx": ("BTC/USDT", "BTC/USDT:USDT"),
}
DEMO_TIMEFRAMES = ("1m", "1h")
LIVE_TAIL = timedelta(hours=2)
"""How much of the tape is still ahead of the replay clock when the demo starts."""
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class DemoSetup:
    """Where the demo's pieces are and where its clock starts."""

    home: Path  # DAGSTER_HOME of the demo
    tape: Path
    universe: Path
    first_day: date
    days: int
    clock_start_ms: int

    @property
    def tape_end_ms(self) -> int:
        end = datetime.combine(self.first_day, datetime.min.time(), tzinfo=UTC)
        return int((end + timedelta(days=self.days)).timestamp() * 1000)

    def environment(self, replay_url: str) -> dict[str, str]:
        """The variables the code location, the daemon and runs need for the demo."""
        return {
            "DAGSTER_HOME": str(self.home),
            "CRYPTO_PIPELINES_SOURCE": "replay",
            "CRYPTO_PIPELINES_REPLAY_URL": replay_url,
            "CRYPTO_PIPELINES_UNIVERSE": str(self.universe),
        }


def prepare(
    root: Path,
    *,
    days: int = 3,
    today: date | None = None,
    seed: int = 7,
    instance_config: Path | None = None,
    symbols: Mapping[str, Sequence[str]] = DEMO_SYMBOLS,
) -> DemoSetup:
    """Write (or reuse) the demo's tape, universe and Dagster home under ``root``.

    The tape covers the ``days`` days before ``today`` (UTC), so its data is recent and a
    month-by-symbol grid shows one or two months; it is reused while it matches (same days,
    seed and markets) and rewritten otherwise. ``instance_config`` is copied as the home's
    ``dagster.yaml`` unless one is there already."""
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    today = today or datetime.now(UTC).date()
    first = today - timedelta(days=days)
    root.mkdir(parents=True, exist_ok=True)
    tape_dir = root / "tape"
    wanted = {
        "first_day": first.isoformat(),
        "days": days,
        "seed": seed,
        "symbols": {k: list(v) for k, v in symbols.items()},
        "timeframes": list(DEMO_TIMEFRAMES),
    }
    stamp = root / "tape.json"
    if not (stamp.exists() and json.loads(stamp.read_text()) == wanted and tape_dir.is_dir()):
        shutil.rmtree(tape_dir, ignore_errors=True)
        log.info("writing a %d-day synthetic tape from %s to %s", days, first, tape_dir)
        spec = SynthSpec(
            exchanges=tuple(symbols),
            symbols=symbols,
            timeframes=DEMO_TIMEFRAMES,
            start=datetime.combine(first, datetime.min.time(), tzinfo=UTC),
            days=days,
            seed=seed,
            books=False,
        )
        write_synthetic_tape(tape_dir, spec)
        stamp.write_text(json.dumps(wanted, indent=1))
    universe = root / "universe.yaml"
    universe.write_text(universe_text(symbols, first), encoding="utf-8")
    home = root / "dagster_home"
    home.mkdir(exist_ok=True)
    if instance_config is not None and not (home / "dagster.yaml").exists():
        shutil.copy(instance_config, home / "dagster.yaml")
    end = datetime.combine(today, datetime.min.time(), tzinfo=UTC)
    return DemoSetup(
        home=home,
        tape=tape_dir,
        universe=universe,
        first_day=first,
        days=days,
        clock_start_ms=int((end - LIVE_TAIL).timestamp() * 1000),
    )


def universe_text(symbols: Mapping[str, Sequence[str]], first: date) -> str:
    """The demo universe: the tape's markets from the tape's first day, replay source."""
    lines = [
        "# Written by `crypto-pipelines demo`: the markets of the demo tape, from its first day.",
        "source: replay",
        "exchanges:",
    ]
    for exchange, names in symbols.items():
        perps = any(":" in s for s in names)
        lines += [
            f"  {exchange}:",
            f"    symbols: [{', '.join(names)}]",
            f"    timeframes: [{', '.join(DEMO_TIMEFRAMES)}]",
            f"    start: {first.isoformat()}",
            "    trades: true",
            f"    funding: {'true' if perps else 'false'}",
            f"    open_interest: {'true' if perps else 'false'}",
        ]
    return "\n".join(lines) + "\n"


def serve(setup: DemoSetup) -> ReplayServer:
    """The replay exchange on the demo tape, its clock at ``clock_start_ms`` and running."""
    clock = ReplayClock(start_ms=setup.clock_start_ms, speed=1.0)
    return ReplayServer(setup.tape, clock=clock)


DEV_SUPERSEDED: Final = "ignore:Function `dev_command` is superseded"
"""A ``-W`` filter (a message prefix: no module is imported at interpreter start)."""


def dev_warning_filters(existing: str | None) -> str:
    """``PYTHONWARNINGS`` for ``dagster dev``: the user's filters, then ours."""
    return ",".join(part for part in (existing, DEV_SUPERSEDED) if part)


def run(setup: DemoSetup, *, port: int = 3000, workspace: Path = Path("workspace.yaml")) -> int:
    """Serve the tape, register the partitions, and run ``dagster dev`` until it exits or
    this process is interrupted; then stop both. The exit status of ``dagster dev``."""
    bin_dir = Path(sys.executable).parent
    with serve(setup) as server:
        env = {**os.environ, **setup.environment(server.url)}
        log.info("replay exchange at %s, clock from %s", server.url, setup.clock_start_ms)
        subprocess.run(
            [str(bin_dir / "crypto-pipelines"), "partitions", "sync"], env=env, check=True
        )
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            # Started as a shell's background job (SIGINT ignored, and inherited as ignored).
            # `dagster dev` maps SIGTERM onto its SIGINT handler, so it would ignore both and
            # outlive us; a Python handler here is reset to the default in the child instead.
            signal.signal(signal.SIGINT, signal.default_int_handler)
        command = [str(bin_dir / "dagster"), "dev", "-w", str(workspace.resolve())]
        # From DAGSTER_HOME: started next to the repository's dagster.yaml, Dagster warns
        # that it is not the one in use. The supersession notice of `dagster dev` (pointing
        # to `dg dev`, which needs a dg project) is silenced like the other noise we filter.
        child = subprocess.Popen(
            [*command, "-h", "127.0.0.1", "-p", str(port)],
            env={**env, "PYTHONWARNINGS": dev_warning_filters(env.get("PYTHONWARNINGS"))},
            cwd=setup.home,
        )

        stopping = threading.Event()

        def stop(signum: int, _frame: FrameType | None) -> None:
            stopping.set()

        previous = signal.signal(signal.SIGTERM, stop)
        try:
            while child.poll() is None and not stopping.is_set():
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass  # Ctrl-C in a terminal reaches the child too
        finally:
            signal.signal(signal.SIGTERM, previous)
        if child.poll() is not None:
            return child.returncode
        return shut_down(child, sigint_reached_it=not stopping.is_set())


def shut_down(child: subprocess.Popen[bytes], *, sigint_reached_it: bool) -> int:
    """Stop ``dagster dev`` and everything under it; its exit status.

    It is given SIGINT (after a moment, when a terminal's Ctrl-C may have reached it already)
    and time to stop its webserver and daemon. Processes they started (code servers, run
    workers) can outlive it, orphaned: they are collected from /proc while the tree stands and
    terminated once it has exited, so Ctrl-C leaves nothing running."""
    seen = _descendants(child.pid)
    deadline = time.monotonic() + (2.0 if sigint_reached_it else 0.0)
    signalled = False
    while child.poll() is None:
        seen |= _descendants(child.pid)
        now = time.monotonic()
        if not signalled and now >= deadline:
            child.send_signal(signal.SIGINT)  # dagster dev stops its webserver and daemon
            signalled, deadline = True, now + STOP_TIMEOUT_S
        elif signalled and now >= deadline:
            child.kill()
        time.sleep(0.1)
    _terminate(seen)
    return child.returncode


def _descendants(pid: int) -> set[int]:
    """PIDs below ``pid`` in the process tree (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for kid in children.get(todo.pop(), []):
            if kid not in found:
                found.add(kid)
                todo.append(kid)
    return found


def _terminate(pids: set[int], grace_s: float = 5.0) -> None:
    """SIGTERM to those of ``pids`` still running, SIGKILL to those left after ``grace_s``."""
    alive = {pid for pid in pids if _signal(pid, signal.SIGTERM)}
    deadline = time.monotonic() + grace_s
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = {pid for pid in alive if _signal(pid, 0)}
    for pid in alive:
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, signum: int) -> bool:
    """Whether ``pid`` existed to receive ``signum`` (0: only asks)."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True
