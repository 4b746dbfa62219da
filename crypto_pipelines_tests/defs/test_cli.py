"""``crypto-pipelines partitions sync`` refuses bad configuration with one line naming what to
fix and exit status 2: no traceback, and the Dagster instance is left untouched. Run as the
installed command is (a fresh interpreter), where a traceback would show on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

GOOD = "exchanges:\n  binance:\n    symbols: [BTC/USDT]\n    timeframes: [1h]\n"


def _sync(universe: Path, dagster_home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    env.pop("CRYPTO_PIPELINES_SOURCE", None)
    return subprocess.run(
        [sys.executable, "-m", "crypto_pipelines.cli", "partitions", "sync"]
        + ["--universe", str(universe)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("start", "reason"),
    [
        pytest.param(
            "2024-13-45",
            "Input should be a valid date or datetime, month value is outside expected range "
            "of 1-12 (got '2024-13-45')",
            id="date-typo",
        ),
        pytest.param(
            "2099-01-01",
            "2099-01-01 is in the future (today is {today} UTC): start must be a day that has "
            "begun",
            id="future-start",
        ),
    ],
)
def test_a_bad_universe_is_one_line_and_exit_2(tmp_path: Path, start: str, reason: str) -> None:
    path = tmp_path / "universe.yaml"
    path.write_text(f"exchanges:\n  binance:\n    symbols: [BTC/USDT]\n    start: {start}\n")
    done = _sync(path, tmp_path)
    today = datetime.now(UTC).date().isoformat()
    expected = f"error: {path}: exchanges.binance.start: {reason.format(today=today)}\n"
    assert (done.returncode, done.stderr, done.stdout) == (2, expected, "")
    assert not (tmp_path / "history").exists()  # refused before the instance was opened


@pytest.mark.parametrize(
    ("dagster_yaml", "reason"),
    [
        pytest.param(None, '$DAGSTER_HOME "{home}" is not a directory', id="missing-home"),
        pytest.param("storage: [1\n", "while parsing a flow sequence", id="yaml-syntax"),
        pytest.param(
            "storage:\n  colour: 1\n",
            'Received unexpected config entry "colour" at path root:storage',
            id="bad-instance-config",
        ),
    ],
)
def test_a_bad_dagster_home_is_named_without_a_traceback(
    tmp_path: Path, dagster_yaml: str | None, reason: str
) -> None:
    universe = tmp_path / "universe.yaml"
    universe.write_text(GOOD)
    home = tmp_path / "home"
    if dagster_yaml is not None:
        home.mkdir()
        (home / "dagster.yaml").write_text(dagster_yaml)
    done = _sync(universe, home)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: cannot open the Dagster instance: "), done.stderr
    assert reason.format(home=home) in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_a_good_universe_syncs(tmp_path: Path) -> None:
    """The same command with nothing wrong: the refusals above are not its only answer."""
    universe = tmp_path / "universe.yaml"
    universe.write_text(GOOD)
    done = _sync(universe, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "binance_symbols: 1 added ['BTC/USDT'], 0 removed []" in done.stdout, done.stdout
    assert (tmp_path / "history").is_dir()  # what an opened instance leaves in DAGSTER_HOME


def test_an_unreachable_instance_storage_is_named_without_a_traceback(tmp_path: Path) -> None:
    """dagster.yaml on PostgreSQL at a port where nothing listens (production's setup with the
    server down): one line naming DAGSTER_HOME's dagster.yaml and the driver's reason."""
    universe = tmp_path / "universe.yaml"
    universe.write_text(GOOD)
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "storage:\n  postgres:\n    postgres_url: postgresql://postgres@127.0.0.1:9/dagster\n"
    )
    done = _sync(universe, home)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]  # after dagster-postgres' retry warnings
    assert last.startswith(
        f"error: the Dagster instance's storage (configured in {home}/dagster.yaml, DAGSTER_HOME)"
        " cannot be reached: "
    ), done.stderr
    assert "127.0.0.1" in last and "Traceback" not in done.stderr, done.stderr
