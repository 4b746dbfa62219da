"""Opening the market database: where it lives by default, and engines tuned per backend.

SQLite is the zero-setup default and is written by several processes at once (Dagster runs
each step in its own process), so every connection gets WAL journaling (readers never block
the writer), a generous busy timeout (a writer waits for the lock instead of failing with
"database is locked"), ``synchronous=NORMAL`` (durable at checkpoints, fast commits; safe
with WAL) and foreign keys on. pysqlite's own transaction handling is switched off and
SQLAlchemy's ``begin`` emits ``BEGIN`` itself, so writers can take the lock up front with
``BEGIN IMMEDIATE`` (``write_transaction``): a deferred transaction that has to upgrade
from reading to writing fails at once with SQLITE_BUSY, whatever the busy timeout.

PostgreSQL goes through psycopg 3 (``postgresql+psycopg://``); plain ``postgresql://`` and
``postgres://`` URLs are normalised to it. Messages show a URL through ``hide_password``
(``postgresql+psycopg://user:***@host/db``), which also masks one SQLAlchemy cannot parse.
"""

from __future__ import annotations

import fcntl
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, Literal

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, make_url

Source = Literal["live", "replay"]

DB_URL_ENV: Final = "CRYPTO_PIPELINES_DB_URL"
_DB_FILES: Final[dict[str, str]] = {"live": "market.db", "replay": "market-replay.db"}
_SQLITE_BEGIN: Final = "crypto_pipelines_sqlite_begin"
SQLITE_BUSY_TIMEOUT_MS: Final = 60_000
_SQLITE_PRAGMAS: Final = (
    f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA cache_size = -65536",  # 64 MiB page cache: big upserts touch many index pages
    "PRAGMA temp_store = MEMORY",
)


def default_db_url(source: Source = "live") -> str:
    """``$CRYPTO_PIPELINES_DB_URL`` if set; otherwise a SQLite file under ``$DAGSTER_HOME``
    (``~/.crypto_pipelines`` when unset): ``market.db`` for live data and
    ``market-replay.db`` for data loaded from the replay exchange, so replayed candles never
    land beside real ones unless a URL says so."""
    if source not in _DB_FILES:
        raise ValueError(f"source must be 'live' or 'replay', got {source!r}")
    url = os.environ.get(DB_URL_ENV, "").strip()
    if url:
        return url
    home = os.environ.get("DAGSTER_HOME", "").strip()
    folder = Path(home) if home else Path.home() / ".crypto_pipelines"
    return f"sqlite:///{(folder.expanduser() / _DB_FILES[source]).resolve()}"


OPEN_ERRORS: Final = (sa_exc.DBAPIError, sa_exc.ArgumentError, ValueError, OSError)
"""What opening a market database raises when it cannot be used (unreachable, refused, not a
URL, a SQLite folder that cannot be made)."""


def unusable_message(url: str, exc: BaseException, *, origin: str | None = None) -> str:
    """Why the market database at ``url`` cannot be used, naming the setting to fix
    (``CRYPTO_PIPELINES_DB_URL``, or ``origin`` when another setting gave the URL) and the
    URL with its password hidden: the driver's own error says what failed, not where."""
    shown = hide_password(url)
    if origin is None:
        if os.environ.get(DB_URL_ENV, "").strip():
            origin = f"${DB_URL_ENV}"
        else:
            origin = f"the default SQLite file, as ${DB_URL_ENV} is unset"
    cause = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    reason = " ".join(str(cause).split()).replace(url, shown)
    return (
        f"cannot open the market database {shown} (from {origin}); set {DB_URL_ENV} to "
        "a reachable SQLite or PostgreSQL URL (postgresql+psycopg://USER:PASSWORD@HOST/DB). "
        f"{type(cause).__name__}: {reason}"
    )


def normalize_url(url: str | URL) -> URL:
    """The URL with PostgreSQL routed to psycopg 3 (the only PostgreSQL driver installed).

    Refuses (ValueError, URL shown with its password hidden) what SQLAlchemy would misread:
    a port that is not a number, and an ``@`` left unencoded in the user or password, which
    SQLAlchemy takes for part of the host, so the connection error would quote the rest of
    the password as a host name."""
    try:
        parsed = make_url(url)
    except ValueError as exc:  # SQLAlchemy's int() of the port
        raise ValueError(f"database URL {hide_password(url)}: port is not a number") from exc
    if parsed.host is not None and "@" in parsed.host:
        raise ValueError(
            f"database URL {hide_password(url)}: its user or password holds an '@': "
            "percent-encode it as %40"
        )
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def hide_password(url: str | URL) -> str:
    """``url`` as text with its password as ``***``, for messages and logs. Also for a URL
    SQLAlchemy cannot parse or misreads (a bad port, an unencoded ``@`` in the password):
    then everything from the user's ``:`` to the last ``@`` before the query is hidden."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError):
        parsed = None
    if parsed is not None and not (parsed.host and "@" in parsed.host):
        return parsed.render_as_string(hide_password=True)
    return re.sub(r"^([\w+]+://[^:/@]*:)[^?]*@", r"\1***@", url)


def make_engine(url: str | URL | None = None, **kwargs: Any) -> Engine:
    """An engine for ``url`` (default: ``default_db_url("live")``) with the per-backend
    settings described in the module docstring; ``kwargs`` go to ``sqlalchemy.create_engine``."""
    parsed = normalize_url(url if url is not None else default_db_url("live"))
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        sa.event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if backend == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
        return sa.create_engine(parsed, **kwargs)
    raise ValueError(
        f"unsupported database {parsed.render_as_string(hide_password=True)!r}: use SQLite or PostgreSQL"
    )


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # no implicit BEGIN: _sqlite_on_begin emits it
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
        _switch_to_wal(cursor)
    finally:
        cursor.close()


def _switch_to_wal(cursor: sqlite3.Cursor) -> None:
    """``PRAGMA journal_mode = WAL``, retried: on a fresh file, while another process is
    switching or migrating it, SQLite can answer SQLITE_BUSY at once without consulting the
    busy timeout (the change needs an exclusive lock). The mode is stored in the file, so
    this only ever waits on a brand-new database."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)


def _sqlite_on_begin(connection: Connection) -> None:
    mode = connection.get_execution_options().get(_SQLITE_BEGIN, "DEFERRED")
    connection.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection inside a transaction meant for writing: committed when the block ends,
    rolled back (nothing written) if it raises. On SQLite it starts with ``BEGIN IMMEDIATE``
    so concurrent writers queue on the busy timeout instead of failing, and a SQLite file is
    first locked with ``flock`` on ``<file>-writer``: SQLite's busy handler waits by sleeping
    (up to 100 ms at a time) and retrying, so writers in several processes (API workers,
    Dagster steps) handed the lock over with long idle gaps; a blocking ``flock`` wakes the
    next writer as soon as the lock is free."""
    with _writer_lock(engine), engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            connection.execution_options(**{_SQLITE_BEGIN: "IMMEDIATE"})
        with connection.begin():
            yield connection


@contextmanager
def _writer_lock(engine: Engine) -> Iterator[None]:
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    fd = os.open(f"{database}-writer", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
