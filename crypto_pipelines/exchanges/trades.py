"""Public trades over a time range, paged the way each venue allows (``TradesPaging``).

* FROM_ID (Binance aggTrades): find the last trade before ``start`` (``endTime`` alone, one
  row), then page forward with ``fromId``. Never by time: a window holding more than
  ``limit`` trades answers its *last* ones.
* BACKWARD (OKX history-trades): per time window (``window_ms``, the memory bound), the
  newest trades before the window's end by time, then older ones by trade id until the window
  start is passed; trades sharing a millisecond are never skipped because ids, not times, are
  the cursor.
* ID_CURSORS (Coinbase): no time parameters at all. Find the first trade id at or after
  ``start`` by galloping and bisecting over ``after`` (older-than-id) pages, then page
  forward with ``before`` (the page just newer than an id).
* RECENT_ONLY (Bybit): the latest trades are all there is; keep the part inside the range and
  record in ``stats.notes`` (and the log) what the venue could not provide.

Pages are yielded oldest first; ``trade_id`` is the exchange's id as text, ``side`` the
taker's, ``amount`` in the venue's unit (contracts for OKX swaps), as ccxt reports them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from crypto_pipelines.domain.schemas import get_dataset
from crypto_pipelines.exchanges.calls import (
    Caller,
    FetchStats,
    RetryPolicy,
    iso,
    market_kind,
    timed,
)
from crypto_pipelines.exchanges.frames import frames, trades_after
from crypto_pipelines.exchanges.parse import Block, Where, rows_at, trade_block
from crypto_pipelines.exchanges.venues import MarketKind, TradesPaging, TradesSpec, VenueSpec

log = logging.getLogger(__name__)

TRADE_FRAME_COLUMNS = get_dataset("trades").columns  # from the Pandera model


class _Pager:
    """One symbol's trade requests: parameters, parsing and the id arithmetic."""

    def __init__(
        self, caller: Caller, spec: VenueSpec, market: dict[str, Any], kind: MarketKind
    ) -> None:
        self.caller = caller
        self.t: TradesSpec = spec.trades
        self.method = self.t.methods[kind]
        self.limit = self.t.max_rows[kind]
        self.base = {spec.symbol_param: market["id"], **dict(spec.market_params.get(kind, ()))}
        self.where = Where(spec.id, caller.what)

    def page(self, span: tuple[int, int], **params: Any) -> Block:
        params.setdefault(self.t.limit_param, self.limit)
        payload = self.caller.call(self.method, {**self.base, **params}, span)
        rows = rows_at(payload, self.t.rows_path, self.where, span)
        return trade_block(rows, self.t.fields, self.t.newest_first, self.where, span)

    def ids(self, block: Block, span: tuple[int, int]) -> np.ndarray:
        """Trade ids as integers (cursor venues number their trades)."""
        try:
            return np.array([int(i) for i in block.cols["trade_id"]], dtype=np.int64)
        except ValueError as exc:
            raise self.where.fail(span, f"trade ids are not integers ({exc})") from exc

    def ascending_ids(self, block: Block, span: tuple[int, int], after: int | None) -> np.ndarray:
        ids = self.ids(block, span)
        if len(ids) and (np.any(np.diff(ids) <= 0) or (after is not None and ids[0] <= after)):
            raise self.where.fail(
                span, f"trade ids not increasing past {after}: {ids[:5].tolist()}..."
            )
        return ids

    def in_range(self, block: Block, span: tuple[int, int]) -> Block:
        return block.select((block.ts >= span[0]) & (block.ts < span[1]))


def _from_id(p: _Pager, span: tuple[int, int]) -> Iterator[Block]:
    start, end = span
    t = p.t
    assert t.from_id_param and t.end_time_param
    before = p.page(span, **{t.end_time_param: start - 1, t.limit_param: 1})
    next_id = int(p.ids(before, span)[-1]) + 1 if len(before) else 0
    while True:
        block = p.page(span, **{t.from_id_param: next_id})
        ids = p.ascending_ids(block, span, next_id - 1)
        if len(block) and block.ts[0] < start:
            raise p.where.fail(
                span, f"trade {ids[0]} at {iso(int(block.ts[0]))} precedes the range"
            )
        kept = p.in_range(block, span)
        yield kept
        if len(block) < p.limit or len(kept) < len(block):
            return
        next_id = int(ids[-1]) + 1


def _backward(p: _Pager, span: tuple[int, int]) -> Iterator[Block]:
    t = p.t
    assert t.end_time_param and t.older_than_id_param
    for w0 in range(span[0], span[1], t.window_ms):
        window = (w0, min(span[1], w0 + t.window_ms))
        parts: list[Block] = []
        block = p.page(window, **{t.end_time_param: window[1]}, **dict(t.by_time_extra))
        while True:
            if len(block) and block.ts[-1] >= window[1]:
                raise p.where.fail(window, f"trade at {iso(int(block.ts[-1]))} is past the window")
            kept = block.select(block.ts >= window[0])
            parts.append(kept)
            if len(block) < p.limit or len(kept) < len(block):
                break
            oldest = block.cols["trade_id"][0]
            block = p.page(window, **{t.older_than_id_param: oldest}, **dict(t.by_id_extra))
            if len(block) and block.ts[-1] > parts[-1].ts[0]:
                raise p.where.fail(window, f"page older than trade {oldest} holds newer trades")
        merged = Block.concat(parts[::-1])
        if len(set(merged.cols["trade_id"].tolist())) != len(merged):
            raise p.where.fail(window, "the same trade id arrived on two pages")
        yield merged


def _first_id_at(p: _Pager, span: tuple[int, int]) -> int | None:
    """An id such that every trade numbered at or below it precedes ``span[0]`` and the next
    trade does not (-1 when no trade precedes it), or None when no trade at or after
    ``span[0]`` exists yet. Probes are whole pages (``limit`` trades), so the search usually
    ends as soon as a page straddles the start: a few requests near "now", about
    log2(distance / limit) for old ranges."""
    start = span[0]
    older = p.t.older_than_id_param
    assert older

    def straddle(block: Block, ids: np.ndarray) -> int:
        return int(ids[np.flatnonzero(block.ts < start)[-1]])

    block = p.page(span)
    if not len(block) or block.ts[-1] < start:
        return None
    ids = p.ascending_ids(block, span, None)
    if block.ts[0] < start:
        return straddle(block, ids)
    good, lower, gap = int(ids[0]), -1, p.limit
    while good - gap > 0:  # gallop back until a page ends before the start
        block = p.page(span, **{older: good - gap + 1})
        ids = p.ascending_ids(block, span, None)
        if not len(block) or block.ts[-1] < start:
            lower = good - gap
            break
        if block.ts[0] < start:
            return straddle(block, ids)
        good, gap = int(ids[0]), gap * 2
    while good - lower > 1:  # bisect: trades <= lower precede start, trade `good` does not
        mid = (lower + good) // 2
        block = p.page(span, **{older: mid + 1})
        ids = p.ascending_ids(block, span, None)
        if not len(block) or block.ts[-1] < start:
            lower = mid
        elif block.ts[0] < start:
            return straddle(block, ids)
        else:
            good = int(ids[0])
    return lower


def _id_cursors(p: _Pager, span: tuple[int, int]) -> Iterator[Block]:
    newer = p.t.newer_than_id_param
    assert newer
    cursor = _first_id_at(p, span)
    while cursor is not None:
        block = p.page(span, **{newer: cursor})
        ids = p.ascending_ids(block, span, cursor)
        kept = p.in_range(block, span)
        if len(kept) < len(block) and block.ts[0] < span[0]:
            raise p.where.fail(
                span, f"trade {ids[0]} at {iso(int(block.ts[0]))} precedes the range"
            )
        yield kept
        if len(block) < p.limit or len(kept) < len(block):
            return
        cursor = int(ids[-1])


def _recent_only(p: _Pager, span: tuple[int, int], stats: FetchStats) -> Iterator[Block]:
    block = p.page(span)
    if len(block) >= p.limit and block.ts[0] > span[0]:
        note = (
            f"{p.where.exchange} {p.where.what}: the venue publishes only its latest {p.limit} "
            f"trades; trades from {iso(span[0])} to {iso(int(block.ts[0]))} are not available"
        )
        stats.notes.append(note)
        log.warning(note)
    yield p.in_range(block, span)


def iter_trades(
    client: Any,
    spec: VenueSpec,
    symbol: str,
    start_ms: int,
    end_ms: int,
    *,
    stats: FetchStats,
    now_ms: int | None = None,
    policy: RetryPolicy | None = None,
    chunk_rows: int = 10_000,
) -> Iterator[pd.DataFrame]:
    """Trades with ``start_ms <= ts < end_ms`` (and ``ts <= now``), oldest first, columns
    ``TRADE_FRAME_COLUMNS``; where the venue keeps no history, what it has (see module doc)."""
    caller = Caller(client, spec, stats, f"{symbol} trades", policy)
    market = caller.market(symbol)
    kind = market_kind(spec, market)
    pager = _Pager(caller, spec, market, kind)
    now = int(client.milliseconds()) if now_ms is None else now_ms
    span = (start_ms, max(start_ms, min(end_ms, now + 1)))
    paging = spec.trades.paging
    if span[0] >= span[1]:
        blocks: Iterator[Block] = iter(())
    elif paging is TradesPaging.FROM_ID:
        blocks = _from_id(pager, span)
    elif paging is TradesPaging.BACKWARD:
        blocks = _backward(pager, span)
    elif paging is TradesPaging.ID_CURSORS:
        blocks = _id_cursors(pager, span)
    else:
        blocks = _recent_only(pager, span, stats)
    checked = trades_after(blocks, pager.where, span)
    constants = {"exchange": spec.id, "symbol": symbol}
    return timed(frames(checked, constants, TRADE_FRAME_COLUMNS, chunk_rows, stats), stats)
