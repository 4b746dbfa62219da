"""What the app talks to besides its settings: the market store, the universe, and the two
Dagster-facing services, given as small protocols so this package imports no Dagster (the
``crypto_pipelines.defs.api_services`` module implements them; tests may pass their own).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from crypto_pipelines.domain.datasets import SeriesKey
from crypto_pipelines.domain.listings import filter_candidates
from crypto_pipelines.domain.universe import Universe, with_changes
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines.storage.universe_changes import universe_changes


@dataclass(frozen=True, slots=True)
class IngestedSpan:
    """Rows of one series and date partition (``period``: ``YYYY-MM-DD``, the month's 1st
    for monthly datasets) that API requests changed: the lineage to report."""

    series: SeriesKey
    period: str
    first_ts: int
    last_ts: int
    rows: int
    source: str


class LineageReporter(Protocol):
    """Reports committed spans to the orchestrator (a materialization of each span's
    partition). Called from a background thread, at most once per ``lineage_every_s``."""

    def report(self, spans: Sequence[IngestedSpan]) -> int:
        """Report ``spans``; returns the number of events written."""
        ...

    def check(self) -> str | None:
        """None when the orchestrator's instance is usable, else why not (for /health)."""
        ...

    def partitioned_symbols(self, exchange: str) -> Sequence[str] | None:
        """The symbols the orchestrator partitions ``exchange``'s datasets over (its universe
        sensor keeps them equal to the file, the API's changes and what the file's filters
        select from the stored markets); None when it cannot say."""
        ...


class StreamUnavailable(Exception):
    """The orchestrator cannot be asked (unreachable, job not found, server error)."""


class StreamConflict(Exception):
    """Start while a stream run is active, or stop while none is."""


class StreamControl(Protocol):
    """Starts, stops and describes the stream job through the orchestrator; raises
    ``StreamUnavailable`` or ``StreamConflict``."""

    def start(self, config: Mapping[str, Any] | None) -> Mapping[str, Any]: ...

    def stop(self) -> Mapping[str, Any]: ...

    def status(self) -> Mapping[str, Any]: ...


@dataclass
class ApiServices:
    """The app's collaborators. ``universe`` is the file's; ``current_universe`` adds the
    changes made through the API (re-read at most every ``universe_ttl_s``)."""

    store: MarketStore
    universe: Universe
    lineage: LineageReporter | None = None
    stream: StreamControl | None = None
    universe_ttl_s: float = 2.0

    def __post_init__(self) -> None:
        self._current: Universe | None = None
        self._read_at = 0.0
        self._selected: dict[str, tuple[float, frozenset[str]]] = {}

    def current_universe(self, *, fresh: bool = False) -> Universe:
        now = time.monotonic()
        if fresh or self._current is None or now - self._read_at > self.universe_ttl_s:
            changes = universe_changes(self.store.engine)
            self._current = with_changes(
                self.universe, ((c.exchange, c.symbol, c.action) for c in changes)
            )
            self._read_at = now
        return self._current

    def filter_selected(self, exchange: str) -> frozenset[str]:
        """The symbols ``exchange``'s universe filters select now (empty without filters):
        the orchestrator's partitions when it can say, else the stored markets passing the
        filters' quote, type and exclude rules (the volume ranking is recorded by the
        orchestrator, so without it every such market counts). Cached ``universe_ttl_s``."""
        config = self.universe.exchanges.get(exchange)
        if config is None or config.filters is None:
            return frozenset()
        now = time.monotonic()
        cached = self._selected.get(exchange)
        if cached is not None and now - cached[0] <= self.universe_ttl_s:
            return cached[1]
        known = self.lineage.partitioned_symbols(exchange) if self.lineage is not None else None
        if known is None:
            listings = self.store.listings(exchange).values()
            candidates = filter_candidates(config.filters, listings, int(time.time() * 1000))
            known = [listing.symbol for listing in candidates]
        selected = frozenset(known)
        self._selected[exchange] = (now, selected)
        return selected

    def forget_universe(self) -> None:
        """Drop the cached universe (after a change made through this process)."""
        self._current = None
