"""Initial schema: candles, trades, funding rates, order book snapshots and instruments.

A frozen snapshot of ``crypto_pipelines.storage.schema.metadata`` as of issue 3 (migrations
never import the live models, which will change). Tables are WITHOUT ROWID on SQLite.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _text(name: str, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.String(), nullable=nullable)


def _int(name: str, nullable: bool = False) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), nullable=nullable, autoincrement=False)


def _float(name: str, nullable: bool = False) -> sa.Column[float]:
    return sa.Column(name, sa.Double(), nullable=nullable)


def _bool(name: str) -> sa.Column[bool]:
    return sa.Column(name, sa.Boolean(), nullable=False)


def _create(name: str, *items: sa.schema.SchemaItem, key: tuple[str, ...]) -> None:
    op.create_table(
        name,
        *items,
        sa.PrimaryKeyConstraint(*key, name=f"pk_{name}"),
        sqlite_with_rowid=False,
    )


def upgrade() -> None:
    _create(
        "ohlcv",
        _text("exchange"),
        _text("symbol"),
        _text("timeframe"),
        _int("ts"),
        _float("open"),
        _float("high"),
        _float("low"),
        _float("close"),
        _float("volume", nullable=True),
        key=("exchange", "symbol", "timeframe", "ts"),
    )
    _create(
        "trades",
        _text("exchange"),
        _text("symbol"),
        _text("trade_id"),
        _int("ts"),
        _text("side"),
        _float("price"),
        _float("amount"),
        key=("exchange", "symbol", "trade_id"),
    )
    op.create_index("ix_trades_exchange_symbol_ts", "trades", ["exchange", "symbol", "ts"])
    _create(
        "funding_rates",
        _text("exchange"),
        _text("symbol"),
        _int("ts"),
        _float("rate"),
        key=("exchange", "symbol", "ts"),
    )
    _create(
        "order_book_snapshots",
        _text("exchange"),
        _text("symbol"),
        _int("ts"),
        _text("side"),
        _int("level"),
        _float("price"),
        _float("amount"),
        key=("exchange", "symbol", "ts", "side", "level"),
    )
    _create("crypto_assets", _text("code"), key=("code",))
    _create(
        "crypto_pairs",
        _text("exchange"),
        _text("symbol"),
        _text("base"),
        _text("quote"),
        _float("price_tick", nullable=True),
        _float("amount_step", nullable=True),
        _float("min_amount", nullable=True),
        _bool("active"),
        _int("listed_ms", nullable=True),
        _int("delisted_ms", nullable=True),
        key=("exchange", "symbol"),
    )
    _create(
        "crypto_perps",
        _text("exchange"),
        _text("symbol"),
        _text("base"),
        _text("quote"),
        _text("settle"),
        _bool("linear"),
        _float("contract_size", nullable=True),
        _float("price_tick", nullable=True),
        _float("amount_step", nullable=True),
        _float("min_amount", nullable=True),
        _int("funding_interval_ms", nullable=True),
        _bool("active"),
        _int("listed_ms", nullable=True),
        _int("delisted_ms", nullable=True),
        key=("exchange", "symbol"),
    )


def downgrade() -> None:
    for name in (
        "crypto_perps",
        "crypto_pairs",
        "crypto_assets",
        "order_book_snapshots",
        "funding_rates",
    ):
        op.drop_table(name)
    op.drop_index("ix_trades_exchange_symbol_ts", table_name="trades")
    op.drop_table("trades")
    op.drop_table("ohlcv")
