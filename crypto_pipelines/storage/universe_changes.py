"""Run-time changes to the universe (``universe_changes``): symbols added to or removed from
an exchange through the API, on top of the universe file. The file stays the base and is
never rewritten; ``domain.universe.with_changes`` applies these to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crypto_pipelines.storage.engine import write_transaction
from crypto_pipelines.storage.schema import metadata

Action = Literal["add", "remove"]


@dataclass(frozen=True, slots=True)
class UniverseChange:
    exchange: str
    symbol: str
    action: Action
    changed_at: int
    changed_by: str


def _table() -> sa.Table:
    return metadata.tables["universe_changes"]


def record_change(
    engine: Engine, exchange: str, symbol: str, action: Action, *, by: str, now_ms: int
) -> UniverseChange:
    """Store ``action`` as the latest change of ``exchange``'s ``symbol`` (replacing any)."""
    if action not in ("add", "remove"):
        raise ValueError(f"action must be 'add' or 'remove', got {action!r}")
    table = _table()
    row = {
        "exchange": exchange,
        "symbol": symbol,
        "action": action,
        "changed_at": now_ms,
        "changed_by": by,
    }
    with write_transaction(engine) as connection:
        connection.execute(
            sa.delete(table).where(table.c.exchange == exchange, table.c.symbol == symbol)
        )
        connection.execute(sa.insert(table).values(row))
    return UniverseChange(exchange, symbol, action, now_ms, by)


def universe_changes(engine: Engine, exchange: str | None = None) -> list[UniverseChange]:
    """Every stored change (of one exchange when given), by exchange and symbol."""
    table = _table()
    query = sa.select(table).order_by(table.c.exchange, table.c.symbol)
    if exchange is not None:
        query = query.where(table.c.exchange == exchange)
    with engine.connect() as connection:
        return [
            UniverseChange(r.exchange, r.symbol, r.action, int(r.changed_at), r.changed_by)
            for r in connection.execute(query)
        ]
