"""Counters behind ``GET /_replay/stats``: requests and faults per exchange and endpoint.

REST endpoints are keyed by the exchange's path; WebSocket traffic by ``ws:<channel>`` in the
venue's own channel naming (``ws:trade``, ``ws:publicTrade``, ``ws:candle1m``...), with
``ws:connection`` for what concerns a whole connection (connections, drops, stalls) and
``ws:control`` for replies to malformed or unknown requests.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

COUNTERS = ("requests", "ok", "errors", "rate_limited", "banned", "server_errors", "timeouts")
WS_COUNTERS = (
    "ws_connections",
    "ws_messages",
    "ws_subscribed",
    "ws_unsubscribed",
    "ws_errors",
    "ws_drops",
    "ws_stalls",
    "ws_malformed",
    "ws_lost",
)
WS_PREFIX = "ws:"


class Stats:
    def __init__(self) -> None:
        self._counts: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)

    def add(self, exchange: str, endpoint: str, counter: str, n: int = 1) -> None:
        endpoints = self._counts[exchange]
        counts = endpoints.get(endpoint)
        if counts is None:
            names = WS_COUNTERS if endpoint.startswith(WS_PREFIX) else COUNTERS
            counts = endpoints[endpoint] = dict.fromkeys(names, 0)
        counts[counter] = counts.get(counter, 0) + n

    def snapshot(self) -> dict[str, Any]:
        exchanges = {
            exchange: {endpoint: dict(c) for endpoint, c in endpoints.items()}
            for exchange, endpoints in self._counts.items()
        }
        totals = dict.fromkeys(COUNTERS + WS_COUNTERS, 0)
        for endpoints in exchanges.values():
            for counts in endpoints.values():
                for key, value in counts.items():
                    totals[key] = totals.get(key, 0) + value
        return {"totals": totals, "exchanges": exchanges}

    def reset(self) -> None:
        self._counts.clear()
