"""Loading market data from an exchange: candles, trades and funding rates, chunk by chunk.

Generic fetchers driven by a ``VenueSpec``: ``iter_ohlcv``, ``iter_trades`` (in
``exchanges.trades``) and ``iter_funding_rates`` walk ``[start_ms, end_ms)`` and yield
DataFrames of at most about ``chunk_rows`` rows, oldest first, so memory follows one chunk
whatever the range. Every answer is validated (``exchanges.parse``) and every request retried
when the failure is transient (``exchanges.calls``).

Requests use ccxt's implicit API (``publicGetKlines`` ...), so ccxt still signs, throttles
and maps every error to its exception classes, but rows are read with one vectorized pass per
page instead of ccxt's per-row parser: about twice the candles per second end to end, which
the 100,000 candles/s target needs (see ``benchmarks/fetch.py``).

Only closed candles are yielded (``ts + timeframe <= now``), so a stored candle never
changes. ``now_ms`` defaults to the client's clock; pass the exchange's (or the replay
exchange's pinned) time when it differs. Output depends only on the range, so a load resumes
by calling again from the last stored ``ts`` plus one timeframe.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from crypto_pipelines.domain.schemas import get_dataset
from crypto_pipelines.domain.timeframes import grid_offset_ms, timeframe_ms
from crypto_pipelines.exchanges.calls import Caller, FetchStats, RetryPolicy, market_kind, timed
from crypto_pipelines.exchanges.errors import UnsupportedRequest
from crypto_pipelines.exchanges.frames import frames, strictly_after
from crypto_pipelines.exchanges.paging import range_params, walk_range
from crypto_pipelines.exchanges.parse import (
    CANDLE_VALUES,
    Block,
    Where,
    candle_block,
    funding_block,
    rows_at,
)
from crypto_pipelines.exchanges.trades import TRADE_FRAME_COLUMNS, iter_trades
from crypto_pipelines.exchanges.venues import RangeQuery, VenueSpec, get_venue

OHLCV_COLUMNS = get_dataset("ohlcv").columns  # from the Pandera model, in model order
FUNDING_COLUMNS = get_dataset("funding_rates").columns
DEFAULT_CHUNK_ROWS = 10_000
#: OKX-style recent endpoints are used only this many bars inside their horizon, so that a
#: client clock running behind the exchange's cannot ask for bars already dropped.
_RECENT_MARGIN_BARS = 60

__all__ = [
    "FUNDING_COLUMNS",
    "OHLCV_COLUMNS",
    "TRADE_FRAME_COLUMNS",
    "FetchStats",
    "RetryPolicy",
    "exchange_time_ms",
    "fetch_markets",
    "iter_funding_rates",
    "iter_ohlcv",
    "iter_trades",
]


def fetch_markets(
    client: Any, *, stats: FetchStats | None = None, policy: RetryPolicy | None = None
) -> list[dict[str, Any]]:
    """ccxt's markets of the client's exchange restricted to the venue's market types (spot
    and perpetual swaps), sorted by symbol."""
    spec = get_venue(client.id)
    caller = Caller(client, spec, stats or FetchStats(), "markets", policy)
    markets = caller.load_markets(reload=True)  # the catalog's refresh: never from the cache
    kept = [m for m in markets.values() if m.get("type") in spec.market_types]
    return sorted(kept, key=lambda m: str(m["symbol"]))


def exchange_time_ms(
    client: Any, *, stats: FetchStats | None = None, policy: RetryPolicy | None = None
) -> int:
    """The exchange's clock (``fetch_time``), for ``now_ms`` when the client's clock is not
    the exchange's: the replay exchange with a pinned clock, or a skewed host."""
    spec = get_venue(client.id)
    return Caller(client, spec, stats or FetchStats(), "server time", policy).fetch_time()


def align_up(ts_ms: int, timeframe: str) -> int:
    """The first candle open time at or after ``ts_ms`` (weeks open on Mondays)."""
    step = timeframe_ms(timeframe)
    offset = grid_offset_ms(timeframe)
    return ts_ms + (-(ts_ms - offset)) % step


def iter_ohlcv(
    client: Any,
    spec: VenueSpec,
    symbol: str,
    timeframe: str,
    start_ms: int,
    end_ms: int,
    *,
    stats: FetchStats,
    now_ms: int | None = None,
    policy: RetryPolicy | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Iterator[pd.DataFrame]:
    """Closed candles with ``start_ms <= ts < end_ms``, oldest first, in DataFrames with
    columns ``OHLCV_COLUMNS`` (int64 ``ts``, float64 values). Candles the exchange does not
    have are absent, never invented.

    The timeframe, symbol and market are checked when called (``UnsupportedRequest``,
    ``ccxt.BadSymbol``), before any data request; the data is requested as chunks are
    consumed."""
    step = timeframe_ms(timeframe)
    code = spec.ohlcv.intervals.get(timeframe)
    if code is None:
        raise UnsupportedRequest(
            f"{spec.id} has no {timeframe} candles (supported: {', '.join(spec.timeframes)})"
        )
    what = f"{symbol} {timeframe} candles"
    caller = Caller(client, spec, stats, what, policy)
    market = caller.market(symbol)
    kind = market_kind(spec, market)
    queries = spec.ohlcv.queries.get(kind)
    if not queries:
        raise UnsupportedRequest(f"{spec.id} {symbol}: no candle endpoint for {kind} markets")
    now = int(client.milliseconds()) if now_ms is None else now_ms
    start, end = align_up(start_ms, timeframe), min(end_ms, now - step + 1)
    where = Where(spec.id, what)
    base = {spec.symbol_param: market["id"], spec.ohlcv.interval_param: code}
    base.update(spec.market_params.get(kind, ()))
    grid_offset = grid_offset_ms(timeframe)

    def choose(cursor: int) -> RangeQuery:
        for query in queries:
            if query.recent_rows is None:
                return query
            if cursor >= now - (query.recent_rows - _RECENT_MARGIN_BARS) * step:
                return query
        return queries[-1]

    def fetch(query: RangeQuery, lo: int, hi: int) -> Block:
        span = (lo, hi)
        payload = caller.call(
            query.method, {**base, **range_params(query, lo, hi, query.max_rows)}, span
        )
        rows = rows_at(payload, spec.ohlcv.rows_path, where, span)
        return candle_block(rows, spec.ohlcv, kind, step, grid_offset, where, span)

    blocks = walk_range(fetch, choose, start, end, advance_ms=step, window_step_ms=step)
    constants = {"exchange": spec.id, "symbol": symbol, "timeframe": timeframe}
    checked = strictly_after(blocks, where, (start, max(start, end)))
    return timed(frames(checked, constants, OHLCV_COLUMNS, chunk_rows, stats), stats)


def iter_funding_rates(
    client: Any,
    spec: VenueSpec,
    symbol: str,
    start_ms: int,
    end_ms: int,
    *,
    stats: FetchStats,
    now_ms: int | None = None,
    policy: RetryPolicy | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Iterator[pd.DataFrame]:
    """Settled funding rates of a perpetual swap with ``start_ms <= ts < end_ms`` (and
    ``ts <= now``), oldest first, columns ``FUNDING_COLUMNS``. ``ts`` is the exchange's own
    funding time (Binance's carry a few ms of offset; they are kept as sent)."""
    funding = spec.funding
    if funding is None:
        raise UnsupportedRequest(f"{spec.id} has no perpetual swaps, so no funding rates")
    what = f"{symbol} funding rates"
    caller = Caller(client, spec, stats, what, policy)
    market = caller.market(symbol)
    kind = market_kind(spec, market)
    query = funding.queries.get(kind)
    if query is None:
        raise UnsupportedRequest(
            f"{spec.id} {symbol}: funding rates exist for perpetual swaps only"
        )
    now = int(client.milliseconds()) if now_ms is None else now_ms
    start, end = start_ms, min(end_ms, now + 1)
    where = Where(spec.id, what)
    base = {spec.symbol_param: market["id"], **dict(spec.market_params.get(kind, ()))}

    def fetch(q: RangeQuery, lo: int, hi: int) -> Block:
        span = (lo, hi)
        payload = caller.call(q.method, {**base, **range_params(q, lo, hi, q.max_rows)}, span)
        return funding_block(rows_at(payload, funding.rows_path, where, span), funding, where, span)

    def choose(_cursor: int) -> RangeQuery:
        return query

    blocks = walk_range(fetch, choose, start, end, advance_ms=1, window_step_ms=funding.interval_ms)
    checked = strictly_after(blocks, where, (start, max(start, end)))
    constants = {"exchange": spec.id, "symbol": symbol}
    return timed(frames(checked, constants, FUNDING_COLUMNS, chunk_rows, stats), stats)


def empty_ohlcv() -> pd.DataFrame:
    """An empty frame with the candle columns and dtypes (for callers that concatenate)."""
    data: dict[str, Any] = {c: pd.Series(dtype=object) for c in ("exchange", "symbol", "timeframe")}
    data["ts"] = pd.Series(dtype=np.int64)
    data.update({c: pd.Series(dtype=np.float64) for c in CANDLE_VALUES})
    return pd.DataFrame(data)
