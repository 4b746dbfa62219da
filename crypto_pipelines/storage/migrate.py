"""Bringing a database to the current schema with Alembic, programmatically and safely.

``upgrade(engine)`` needs no ``alembic.ini``: the Config is built here and the scripts are
found inside the installed package. It runs in one transaction that first takes a lock
(SQLite ``BEGIN IMMEDIATE``; a PostgreSQL transaction-level advisory lock), so processes
that start at once migrate one after the other and the later ones find nothing to do.
"""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from crypto_pipelines.storage.engine import write_transaction

SCRIPT_LOCATION: Final = "crypto_pipelines.storage:migrations"
# pg_advisory_xact_lock key: any constant unique to this application (b"cpmigr" as an int).
_PG_LOCK_KEY: Final = 0x6370_6D69_6772


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config pointing at the packaged migrations (and at ``connection``)."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest migration's revision id."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None for an empty database)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database to ``revision`` (idempotent; safe with concurrent callers)."""
    with write_transaction(engine) as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        command.upgrade(alembic_config(connection), revision)
