"""``crypto-pipelines demo`` as a process: it brings the UI up, and SIGTERM stops it with
everything it started, also when it was started as a shell's background job (SIGINT
ignored, which `dagster dev` would otherwise inherit for SIGTERM too)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from crypto_pipelines_tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "crypto-pipelines"


def _session_members(sid: int) -> list[int]:
    """PIDs whose session is ``sid`` (the demo and everything it started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # the session id, not a zombie
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:200]
    except OSError:
        return f"{pid} (gone)"


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_sigterm_stops_a_background_demo_and_all_it_started(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "unused")}
    log = (tmp_path / "demo.log").open("w")
    demo = subprocess.Popen(
        [str(CLI), "demo", "--dir", str(tmp_path / "demo"), "--days", "1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_ignore_sigint,  # as `make demo &` from a script
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert demo.poll() is None, (tmp_path / "demo.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            raise AssertionError("the UI did not come up in 180 s")
        assert len(_session_members(demo.pid)) >= 4  # demo, dagster dev, webserver, daemon

        demo.send_signal(signal.SIGTERM)
        demo.wait(timeout=90)  # raises if the demo is still running
        deadline = time.monotonic() + 60
        while _session_members(demo.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = _session_members(demo.pid)
        assert left == [], [_cmdline(pid) for pid in left]
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
        for pid in _session_members(demo.pid):
            os.kill(pid, signal.SIGKILL)
        log.close()
