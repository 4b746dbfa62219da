"""The replay exchange's notion of "now".

A tape is history, yet exchanges answer "latest" questions (the newest candles when no start is
given, the current order book, server time) and stream what happens as time passes. The clock
says what "now" is: the real time by default, or a chosen moment inside the tape that advances
at a chosen speed (0 = frozen). REST answers and WebSocket streams read the same clock, so a
client catching up over REST after a stream broke sees exactly what the stream missed.

A test moves a frozen clock with ``set_ms``/``advance`` (or by assigning ``start_ms``, which
the older tests do); streams poll the clock, so a move is seen within one streaming tick.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class ReplayClock:
    start_ms: int | None = None
    speed: float = 1.0
    _t0: float = field(default_factory=time.monotonic, repr=False)

    def now_ms(self) -> int:
        if self.start_ms is None:
            return int(time.time() * 1000)
        return self.start_ms + int((time.monotonic() - self._t0) * 1000 * self.speed)

    def set_ms(self, ms: int) -> None:
        """Jump to ``ms``; a running clock goes on at its speed from there."""
        self.start_ms = ms
        self._t0 = time.monotonic()

    def advance(self, ms: int) -> int:
        """Move a replay clock ``ms`` forward (backward if negative); returns the new "now".
        The real-time clock cannot be moved: a test that moves time pins the clock first."""
        if self.start_ms is None:
            raise ValueError("the real-time clock cannot be moved; give ReplayClock a start_ms")
        now = self.now_ms() + ms
        self.set_ms(now)
        return now
