"""Tape rows along the replay clock: what a subscription has to send as time passes.

A feed starts at the replay time its subscription was made and, each time it is polled with a
later "now", hands out the rows whose time has come since the last poll: trades with
``start < ts <= now``, candles whose period ended in that span (plus the forming candle rebuilt
from the tape's trades as they arrive), and book snapshots as deltas against the previous one.
A frozen clock yields nothing new; a clock moved backwards yields nothing until it passes the
feed's cursor again. Feeds know nothing of wire formats: each venue renders their output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from crypto_pipelines.domain.timeframes import DAY_MS
from crypto_pipelines.replay.tape import BookSeries, BookSnapshot, CandleSeries, Trade, TradeSeries
from crypto_pipelines.replay.venues.common import plain_decimal

#: Rows one poll hands out at most, so that a clock jumping far ahead turns into a steady
#: stream over several ticks instead of one burst that holds the event loop.
MAX_ROWS_PER_POLL = 2_000
#: Book snapshots one poll turns into deltas at most (each is parsed from JSON).
MAX_BOOKS_PER_POLL = 200
#: Trades read at most to seed a forming candle that began before its subscription.
MAX_SEED_TRADES = 200_000


def _count_upto(series: TradeSeries | CandleSeries, ts: int) -> int:
    """Number of rows with ``ts <= ts``."""
    return series.file.search(ts, "right")


class TradeFeed:
    """The tape's trades in tape order, each once, as the clock passes their time."""

    def __init__(self, series: TradeSeries | None, start_ms: int) -> None:
        self.series = series
        self._next = _count_upto(series, start_ms) if series is not None else 0

    def poll(self, now_ms: int) -> list[Trade]:
        if self.series is None:
            return []
        end = min(_count_upto(self.series, now_ms), self._next + MAX_ROWS_PER_POLL)
        if end <= self._next:
            return []
        rows = self.series.rows(self._next, end)
        self._next = end
        return rows


@dataclass(frozen=True, slots=True)
class Bar:
    """A candle as a stream sends it: the tape's decimal strings, whether its period is over,
    how many trades made it (None: unknown, the tape has no trades), and the replay time the
    message describes (the last trade for a forming bar, the period's end for a closed one)."""

    ts: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    closed: bool
    trades: int | None
    event_ms: int


class _Forming:
    """Running aggregate of the trades of one candle period."""

    def __init__(self, ts: int, trades: list[Trade]) -> None:
        self.ts = ts
        first = trades[0]
        self.open = self.high = self.low = first.price
        self._high = self._low = Decimal(first.price)
        self.close = first.price
        self.volume = Decimal(0)
        self.count = 0
        self.add(trades)

    def add(self, trades: list[Trade]) -> None:
        for t in trades:
            price = Decimal(t.price)
            if price > self._high:
                self.high, self._high = t.price, price
            if price < self._low:
                self.low, self._low = t.price, price
            self.close = t.price
            self.volume += Decimal(t.amount)
            self.count += 1

    def bar(self, event_ms: int) -> Bar:
        volume = plain_decimal(self.volume)
        return Bar(
            self.ts, self.open, self.high, self.low, self.close, volume, False, self.count, event_ms
        )


class CandleFeed:
    """Closed candles of one timeframe as their periods end (the tape's rows: a candle the
    tape lacks is never sent), and, when ``forming`` and the tape has trades, the candle still
    forming, rebuilt from the trades each time new ones arrive."""

    def __init__(
        self,
        candles: CandleSeries | None,
        trades: TradeSeries | None,
        timeframe_ms: int,
        start_ms: int,
        *,
        weekly: bool = False,
        forming: bool = True,
    ) -> None:
        self.candles = candles
        self.trades = trades
        self.tf = timeframe_ms
        self._offset = 4 * DAY_MS if weekly else 0  # weeks open on Mondays
        # The first candle whose period ends after the start: ts + tf > start.
        self._next = candles.file.search(start_ms - timeframe_ms + 1) if candles is not None else 0
        self._trade_feed = TradeFeed(trades, start_ms) if trades is not None and forming else None
        self._forming: _Forming | None = None

    def period(self, ts: int) -> int:
        return ts - (ts - self._offset) % self.tf

    def poll(self, now_ms: int) -> list[Bar]:
        out: list[Bar] = []
        if self.candles is not None:
            end = min(_count_upto(self.candles, now_ms - self.tf), self._next + MAX_ROWS_PER_POLL)
            if end > self._next:
                for c in self.candles.rows(self._next, end):
                    out.append(
                        Bar(*c, closed=True, trades=self._count(c.ts), event_ms=c.ts + self.tf)
                    )
                self._next = end
        if self._trade_feed is not None:
            new = self._trade_feed.poll(now_ms)
            if new:
                start = self.period(new[-1].ts)
                recent = [t for t in new if t.ts >= start]
                if start + self.tf > now_ms:  # still forming (the feed may lag a jumped clock)
                    if self._forming is None or self._forming.ts != start:
                        seed = self.trades.between(start, new[-1].ts, MAX_SEED_TRADES)  # type: ignore[union-attr]
                        self._forming = _Forming(start, seed or recent)
                    else:
                        self._forming.add(recent)
                    out.append(self._forming.bar(new[-1].ts))
        return out

    def _count(self, ts: int) -> int | None:
        if self.trades is None:
            return None
        return self.trades.file.search(ts + self.tf) - self.trades.file.search(ts)


Level = tuple[str, str]


@dataclass(frozen=True, slots=True)
class BookUpdate:
    """A full book (``snapshot``) or the changes since the previous update: levels whose
    amount changed or that appeared, and removed levels with amount ``"0"``. ``update_id`` and
    ``prev_id`` number the tape snapshots (see ``venues.common.book_update_id``), which is what
    a venue's sequence fields carry; ``book`` is the full book after the update, cut to the
    subscription's depth (venues that checksum it need it)."""

    ts: int
    snapshot: bool
    bids: list[Level]
    asks: list[Level]
    update_id: int
    prev_id: int
    book: BookSnapshot


def _diff(old: list[Level], new: list[Level]) -> list[Level]:
    """Levels of ``new`` that are not in ``old`` with the same amount, then the levels of
    ``old`` gone from ``new`` (amount "0"). Prices and amounts compare as numbers: a tape may
    write one price as ``99`` in a snapshot and ``99.0`` in the next, and a client keys its
    book by number, so a textual difference must not read as a removal."""
    before = {Decimal(p): Decimal(a) for p, a in old}
    after = {Decimal(p) for p, _ in new}
    changes = [(p, a) for p, a in new if before.get(Decimal(p)) != Decimal(a)]
    changes.extend((p, "0") for p, _ in old if Decimal(p) not in after)
    return changes


class BookFeed:
    """The tape's book snapshots as a venue streams a book: optionally the book at the start,
    then one delta per later snapshot (``depth`` levels a side; None keeps them all), each
    numbered from the snapshots' times."""

    def __init__(
        self,
        series: BookSeries | None,
        start_ms: int,
        *,
        depth: int | None,
        snapshot_first: bool,
        update_id: Callable[[int], int],
    ) -> None:
        self.series = series
        self.depth = depth
        self._id = update_id
        self._pending_snapshot = snapshot_first
        self._start = start_ms
        self._next = (
            int(series.ts.searchsorted(start_ms, side="right")) if series is not None else 0
        )
        self._last: BookSnapshot | None = None
        if series is not None and self._next > 0:
            self._last = self._cut(series.snapshot(self._next - 1))

    def _cut(self, snap: BookSnapshot) -> BookSnapshot:
        if self.depth is None:
            return snap
        return BookSnapshot(snap.ts, snap.bids[: self.depth], snap.asks[: self.depth])

    def poll(self, now_ms: int) -> list[BookUpdate]:
        out: list[BookUpdate] = []
        if self._pending_snapshot:
            self._pending_snapshot = False
            last = self._last or BookSnapshot(self._start, [], [])
            uid = self._id(last.ts) if self._last is not None else 0
            out.append(BookUpdate(last.ts, True, last.bids, last.asks, uid, -1, last))
        if self.series is None:
            return out
        end = int(self.series.ts.searchsorted(now_ms, side="right"))
        end = min(end, self._next + MAX_BOOKS_PER_POLL)
        for i in range(self._next, end):
            snap = self._cut(self.series.snapshot(i))
            prev = self._last or BookSnapshot(snap.ts, [], [])
            prev_id = self._id(prev.ts) if self._last is not None else 0
            out.append(
                BookUpdate(
                    snap.ts,
                    False,
                    _diff(prev.bids, snap.bids),
                    _diff(prev.asks, snap.asks),
                    self._id(snap.ts),
                    prev_id,
                    snap,
                )
            )
            self._last = snap
        self._next = max(self._next, end)
        return out
