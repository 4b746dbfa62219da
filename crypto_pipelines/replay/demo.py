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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType

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
        command = [str(bin_dir / "dagster"), "dev", "-w", str(workspace), "-h", "127.0.0.1"]
        child = subprocess.Popen([*command, "-p", str(port)], env=env)

        def stop(signum: int, _frame: FrameType | None) -> None:
            child.send_signal(signal.SIGINT)  # dagster dev stops its webserver and daemon

        previous = signal.signal(signal.SIGTERM, stop)
        try:
            return child.wait()
        except KeyboardInterrupt:
            # Ctrl-C in a terminal reaches the child too; a SIGINT sent to this process alone
            # does not: pass it on if the child is still running after a moment.
            try:
                return child.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                child.send_signal(signal.SIGINT)
            try:
                return child.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                return child.wait()
        finally:
            signal.signal(signal.SIGTERM, previous)
            if child.poll() is None:
                child.terminate()
                child.wait()
