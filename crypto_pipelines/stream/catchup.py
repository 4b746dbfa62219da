"""REST catch-up for the stream: what the WebSocket did not deliver, fetched by the loader.

Three occasions, one method each, all through ``load_series`` (the historical path's own
loader and sink, with ``refetch`` so coverage does not skip what the stream wrote):

- ``catch_up`` before every (re)connect: trades since the newest trade stored *or received*
  per symbol, whichever is older (ccxt.pro may have received trades it never handed out when
  a connection died; a trade received but not yet flushed is still in the writer's buffer);
- the bridge after the first message of a connection: since the previous catch-up reached,
  a second before it, so trades between that catch-up and the subscription are not lost;
- ``repair`` of a hole the stream itself saw: on a venue whose trade ids count up by one
  per market (``VenueSpec.trades.sequential_ids``), a jump in the ids is a trade the
  connection skipped (a garbled frame ccxt.pro took without an error, say), fetched at once
  for exactly the window between the trades around it.

The loader is synchronous: each call runs in a worker thread, one at a time per exchange
(the ccxt REST client is not made for concurrent use). Failures are recorded in the
statistics and logged, never raised: the stream goes on and the next catch-up retries.
A venue whose REST keeps only its newest trades (Bybit) may no longer have what the stream
missed; that hole is recorded in ``gaps`` as confirmed, never silently ignored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from crypto_pipelines.domain.datasets import SeriesKey
from crypto_pipelines.domain.timeframes import DAY_MS
from crypto_pipelines.exchanges.client import make_client
from crypto_pipelines.exchanges.loader import exchange_time_ms
from crypto_pipelines.exchanges.venues import TradesPaging, get_venue
from crypto_pipelines.ingest import load_series
from crypto_pipelines.ingest.load import LoadReport
from crypto_pipelines.storage.gaps import GapStore
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines.stream.stats import StreamStats

log = logging.getLogger(__name__)

BRIDGE_OVERLAP_MS = 1_000
FUNDING_LOOKBACK_MS = 7 * DAY_MS
"""With no funding rate stored yet, how far back the stream fetches them (older is a backfill)."""


class RestCatchUp:
    """One exchange's REST side of the stream (see the module docstring)."""

    def __init__(
        self,
        exchange: str,
        store: MarketStore,
        stats: StreamStats,
        *,
        lookback_ms: int,
        replay_url: str | None = None,
    ) -> None:
        self.exchange = exchange
        self.venue = get_venue(exchange)
        self.store = store
        self.stats = stats
        self.lookback_ms = lookback_ms
        self.replay_url = replay_url
        self.caught_up: dict[str, int] = {}
        """Per symbol, the exchange time the last catch-up reached."""
        self.holes: list[tuple[str, int, int]] = []
        """Repairs that failed (symbol, after, before): retried before the next catch-up."""
        self._client: Any = None
        self._lock = asyncio.Lock()

    @property
    def sequential_ids(self) -> bool:
        return self.venue.trades.sequential_ids

    def _rest(self) -> Any:
        if self._client is None:
            self._client = make_client(self.exchange, replay_url=self.replay_url, rate_budget=True)
        return self._client

    async def catch_up(
        self,
        symbols: Sequence[str],
        received: dict[str, int] | None = None,
        *,
        bridge: bool = False,
    ) -> int:
        """Catch ``symbols`` up to the exchange's now; ``received``: the newest trade time
        the stream handed out per symbol (see the module docstring). Rows written."""
        holes, self.holes = self.holes, []
        for hole in holes:
            await self.repair(*hole)
        async with self._lock:
            return await asyncio.to_thread(self._catch_up, list(symbols), received or {}, bridge)

    async def repair(self, symbol: str, after_ts: int, before_ts: int) -> int:
        """Fetch ``[after_ts, before_ts]`` of ``symbol``: the stream saw an id jump there.
        A failed repair is kept and retried before the next catch-up. Rows written."""
        log.info(
            "%s %s: trade ids jumped, repairing %d..%d", self.exchange, symbol, after_ts, before_ts
        )
        async with self._lock:
            report = await asyncio.to_thread(self._load, symbol, after_ts, before_ts + 1, None)
        if report is None:
            self.holes.append((symbol, after_ts, before_ts))
            return 0
        self.stats.repaired_rows[self.exchange] += report.rows_written
        return report.rows_written

    async def funding(self, symbol: str) -> int | None:
        """Settled funding rates of the perpetual ``symbol`` since the newest stored (or the
        last ``FUNDING_LOOKBACK_MS``), over REST: what ``stream.funding`` asks for when a
        settlement passes and when the stream (re)connects. Returns the newest stored funding
        time afterwards (None when none is stored or the venue could not be asked)."""
        async with self._lock:
            return await asyncio.to_thread(self._funding, symbol)

    def _funding(self, symbol: str) -> int | None:
        try:
            now = exchange_time_ms(self._rest())
        except Exception as exc:
            self.stats.errors[f"{self.exchange}:rest"] = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("%s: REST time failed, no funding fetched: %s", self.exchange, exc)
            return None
        stored = self.store.latest_ts("funding_rates", exchange=self.exchange, symbol=symbol)
        start = stored + 1 if stored is not None else now - FUNDING_LOOKBACK_MS
        report = self._load(symbol, start, now + 1, now, dataset="funding_rates")
        if report is None:
            return None
        self.stats.funding_rows[self.exchange] += report.rows_written
        return self.store.latest_ts("funding_rates", exchange=self.exchange, symbol=symbol)

    def _catch_up(self, symbols: list[str], received: dict[str, int], bridge: bool) -> int:
        try:
            now = exchange_time_ms(self._rest())
        except Exception as exc:
            self.stats.errors[f"{self.exchange}:rest"] = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("%s: REST time failed, no catch-up: %s", self.exchange, exc)
            return 0
        total = 0
        for symbol in symbols:
            stored = self.store.latest_ts("trades", exchange=self.exchange, symbol=symbol)
            newest = min((t for t in (stored, received.get(symbol)) if t is not None), default=None)
            if bridge and symbol in self.caught_up:
                newest = self.caught_up[symbol] - BRIDGE_OVERLAP_MS
            start = newest if newest is not None else now - self.lookback_ms
            report = self._load(symbol, start, now + 1, now)
            if report is None:
                continue
            self.caught_up[symbol] = now
            self._record_hole(symbol, None if bridge else newest, report.first_ts)
            total += report.rows_written
            self.stats.catch_up_rows[self.exchange] += report.rows_written
        return total

    def _load(
        self, symbol: str, start: int, end: int, now: int | None, *, dataset: str = "trades"
    ) -> LoadReport | None:
        series = SeriesKey(self.exchange, symbol, dataset)
        client = self._rest()
        try:
            if now is None:
                now = exchange_time_ms(client)
            report = load_series(
                client, self.venue, self.store, series, start, end, now_ms=now, refetch=True
            )
        except Exception as exc:
            self.stats.errors[f"{self.exchange}:{symbol}:rest"] = f"{type(exc).__name__}: {exc}"[
                :500
            ]
            log.warning("%s %s: REST catch-up failed: %s", self.exchange, symbol, exc)
            return None
        log.debug(
            "%s %s: REST %d..%d wrote %d (first %s, last %s)",
            self.exchange,
            symbol,
            start,
            end,
            report.rows_written,
            report.first_ts,
            report.last_ts,
        )
        if report.rows_written and report.last_ts is not None:
            day = report.last_ts - report.last_ts % DAY_MS
            key = (dataset, self.exchange, symbol, "", day)
            self.stats.touch(key, report.rows_written, report.last_ts)
        return report

    def _record_hole(self, symbol: str, newest: int | None, first: int | None) -> None:
        """A venue whose REST keeps only its latest trades (Bybit) may no longer have what the
        stream missed: when the oldest trade it returned is newer than the newest stored one,
        the span between is recorded in ``gaps`` (confirmed: no refetch can fill it), never
        silently ignored. With nothing stored before, there is nothing to bridge."""
        if self.venue.trades.paging is not TradesPaging.RECENT_ONLY:
            return
        if newest is None or first is None or first <= newest + 1:
            return
        reason = (
            f"{self.venue.id} REST keeps only its latest trades; the oldest it returned was at "
            f"{first}: trades after {newest} and before it may be missing"
        )
        series = SeriesKey(self.exchange, symbol, "trades")
        GapStore(self.store.engine).record_unrecoverable(
            series, newest + 1, first - 1, now_ms=int(time.time() * 1000), reason=reason
        )
        self.stats.errors[f"{self.exchange}:{symbol}:hole"] = reason[:500]
