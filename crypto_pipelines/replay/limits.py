"""Exchange rate limits as data, enforced with the exchanges' own fixed windows.

Each venue declares its budgets (Binance: request weight per minute per IP; OKX: requests per
2 s per endpoint; Bybit: requests per 5 s per IP; Coinbase: requests per second). Windows are
aligned to the wall clock as the exchanges' are, so a client that paces itself by ccxt's
throttler at the published rate stays inside them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Budget:
    """``capacity`` cost units per ``window_ms``, per IP or (``per_endpoint``) per endpoint."""

    name: str
    window_ms: int
    capacity: int
    per_endpoint: bool = False


@dataclass(frozen=True, slots=True)
class BanPolicy:
    """Binance-style escalation: a client that sends ``after`` more requests while limited is
    banned (HTTP 418) for ``ban_ms``."""

    after: int = 10
    ban_ms: int = 120_000


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    used: int
    capacity: int
    window_ms: int
    reset_ms: int  # wall-clock ms at which the binding window resets
    retry_after_s: int
    banned: bool = False

    @property
    def remaining(self) -> int:
        return max(0, self.capacity - self.used)


@dataclass
class _Window:
    start: int = -1
    used: int = 0


@dataclass
class Limiter:
    ban: BanPolicy | None = None
    now_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    _windows: dict[tuple[str, str], _Window] = field(default_factory=dict)
    _violations: int = 0
    _banned_until: int = 0

    def charge(self, budgets: tuple[Budget, ...], endpoint: str, cost: int) -> Verdict:
        """Spend ``cost`` from each of ``budgets``; refuse when any would overflow."""
        now = self.now_ms()
        if self._banned_until > now:
            return self._refusal(now, self._banned_until, banned=True)
        binding: Verdict | None = None
        pending: list[tuple[_Window, Budget]] = []
        for budget in budgets:
            key = (budget.name, endpoint if budget.per_endpoint else "")
            window = self._windows.setdefault(key, _Window())
            start = now - now % budget.window_ms
            if window.start != start:
                window.start, window.used = start, 0
            reset = start + budget.window_ms
            if window.used + cost > budget.capacity:
                self._violations += 1
                if self.ban is not None and self._violations > self.ban.after:
                    self._banned_until = now + self.ban.ban_ms
                    self._violations = 0
                    return self._refusal(now, self._banned_until, banned=True)
                return Verdict(
                    False,
                    window.used,
                    budget.capacity,
                    budget.window_ms,
                    reset,
                    _ceil_s(reset - now),
                )
            pending.append((window, budget))
            verdict = Verdict(True, window.used + cost, budget.capacity, budget.window_ms, reset, 0)
            if binding is None or verdict.remaining < binding.remaining:
                binding = verdict
        for window, _ in pending:
            window.used += cost
        self._violations = 0
        return binding or Verdict(True, 0, 0, 0, now, 0)

    def _refusal(self, now: int, until: int, *, banned: bool) -> Verdict:
        return Verdict(False, 0, 0, 0, until, _ceil_s(until - now), banned=banned)


def _ceil_s(ms: int) -> int:
    return max(1, -(-ms // 1000))
