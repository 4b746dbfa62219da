"""The replay exchange's notion of "now".

A tape is history, yet exchanges answer "latest" questions (the newest candles when no start is
given, the current order book, server time). The clock says what "now" is: the real time by
default, or a chosen moment inside the tape that advances at a chosen speed (0 = frozen).
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
