"""Alembic environment: migrate the connection ``upgrade()`` hands over, or a URL's database.

``crypto_pipelines.storage.migrate.upgrade`` passes an open connection inside its own
transaction (``config.attributes["connection"]``), so the lock it took serialises concurrent
migrators. The ``alembic`` command line works too, with ``-x url=...`` or ``sqlalchemy.url``
or, failing both, ``default_db_url()``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from crypto_pipelines.storage.engine import default_db_url, make_engine
from crypto_pipelines.storage.schema import metadata


def _url() -> str:
    return (
        context.get_x_argument(as_dictionary=True).get("url")
        or context.config.get_main_option("sqlalchemy.url")
        or default_db_url()
    )


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    if context.is_offline_mode():
        context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as fresh:
            _run(fresh)
    finally:
        engine.dispose()


_main()
