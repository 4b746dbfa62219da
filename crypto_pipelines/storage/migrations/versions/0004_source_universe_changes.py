"""Provenance and run-time universe changes: a ``source`` column on every market table (who
last wrote a row's values: ``rest``, ``stream``, ``api:<key name>``; NULL for rows stored
before) and the ``universe_changes`` table (symbols the API added to or removed from an
exchange's universe, on top of the universe file).

Frozen copies of ``crypto_pipelines.storage.schema`` as of the API issue.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_MARKET_TABLES = ("ohlcv", "trades", "funding_rates", "open_interest", "order_book_snapshots")


def upgrade() -> None:
    # A nullable column without a default: SQLite adds it without rewriting the table, and
    # PostgreSQL (11+) without touching existing rows.
    for table in _MARKET_TABLES:
        op.add_column(table, sa.Column("source", sa.String(), nullable=True))
    op.create_table(
        "universe_changes",
        sa.Column("exchange", sa.String(), nullable=False),
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("changed_at", sa.BigInteger(), nullable=False),
        sa.Column("changed_by", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("exchange", "symbol", name="pk_universe_changes"),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("universe_changes")
    for table in _MARKET_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("source")
