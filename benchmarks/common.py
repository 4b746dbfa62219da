"""Shared benchmark plumbing: result rows, the table, JSON output, subprocess servers."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
CLI = str(Path(sys.executable).parent / "crypto-pipelines")


@dataclass
class Result:
    benchmark: str
    metric: str
    value: float
    unit: str
    target: str = ""
    passed: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)


def print_table(results: list[Result]) -> None:
    rows = [("benchmark", "metric", "value", "unit", "target", "ok")]
    for r in results:
        ok = "" if r.passed is None else ("yes" if r.passed else "NO")
        rows.append((r.benchmark, r.metric, f"{r.value:,.1f}", r.unit, r.target, ok))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def write_json(name: str, results: list[Result]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": [asdict(r) for r in results],
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def free_port() -> int:
    """A loopback port with nothing listening, for a server a benchmark starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``crypto-pipelines replay serve`` in a subprocess pinned to one core (when possible)."""

    def __init__(self, tape: Path, *args: str, core: int | None = 0) -> None:
        cmd = [CLI, "replay", "serve", "--tape", str(tape), "--port", "0", *args]
        if core is not None and hasattr(os, "sched_setaffinity"):
            cmd = ["taskset", "-c", str(core), *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http"):
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"replay server did not start: {line!r} {err}")
        self.url = line
        _wait_healthy(self.url)

    def rss_mb(self) -> tuple[float, float]:
        """(current, peak) resident set of the server process, from /proc."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        values = {
            k: float(v.split()[0]) / 1024
            for k, v in (
                ln.split(":", 1) for ln in status.splitlines() if ln.startswith(("VmRSS", "VmHWM"))
            )
        }
        return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _wait_healthy(url: str) -> None:
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/_replay/health", timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("replay server never became healthy")
