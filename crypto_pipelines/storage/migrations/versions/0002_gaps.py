"""Gap bookkeeping: the ``gaps`` table (runs of missing candles or trade ids, their status).

A frozen copy of ``crypto_pipelines.storage.schema._gaps_table`` as of issue 4.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    big = sa.BigInteger
    op.create_table(
        "gaps",
        sa.Column("exchange", sa.String(), nullable=False),
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("dataset", sa.String(), nullable=False),
        sa.Column("timeframe", sa.String(), nullable=False),
        sa.Column("start", big(), nullable=False, autoincrement=False),
        sa.Column("end", big(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("window_start", big(), nullable=False),
        sa.Column("window_end", big(), nullable=False),
        sa.Column("detected_at", big(), nullable=False),
        sa.Column("checked_at", big(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_attempt_at", big(), nullable=True),
        sa.PrimaryKeyConstraint(
            "exchange", "symbol", "dataset", "timeframe", "start", name="pk_gaps"
        ),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_gaps_status", "gaps", ["status"])


def downgrade() -> None:
    op.drop_index("ix_gaps_status", table_name="gaps")
    op.drop_table("gaps")
