"""The latest state of one symbol: its newest trade, the newest closed (and forming) candle of
each timeframe, the top of its order book and, for a perpetual, its funding (the mark price
and the rate announced for the next settlement from the hot cache; the last settled rate from
SQL), from the stream's Redis hot cache or from SQL.

The hot cache (``crypto_pipelines.stream.cache``) holds what the stream saw last, including
the forming candle, which is never stored; SQL holds what was committed (REST history, the
stream's flushed batches, the API). Rows are answered in the ingestion bodies' row layout
(``bodies.row_columns``), so a client parses one shape. A cached row that the dataset's
model could not hold (a missing price, a NaN) is left out rather than answered as JSON that
is not JSON.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import pandera.dtypes as pa_dtypes
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crypto_pipelines.api.bodies import row_columns
from crypto_pipelines.domain.checks import is_timeframe
from crypto_pipelines.domain.datasets import (
    FUNDING_RATES,
    OHLCV,
    TRADES,
    MarketDataset,
    get_market_dataset,
)
from crypto_pipelines.domain.timeframes import TimeframeError, timeframe_ms
from crypto_pipelines.storage.schema import table_for
from crypto_pipelines.stream.cache import DEFAULT_PREFIX

BOOKS: Final = "order_book_snapshots"
_GLOB = re.compile(r"([*?\[\]\\])")


@dataclass
class Latest:
    """What is known of one symbol; rows in the ingestion row layout of their dataset."""

    trade: list[Any] | None = None
    candles: dict[str, dict[str, list[Any] | None]] = field(default_factory=dict)
    book: dict[str, Any] | None = None
    funding: dict[str, Any] | None = None

    @property
    def empty(self) -> bool:
        return (
            self.trade is None and not self.candles and self.book is None and self.funding is None
        )


def timeframe_order(timeframe: str) -> tuple[int, str]:
    """Shortest timeframe first; calendar months (no fixed length) last."""
    try:
        return timeframe_ms(timeframe), timeframe
    except TimeframeError:
        return 2**63, timeframe


def _cell(value: Any, dtype: Any, nullable: bool) -> tuple[bool, Any]:
    """``(ok, value)``: ``value`` as the column type holds it, or not ok."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return nullable, None
    if isinstance(value, bool):
        return False, None
    if pa_dtypes.is_string(dtype):
        return isinstance(value, str | int), str(value)
    if pa_dtypes.is_int(dtype):
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        return isinstance(value, int), value
    if isinstance(value, int | float):
        return True, float(value)
    return False, None


def cached_row(spec: MarketDataset, record: Mapping[str, Any]) -> list[Any] | None:
    """A row of the hot cache (all the dataset's columns, as the stream emitted them) -> the
    row layout of ``spec``; None when a value is not what the model would store."""
    columns = spec.table.schema.columns
    row = []
    for name in row_columns(spec):
        ok, value = _cell(record.get(name), columns[name].dtype, bool(columns[name].nullable))
        if not ok:
            return None
        row.append(value)
    return row


def top_of_book(levels: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The best bid and ask (lowest level of each side) of one snapshot's rows."""
    best: dict[str, tuple[int, dict[str, float]]] = {}
    ts: int | None = None
    for level in levels:
        side, number = level.get("side"), level.get("level")
        price, amount = level.get("price"), level.get("amount")
        if side not in ("bid", "ask") or not isinstance(number, int):
            continue
        if not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in (price, amount)
        ):
            continue
        stamp = level.get("ts")
        if isinstance(stamp, int) and not isinstance(stamp, bool):
            ts = stamp
        if side not in best or number < best[side][0]:
            best[side] = (number, {"price": float(price), "amount": float(amount)})  # type: ignore[arg-type]
    if ts is None or not best:
        return None
    return {"ts": ts, **{side: best[side][1] if side in best else None for side in ("bid", "ask")}}


class HotCacheUnavailable(Exception):
    """Redis could not be reached or answered badly (the route then reads SQL)."""


class HotCache:
    """Reads the stream's hot cache (key layout in ``crypto_pipelines.stream.cache``).

    One client per app, made on first use in the server's event loop and closed with the
    app (``routes.reads``). Connection failures retry once without backoff: the route falls
    back to SQL rather than hold a request for seconds of reconnect attempts."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, timeout_s: float = 2.0):
        import redis.asyncio as redis  # imported only when a cache is configured
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        self.client: Any = redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),
        )
        self.prefix = prefix
        self._errors: tuple[type[Exception], ...] = (RedisError, OSError)

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def _candle_keys(self, exchange: str, symbol: str) -> dict[str, tuple[str, str]]:
        """``key -> (timeframe, closed|forming)`` of every candle key of the symbol.

        The stream's timeframes are its own setting, not the universe's, so the keys are
        found by a SCAN of ``<prefix>:candle:<exchange>:<symbol>:*``. Symbols contain ':'
        (``BTC/USDT`` also matches ``BTC/USDT:USDT:1m``), so a key counts only when what
        follows the symbol is exactly a timeframe, optionally followed by ``:closed``."""
        head = self.key("candle", exchange, symbol) + ":"
        found: dict[str, tuple[str, str]] = {}
        async for name in self.client.scan_iter(match=_GLOB.sub(r"\\\1", head) + "*", count=1000):
            timeframe, kind = name[len(head) :], "forming"
            if timeframe.endswith(":closed"):
                timeframe, kind = timeframe.removesuffix(":closed"), "closed"
            if is_timeframe(timeframe):
                found[name] = (timeframe, kind)
        return found

    async def latest(self, exchange: str, symbol: str) -> Latest:
        """What the cache holds of ``symbol``; ``HotCacheUnavailable`` when Redis cannot
        be reached."""
        names = [
            self.key("trade", exchange, symbol),
            self.key("book", exchange, symbol),
            self.key("mark", exchange, symbol),
        ]
        try:
            candle_keys = await self._candle_keys(exchange, symbol)
            values = await self.client.mget([*names, *candle_keys])
        except self._errors as exc:
            raise HotCacheUnavailable(f"{type(exc).__name__}: {exc}") from exc
        trade_text, book_text, mark_text, *candle_texts = values
        latest = Latest()
        if trade_text is not None:
            latest.trade = cached_row(get_market_dataset(TRADES), _loads(trade_text) or {})
        if book_text is not None:
            levels = _loads(book_text)
            latest.book = top_of_book(levels) if isinstance(levels, list) else None
        if mark_text is not None:
            latest.funding = announced_funding(_loads(mark_text))
        candles = get_market_dataset(OHLCV)
        for (timeframe, kind), text in zip(candle_keys.values(), candle_texts, strict=True):
            if text is None:  # expired between the SCAN and the MGET
                continue
            slot = latest.candles.setdefault(timeframe, {"closed": None, "forming": None})
            slot[kind] = cached_row(candles, _loads(text) or {})
        latest.candles = {
            tf: latest.candles[tf]
            for tf in sorted(latest.candles, key=timeframe_order)
            if any(latest.candles[tf].values())
        }
        return latest

    async def close(self) -> None:
        await self.client.aclose()


def _finite(value: Any, kind: type[int] | type[float]) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return kind(value)


def announced_funding(record: Any) -> dict[str, Any] | None:
    """A cached ``mark`` row (``stream.funding``) as the answer's funding state: the mark price
    and the rate announced for the settlement at ``next_funding_ms``, not yet settled."""
    if not isinstance(record, dict):
        return None
    state = {
        "ts": _finite(record.get("ts"), int),
        "mark_price": _finite(record.get("mark_price"), float),
        "funding_rate": _finite(record.get("funding_rate"), float),
        "next_funding_ms": _finite(record.get("next_funding_ms"), int),
        "settled": False,
    }
    return state if state["mark_price"] is not None or state["funding_rate"] is not None else None


def _loads(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict | list) else None


def latest_from_sql(engine: Engine, exchange: str, symbol: str) -> Latest:
    """The newest stored trade, closed candle per timeframe, order book snapshot and settled
    funding rate of ``symbol`` (four indexed reads in one connection; blocking: run it in a
    thread)."""
    trades, ohlcv, books = table_for(TRADES), table_for(OHLCV), table_for(BOOKS)
    funding = table_for(FUNDING_RATES)
    trade_spec, candle_spec = get_market_dataset(TRADES), get_market_dataset(OHLCV)

    def series(table: sa.Table) -> list[sa.ColumnElement[bool]]:
        return [table.c.exchange == exchange, table.c.symbol == symbol]

    trade_query = (
        sa.select(*(trades.c[c] for c in row_columns(trade_spec)))
        .where(*series(trades))
        .order_by(trades.c.ts.desc(), trades.c.trade_id.desc())
        .limit(1)
    )
    newest = (
        sa.select(ohlcv.c.timeframe, sa.func.max(ohlcv.c.ts).label("ts"))
        .where(*series(ohlcv))
        .group_by(ohlcv.c.timeframe)
        .subquery()
    )
    candle_query = (
        sa.select(ohlcv.c.timeframe, *(ohlcv.c[c] for c in row_columns(candle_spec)))
        .join(newest, sa.and_(ohlcv.c.timeframe == newest.c.timeframe, ohlcv.c.ts == newest.c.ts))
        .where(*series(ohlcv))
    )
    snapshot = sa.select(sa.func.max(books.c.ts)).where(*series(books)).scalar_subquery()
    book_query = sa.select(
        books.c.ts, books.c.side, books.c.level, books.c.price, books.c.amount
    ).where(*series(books), books.c.ts == snapshot)
    funding_query = (
        sa.select(funding.c.ts, funding.c.rate)
        .where(*series(funding))
        .order_by(funding.c.ts.desc())
        .limit(1)
    )
    with engine.connect() as connection:
        trade = connection.execute(trade_query).first()
        settled = connection.execute(funding_query).first()
        candle_rows = connection.execute(candle_query).all()
        book_rows = connection.execute(book_query).mappings().all()
    candles = {
        str(row[0]): {"closed": list(row[1:]), "forming": None}
        for row in sorted(candle_rows, key=lambda row: timeframe_order(str(row[0])))
    }
    return Latest(
        trade=list(trade) if trade is not None else None,
        candles=candles,
        book=top_of_book(dict(row) for row in book_rows),
        funding=None
        if settled is None
        else {
            "ts": int(settled[0]),
            "mark_price": None,
            "funding_rate": float(settled[1]),
            "next_funding_ms": None,
            "settled": True,
        },
    )
