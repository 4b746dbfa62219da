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
import logging
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
from crypto_pipelines.stream.stats import StreamStats
from crypto_pipelines.stream.writer import Handler, StoreWriter

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class StreamSettings:
    """How the stream batches, waits and recovers (defaults suit a live venue)."""

    timeframes: tuple[str, ...] = ()
    trades: bool = True
    flush_ms: int = 250
    flush_rows: int = 5_000
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


def backoff_s(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap, base * 2 ** max(attempt - 1, 0)))


def market_groups(symbols: Sequence[str]) -> list[list[str]]:
    """Symbols grouped by market type (spot, linear and inverse swaps): venues serve them on
    different connections, and ccxt.pro watches many symbols at once only within a type."""
    groups: dict[str, list[str]] = {}
    for symbol in symbols:
        parsed = parse_symbol(symbol)
        kind = (
            "spot"
            if parsed.settle is None
            else ("linear" if parsed.settle == parsed.quote else "inverse")
        )
        groups.setdefault(kind, []).append(symbol)
    return list(groups.values())


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
        self._bridge: asyncio.Task[int] | None = None
        self._repairs: set[asyncio.Task[int]] = set()
        self.books = BookLoop(
            exchange,
            stats,
            emit,
            self._next,
            self._alive,
            depth=settings.book_depth,
            every_s=settings.book_every_s,
        )

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        while not stop.is_set():
            try:
                if s.catch_up:
                    await self.catch_up()
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
            if self.settings.trades:
                for group in market_groups(self.symbols):
                    if client.has.get("watchTradesForSymbols") and len(group) > 1:
                        loops.append(self._trades(client, group))
                    else:
                        loops += [self._trades(client, [symbol]) for symbol in group]
            for timeframe in self.settings.timeframes:
                loops += [self._candles(client, symbol, timeframe) for symbol in self.symbols]
            if s.books:
                loops += [self.books.run(client, symbol) for symbol in self.symbols]
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
            in_flight = [t for t in (self._bridge, *self._repairs) if t is not None]
            for fetch in in_flight:  # a catch-up in flight finishes its transaction
                with contextlib.suppress(Exception):
                    await fetch
            self._bridge = None
            self._repairs.clear()
            log.debug("%s: bridge done", self.exchange)

    async def _next(self, watch: Awaitable[Any]) -> Any:
        try:
            return await asyncio.wait_for(watch, timeout=self.settings.watchdog_s)
        except TimeoutError:
            raise StreamStalled(f"no message for {self.settings.watchdog_s:g} s") from None

    def _alive(self) -> None:
        self.failures = 0

    async def _trades(self, client: Any, symbols: list[str]) -> None:
        many = len(symbols) > 1
        bridged = False
        while True:
            if many:
                trades = await self._next(client.watch_trades_for_symbols(symbols))
            else:
                trades = await self._next(client.watch_trades(symbols[0]))
            received = time.monotonic()
            self.failures = 0
            if not bridged and self.settings.catch_up:
                # The stream delivers from its subscription on; trades between the catch-up
                # before connecting and this first message are fetched once more over REST.
                bridged = True
                self._bridge = asyncio.create_task(self.catch_up(symbols, bridge=True))
            by_symbol: dict[str, list[dict[str, Any]]] = {}
            for trade in trades:
                by_symbol.setdefault(str(trade.get("symbol") or symbols[0]), []).append(trade)
            for symbol, items in by_symbol.items():
                rows = trade_rows(self.exchange, symbol, items)
                self._follow(symbol, rows)
                self.stats.message(self.exchange, "trades", len(rows))
                await self.emit(StreamBatch("trades", self.exchange, symbol, rows, received))

    def _follow(self, symbol: str, rows: list[dict[str, Any]]) -> None:
        """Note the newest trade handed out; on a venue with sequential ids, repair at once
        over REST any ids the connection skipped (a jump from one trade to the next)."""
        times = [int(r["ts"]) for r in rows if isinstance(r["ts"], int | float)]
        if times:
            self.received[symbol] = max(self.received.get(symbol, times[0]), max(times))
        if not self.rest.sequential_ids:
            return
        pairs = sorted(
            (int(r["trade_id"]), int(r["ts"]))
            for r in rows
            if r["trade_id"].isdigit() and isinstance(r["ts"], int | float)
        )
        last = self._last_id.get(symbol)
        for trade_id, ts in pairs:
            if last is not None and trade_id > last[0] + 1:
                self.stats.id_jumps[self.exchange] += 1
                task = asyncio.create_task(self.rest.repair(symbol, last[1], ts))
                self._repairs.add(task)
                task.add_done_callback(self._repairs.discard)
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
            store, self.stats, flush_ms=self.settings.flush_ms, flush_rows=self.settings.flush_rows
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
