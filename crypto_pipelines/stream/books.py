"""Order book snapshots from the stream, taken only from books known to be consistent.

One loop per symbol keeps ccxt.pro's local copy of the venue's book (``watch_order_book``:
a snapshot, then the venue's changes) and, every ``every_s`` seconds, hands the top ``depth``
levels of each side to the handlers as one ``books`` batch (``order_book_snapshots`` rows,
all at the book's own time). Why this way:

- **Integrity is the venue's sequence, checked by ccxt.pro.** Binance (``U``/``u``, and ``pu``
  on futures) and OKX (``seqId``/``prevSeqId``, plus the CRC32 checksum of the top 25 levels,
  which ccxt.pro 4.5.90 no longer verifies and ``exchanges.book_checks`` verifies again) make
  ccxt.pro drop its book and raise ``InvalidNonce`` (``ChecksumError``) at the first update
  that does not follow. Such an error is one symbol's book, not the connection: it is
  counted (``stats.book_resyncs``) and the symbol watched again, which makes ccxt.pro
  subscribe again and take a fresh snapshot (Binance: a REST snapshot; OKX: unsubscribe and
  subscribe, the venue's snapshot). Trades and the other books go on meanwhile.
- **Nothing is stored from a book that is not ccxt.pro's current one.** A watch resolves when
  an update was applied; before this loop runs, more frames may have been handled, one of
  them a gap that made ccxt.pro drop the book (OKX applies an update before checking its
  sequence). The book is copied only while it is still the symbol's book in
  ``client.orderbooks``, with nothing awaited in between, so the rows are exactly the book
  at its timestamp. A crossed book (best bid >= best ask) cannot be a venue's: it is not
  stored, counted, and taken afresh where ccxt.pro can unsubscribe.
- **A book silent for the watchdog is resubscribed before the connection is blamed.** A
  lost OKX snapshot leaves ccxt.pro without a book, ignoring the updates that follow:
  unsubscribing and subscribing again brings a new one. The unsubscription is a round trip, so a stalled connection does not
  answer it within the watchdog, and the stream reconnects as for any stall (at once where
  ccxt.pro cannot unsubscribe a book: Coinbase Exchange).
- **The snapshot's ``ts`` is the book's own time** (the venue's time of the last update
  applied), so a snapshot is exactly the venue's book at ``ts``. A book with no time yet (the
  first snapshot on Binance spot and Coinbase Exchange, which carry none) waits for its
  first update rather than taking the receive time: a host's clock is not the venue's (the
  replay exchange's runs at its own speed), and a wrong ``ts`` would pair a book with a time
  it never had. Snapshots are at most one per ``every_s`` of wall time and never two with
  the same ``ts`` (an upsert of a shallower book would leave stale deeper levels).
- **The ``limit`` each venue gets decides its channel and how deep ccxt.pro's copy is**
  (``watch_limit``): a copy cut to ``depth`` would lose the levels below, and a top level
  removed would leave the stored top ``depth`` short.

Known limits (ccxt.pro 4.5.90): Bybit's ``u``/``seq`` and Coinbase Exchange's ``level2``
(which has no sequence) are not checked by ccxt.pro, so a lost update there goes unseen
unless it crosses the book (and a lost Bybit snapshot makes ccxt.pro build a book from the
updates alone); Coinbase Exchange's ``level2`` needs a signed subscription
(``VenueSpec.ws_book_signed``), so its books need the venue's keys (placeholders for the replay).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, NoReturn

import ccxt

from crypto_pipelines.exchanges.venues import get_venue
from crypto_pipelines.stream.events import StreamBatch, StreamStalled, book_rows
from crypto_pipelines.stream.stats import StreamStats

log = logging.getLogger(__name__)

RESYNC_PAUSE_S: Final = 0.1
RESYNC_PAUSE_MAX_S: Final = 10.0


def watch_limit(exchange: str, depth: int) -> int | None:
    """The ``limit`` for ``watch_order_book`` on ``exchange`` when ``depth`` levels a side
    are stored. Bybit: the smallest book channel (``orderbook.<n>``) that holds them, its
    snapshot and changes cut to that depth by the venue. Everywhere else none: Binance then
    takes a 1,000-level REST snapshot under its diff stream, OKX the 400-level ``books``
    channel (the one with sequence ids and checksums; 1-5 would pick ``books5``/``bbo-tbt``,
    without them), Coinbase Exchange its whole ``level2`` book (a limit only trims ccxt's
    copy, losing the levels below it)."""
    depths = get_venue(exchange).ws_book_depths
    return next((n for n in depths if n >= depth), depths[-1]) if depths else None


def _crossed(book: Any) -> bool:
    bids, asks = book["bids"], book["asks"]
    return bool(bids and asks and bids[0][0] >= asks[0][0])


class BookInconsistent(Exception):
    """A book known wrong that only a new connection can replace."""


@dataclass
class _State:
    """One symbol's loop: the last snapshot handed out (wall time, book time) and the resyncs
    since."""

    last_emit: float = -float("inf")
    last_ts: int | None = None
    resyncs: int = 0


class BookLoop:
    """One exchange's book loops (see the module docstring). ``next_message`` is the stream's
    watchdog (``StreamStalled`` after ``watchdog_s`` of silence); ``alive`` tells the stream a
    message arrived (its failure count restarts)."""

    def __init__(
        self,
        exchange: str,
        stats: StreamStats,
        emit: Callable[[StreamBatch], Awaitable[None]],
        next_message: Callable[[Awaitable[Any]], Awaitable[Any]],
        alive: Callable[[], None],
        *,
        depth: int,
        every_s: float,
    ) -> None:
        if depth < 1:
            raise ValueError(f"book_depth must be at least 1, got {depth}")
        self.exchange = exchange
        self.stats = stats
        self.emit = emit
        self.next_message = next_message
        self.alive = alive
        self.depth = depth
        self.every_s = every_s
        self.limit = watch_limit(exchange, depth)

    async def run(self, client: Any, symbol: str) -> None:
        """Watch ``symbol``'s book until cancelled; errors other than a book's own
        inconsistency (a dropped connection, a stalled one) end the loop, and the connection."""
        state = _State()
        while True:
            book = await self._next_book(client, symbol, state)
            if book is None:
                continue
            received = time.monotonic()
            if received - state.last_emit < self.every_s:
                continue
            # From here to the copy nothing is awaited: the rows are this book, as it is now.
            if client.orderbooks.get(symbol) is not book:
                continue  # dropped (found inconsistent) after it resolved: nothing stored
            ts = book.get("timestamp")
            if not isinstance(ts, int) or ts == state.last_ts:
                continue  # no venue time yet, or nothing changed since the last snapshot
            if _crossed(book):
                await self._resync(client, symbol, state, "crossed book", unwatch=True)
                continue
            rows = book_rows(self.exchange, symbol, ts, book["bids"], book["asks"], self.depth)
            if not rows:
                continue
            state.last_emit, state.last_ts, state.resyncs = received, ts, 0
            self.stats.message(self.exchange, "books", len(rows))
            await self.emit(StreamBatch("books", self.exchange, symbol, rows, received))

    async def _next_book(self, client: Any, symbol: str, state: _State) -> Any:
        """The book after the venue's next update, or None after a resync."""
        try:
            book = await self.next_message(client.watch_order_book(symbol, self.limit))
        except ccxt.InvalidNonce as exc:  # ChecksumError too: a gap, or a wrong book
            await self._resync(client, symbol, state, exc, unwatch=False)
            return None
        except StreamStalled:
            if not client.has.get("unWatchOrderBook"):
                raise  # nothing to tell a silent book from a silent connection
            # A lost snapshot, say: ccxt.pro ignores the updates that follow without one. The
            # unsubscription is a round trip: unanswered within the watchdog, it raises.
            await self._resync(client, symbol, state, "silent for the watchdog", unwatch=True)
            return None
        except ccxt.AuthenticationError as exc:  # a signed channel without keys
            await self._park(symbol, exc)
        self.alive()
        return book

    async def _resync(
        self, client: Any, symbol: str, state: _State, why: object, *, unwatch: bool
    ) -> None:
        """Count the inconsistency and make sure the next watch starts from a fresh snapshot.
        ccxt.pro already dropped its book on a sequence or checksum error (and subscribes
        again on the next watch); a crossed or silent book it knows nothing wrong with is
        unsubscribed first, where the venue's ccxt.pro client can, else the connection is
        taken afresh (``BookInconsistent``: Coinbase Exchange). Resyncs in a row with no
        snapshot stored between wait longer each time (0, 0.1, 0.2 ... 10 s): a venue limits
        subscription requests (Binance closes a connection sending 5 a second)."""
        self.stats.book_resyncs[self.exchange] += 1
        state.resyncs += 1
        log.warning("%s %s: order book resynchronised (%s)", self.exchange, symbol, why)
        if unwatch and not client.has.get("unWatchOrderBook"):
            raise BookInconsistent(f"{symbol}: {why}, and ccxt.pro cannot unsubscribe its book")
        if unwatch:
            params = {} if self.limit is None else {"limit": self.limit}
            await self.next_message(client.un_watch_order_book(symbol, params))
        if state.resyncs > 1:
            await asyncio.sleep(min(RESYNC_PAUSE_S * 2 ** (state.resyncs - 2), RESYNC_PAUSE_MAX_S))

    async def _park(self, symbol: str, exc: Exception) -> NoReturn:
        """This symbol's book cannot be watched (no credentials for a signed channel): say so
        once and stop watching it, without ending the connection (its trades go on)."""
        message = f"order books of {symbol} not watched: {type(exc).__name__}: {exc}"
        self.stats.errors[f"{self.exchange}:books"] = message[:500]
        log.error("%s: %s", self.exchange, message)
        await asyncio.Event().wait()  # a loop that returns would end the whole connection
        raise AssertionError("unreachable")
