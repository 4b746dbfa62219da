"""Counters behind ``GET /_replay/stats``: requests and faults per exchange and endpoint."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

COUNTERS = ("requests", "ok", "errors", "rate_limited", "banned", "server_errors", "timeouts")


class Stats:
    def __init__(self) -> None:
        self._counts: dict[str, dict[str, dict[str, int]]] = defaultdict(
            lambda: defaultdict(lambda: dict.fromkeys(COUNTERS, 0))
        )

    def add(self, exchange: str, endpoint: str, counter: str) -> None:
        self._counts[exchange][endpoint][counter] += 1

    def snapshot(self) -> dict[str, Any]:
        exchanges = {
            exchange: {endpoint: dict(c) for endpoint, c in endpoints.items()}
            for exchange, endpoints in self._counts.items()
        }
        totals = dict.fromkeys(COUNTERS, 0)
        for endpoints in exchanges.values():
            for counts in endpoints.values():
                for key, value in counts.items():
                    totals[key] += value
        return {"totals": totals, "exchanges": exchanges}

    def reset(self) -> None:
        self._counts.clear()
