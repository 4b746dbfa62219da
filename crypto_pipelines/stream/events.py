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

Kind = Literal["trades", "candles", "forming", "books", "mark"]
"""``candles`` are closed (stored); ``forming`` is the current candle as it changes (for caches
and user handlers; never stored, as on the REST path); ``books`` is one order book snapshot
(the top levels of each side at one time, see ``stream.books``); ``mark`` is a perpetual's
mark price with the funding rate announced for its next settlement (never stored: the settled
rate is fetched over REST, see ``stream.funding``)."""


class StreamStalled(Exception):
    """No message for ``watchdog_s`` on an open connection (or, first, on one order book)."""


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
        return _DATASETS.get(self.kind)


_DATASETS: dict[str, str] = {
    "candles": "ohlcv",
    "trades": "trades",
    "books": "order_book_snapshots",
}


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def trade_rows(
    exchange: str, symbol: str, trades: Iterable[dict[str, Any]]
) -> list[dict[str, Any]]:
    """ccxt unified trades -> ``trades`` rows (exchange, symbol, trade_id, ts, side, price,
    amount). Values are passed as sent: the sink's model judges them (and quarantines).
    The busiest loop of the stream (a row per trade): floats and string ids, what ccxt
    hands out, take the short way."""
    rows: list[dict[str, Any]] = []
    append = rows.append
    for t in trades:
        get = t.get
        trade_id, price, amount = get("id"), get("price"), get("amount")
        append(
            {
                "exchange": exchange,
                "symbol": symbol,
                "trade_id": trade_id
                if type(trade_id) is str
                else ("" if trade_id is None else str(trade_id)),
                "ts": get("timestamp"),
                "side": get("side"),
                "price": price if type(price) is float else _number(price),
                "amount": amount if type(amount) is float else _number(amount),
            }
        )
    return rows


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


def book_rows(
    exchange: str,
    symbol: str,
    ts: int,
    bids: Sequence[Sequence[Any]],
    asks: Sequence[Sequence[Any]],
    depth: int,
) -> list[dict[str, Any]]:
    """The top ``depth`` levels of each side of a book (ccxt's ``[price, amount, ...]``
    lists, best first) -> ``order_book_snapshots`` rows, all at ``ts``; ``level`` 0 is the
    best price. The caller copies the levels out of ccxt's live book before anything else
    can run on the event loop, so the rows are one consistent book."""
    return [
        {
            "exchange": exchange,
            "symbol": symbol,
            "ts": ts,
            "side": side,
            "level": level,
            "price": _number(entry[0]),
            "amount": _number(entry[1]),
        }
        for side, levels in (("bid", bids), ("ask", asks))
        for level, entry in enumerate(levels[:depth])
    ]
