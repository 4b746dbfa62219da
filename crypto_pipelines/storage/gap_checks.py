"""Checking one window (a partition) of a stored series for gaps, and recording the result.

The expected grid of a window starts where the series does: before its first stored candle
the market did not exist yet (or its history was not loaded), so a window is checked from its
start when the series has a candle before it, else from its first candle. It ends where the
exchange's answers end: at the end of the window's *coverage* (``storage.coverage``: the
ranges the exchange was asked for and answered), so the trailing missing candles of a closed
day are gaps, while the open partition's tail, not asked for yet, is freshness's concern. A
part of the window inside that span that was never answered (a hole in coverage) counts as
missing too: it is ours to fetch. A window with closed candles and no coverage at all was
never loaded and is reported as such (``GapCheck.loaded``), never as checked and complete. A
run of missing candles that straddles two windows is reported in each of them, one part each.

Trades are checked only where the venue numbers them sequentially (Binance aggTrades): every
id between the last trade before the window and the window's last trade must be stored; a
run of ids that straddles the window's start belongs to this window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sqlalchemy as sa

from crypto_pipelines.domain.datasets import SeriesKey
from crypto_pipelines.domain.gaps import NO_GAPS, Gaps, Range, candle_gaps, id_gaps, slots_in
from crypto_pipelines.domain.symbols import parse_symbol
from crypto_pipelines.domain.timeframes import timeframe_ms
from crypto_pipelines.storage.coverage import clip, covered
from crypto_pipelines.storage.gaps import GapStore, Series, WindowVerdict
from crypto_pipelines.storage.rejections import rejections
from crypto_pipelines.storage.schema import table_for
from crypto_pipelines.storage.store import MarketStore


@dataclass(frozen=True, slots=True)
class GapCheck:
    """The outcome of checking one window: the grid (``gaps``) and its classification."""

    gaps: Gaps
    verdict: WindowVerdict
    step: int  # grid step: the timeframe in ms, or 1 for trade ids
    loaded: bool = True
    """False: the window has closed candles but the exchange was never asked for any of it."""

    @property
    def passed(self) -> bool:
        """No gap that is ours to fill (confirmed ones do not fail a check), and loaded."""
        return self.loaded and not self.verdict.unconfirmed

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
    return candle_windows_gaps(store, exchange, symbol, timeframe, [(start_ms, end_ms)])[0]


def candle_windows_gaps(
    store: MarketStore,
    exchange: str,
    symbol: str,
    timeframe: str,
    windows: Sequence[tuple[int, int]],
) -> list[Gaps]:
    """``candle_window_gaps`` for several windows of one series."""
    return [gaps for gaps, _loaded in _candle_windows(store, exchange, symbol, timeframe, windows)]


def listing_bounds(store: MarketStore, exchange: str, symbol: str) -> tuple[int | None, int | None]:
    """The market's ``(listed_ms, delisted_ms)`` from the stored catalog (None where unknown,
    or when ``<exchange>/markets`` has not run yet)."""
    table = "crypto_perps" if parse_symbol(symbol).settle is not None else "crypto_pairs"
    rows = store.read(table, exchange=exchange, symbol=symbol)
    if rows.empty:
        return None, None
    listed, delisted = rows["listed_ms"].iloc[0], rows["delisted_ms"].iloc[0]
    return (None if pd.isna(listed) else int(listed)), (
        None if pd.isna(delisted) else int(delisted)
    )


def _candle_windows(
    store: MarketStore,
    exchange: str,
    symbol: str,
    timeframe: str,
    windows: Sequence[tuple[int, int]],
    now_ms: int | None = None,
) -> list[tuple[Gaps, bool]]:
    """Each window's gaps and whether it was loaded at all, reading the series once (one
    query for the span the windows cover, its coverage, one index probe before it) instead of
    several queries per window: a year of daily partitions is 365 windows.

    Where the catalog knows the market's listing, the grid starts at the listing (or the
    window) even before the series' first stored candle, and ends at the delisting."""
    if not windows:
        return []
    step = timeframe_ms(timeframe)
    lo = min(start for start, _end in windows)
    hi = max(end for _start, end in windows)
    ts = np.asarray(
        store.timestamps(
            "ohlcv",
            exchange=exchange,
            symbol=symbol,
            timeframe=timeframe,
            start_ts=lo,
            end_ts=hi,
        ),
        dtype=np.int64,
    )
    cover = covered(store.engine, SeriesKey(exchange, symbol, "ohlcv", timeframe), lo, hi)
    before_span = _has_candle(store, exchange, symbol, timeframe, None, lo)
    listed, delisted = listing_bounds(store, exchange, symbol)
    found = []
    for start_ms, end_ms in windows:
        first_in, past_end = np.searchsorted(ts, [start_ms, end_ms], side="left")
        inside = ts[first_in:past_end]
        life = (max(start_ms, listed or start_ms), min(end_ms, delisted or end_ms))
        parts = clip(cover, life)
        if not parts:
            closed = now_ms is None or life[0] + step <= now_ms
            found.append((NO_GAPS, life[0] >= life[1] or not closed))
            continue
        before = before_span or first_in > 0 or listed is not None
        if not inside.size and not before:
            found.append((NO_GAPS, True))  # answered, and the series has not begun yet
            continue
        first = life[0] if before else int(inside[0])
        found.append((candle_gaps(inside, timeframe, first, parts[-1][1]), True))
    return found


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
    return check_candle_windows(
        store,
        gap_store,
        exchange,
        symbol,
        timeframe,
        [(start_ms, end_ms)],
        now_ms=now_ms,
        refetched=refetched,
    )[0]


def check_candle_windows(
    store: MarketStore,
    gap_store: GapStore,
    exchange: str,
    symbol: str,
    timeframe: str,
    windows: Sequence[tuple[int, int]],
    *,
    now_ms: int,
    refetched: bool = False,
) -> list[GapCheck]:
    """``check_candle_window`` for several windows of one series: one read, one transaction.
    A confirmed gap whose candles the exchange did send, but invalid (``rejected_rows``),
    records the rules they broke as its reason."""
    found = _candle_windows(store, exchange, symbol, timeframe, windows, now_ms)
    step = timeframe_ms(timeframe)
    series = SeriesKey(exchange, symbol, "ohlcv", timeframe)
    verdicts = gap_store.record_windows(
        series,
        [(start, end, g.ranges) for (start, end), (g, _ok) in zip(windows, found, strict=True)],
        step=step,
        now_ms=now_ms,
        refetched=refetched,
        reason=_rejection_reason(store, series, windows) if refetched else None,
    )
    return [GapCheck(g, v, step, ok) for (g, ok), v in zip(found, verdicts, strict=True)]


def _rejection_reason(
    store: MarketStore, series: SeriesKey, windows: Sequence[tuple[int, int]]
) -> Callable[[Range], str | None]:
    """Why a range is confirmed missing, when the exchange sent its rows invalid."""
    lo = min(start for start, _end in windows)
    hi = max(end for _start, end in windows)
    found = rejections(store.engine, series=series, start_ts=lo, end_ts=hi)

    def reason(span: Range) -> str | None:
        inside = [r for r in found if r.ts is not None and span[0] <= r.ts <= span[1]]
        if not inside:
            return None
        rules = sorted({rule for r in inside for rule in r.rules})
        return (
            f"the exchange sends {len(inside)} row(s) here that break {', '.join(rules)} "
            "(kept in rejected_rows)"
        )

    return reason


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
