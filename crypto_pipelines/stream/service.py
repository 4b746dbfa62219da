"""The stream service: ccxt.pro WebSockets per exchange, feeding handlers, surviving drops.

One ``ExchangeStream`` per exchange watches the trades (and the candles of the configured
timeframes) of its symbols over one ccxt.pro client, and hands each message, as rows of the
datasets' columns, to every handler (the store writer first). It survives what WebSockets do:

- a dropped or failed connection is reconnected with exponential backoff and full jitter;
- a connection silent for ``watchdog_s`` (a stall: open, but nothing arrives) is closed and
  reconnected, like a drop;
- after ``failover_after`` failed attempts in a row the exchange fails over to REST polling
  (the same loader as the historical assets) for ``ws_retry_s``, then tries its WebSocket
  again, so data keeps arriving while a venue's stream is down;
- after every (re)start and reconnect, trades since the newest stored (or received) trade of
  each symbol are caught up over REST, and on a venue whose trade ids count up by one, a jump
  in the ids within a connection is repaired over REST at once (``stream.catchup``), so
  neither a drop, a skipped frame nor a crash of the whole process loses a trade the venue's
  REST history still has. Upserts make the overlap harmless.

A candle is passed on once it is closed: when a newer candle of the same series arrives (the
forming one is never stored, as on the REST path). With ``books`` on, each symbol's order book
is watched too and its top levels passed on every ``book_every_s`` (``stream.books``: a book
found inconsistent is taken afresh without dropping the connection). Plain Python: no Dagster.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crypto_pipelines.domain.symbols import parse_symbol
from crypto_pipelines.exchanges.client import make_stream_client
from crypto_pipelines.exchanges.venues import get_venue
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines.stream.books import BookLoop
from crypto_pipelines.stream.cache import RedisCache
from crypto_pipelines.stream.catchup import RestCatchUp
from crypto_pipelines.stream.events import StreamBatch, StreamStalled, candle_rows, trade_rows
from crypto_pipelines.stream.funding import FundingLoop
from crypto_pipelines.stream.stats import StreamStats
from crypto_pipelines.stream.writer import Handler, StoreWriter

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 2.0
FUNDING_WATCHDOG_S = 180.0


@dataclass(frozen=True)
class StreamSettings:
    """How the stream batches, waits and recovers (defaults suit a live venue)."""

    timeframes: tuple[str, ...] = ()
    trades: bool = True
    flush_ms: int = 250
    flush_rows: int = 5_000
    flush_inline: bool = False
    """Write on the event loop rather than in a worker thread (``StoreWriter``'s ``inline``:
    faster under load, but a database that makes a flush wait stops the reading too)."""
    watchdog_s: float = 30.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    failover_after: int = 5
    poll_s: float = 5.0
    ws_retry_s: float = 60.0
    catch_up: bool = True
    catch_up_lookback_ms: int = 3_600_000
    """With no trade stored yet, how far back a catch-up starts (older history is a backfill)."""
    books: bool = False
    """Order book snapshots (``order_book_snapshots``): off by default, a book is the busiest
    channel of a venue."""
    book_depth: int = 10
    """Levels stored per side (0 = best)."""
    book_every_s: float = 1.0
    """At most one snapshot per symbol this often."""
    funding: bool = False
    """The perpetuals' funding channel (``stream.funding``): the mark price and announced rate
    to the handlers, each settlement's rate fetched into ``funding_rates`` as it passes, and
    missed settlements caught up on every (re)connect. Off by default: one more subscription
    per perpetual."""


def backoff_s(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap, base * 2 ** max(attempt - 1, 0)))


_heap_frozen = False


def freeze_startup_heap() -> None:
    """Once per process: move what exists before the stream starts (modules, classes, the
    imported libraries' tables: most of the heap) out of the cyclic collector's reach. A
    busy stream promotes ccxt's cached trades to the oldest generation by the thousand, so
    full collections come every second or so, and each scanned the whole start-up heap too:
    pauses of 100-200 ms, the tail of the receive-to-commit lag. Frozen objects are still
    freed by reference counting; connections, clients and markets are made later and stay
    collectable."""
    global _heap_frozen
    if not _heap_frozen:
        _heap_frozen = True
        gc.collect()
        gc.freeze()


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


class ExchangeStream:
    """One exchange's connection, its recovery, and its REST catch-up and failover."""

    def __init__(
        self,
        exchange: str,
        symbols: Sequence[str],
        store: MarketStore,
        emit: Callable[[StreamBatch], Awaitable[None]],
        stats: StreamStats,
        settings: StreamSettings,
        replay_url: str | None = None,
    ) -> None:
        self.exchange = exchange
        self.symbols = list(symbols)
        self.store = store
        self.emit = emit
        self.stats = stats
        self.settings = settings
        self.replay_url = replay_url
        self.failures = 0
        self.rest = RestCatchUp(
            exchange,
            store,
            stats,
            lookback_ms=settings.catch_up_lookback_ms,
            replay_url=replay_url,
        )
        self.received: dict[str, int] = {}
        """Per symbol, the newest trade time the stream handed out (across connections)."""
        self._last_id: dict[str, tuple[int, int]] = {}
        """Per symbol, (id, ts) of the newest trade of this connection, on a venue whose ids
        count up by one: the next id tells whether the connection skipped a trade."""
        self._to_bridge: set[str] = set()
        """Symbols whose first message of this connection came: bridged over REST once."""
        self._holes: dict[str, tuple[int, int]] = {}
        """Per symbol, the window of id jumps not repaired yet (merged: one fetch each)."""
        self._rest_task: asyncio.Task[None] | None = None
        self._last_trade = 0.0
        """Monotonic time of the latest trade message of this connection (any symbol)."""
        self.books = BookLoop(
            exchange,
            stats,
            emit,
            self._next,
            self._alive,
            depth=settings.book_depth,
            every_s=settings.book_every_s,
        )
        has_channel = get_venue(exchange).ws_funding is not None
        self.perps = [s for s in self.symbols if has_channel and parse_symbol(s).settle]
        """The perpetuals whose funding is watched (with ``funding`` on)."""
        self.funding = FundingLoop(
            exchange, stats, emit, self._next_funding, self._alive, self.rest.funding
        )

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        while not stop.is_set():
            try:
                if s.catch_up:
                    await self.catch_up()
                    await self.catch_up_funding()
                await self._watch(stop)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # ccxt's NetworkError/ExchangeError, a stall, a bad message
                self.failures += 1
                self.stats.reconnects[self.exchange] += 1
                self.stats.errors[self.exchange] = f"{type(exc).__name__}: {exc}"[:500]
                log.warning("%s stream: %s (failure %d)", self.exchange, exc, self.failures)
            if stop.is_set():
                return
            if self.failures >= s.failover_after:
                self.stats.failovers[self.exchange] += 1
                log.warning(
                    "%s: WebSocket down, polling REST for %.0f s", self.exchange, s.ws_retry_s
                )
                await self.poll_rest(stop, s.ws_retry_s)
                self.failures = s.failover_after - 1  # one more failure: back to REST at once
            else:
                await _sleep_unless(
                    stop, backoff_s(self.failures, s.backoff_base_s, s.backoff_max_s)
                )

    # --- WebSocket -------------------------------------------------------------------------

    async def _watch(self, stop: asyncio.Event) -> None:
        s = self.settings
        client = make_stream_client(
            self.exchange,
            replay_url=self.replay_url,
            signed=s.books and get_venue(self.exchange).ws_book_signed,
        )
        self._last_id.clear()  # the seam between connections is the catch-ups' to bridge
        loops: list[Awaitable[None]] = []
        try:
            self._last_trade = time.monotonic()
            if self.settings.trades:
                # One loop per symbol: ccxt.pro's watch_trades_for_symbols hands out one
                # symbol's trades per call (whichever message came first), so with many busy
                # symbols the same few win every time and the others overflow their caches.
                loops += [self._trades(client, symbol) for symbol in self.symbols]
                loops.append(self._trades_watchdog())
            for timeframe in self.settings.timeframes:
                loops += [self._candles(client, symbol, timeframe) for symbol in self.symbols]
            if s.books:
                loops += [self.books.run(client, symbol) for symbol in self.symbols]
            if s.funding:
                loops += [self.funding.run(client, symbol) for symbol in self.perps]
            tasks = [asyncio.ensure_future(loop) for loop in loops]
            stopper = asyncio.ensure_future(stop.wait())
            try:
                done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            finally:
                log.debug("%s: stopping %d watch loop(s)", self.exchange, len(tasks))
                for task in [*tasks, stopper]:
                    task.cancel()
                await asyncio.wait([*tasks, stopper], timeout=CLOSE_TIMEOUT_S)
                log.debug("%s: watch loops stopped", self.exchange)
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            # A connection whose receive loop died (a garbled frame stops ccxt.pro's reader)
            # can make close() wait on it forever: bounded, and its failure is not ours.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), timeout=CLOSE_TIMEOUT_S)
            log.debug("%s: client closed", self.exchange)
            await self.funding.close()  # the next connection's catch-up fetches what they were
            if self._rest_task is not None:  # bridges and repairs already asked for finish
                with contextlib.suppress(Exception):
                    await self._rest_task
            self._rest_task = None
            self._to_bridge.clear()
            # holes left by a failed round: retried before the next catch-up, like failed repairs
            self.rest.holes.extend((symbol, a, b) for symbol, (a, b) in self._holes.items())
            self._holes.clear()
            log.debug("%s: bridge done", self.exchange)

    async def _next(self, watch: Awaitable[Any]) -> Any:
        try:
            return await asyncio.wait_for(watch, timeout=self.settings.watchdog_s)
        except TimeoutError:
            raise StreamStalled(f"no message for {self.settings.watchdog_s:g} s") from None

    def _alive(self) -> None:
        self.failures = 0

    async def _next_funding(self, watch: Awaitable[Any]) -> Any:
        """A funding channel's next message, with a watchdog of its own: venues announce
        funding far less often than trades arrive (OKX once a minute), and a silent
        connection is the trades' watchdog's to find."""
        timeout = max(self.settings.watchdog_s, FUNDING_WATCHDOG_S)
        try:
            return await asyncio.wait_for(watch, timeout=timeout)
        except TimeoutError:
            raise StreamStalled(f"no funding message for {timeout:g} s") from None

    async def _trades_watchdog(self) -> None:
        """The trades' watchdog is the connection's, not each symbol's (a quiet symbol is no
        stall): ``StreamStalled`` once no symbol of the exchange has had a trade for
        ``watchdog_s``. One timer for all symbols, none per message."""
        watchdog = self.settings.watchdog_s
        while True:
            quiet = time.monotonic() - self._last_trade
            if quiet >= watchdog:
                raise StreamStalled(f"no message for {watchdog:g} s")
            await asyncio.sleep(max(watchdog - quiet, 0.05))

    async def _trades(self, client: Any, symbol: str) -> None:
        bridged = False
        while True:
            trades = await client.watch_trades(symbol)
            received = self._last_trade = time.monotonic()
            self.failures = 0
            if not bridged and self.settings.catch_up:
                # The stream delivers from its subscription on; trades between the catch-up
                # before connecting and this first message are fetched once more over REST.
                bridged = True
                self._to_bridge.add(symbol)
                self._kick_rest()
            if not trades:
                continue
            rows = trade_rows(self.exchange, symbol, trades)
            self._follow(symbol, rows)
            self.stats.message(self.exchange, "trades", len(rows))
            await self.emit(StreamBatch("trades", self.exchange, symbol, rows, received))

    def _kick_rest(self) -> None:
        if self._rest_task is None:
            self._rest_task = asyncio.create_task(self._rest_work(), name="stream-rest")

    async def _rest_work(self) -> None:
        """Bridges and repairs, one REST fetch at a time, each asked-for window once: what
        arrives while one runs is merged into the next round, so a burst of id jumps (or a
        venue whose ids are not what its spec says) cannot queue a fetch per trade."""
        try:
            while self._to_bridge or self._holes:
                if self._to_bridge:
                    symbols = sorted(self._to_bridge)
                    self._to_bridge.clear()
                    await self.catch_up(symbols, bridge=True)
                holes, self._holes = self._holes, {}
                for symbol, (after, before) in holes.items():
                    await self.rest.repair(symbol, after, before)
        finally:
            self._rest_task = None

    def _follow(self, symbol: str, rows: list[dict[str, Any]]) -> None:
        """Note the newest trade handed out; on a venue with sequential ids, repair at once
        over REST any ids the connection skipped (a jump from one trade to the next)."""
        sequential = self.rest.sequential_ids
        newest = self.received.get(symbol)
        pairs: list[tuple[int, int]] = []
        for row in rows:  # one pass: this runs for every trade
            ts = row["ts"]
            if type(ts) is not int:
                if not isinstance(ts, float) or not math.isfinite(ts):
                    continue
                ts = int(ts)
            if newest is None or ts > newest:
                newest = ts
            if sequential and row["trade_id"].isdigit():
                pairs.append((int(row["trade_id"]), ts))
        if newest is not None:
            self.received[symbol] = newest
        if not pairs:
            return
        pairs.sort()
        last = self._last_id.get(symbol)
        for trade_id, ts in pairs:
            if last is not None and trade_id > last[0] + 1:
                self.stats.id_jumps[self.exchange] += 1
                hole = self._holes.get(symbol)
                self._holes[symbol] = (
                    (last[1], ts) if hole is None else (min(hole[0], last[1]), max(hole[1], ts))
                )
                self._kick_rest()
            if last is None or trade_id > last[0]:
                last = (trade_id, ts)
        if last is not None:
            self._last_id[symbol] = last

    async def _candles(self, client: Any, symbol: str, timeframe: str) -> None:
        forming: dict[int, list[Any]] = {}
        emitted = -1
        while True:
            candles = await self._next(client.watch_ohlcv(symbol, timeframe))
            received = time.monotonic()
            self.failures = 0
            self.stats.message(self.exchange, f"ohlcv_{timeframe}", len(candles))
            for candle in candles:
                forming[int(candle[0])] = list(candle)
            newest = max(forming)
            await self.emit(
                StreamBatch(
                    "forming",
                    self.exchange,
                    symbol,
                    candle_rows(self.exchange, symbol, timeframe, [forming[newest]]),
                    received,
                    timeframe,
                )
            )
            closed = [forming.pop(ts) for ts in sorted(forming) if ts < newest]
            closed = [c for c in closed if int(c[0]) > emitted]
            if closed:
                emitted = int(closed[-1][0])
                rows = candle_rows(self.exchange, symbol, timeframe, closed)
                await self.emit(
                    StreamBatch("candles", self.exchange, symbol, rows, received, timeframe)
                )

    # --- REST: catch-up and failover -------------------------------------------------------

    async def catch_up(self, symbols: Sequence[str] | None = None, *, bridge: bool = False) -> int:
        """Trades the stream may have missed, over REST (see ``stream.catchup``)."""
        if not self.settings.trades:
            return 0
        return await self.rest.catch_up(symbols or self.symbols, self.received, bridge=bridge)

    async def catch_up_funding(self) -> int:
        """Settlements of the watched perpetuals missed while not connected, over REST."""
        if not self.settings.funding:
            return 0
        before = self.stats.funding_rows[self.exchange]
        for symbol in self.perps:
            await self.rest.funding(symbol)
        return self.stats.funding_rows[self.exchange] - before

    async def poll_rest(self, stop: asyncio.Event, duration_s: float) -> None:
        """REST polling while the WebSocket is down: a catch-up every ``poll_s``."""
        until = time.monotonic() + duration_s
        while not stop.is_set() and time.monotonic() < until:
            written = await self.catch_up()
            self.stats.polled_rows[self.exchange] += written
            await _sleep_unless(stop, min(self.settings.poll_s, max(until - time.monotonic(), 0)))


class StreamService:
    """Every configured exchange's stream, the store writer and any extra handlers."""

    def __init__(
        self,
        symbols: Mapping[str, Sequence[str]],
        store: MarketStore,
        *,
        settings: StreamSettings | None = None,
        replay_url: str | None = None,
        handlers: Sequence[Handler] = (),
        redis_url: str | None = None,
    ) -> None:
        self.settings = settings or StreamSettings()
        self.stats = StreamStats()
        self.writer = StoreWriter(
            store,
            self.stats,
            flush_ms=self.settings.flush_ms,
            flush_rows=self.settings.flush_rows,
            inline=self.settings.flush_inline,
        )
        self.handlers: list[Handler] = [self.writer, *handlers]
        if redis_url:
            self.handlers.append(RedisCache(redis_url))
        self.streams = [
            ExchangeStream(
                exchange, list(names), store, self._emit, self.stats, self.settings, replay_url
            )
            for exchange, names in symbols.items()
        ]

    async def _emit(self, batch: StreamBatch) -> None:
        for handler in self.handlers:
            await handler.handle(batch)

    async def run(self, stop: asyncio.Event) -> StreamStats:
        """Run until ``stop`` is set (or the task is cancelled); then flush every buffer and
        close every handler and connection."""
        freeze_startup_heap()
        try:
            await asyncio.gather(*(s.run(stop) for s in self.streams))
        finally:
            for handler in self.handlers:
                try:
                    await handler.close()
                except Exception as exc:  # one handler failing must not keep the rest open
                    log.error("closing %s failed: %s", type(handler).__name__, exc)
        return self.stats

    async def run_for(self, seconds: float) -> StreamStats:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        return await self.run(stop)
