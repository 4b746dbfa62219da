"""How stale a candle series may get before it warns and fails, derived from its timeframe.

A series kept current by the incremental sensor materializes once per closed candle, so in
steady state its last materialization is at most one candle old, plus the sensor's interval
and a run's latency. The windows are that candle plus a grace period:

- warn after one candle + min(4 candles, 1 h),
- fail after one candle + min(14 candles, 6 h).

For 1m that is warn after 5 minutes, fail after 15 (the issue's numbers). The grace grows with
the timeframe, so a 5m series is not flagged for one slow run, but is capped, so a daily series
is not allowed a day's silence: 1h warns after 2 h and fails after 7 h, 1d warns after 25 h
and fails after 30 h (an exchange's maintenance window of a few hours still passes).
Calendar months have no fixed length; the longest (31 days) is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from crypto_pipelines.domain.timeframes import DAY_MS, HOUR_MS, TimeframeError, timeframe_ms

WARN_CANDLES = 4
FAIL_CANDLES = 14
WARN_GRACE_CAP_MS = HOUR_MS
FAIL_GRACE_CAP_MS = 6 * HOUR_MS
_MONTH_MAX_MS = 31 * DAY_MS


@dataclass(frozen=True, slots=True)
class FreshnessWindows:
    """Time since the last materialization after which a series warns, and fails."""

    warn: timedelta
    fail: timedelta


def candle_ms(timeframe: str) -> int:
    """A candle's length; calendar months count as their longest (31 days)."""
    try:
        return timeframe_ms(timeframe)
    except TimeframeError:
        if timeframe.endswith("M") and timeframe[:-1].isdigit() and int(timeframe[:-1]) > 0:
            return int(timeframe[:-1]) * _MONTH_MAX_MS
        raise


def freshness_windows(timeframe: str) -> FreshnessWindows:
    """The warn and fail windows of a ``timeframe`` candle series (see the module doc)."""
    step = candle_ms(timeframe)
    warn = step + min(WARN_CANDLES * step, WARN_GRACE_CAP_MS)
    fail = step + min(FAIL_CANDLES * step, FAIL_GRACE_CAP_MS)
    return FreshnessWindows(warn=timedelta(milliseconds=warn), fail=timedelta(milliseconds=fail))
