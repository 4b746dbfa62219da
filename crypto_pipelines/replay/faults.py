"""Fault injection: the failures a real exchange produces, on demand and reproducibly.

REST faults are drawn per request. WebSocket faults act on connections: ``ws_drop_every_s``
closes every connection that has been open that long (seconds of real time, counted from the
connection's start or from the last change of the configuration, whichever is later),
``ws_stall_every_s`` makes a connection go silent for ``ws_stall_s`` seconds at that period
while it stays open (what is due meanwhile is sent when it resumes, as a congested exchange
delivers it), and ``ws_malformed`` is the probability that a data message is garbled (cut
short, so it is no longer valid JSON) and ``ws_lost`` the probability that a data message is
silently never sent (what a venue or a proxy under load does: the client sees nothing wrong,
only the next message, so a consumer must notice from the data, e.g. a jump in trade ids).
ccxt.pro (4.5.90) stops reading a connection at the
first such frame (the parse error escapes its receive loop), so for a ccxt.pro client a
garbled frame turns into a silent stream that its keep-alive ends later.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from enum import Enum


class Fault(Enum):
    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"


@dataclass
class FaultConfig:
    """Probabilities (0..1) of each fault per request, plus added latency, plus the
    WebSocket faults (see the module docstring; 0 disables each).

    ``timeout_s`` is how long a request chosen to time out hangs before it is answered: longer
    than the client's timeout, so the client gives up first (ccxt's default is 10 s)."""

    rate_limit: float = 0.0
    server_error: float = 0.0
    timeout: float = 0.0
    latency_ms: float = 0.0
    timeout_s: float = 30.0
    seed: int | None = None
    ws_drop_every_s: float = 0.0
    ws_stall_every_s: float = 0.0
    ws_stall_s: float = 5.0
    ws_malformed: float = 0.0
    ws_lost: float = 0.0

    def __post_init__(self) -> None:
        for name in ("rate_limit", "server_error", "timeout", "ws_malformed", "ws_lost"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault probability {name} must be within 0..1, got {value}")
        if self.latency_ms < 0 or self.timeout_s < 0:
            raise ValueError("latency_ms and timeout_s must be >= 0")
        for name in ("ws_drop_every_s", "ws_stall_every_s", "ws_stall_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    @property
    def active(self) -> bool:
        return bool(self.rate_limit or self.server_error or self.timeout or self.latency_ms)

    @property
    def ws_active(self) -> bool:
        return bool(
            self.ws_drop_every_s or self.ws_stall_every_s or self.ws_malformed or self.ws_lost
        )


@dataclass
class FaultInjector:
    """Draws faults from a seeded generator, so a seeded run injects the same sequence.

    ``since`` is when this configuration took effect (monotonic seconds): WebSocket drop and
    stall periods count from it for connections that were already open."""

    config: FaultConfig
    _rng: random.Random = field(init=False, repr=False)
    since: float = field(init=False, default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.config.seed)

    def draw(self) -> Fault | None:
        cfg = self.config
        if not (cfg.rate_limit or cfg.server_error or cfg.timeout):
            return None
        roll = self._rng.random()
        for fault, p in (
            (Fault.TIMEOUT, cfg.timeout),
            (Fault.RATE_LIMIT, cfg.rate_limit),
            (Fault.SERVER_ERROR, cfg.server_error),
        ):
            if roll < p:
                return fault
            roll -= p
        return None

    def latency_s(self) -> float:
        """Exponentially distributed latency with the configured mean."""
        mean = self.config.latency_ms
        return self._rng.expovariate(1.0 / mean) / 1000.0 if mean > 0 else 0.0

    def garble(self, text: str) -> str | None:
        """The message cut short with probability ``ws_malformed`` (None: sent intact). At
        least one character goes and at least one stays, so the result is never valid JSON
        yet still looks like the start of a message, as a truncated frame does."""
        p = self.config.ws_malformed
        if p <= 0 or len(text) < 2 or self._rng.random() >= p:
            return None
        return text[: self._rng.randint(1, len(text) - 1)]

    def lose(self) -> bool:
        """Whether a data message is silently not sent (probability ``ws_lost``)."""
        p = self.config.ws_lost
        return p > 0 and self._rng.random() < p
