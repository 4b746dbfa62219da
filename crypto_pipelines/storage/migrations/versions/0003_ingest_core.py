"""Ingestion core: ``open_interest``, the ``rejected_rows`` quarantine, ``coverage``, and the
reason a gap was confirmed (``gaps.reason``).

Frozen copies of the tables in ``crypto_pipelines.storage.schema`` as of issue 8. Coverage is
seeded from what is already stored: each series is taken as covered from its first to its
newest row, which is what the gap check assumed before coverage existed, so upgrading changes
no verdict and triggers no refetch.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import re
import time

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def _step_ms(timeframe: str) -> int:
    """A candle's length (frozen here: migrations never import the live code)."""
    match = re.fullmatch(r"(\d+)([smhdw])", timeframe)
    return int(match.group(1)) * _UNIT_MS[match.group(2)] if match else 1


def upgrade() -> None:
    big = sa.BigInteger
    op.create_table(
        "open_interest",
        sa.Column("exchange", sa.String(), nullable=False),
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("ts", big(), nullable=False, autoincrement=False),
        sa.Column("open_interest", sa.Double(), nullable=True),
        sa.Column("open_interest_value", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("exchange", "symbol", "ts", name="pk_open_interest"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "rejected_rows",
        sa.Column("dataset", sa.String(), nullable=False),
        sa.Column("exchange", sa.String(), nullable=False),
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("timeframe", sa.String(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("ts", big(), nullable=True),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column("received_at", big(), nullable=False),
        sa.Column("resolved_at", big(), nullable=True),
        sa.PrimaryKeyConstraint(
            "dataset", "exchange", "symbol", "timeframe", "key", name="pk_rejected_rows"
        ),
        sqlite_with_rowid=False,
    )
    coverage = op.create_table(
        "coverage",
        sa.Column("exchange", sa.String(), nullable=False),
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("dataset", sa.String(), nullable=False),
        sa.Column("timeframe", sa.String(), nullable=False),
        sa.Column("start", big(), nullable=False, autoincrement=False),
        sa.Column("end", big(), nullable=False),
        sa.Column("updated_at", big(), nullable=False),
        sa.PrimaryKeyConstraint(
            "exchange", "symbol", "dataset", "timeframe", "start", name="pk_coverage"
        ),
        sqlite_with_rowid=False,
    )
    op.add_column("gaps", sa.Column("reason", sa.String(), nullable=True))
    _seed_coverage(coverage)


def _seed_coverage(coverage: sa.Table | None) -> None:
    assert coverage is not None
    bind = op.get_bind()
    now = int(time.time() * 1000)
    rows = []
    candles = "SELECT exchange, symbol, timeframe, MIN(ts), MAX(ts) FROM ohlcv GROUP BY exchange, symbol, timeframe"
    for exchange, symbol, timeframe, first, last in bind.execute(sa.text(candles)):
        rows.append((exchange, symbol, "ohlcv", timeframe, first, last + _step_ms(timeframe)))
    for table, tail in (("trades", 0), ("funding_rates", 1)):
        query = f"SELECT exchange, symbol, MIN(ts), MAX(ts) FROM {table} GROUP BY exchange, symbol"
        for exchange, symbol, first, last in bind.execute(sa.text(query)):
            if last + tail > first:
                rows.append((exchange, symbol, table, "", first, last + tail))
    if rows:
        keys = ("exchange", "symbol", "dataset", "timeframe", "start", "end")
        op.bulk_insert(
            coverage, [{**dict(zip(keys, r, strict=True)), "updated_at": now} for r in rows]
        )


def downgrade() -> None:
    with op.batch_alter_table("gaps") as batch:
        batch.drop_column("reason")
    op.drop_table("coverage")
    op.drop_table("rejected_rows")
    op.drop_table("open_interest")
