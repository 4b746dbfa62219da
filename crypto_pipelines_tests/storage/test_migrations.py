"""Alembic: the migrated database is exactly ``metadata``, and upgrading is idempotent."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from crypto_pipelines.storage import MarketStore, metadata, upgrade
from crypto_pipelines.storage.migrate import current_revision, head_revision


def test_migrated_database_matches_metadata(engine: Engine) -> None:
    assert current_revision(engine) is None
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        missing = [
            diff[1].name for diff in compare_metadata(context, metadata) if diff[0] == "add_table"
        ]
    assert sorted(missing) == sorted(metadata.tables)  # the comparison does see tables
    upgrade(engine)
    assert current_revision(engine) == head_revision() == "0004"
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diffs = compare_metadata(context, metadata)
    assert diffs == []


def test_upgrade_is_idempotent_and_store_creation_migrates(engine: Engine) -> None:
    MarketStore(engine)
    MarketStore(engine)
    upgrade(engine)
    assert current_revision(engine) == head_revision()


def test_alembic_command_line_path_with_a_url(db_url: str) -> None:
    """env.py without a handed-over connection (``alembic -x url=...``): opens its own."""
    from alembic import command

    from crypto_pipelines.storage.engine import make_engine
    from crypto_pipelines.storage.migrate import alembic_config

    config = alembic_config()
    config.set_main_option("sqlalchemy.url", db_url.replace("%", "%%"))  # ini interpolation
    command.upgrade(config, "head")
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
        command.downgrade(config, "base")
        assert current_revision(engine) is None
    finally:
        engine.dispose()
