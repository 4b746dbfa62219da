"""Fixtures for the exchange-loader tests: one tape for every venue the replay exchange
serves, and a replay server on it (real HTTP, stock ccxt clients, no mocks)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crypto_pipelines.exchanges import make_client
from crypto_pipelines.replay import ReplayServer
from crypto_pipelines_tests.exchanges.tapes import EXCHANGES, Rows, write_tape


def served_exchanges() -> list[str]:
    """Venues whose replay module exists (the others are being written alongside)."""
    found = []
    for exchange in EXCHANGES:
        try:
            importlib.import_module(f"crypto_pipelines.replay.venues.{exchange}")
        except ModuleNotFoundError:
            continue
        found.append(exchange)
    return found


@pytest.fixture(params=EXCHANGES)
def exchange(request: pytest.FixtureRequest) -> str:
    """Each of the four venues; skipped while its replay venue module does not exist."""
    name: str = request.param
    pytest.importorskip(f"crypto_pipelines.replay.venues.{name}")
    return name


@pytest.fixture(scope="session")
def tape(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Rows]:
    root = tmp_path_factory.mktemp("exchanges-tape")
    return root, write_tape(root, served_exchanges())


@pytest.fixture(scope="session")
def server(tape: tuple[Path, Rows]) -> Iterator[ReplayServer]:
    with ReplayServer(tape[0]) as srv:
        yield srv


@pytest.fixture(scope="session")
def rows(tape: tuple[Path, Rows]) -> Rows:
    return tape[1]


def client_for(exchange: str, url: str, **kwargs: Any) -> Any:
    """A stock ccxt client on the replay exchange; ccxt's throttle off because the replay
    server enforces no limits here and tests should not wait for it."""
    kwargs.setdefault("enable_rate_limit", False)
    return make_client(exchange, replay_url=url, **kwargs)
