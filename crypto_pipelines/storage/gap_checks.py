"""Checking one window (a partition) of a stored series for gaps, and recording the result.

The expected grid of a window is bounded by the series itself: before its first stored candle
the market did not exist yet (or its history was not loaded), and after its newest one is
freshness's concern (the incremental loads and the freshness policy), not a gap. So a window
is checked from its start when the series has a candle before it (else from its first
candle) to its end when the series has one at or after it (else to its newest candle). A
run of missing candles that straddles two windows is reported in each of them, one part each.

Trades are checked only where the venue numbers them sequentially (Binance aggTrades): every
id between the last trade before the window and the window's last trade must be stored; a
run of ids that straddles the window's start belongs to this window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

from crypto_pipelines.domain.gaps import NO_GAPS, Gaps, Range, candle_gaps, id_gaps, slots_in
from crypto_pipelines.domain.timeframes import timeframe_ms
from crypto_pipelines.storage.gaps import GapStore, Series, WindowVerdict
from crypto_pipelines.storage.schema import table_for
from crypto_pipelines.storage.store import MarketStore


@dataclass(frozen=True, slots=True)
class GapCheck:
    """The outcome of checking one window: the grid (``gaps``) and its classification."""

    gaps: Gaps
    verdict: WindowVerdict
    step: int  # grid step: the timeframe in ms, or 1 for trade ids

    @property
    def passed(self) -> bool:
        """No gap that is ours to fill (confirmed ones do not fail a check)."""
        return not self.verdict.unconfirmed

    @property
    def missing(self) -> int:
        return self.gaps.missing

    @property
    def missing_ranges(self) -> list[Range]:
        return list(self.gaps.ranges)

    @property
    def confirmed_missing(self) -> int:
        return slots_in(self.verdict.confirmed, self.step)

    @property
    def unconfirmed_missing(self) -> int:
        return slots_in(self.verdict.unconfirmed, self.step)


def candle_window_gaps(
    store: MarketStore, exchange: str, symbol: str, timeframe: str, start_ms: int, end_ms: int
) -> Gaps:
    """Missing candles of one window of a stored series (see the module docstring for the
    bounds), without touching the ``gaps`` table."""
    step = timeframe_ms(timeframe)
    ts = store.timestamps(
        "ohlcv",
        exchange=exchange,
        symbol=symbol,
        timeframe=timeframe,
        start_ts=start_ms,
        end_ts=end_ms,
    )
    before = _has_candle(store, exchange, symbol, timeframe, None, start_ms)
    after = _has_candle(store, exchange, symbol, timeframe, end_ms, None)
    if not ts and not (before and after):
        return NO_GAPS
    first = start_ms if before else ts[0]
    last = end_ms if after else ts[-1] + step
    return candle_gaps(np.asarray(ts, dtype=np.int64), timeframe, first, last)


def trade_window_gaps(
    store: MarketStore, exchange: str, symbol: str, start_ms: int, end_ms: int
) -> Gaps:
    """Missing sequential trade ids of one window (Binance aggTrades-style numbering)."""
    table = table_for("trades")
    series = (table.c.exchange == exchange, table.c.symbol == symbol)
    in_window = sa.select(table.c.trade_id).where(
        *series, table.c.ts >= start_ms, table.c.ts < end_ms
    )
    before_ts = (
        sa.select(sa.func.max(table.c.ts)).where(*series, table.c.ts < start_ms).scalar_subquery()
    )
    previous = sa.select(table.c.trade_id).where(*series, table.c.ts == before_ts)
    with store.engine.connect() as connection:
        ids = np.array([int(v) for v in connection.execute(in_window).scalars()], dtype=np.int64)
        earlier = [int(v) for v in connection.execute(previous).scalars()]
    if ids.size == 0:
        return NO_GAPS
    first = max(earlier) + 1 if earlier else int(ids.min())
    return id_gaps(ids[ids >= first], first_id=first, last_id=int(ids.max()))


def check_candle_window(
    store: MarketStore,
    gap_store: GapStore,
    exchange: str,
    symbol: str,
    timeframe: str,
    start_ms: int,
    end_ms: int,
    *,
    now_ms: int,
    refetched: bool = False,
) -> GapCheck:
    """Check one window of candles and record what was found in ``gaps``. ``refetched``:
    the window was just refetched whole from the exchange, so what is still missing is
    confirmed empty there."""
    gaps = candle_window_gaps(store, exchange, symbol, timeframe, start_ms, end_ms)
    step = timeframe_ms(timeframe)
    verdict = gap_store.record_window(
        Series(exchange, symbol, "ohlcv", timeframe),
        start_ms,
        end_ms,
        gaps.ranges,
        step=step,
        now_ms=now_ms,
        refetched=refetched,
    )
    return GapCheck(gaps, verdict, step)


def check_trade_window(
    store: MarketStore,
    gap_store: GapStore,
    exchange: str,
    symbol: str,
    start_ms: int,
    end_ms: int,
    *,
    now_ms: int,
    refetched: bool = False,
) -> GapCheck:
    """Check one window of sequentially numbered trades and record it in ``gaps``."""
    gaps = trade_window_gaps(store, exchange, symbol, start_ms, end_ms)
    verdict = gap_store.record_window(
        Series(exchange, symbol, "trades"),
        start_ms,
        end_ms,
        gaps.ranges,
        step=1,
        now_ms=now_ms,
        refetched=refetched,
    )
    return GapCheck(gaps, verdict, 1)


def _has_candle(
    store: MarketStore,
    exchange: str,
    symbol: str,
    timeframe: str,
    start_ms: int | None,
    end_ms: int | None,
) -> bool:
    """Whether the series has any candle in ``[start_ms, end_ms)`` (an index probe)."""
    table = table_for("ohlcv")
    where = [table.c.exchange == exchange, table.c.symbol == symbol, table.c.timeframe == timeframe]
    if start_ms is not None:
        where.append(table.c.ts >= start_ms)
    if end_ms is not None:
        where.append(table.c.ts < end_ms)
    query = sa.select(table.c.ts).where(*where).limit(1)
    with store.engine.connect() as connection:
        return connection.execute(query).first() is not None
