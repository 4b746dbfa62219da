"""Candle timeframes in ccxt notation (``1m``, ``4h``, ``1d``, ``1w``, ``1M``) and their lengths."""

from __future__ import annotations

import re

_UNIT_MS = {
    "s": 1_000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
}
_TF_RE = re.compile(r"^(\d+)([smhdwM])$")

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


class TimeframeError(ValueError):
    """A string that is not a ccxt timeframe."""


def timeframe_ms(timeframe: str) -> int:
    """Length of one candle in milliseconds. Months are calendar months and have no fixed
    length, so ``1M`` is refused here: callers that support it align with calendars."""
    match = _TF_RE.match(timeframe)
    if not match:
        raise TimeframeError(f"not a ccxt timeframe (e.g. 1m, 5m, 1h, 1d): {timeframe!r}")
    count, unit = int(match.group(1)), match.group(2)
    if count <= 0:
        raise TimeframeError(f"timeframe must be positive: {timeframe!r}")
    if unit == "M":
        raise TimeframeError(f"calendar-month timeframes have no fixed length: {timeframe!r}")
    return count * _UNIT_MS[unit]


def grid_offset_ms(timeframe: str) -> int:
    """Where a timeframe's UTC grid starts after the epoch: weekly candles open on Monday
    00:00 UTC at every venue here, 4 days after the epoch (a Thursday); others at 0."""
    return 4 * DAY_MS if timeframe.endswith("w") else 0


def is_aligned(ts_ms: int, timeframe: str) -> bool:
    """Whether a candle open time sits on the timeframe's UTC grid.

    Weekly candles open on Monday 00:00 UTC at every venue here, which is 4 days after the
    epoch (a Thursday), so they are aligned with that offset."""
    return (ts_ms - grid_offset_ms(timeframe)) % timeframe_ms(timeframe) == 0
