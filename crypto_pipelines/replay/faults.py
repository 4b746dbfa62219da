"""Fault injection: the failures a real exchange produces, on demand and reproducibly."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum


class Fault(Enum):
    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"


@dataclass
class FaultConfig:
    """Probabilities (0..1) of each fault per request, plus added latency.

    ``timeout_s`` is how long a request chosen to time out hangs before it is answered: longer
    than the client's timeout, so the client gives up first (ccxt's default is 10 s)."""

    rate_limit: float = 0.0
    server_error: float = 0.0
    timeout: float = 0.0
    latency_ms: float = 0.0
    timeout_s: float = 30.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("rate_limit", "server_error", "timeout"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault probability {name} must be within 0..1, got {value}")
        if self.latency_ms < 0 or self.timeout_s < 0:
            raise ValueError("latency_ms and timeout_s must be >= 0")

    @property
    def active(self) -> bool:
        return bool(self.rate_limit or self.server_error or self.timeout or self.latency_ms)


@dataclass
class FaultInjector:
    """Draws faults from a seeded generator, so a seeded run injects the same sequence."""

    config: FaultConfig
    _rng: random.Random = field(init=False, repr=False)

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
