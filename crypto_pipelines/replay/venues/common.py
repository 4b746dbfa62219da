"""Numbers and aggregates several venues derive the same way from a tape."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from crypto_pipelines.domain.timeframes import DAY_MS
from crypto_pipelines.replay.tape import SymbolTape, TradeSeries


def decimals_of(step: str) -> int:
    """Number of decimals of a tick/step string: ``0.001`` -> 3, ``1`` -> 0."""
    exponent = Decimal(step).normalize().as_tuple().exponent
    return max(0, -int(exponent))


@dataclass(frozen=True, slots=True)
class DayStats:
    """24-hour statistics up to ``now`` from the finest candles: what tickers report."""

    open_ts: int
    close_ts: int
    open: str
    high: str
    low: str
    last: str
    change: str
    volume: str
    quote_volume: str
    count: int


def day_stats(series: SymbolTape, now_ms: int) -> DayStats | None:
    if not series.ohlcv:
        return None
    candles_series = min(series.ohlcv.values(), key=lambda s: s.timeframe_ms)
    last = candles_series.between(None, now_ms, 1, newest=True)
    if not last:
        return None
    # A tape that ended before "now" reports its last day, as the market looked then.
    anchor = min(now_ms, last[0].ts + candles_series.timeframe_ms - 1)
    candles = candles_series.between(anchor - DAY_MS + 1, anchor, 100_000)
    change = Decimal(candles[-1].close) - Decimal(candles[0].open)
    high = max(candles, key=lambda c: Decimal(c.high)).high
    low = min(candles, key=lambda c: Decimal(c.low)).low
    volume = sum((Decimal(c.volume) for c in candles if c.volume != "nan"), Decimal(0))
    quote = sum(
        (Decimal(c.volume) * Decimal(c.close) for c in candles if c.volume != "nan"), Decimal(0)
    )
    return DayStats(
        open_ts=candles[0].ts,
        close_ts=candles[-1].ts + candles_series.timeframe_ms - 1,
        open=candles[0].open,
        high=high,
        low=low,
        last=candles[-1].close,
        change=_plain(change),
        volume=_plain(volume),
        quote_volume=_plain(quote),
        count=len(candles),
    )


def trade_day_stats(trades: TradeSeries, now_ms: int, max_rows: int = 1_000_000) -> DayStats | None:
    """24-hour statistics up to ``now`` from trades, for a tape that has trades but no candles.
    Like ``day_stats``, a tape that ended before "now" reports its last day."""
    last = trades.between(None, now_ms, 1, newest=True)
    if not last:
        return None
    anchor = last[0].ts
    rows = trades.between(anchor - DAY_MS + 1, anchor, max_rows, newest=True)
    prices = [Decimal(t.price) for t in rows]
    volume = sum((Decimal(t.amount) for t in rows), Decimal(0))
    quote = sum((Decimal(t.amount) * p for t, p in zip(rows, prices, strict=True)), Decimal(0))
    return DayStats(
        open_ts=rows[0].ts,
        close_ts=anchor,
        open=rows[0].price,
        high=rows[prices.index(max(prices))].price,
        low=rows[prices.index(min(prices))].price,
        last=rows[-1].price,
        change=_plain(prices[-1] - prices[0]),
        volume=_plain(volume),
        quote_volume=_plain(quote),
        count=len(rows),
    )


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


def book_update_id(ts: int) -> int:
    """A monotonically increasing book update id for a snapshot at ``ts`` (ms): real venues
    number every book change; a snapshot's time in microseconds orders the same way."""
    return ts * 1000


def plain_decimal(value: Decimal) -> str:
    """A derived decimal as exchanges write it: no exponent, no trailing zeros (``1E+2`` ->
    ``100``, ``0.50`` -> ``0.5``)."""
    return _plain(value)
