"""Shared fixtures: the real tapes in ../shared (when present), replay servers, and
databases (``db_url``/``engine``: a SQLite file and, when ``CRYPTO_PIPELINES_TEST_PG_URL``
is set, a PostgreSQL schema of its own per test)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from crypto_pipelines.replay import ReplayServer, Tape
from crypto_pipelines.storage.engine import make_engine, normalize_url

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_TAPES = SHARED / "tapes" / "real"
CCXT_STATIC = SHARED / "fixtures" / "ccxt-static"
VENUE_SAMPLES = SHARED / "fixtures" / "venue-samples"
PG_URL_ENV = "CRYPTO_PIPELINES_TEST_PG_URL"


@pytest.fixture(scope="session", autouse=True)
def rate_budget_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Shared rate-budget files (``exchanges.budget``) of this session's replay servers in a
    folder of its own, not piled up in the system's temporary directory."""
    folder = tmp_path_factory.mktemp("rate-budgets")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CRYPTO_PIPELINES_RATE_BUDGET_DIR", str(folder))
        # Set in a developer's shell it would move every budget to Redis; the tests that want
        # that set it themselves.
        patch.delenv("CRYPTO_PIPELINES_REDIS_URL", raising=False)
        yield folder


def free_port() -> int:
    """A loopback port with nothing listening (bound, then released): for a server a test
    starts, or for an address that must refuse connections."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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


@contextmanager
def postgres_schema_url(base_url: str) -> Iterator[str]:
    """A URL whose connections see only a freshly created schema (``search_path``), dropped
    with everything in it afterwards: tests on one server cannot see each other's tables."""
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = make_engine(base_url, poolclass=NullPool)
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = normalize_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file in tmp_path, or a private PostgreSQL schema on the
    server of $CRYPTO_PIPELINES_TEST_PG_URL (skipped when that is unset)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'market.db'}"
        return
    base = os.environ.get(PG_URL_ENV, "").strip()
    if not base:
        pytest.skip(f"{PG_URL_ENV} not set (PostgreSQL tests need a server)")
    with postgres_schema_url(base) as url:
        yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on ``db_url`` (disposed before the database is dropped)."""
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


PG_SKIP_REASON = f"{PG_URL_ENV} not set"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say loudly, last, how many tests did not run on PostgreSQL and why: a green run on a
    machine without ``CRYPTO_PIPELINES_TEST_PG_URL`` has not tested production's database
    (``.ci/run`` sets it; ``make test`` passes it through)."""
    skipped = terminalreporter.stats.get("skipped", [])
    on_postgres = [
        report for report in skipped if PG_SKIP_REASON in str(getattr(report, "longrepr", ""))
    ]
    if on_postgres:
        terminalreporter.write_sep(
            "!",
            f"{len(on_postgres)} PostgreSQL tests SKIPPED: {PG_URL_ENV} is not set. Set it to a "
            "server you may write to, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test",
            red=True,
            bold=True,
        )
