"""Shared fixtures: the real tapes in ../shared (when present) and replay servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crypto_pipelines.replay import ReplayServer, Tape

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_TAPES = SHARED / "tapes" / "real"
CCXT_STATIC = SHARED / "fixtures" / "ccxt-static"


def require_shared(path: Path = SHARED) -> Path:
    """Skip the calling test cleanly when ../shared (or the given file in it) is absent."""
    if not path.exists():
        pytest.skip(f"{path} not present (../shared is optional)")
    return path


@pytest.fixture(scope="session")
def real_tape_dir() -> Path:
    return require_shared(REAL_TAPES)


@pytest.fixture(scope="session")
def real_tape(real_tape_dir: Path) -> Iterator[Tape]:
    tape = Tape.load(real_tape_dir)
    yield tape
    tape.close()


@pytest.fixture(scope="session")
def real_server(real_tape: Tape) -> Iterator[ReplayServer]:
    """A replay server on the real tapes, shared by read-only tests."""
    with ReplayServer(real_tape) as server:
        yield server
