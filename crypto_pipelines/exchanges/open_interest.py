"""Loading the open-interest history of a perpetual swap, chunk by chunk.

``iter_open_interest`` walks ``[start_ms, end_ms)`` at the venue's open-interest period
(``VenueSpec.open_interest.period_ms``, 5 minutes everywhere) like ``iter_funding_rates``: the
venue's own endpoint through ccxt's implicit API (so ccxt still signs, throttles and maps
errors), pages read in one vectorized pass and validated, windows of one page, DataFrames of
about ``chunk_rows`` rows, oldest first. Output depends only on the range, so a load resumes by
calling again from the last stored ``ts`` plus one period; except that a venue publishing only
recent history (``OpenInterestSpec.history_ms``: Binance keeps 30 days and refuses an older
``startTime``) is asked only for what it still keeps, and ``FetchStats.notes`` says what was
skipped.

Columns are ``OPEN_INTEREST_COLUMNS``: ``open_interest`` is contracts outstanding as the venue
counts them (its ccxt ``contractSize`` says what one is worth: one base unit for Binance and
Bybit linear swaps, 0.01 BTC for OKX's BTC-USDT-SWAP, 100 USD for Binance's BTCUSD_PERP);
``open_interest_value`` is their value in the quote currency, NaN where the venue reports
none (Bybit linear swaps). OKX's value is its ``oiUsd``: USD for inverse swaps, and for USDT
or USDC swaps equal to the quote value within the stablecoin's peg. For inverse swaps, whose
contracts are sized in the quote currency, the value is contracts x size where the venue
does not send it in that currency (Binance COIN-M sends the base-coin value; Bybit sends
none).
"""

from __future__ import annotations

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
from crypto_pipelines.exchanges.errors import UnsupportedRequest
from crypto_pipelines.exchanges.frames import frames, strictly_after
from crypto_pipelines.exchanges.paging import range_params, walk_range
from crypto_pipelines.exchanges.parse import Block, Where, in_span, oriented, rows_at
from crypto_pipelines.exchanges.venues import (
    MarketKind,
    OpenInterestSpec,
    OpenInterestValue,
    RangeQuery,
    VenueSpec,
)

OPEN_INTEREST_COLUMNS = get_dataset("open_interest").columns  # from the Pandera model
_VALUES = OPEN_INTEREST_COLUMNS[3:]
DEFAULT_CHUNK_ROWS = 10_000
#: periods kept clear of a venue's retention edge, so that a client clock running behind the
#: exchange's cannot ask for a period already dropped (and be refused)
_HISTORY_MARGIN_PERIODS = 12

__all__ = ["OPEN_INTEREST_COLUMNS", "iter_open_interest", "kept_from", "open_interest_block"]


def kept_from(spec: VenueSpec, now_ms: int) -> int | None:
    """The oldest period the venue still publishes at ``now_ms`` (with a margin), or None
    when it keeps its whole history. Loaders ask for nothing older, and must not record the
    older part as covered: it was never asked for."""
    oi = spec.open_interest
    if oi is None or oi.history_ms is None:
        return None
    kept = now_ms - oi.history_ms + _HISTORY_MARGIN_PERIODS * oi.period_ms
    return kept + (-kept) % oi.period_ms


def iter_open_interest(
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
    """Open interest of a perpetual swap at each period ``ts`` with ``start_ms <= ts <
    end_ms`` and ``ts <= now``, oldest first, columns ``OPEN_INTEREST_COLUMNS`` (int64 ``ts``
    in epoch ms, float64 values, NaN where the venue reports none). Periods the venue does
    not have are absent, never invented.

    The venue, symbol and market are checked when called (``UnsupportedRequest`` for a venue
    without open interest and for spot markets, ``ccxt.BadSymbol`` for an unknown symbol),
    before any data request; the data is requested as chunks are consumed."""
    oi = spec.open_interest
    if oi is None:
        raise UnsupportedRequest(f"{spec.id} has no perpetual swaps, so no open interest")
    what = f"{symbol} open interest"
    caller = Caller(client, spec, stats, what, policy)
    market = caller.market(symbol)
    kind = market_kind(spec, market)
    query = oi.queries.get(kind)
    if query is None:
        raise UnsupportedRequest(
            f"{spec.id} {symbol}: open interest exists for perpetual swaps only"
        )
    param, keys = oi.instrument[kind]
    instrument = _lookup(market, keys)
    if instrument is None:
        raise UnsupportedRequest(
            f"{spec.id} {symbol}: ccxt's market has no {'.'.join(keys)} to ask with"
        )
    size = float(market.get("contractSize") or 1.0)
    now = int(client.milliseconds()) if now_ms is None else now_ms
    step = oi.period_ms
    start, end = start_ms + (-start_ms) % step, min(end_ms, now + 1)
    kept = kept_from(spec, now)
    if kept is not None:
        if start < min(kept, end):
            stats.notes.append(
                f"{spec.id} publishes open interest for the last {(oi.history_ms or 0) // 86_400_000} "
                f"days only: {symbol} periods before {iso(kept)} were not requested"
            )
            start = kept
    where = Where(spec.id, what)
    base = {param: instrument, oi.period_param: oi.period_code}
    base.update(spec.market_params.get(kind, ()))

    def fetch(q: RangeQuery, lo: int, hi: int) -> Block:
        span = (lo, hi)
        payload = caller.call(q.method, {**base, **range_params(q, lo, hi, q.max_rows)}, span)
        rows = rows_at(payload, oi.rows_path, where, span)
        return open_interest_block(rows, oi, kind, size, where, span)

    def choose(_cursor: int) -> RangeQuery:
        return query

    blocks = walk_range(fetch, choose, start, end, advance_ms=step, window_step_ms=step)
    checked = strictly_after(blocks, where, (start, max(start, end)))
    constants = {"exchange": spec.id, "symbol": symbol}
    return timed(frames(checked, constants, OPEN_INTEREST_COLUMNS, chunk_rows, stats), stats)


def open_interest_block(
    rows: list[Any],
    spec: OpenInterestSpec,
    kind: MarketKind,
    contract_size: float,
    where: Where,
    span: tuple[int, int],
) -> Block:
    """Open-interest rows (objects or arrays) to columns, oldest first: unique times inside
    ``span`` in the documented order, an empty or absent number read as NaN (the venue's
    "no value"). Negative or infinite numbers are kept for the model to judge (the sink
    quarantines them)."""
    if not rows:
        return Block.empty(_VALUES, [np.float64, np.float64])
    try:
        ts = np.array([int(r[spec.ts_field]) for r in rows], dtype=np.int64)
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise where.fail(span, f"unreadable time ({exc}); first row {str(rows[0])[:200]}") from exc
    amount = _column(rows, spec.amount_field, where, span)
    source = spec.value[kind]
    if source is OpenInterestValue.FIELD and spec.value_field is not None:
        value = _column(rows, spec.value_field, where, span)
    elif source is OpenInterestValue.CONTRACT_NOTIONAL:
        value = amount * contract_size
    else:
        value = np.full(len(rows), np.nan)
    order = oriented(ts, spec.newest_first, True, where, span)
    ts, amount, value = ts[order], amount[order], value[order]
    in_span(ts, where, span)
    return Block(ts, {"open_interest": amount, "open_interest_value": value})


def _column(rows: list[Any], field: str | int, where: Where, span: tuple[int, int]) -> np.ndarray:
    def number(row: Any) -> float:
        raw = row[field] if isinstance(field, int) else row.get(field)
        return np.nan if raw is None or raw == "" else float(raw)

    try:
        return np.array([number(r) for r in rows], dtype=np.float64)
    except (TypeError, ValueError, IndexError, AttributeError) as exc:
        raise where.fail(span, f"unreadable row ({exc}); first row {str(rows[0])[:200]}") from exc


def _lookup(market: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    node: Any = market
    for key in keys:
        if not isinstance(node, dict) or node.get(key) in (None, ""):
            return None
        node = node[key]
    return str(node)
