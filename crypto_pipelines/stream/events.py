"""What the stream hands to its handlers: batches of rows in the datasets' own columns.

ccxt.pro delivers unified structures (trade dicts, OHLCV lists); they are turned into rows
of the Pandera models' columns here, once, so every handler (the store writer, a cache, a
user's own) sees the same shapes as the REST path stores. ``received`` is the monotonic time
the message arrived, for receive-to-commit lag.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["trades", "candles", "forming"]
"""``candles`` are closed (stored); ``forming`` is the current candle as it changes (for caches
and user handlers; never stored, as on the REST path)."""


@dataclass(frozen=True, slots=True)
class StreamBatch:
    """Rows of one dataset from one message (or one REST catch-up page)."""

    kind: Kind
    exchange: str
    symbol: str
    rows: list[dict[str, Any]]
    received: float
    timeframe: str = ""
    via: str = "ws"  # ws | rest (catch-up and failover polling)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dataset(self) -> str | None:
        """The table the rows belong in; None for rows that are not stored (forming)."""
        return {"candles": "ohlcv", "trades": "trades"}.get(self.kind)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def trade_rows(
    exchange: str, symbol: str, trades: Iterable[dict[str, Any]]
) -> list[dict[str, Any]]:
    """ccxt unified trades -> ``trades`` rows (exchange, symbol, trade_id, ts, side, price,
    amount). Values are passed as sent: the sink's model judges them (and quarantines)."""
    return [
        {
            "exchange": exchange,
            "symbol": symbol,
            "trade_id": "" if t.get("id") is None else str(t.get("id")),
            "ts": t.get("timestamp"),
            "side": t.get("side"),
            "price": _number(t.get("price")),
            "amount": _number(t.get("amount")),
        }
        for t in trades
    ]


def candle_rows(
    exchange: str, symbol: str, timeframe: str, candles: Iterable[Sequence[Any]]
) -> list[dict[str, Any]]:
    """ccxt OHLCV lists ``[ts, open, high, low, close, volume]`` -> ``ohlcv`` rows."""
    return [
        {
            "exchange": exchange,
            "symbol": symbol,
            "timeframe": timeframe,
            "ts": c[0],
            "open": _number(c[1]),
            "high": _number(c[2]),
            "low": _number(c[3]),
            "close": _number(c[4]),
            "volume": _number(c[5]) if len(c) > 5 else math.nan,
        }
        for c in candles
    ]
