"""Vectorised rule bodies for the Pandera models of ``schemas`` (and instrument checks).

Each function takes a Series or DataFrame and returns a boolean Series (True = row passes),
so Pandera can report the failing rows. String rules are evaluated once per distinct value
and mapped back with ``isin``: a million-row batch holds a handful of symbols, and a regex
per row would dominate validation time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from crypto_pipelines.domain.symbols import SymbolError, parse_symbol
from crypto_pipelines.domain.timeframes import TimeframeError, timeframe_ms

# Millisecond timestamps between 2009-01-03 (the first Bitcoin block) and 2100-01-01. A value
# outside is almost always a unit mistake (seconds or microseconds), not a real time.
TS_MIN_MS = 1_230_940_800_000
TS_MAX_MS = 4_102_444_800_000

_EXCHANGE_RE = re.compile(r"^[a-z][a-z0-9]*$")
_CURRENCY_RE = re.compile(r"^[A-Za-z0-9.\-]+$")
_MONTHS_RE = re.compile(r"^[1-9][0-9]*M$")
_WEEK_OFFSET_MS = 4 * 86_400_000  # weekly candles open on Mondays; the epoch was a Thursday


def _per_distinct(series: pd.Series, ok: Callable[[object], bool]) -> pd.Series:
    good = [value for value in series.dropna().unique() if ok(value)]
    return series.isin(good)


def _matches(pattern: re.Pattern[str]) -> Callable[[object], bool]:
    return lambda value: isinstance(value, str) and pattern.match(value) is not None


def _is_symbol(value: object, swap: bool | None) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parsed = parse_symbol(value)
    except SymbolError:
        return False
    return swap is None or (parsed.settle is not None) == swap


def is_timeframe(value: object) -> bool:
    """Whether ``value`` is a ccxt timeframe, fixed-length (``5m``) or calendar months (``1M``)."""
    if not isinstance(value, str):
        return False
    if _MONTHS_RE.match(value):
        return True
    try:
        timeframe_ms(value)
    except TimeframeError:
        return False
    return True


def is_exchange_id(value: object) -> bool:
    """ccxt exchange ids are lower-case alphanumerics (``binance``, ``coinbaseexchange``)."""
    return _matches(_EXCHANGE_RE)(value)


def is_currency_code(value: object) -> bool:
    """A ccxt currency code (``BTC``, ``USDT``, ``1000PEPE``)."""
    return _matches(_CURRENCY_RE)(value)


def exchange_id(series: pd.Series) -> pd.Series:
    return _per_distinct(series, is_exchange_id)


def currency_code(series: pd.Series) -> pd.Series:
    return _per_distinct(series, is_currency_code)


def unified_symbol(series: pd.Series, *, swap: bool | None = None) -> pd.Series:
    """``BASE/QUOTE`` or ``BASE/QUOTE:SETTLE``; ``swap`` restricts to one of the two forms."""
    return _per_distinct(series, lambda value: _is_symbol(value, swap))


def valid_timeframe(series: pd.Series) -> pd.Series:
    """A ccxt timeframe: ``1m`` .. ``1w`` or calendar months (``1M``)."""
    return _per_distinct(series, is_timeframe)


def ts_epoch_ms(series: pd.Series) -> pd.Series:
    """Plausible epoch milliseconds (catches seconds/microseconds mix-ups)."""
    return (series >= TS_MIN_MS) & (series < TS_MAX_MS)


def ts_aligned(frame: pd.DataFrame, ts: str = "ts", timeframe: str = "timeframe") -> pd.Series:
    """Candle open times on their timeframe's UTC grid (weeks start Monday, months on the 1st).

    Rows with an invalid timeframe pass here: ``timeframe_valid`` already reports them, and a
    rule should count a row once for one mistake."""
    values = frame[ts].to_numpy(dtype=np.int64, na_value=0)
    ok = np.ones(len(frame), dtype=bool)
    tfs = frame[timeframe]
    for tf in tfs.dropna().unique():
        rows = (tfs == tf).to_numpy()
        if isinstance(tf, str) and _MONTHS_RE.match(tf):
            months = values[rows].astype("datetime64[ms]").astype("datetime64[M]")
            count = int(tf[:-1])
            month_index = months.astype(np.int64)
            ok[rows] = (months.astype("datetime64[ms]").astype(np.int64) == values[rows]) & (
                month_index % count == 0
            )
            continue
        try:
            step = timeframe_ms(str(tf))
        except TimeframeError:
            continue
        offset = _WEEK_OFFSET_MS if str(tf).endswith("w") else 0
        ok[rows] = (values[rows] - offset) % step == 0
    return pd.Series(ok, index=frame.index)


def unique_key(frame: pd.DataFrame, key: Sequence[str]) -> pd.Series:
    """Every row whose key appears more than once fails (all copies, so each is reported)."""
    present = [column for column in key if column in frame.columns]
    if len(present) != len(key):
        # A missing key column is reported by Pandera itself; do not fail every row too.
        return pd.Series(True, index=frame.index)
    return ~frame.duplicated(subset=list(key), keep=False)
