"""Exchange answers to columns, and the checks every answer must pass before it is kept.

Rows are read with one vectorized pass per page, driven by the venue's column map
(``OhlcvSpec.columns``, ``TradeFields``, ``FundingSpec``), instead of ccxt's per-row
``parse_ohlcv``: the rows are the same (tests compare both), several times cheaper
(``benchmarks/fetch.py``).

A page is refused (``InvalidResponse``, naming exchange, data set, range and the first bad
row) when it is not ordered as the venue documents, holds duplicates, leaves the requested
range, is off the timeframe grid or carries impossible numbers. A candle's volume may be NaN:
some recorded sources have no volume, and that is reported, not invented.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd

from crypto_pipelines.exchanges.calls import describe_range, iso
from crypto_pipelines.exchanges.errors import InvalidResponse
from crypto_pipelines.exchanges.venues import (
    FundingSpec,
    MarketKind,
    OhlcvSpec,
    TimeFormat,
    TradeFields,
)

CANDLE_VALUES = ("open", "high", "low", "close", "volume")
_EMPTY_TS = np.empty(0, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Block:
    """Rows of one page as columns, oldest first."""

    ts: np.ndarray
    cols: Mapping[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.ts)

    def select(self, index: Any) -> Block:
        return Block(self.ts[index], {k: v[index] for k, v in self.cols.items()})

    @staticmethod
    def empty(names: Sequence[str], dtypes: Sequence[Any]) -> Block:
        return Block(
            _EMPTY_TS, {n: np.empty(0, dtype=d) for n, d in zip(names, dtypes, strict=True)}
        )

    @staticmethod
    def concat(blocks: Sequence[Block]) -> Block:
        if len(blocks) == 1:
            return blocks[0]
        names = list(blocks[0].cols)
        return Block(
            np.concatenate([b.ts for b in blocks]),
            {n: np.concatenate([b.cols[n] for b in blocks]) for n in names},
        )


@dataclass(frozen=True, slots=True)
class Where:
    """What a page was asked for, for error messages."""

    exchange: str
    what: str  # "BTC/USDT 1m candles"

    def fail(self, span: tuple[int, int], problem: str) -> InvalidResponse:
        return InvalidResponse(f"{self.exchange} {self.what} {describe_range(*span)}: {problem}")


def rows_at(payload: Any, path: tuple[str, ...], where: Where, span: tuple[int, int]) -> list[Any]:
    """The row list inside an answer (``data``, ``result.list``, or the answer itself)."""
    node = payload
    for key in path:
        if not isinstance(node, dict) or key not in node:
            raise where.fail(span, f"answer has no {'.'.join(path)} list: {str(payload)[:200]}")
        node = node[key]
    if not isinstance(node, list):
        raise where.fail(
            span, f"expected a list of rows, got {type(node).__name__}: {str(node)[:200]}"
        )
    return node


def oriented(
    ts: np.ndarray, newest_first: bool, strict: bool, where: Where, span: tuple[int, int]
) -> np.ndarray:
    """Index putting rows oldest first, after checking they came in the documented order
    (strictly for candles and funding: equal times are duplicates)."""
    steps = np.diff(ts)
    if newest_first:
        steps = -steps
    bad = np.flatnonzero(steps <= 0 if strict else steps < 0)
    if len(bad):
        i = int(bad[0])
        order = "newest first" if newest_first else "oldest first"
        kind = "duplicate" if ts[i] == ts[i + 1] else "unsorted"
        raise where.fail(
            span, f"{kind} rows (expected {order}): row {i} ts {ts[i]} then {ts[i + 1]}"
        )
    return np.arange(len(ts) - 1, -1, -1) if newest_first else np.arange(len(ts))


def in_span(ts: np.ndarray, where: Where, span: tuple[int, int]) -> None:
    if len(ts) and (ts[0] < span[0] or ts[-1] >= span[1]):
        bad = int(ts[0]) if ts[0] < span[0] else int(ts[-1])
        raise where.fail(span, f"row at {iso(bad)} ({bad}) is outside the requested range")


def _numbers(
    rows: list[Any], getter: Any, where: Where, span: tuple[int, int], dtype: Any
) -> np.ndarray:
    try:
        return np.array([getter(r) for r in rows], dtype=dtype)
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise where.fail(span, f"unreadable row ({exc}); first row {str(rows[0])[:200]}") from exc


def candle_block(
    rows: list[Any],
    spec: OhlcvSpec,
    kind: MarketKind,
    timeframe_ms: int,
    grid_offset: int,
    where: Where,
    span: tuple[int, int],
) -> Block:
    """Candle rows to columns, checked as a protocol: readable numbers, ordered, unique,
    inside ``span``, on the grid. Value rules (prices positive, low <= open/close <= high,
    volume >= 0) are the dataset model's: a candle breaking them is kept, and the ingestion
    sink quarantines it, so one bad candle does not throw away its whole page.
    ``grid_offset``: where the timeframe's grid starts (``domain.timeframes.grid_offset_ms``)."""
    if not rows:
        return Block.empty(CANDLE_VALUES, [np.float64] * 5)
    c = spec.columns
    ts = _numbers(rows, itemgetter(c.ts), where, span, np.int64)
    if spec.ts_unit_ms != 1:
        ts = ts * spec.ts_unit_ms
    values = _numbers(
        rows, itemgetter(c.open, c.high, c.low, c.close, c.volume[kind]), where, span, np.float64
    )
    order = oriented(ts, spec.newest_first, True, where, span)
    ts, values = ts[order], values[order]
    in_span(ts, where, span)
    off_grid = np.flatnonzero((ts - grid_offset) % timeframe_ms)
    if len(off_grid):
        i = int(off_grid[0])
        raise where.fail(span, f"candle at {iso(int(ts[i]))} is not aligned to the timeframe")
    return Block(
        ts, {name: np.ascontiguousarray(values[:, j]) for j, name in enumerate(CANDLE_VALUES)}
    )


def _trade_times(
    rows: list[Any], fields: TradeFields, where: Where, span: tuple[int, int]
) -> np.ndarray:
    if fields.ts_format is TimeFormat.MS:
        return _numbers(rows, itemgetter(fields.ts), where, span, np.int64)
    try:
        stamps = pd.to_datetime([r[fields.ts] for r in rows], utc=True, format="ISO8601")
    except (KeyError, TypeError, ValueError) as exc:
        raise where.fail(span, f"unreadable trade time ({exc})") from exc
    # Truncated to ms as ccxt does; the resolution pandas infers (us, ns) varies by version.
    return np.asarray(stamps.as_unit("ms").asi8, dtype=np.int64)


TRADE_COLUMNS = ("trade_id", "side", "price", "amount")


def trade_block(
    rows: list[Any], fields: TradeFields, newest_first: bool, where: Where, span: tuple[int, int]
) -> Block:
    """Trade objects to columns, oldest first: times ordered as documented, ids present and
    unique, side mapped to the taker's (None when the venue sent something else). Range checks
    are the caller's (a trade page is bounded by ids as often as by times); value rules (side,
    price and amount positive) are the model's, and the sink quarantines what breaks them."""
    if not rows:
        return Block.empty(TRADE_COLUMNS, [object, object, np.float64, np.float64])
    ts = _trade_times(rows, fields, where, span)
    ids = np.array([str(r.get(fields.id, "")) for r in rows], dtype=object)
    price = _numbers(rows, itemgetter(fields.price), where, span, np.float64)
    amount = _numbers(rows, itemgetter(fields.amount), where, span, np.float64)
    sides = np.array([fields.sides.get(r.get(fields.side)) for r in rows], dtype=object)
    order = oriented(ts, newest_first, False, where, span)
    block = Block(ts, {"trade_id": ids, "side": sides, "price": price, "amount": amount}).select(
        order
    )
    missing_id = np.flatnonzero(block.cols["trade_id"] == "")
    if len(missing_id):
        raise where.fail(span, f"a trade has no id: trade {rows[int(order[missing_id[0]])]}")
    if len(set(block.cols["trade_id"].tolist())) != len(block):
        raise where.fail(span, "duplicate trade ids in one page")
    return block


def funding_block(rows: list[Any], spec: FundingSpec, where: Where, span: tuple[int, int]) -> Block:
    """Funding objects to columns, oldest first: unique times inside ``span``. Whether a rate
    is sane (finite, under 100% per interval) is the model's rule: the sink quarantines it."""
    if not rows:
        return Block.empty(("rate",), [np.float64])
    ts = _numbers(rows, itemgetter(spec.ts_field), where, span, np.int64)

    def rate(row: dict[str, Any]) -> Any:
        return next((row[k] for k in spec.rate_fields if row.get(k) not in (None, "")), None)

    rates = _numbers(rows, rate, where, span, np.float64)
    order = oriented(ts, spec.newest_first, True, where, span)
    ts, rates = ts[order], rates[order]
    in_span(ts, where, span)
    return Block(ts, {"rate": rates})
