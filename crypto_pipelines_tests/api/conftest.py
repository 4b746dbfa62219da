"""The API under test: the real app served by uvicorn on a real port (in a thread of the
test process), on a SQLite file or a PostgreSQL schema (``db_url``), with real keys.

``api`` is the usual fixture; ``serve_api`` builds one with other settings or services.
Lineage goes to a recording reporter unless a test passes the Dagster one."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import httpx
import pytest
import uvicorn

from crypto_pipelines.api import ApiServices, ApiSettings, create_app
from crypto_pipelines.api.services import IngestedSpan, StreamConflict, StreamUnavailable
from crypto_pipelines.api.settings import ApiKey
from crypto_pipelines.domain.universe import ExchangeUniverse, Universe
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.conftest import free_port

DESK = ApiKey("desk", "desk-secret-0123456789")
OTHER = ApiKey("other", "other-secret-0123456789")


def api_universe() -> Universe:
    return Universe(
        source="replay",
        exchanges={
            "binance": ExchangeUniverse(
                symbols=("BTC/USDT", "ETH/USDT", "BTC/USDT:USDT"),
                timeframes=("1m", "1h"),
                start=date(2024, 1, 1),
                trades=True,
            ),
            "okx": ExchangeUniverse(
                symbols=("BTC/USDT",), timeframes=("1m",), start=date(2024, 1, 1)
            ),
        },
    )


@dataclass
class RecordingLineage:
    """A lineage reporter that keeps what it was given (the Dagster one has its own tests)."""

    spans: list[IngestedSpan] = field(default_factory=list)

    def report(self, spans: Sequence[IngestedSpan]) -> int:
        self.spans.extend(spans)
        return len(spans)

    def check(self) -> str | None:
        return None

    def partitioned_symbols(self, exchange: str) -> Sequence[str] | None:
        return None  # as an orchestrator that cannot say: the stored markets decide


STATS = {"rows_written": 12, "catch_up_rows": {"okx": 301}}


@dataclass
class OneRunStream:
    """A stream of at most one run at a time, refusing as the contract says; ``down`` makes
    every call fail as an unreachable orchestrator does."""

    down: bool = False
    runs: int = 0
    active: bool = False
    configs: list[Mapping[str, Any] | None] = field(default_factory=list)

    def _state(self) -> dict[str, Any]:
        if not self.runs:
            return {"running": False, "job": "market_stream"}
        return {
            "running": self.active,
            "job": "market_stream",
            "run_id": f"run-{self.runs}",
            "status": "STARTED" if self.active else "CANCELED",
            "started_at": 1_700_000_000.0,
            "run_url": f"http://dagster/runs/run-{self.runs}",
            "statistics": STATS if self.active else None,
            "statistics_at": 1_700_000_060.0 if self.active else None,
        }

    def _reachable(self) -> None:
        if self.down:
            raise StreamUnavailable("Dagster at http://dagster: query failed: refused")

    def start(self, config: Mapping[str, Any] | None) -> Mapping[str, Any]:
        self._reachable()
        if self.active:
            raise StreamConflict(f"market_stream run run-{self.runs} is STARTED: stop it first")
        self.configs.append(config)
        self.runs += 1
        self.active = True
        return self._state()

    def stop(self) -> Mapping[str, Any]:
        self._reachable()
        if not self.active:
            raise StreamConflict("no market_stream run is active")
        self.active = False
        return self._state()

    def status(self) -> Mapping[str, Any]:
        self._reachable()
        return self._state()


@dataclass
class RunningApi:
    url: str
    store: MarketStore
    services: ApiServices
    settings: ApiSettings
    app: object

    def client(self, key: ApiKey | None = DESK, **kwargs: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key.secret}"} if key is not None else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)  # type: ignore[arg-type]


@contextmanager
def serve_api(settings: ApiSettings, services: ApiServices) -> Iterator[RunningApi]:
    """The app on 127.0.0.1:<free port> until the block ends (lifespan included)."""
    app = create_app(settings, services)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="api-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.01)
    try:
        yield RunningApi(f"http://127.0.0.1:{port}", services.store, services, settings, app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def api_settings() -> ApiSettings:
    return ApiSettings(keys=(DESK, OTHER), lineage_every_s=0.2)


@pytest.fixture
def lineage() -> RecordingLineage:
    return RecordingLineage()


@pytest.fixture
def api(db_url: str, api_settings: ApiSettings, lineage: RecordingLineage) -> Iterator[RunningApi]:
    """The API on ``db_url`` (SQLite and PostgreSQL) with keys ``desk`` and ``other``."""
    with MarketStore.open(db_url) as store:
        services = ApiServices(store=store, universe=api_universe(), lineage=lineage)
        with serve_api(api_settings, services) as running:
            yield running
