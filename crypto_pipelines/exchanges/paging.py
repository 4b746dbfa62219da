"""Walking a time range with a paged endpoint, whichever rows the venue answers first.

Two rules cover the four venues (``Anchor``):

* OLDEST (Binance klines and funding, Bybit klines): a range answers its first ``limit`` rows,
  so ask for the whole remaining range and continue after the last row returned. Exchanges
  omit candles, so the cursor follows the last *returned* row, never a count. A short page
  means the range is exhausted.
* NEWEST (OKX, Coinbase candles, Bybit and OKX funding): a range answers its *last* ``limit``
  rows, so ask windows that hold at most one page (``max_rows`` grid steps) and advance by the
  window. An empty window is a gap (an outage, a quiet market), not the end: the walk goes on
  to ``end``; where the venue accepts wider ranges (OKX), a stretch of empty windows is
  crossed with growing ranges and bisection rather than one request per window. Where the
  grid step underestimates the density (funding every 4 h on an 8-hour venue default) a
  full page is followed by the rest of its window, newest first.

Both yield pages oldest first, each inside ``[start, end)``, so the result depends only on the
range: a re-run from any point yields the same rows from there on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from crypto_pipelines.exchanges.calls import iso
from crypto_pipelines.exchanges.parse import Block
from crypto_pipelines.exchanges.venues import Anchor, RangeQuery, TimeFormat

PageFetch = Callable[[RangeQuery, int, int], Block]
"""Fetch rows with ``start <= ts < end`` (validated, oldest first) from one query."""


def _format(query: RangeQuery, ts_ms: int) -> Any:
    if query.time_format is TimeFormat.ISO:
        return iso(ts_ms)
    return ts_ms


def range_params(query: RangeQuery, start: int, end: int, limit: int) -> dict[str, Any]:
    """Request parameters for rows in ``[start, end)`` in the venue's own terms (exclusive
    bounds shift by one millisecond; inclusive ends stop one millisecond short of ``end``)."""
    low, high = (start - 1, end) if query.exclusive_bounds else (start, end - 1)
    params: dict[str, Any] = {
        query.start_param: _format(query, low),
        query.end_param: _format(query, high),
    }
    if query.limit_param is not None:
        params[query.limit_param] = limit
    params.update(query.extra)
    return params


def walk_range(
    fetch: PageFetch,
    choose: Callable[[int], RangeQuery],
    start: int,
    end: int,
    *,
    advance_ms: int,
    window_step_ms: int,
) -> Iterator[Block]:
    """Pages of ``[start, end)`` oldest first. ``choose(cursor)`` picks the endpoint for the
    next request (OKX serves recent candles and history from different ones);
    ``advance_ms`` is the step after a returned row (a candle's length; 1 ms for funding);
    ``window_step_ms`` sizes NEWEST windows (``max_rows`` of them)."""
    cursor = start
    while cursor < end:
        query = choose(cursor)
        if query.anchor is Anchor.OLDEST:
            block = fetch(query, cursor, end)
            if len(block):
                yield block
            if len(block) < query.max_rows:
                return
            cursor = int(block.ts[-1]) + advance_ms
            continue
        width = query.max_rows * window_step_ms
        window_end = min(end, cursor + width)
        block = _drain_window(fetch, query, cursor, window_end)
        if len(block):
            yield block
            cursor = window_end
        elif query.wide_ranges:
            cursor = _skip_gap(fetch, choose, window_end, end, width, advance_ms)
        else:
            cursor = window_end


def _skip_gap(
    fetch: PageFetch,
    choose: Callable[[int], RangeQuery],
    start: int,
    end: int,
    width: int,
    grid: int,
) -> int:
    """After an empty window: where the next rows can start, found in O(log(gap)) requests
    instead of one per window (a backfill that starts years before a listing). Ranges twice
    as wide each time until one holds rows, then bisection down to one window; the rows the
    probes return are dropped and fetched again in order. Only for venues that clamp the row
    count of a wide range instead of refusing it (``RangeQuery.wide_ranges``). Probe bounds
    stay on the ``grid`` (``start`` plus whole candles), so the windows that follow hold whole
    pages and need no second request."""
    empty_until, span = start, width
    while True:  # gallop: [start, empty_until) is known to be empty
        high = min(end, empty_until + span)
        if high <= empty_until:
            return end
        if len(fetch(choose(empty_until), empty_until, high)):
            break
        empty_until, span = high, span * 2
        if empty_until >= end:
            return end
    while high - empty_until > width:  # bisect: rows exist in [empty_until, high)
        mid = empty_until + (high - empty_until) // 2 // grid * grid
        if len(fetch(choose(empty_until), empty_until, mid)):
            high = mid
        else:
            empty_until = mid
    return empty_until


def _drain_window(fetch: PageFetch, query: RangeQuery, start: int, end: int) -> Block:
    """Every row of a NEWEST window: page backwards while pages come back full."""
    parts: list[Block] = []
    high = end
    while high > start:
        block = fetch(query, start, high)
        parts.append(block)
        if len(block) < query.max_rows or int(block.ts[0]) <= start:
            break
        high = int(block.ts[0])
    return Block.concat(parts[::-1]) if len(parts) > 1 else parts[0]
