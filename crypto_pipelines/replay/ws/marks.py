"""Mark price and funding of a perpetual along the replay clock, derived from the tape.

A tape has no mark, index or predicted-funding series, only the settled funding rates
(``funding.csv``), candles and trades. The venues' mark-price / funding channels are therefore
derived, the same way on every venue and deterministically (a replay time gives one answer):

- the funding rate announced at replay time ``t`` is the tape's settled rate of the first
  funding row after ``t`` (``ts > t``), and the next funding time is that row's ``ts``. A client
  that keeps the last rate announced before a funding time ``T`` thus holds exactly the tape's
  row at ``T``, what the venue's funding history later reports. At ``t == T`` the announcement
  has moved on to the following row.
- after the tape's last funding row the next funding time is the next point of the venue's
  funding grid (8 h on Binance and OKX, the tape's own period on Bybit, as their REST tickers
  say) and the announced rate is the last settled one: the tape cannot tell the future rate.
- the mark price, index price and (Binance) estimated settle price are one number: the close
  of the newest 1m candle closed at or before ``t`` (``ts + 1m <= t``), else (a tape without
  1m candles, or before its first closed one) the last trade at or before ``t``. With neither,
  nothing is sent: a venue does not publish a mark it does not have. Mark equals index, so
  OKX's premium is ``0``.

Only perpetuals whose tape has funding rows get these channels; a venue refuses them for any
other instrument (spot among them) as it refuses an unknown channel.

Frames fall on a grid of replay time (each venue's push period), the grid point being the
event time. A clock that jumps over more than ``MAX_STATE_FRAMES`` grid points sends only the
newest of them, plus the last point before each funding time crossed so that no announced rate
is skipped: these channels carry state, which a newer frame supersedes (unlike trades).
"""

from __future__ import annotations

from dataclasses import dataclass

from crypto_pipelines.replay.tape import FundingSeries, SymbolTape

MINUTE_MS = 60_000
#: Binance's and OKX's funding period, the grid after a tape's last funding row.
EIGHT_HOURS_MS = 8 * 3_600_000
#: Grid points one poll sends at most (older ones are superseded; see the module docstring).
MAX_STATE_FRAMES = 120


def has_funding(series: SymbolTape) -> bool:
    """Whether the tape holds settled funding rates for the symbol (a perpetual's)."""
    return series.funding is not None and len(series.funding) > 0


@dataclass(frozen=True, slots=True)
class MarkState:
    """What the mark / funding channels say at replay time ``ts`` (decimal strings as the tape
    writes them): ``rate`` is announced for ``funding_time``; ``settled`` is the newest rate
    settled at or before ``ts`` (``""`` when none)."""

    ts: int
    mark: str
    rate: str
    funding_time: int
    settled: str


class MarkSource:
    """The derivation of the module docstring for one symbol; ``grid_ms`` is the venue's
    funding period used after the tape's last funding row."""

    def __init__(self, series: SymbolTape, grid_ms: int) -> None:
        if series.funding is None or not len(series.funding):
            raise ValueError(f"{series.symbol}: no funding rows")
        self.series = series
        self.funding: FundingSeries = series.funding
        self.grid_ms = grid_ms

    def next_funding(self, t: int) -> tuple[int, str]:
        """The next funding time after ``t`` and the rate announced for it."""
        f = self.funding
        i = f.file.search(t, "right")
        if i < len(f):
            row = f.rows(i, i + 1)[0]
            return row.ts, row.rate
        last = f.rows(len(f) - 1, len(f))[0]
        return (t // self.grid_ms + 1) * self.grid_ms, last.rate

    def settled(self, t: int) -> str:
        i = self.funding.file.search(t, "right")
        return self.funding.rows(i - 1, i)[0].rate if i > 0 else ""

    def funding_times(self, after: int, upto: int) -> list[int]:
        """Funding times of the tape with ``after < ts <= upto`` (at most a few thousand)."""
        f = self.funding.file
        i0, i1 = f.search(after, "right"), f.search(upto, "right")
        return [int(ts) for ts in f.ts[i0 : min(i1, i0 + 5_000)]]

    def mark(self, t: int) -> str | None:
        candles = self.series.ohlcv.get("1m")
        if candles is not None:
            closed = candles.between(None, t - MINUTE_MS, 1, newest=True)
            if closed:
                return closed[0].close
        if self.series.trades is not None:
            last = self.series.trades.between(None, t, 1, newest=True)
            if last:
                return last[0].price
        return None

    def at(self, t: int) -> MarkState | None:
        mark = self.mark(t)
        if mark is None:
            return None
        funding_time, rate = self.next_funding(t)
        return MarkState(t, mark, rate, funding_time, self.settled(t))


class GridFeed:
    """Replay times on a grid of ``period_ms`` as the clock passes them (``start < t <= now``),
    optionally the start itself first (venues that answer a subscription with the current
    state). ``sources`` name the funding times whose last grid point before survives a jump
    (see the module docstring)."""

    def __init__(
        self,
        period_ms: int,
        start_ms: int,
        *,
        first: bool,
        sources: tuple[MarkSource, ...] = (),
    ) -> None:
        self.period = period_ms
        self._cursor = start_ms
        self._first = first
        self._sources = sources

    def poll(self, now_ms: int) -> list[int]:
        out: list[int] = []
        if self._first:
            self._first = False
            out.append(self._cursor)
        p = self.period
        lo = (self._cursor // p + 1) * p  # first grid point after the cursor
        if lo > now_ms:
            return out
        hi = now_ms - now_ms % p  # last grid point at or before now
        newest = max(lo, hi - (MAX_STATE_FRAMES - 1) * p)
        kept: set[int] = set(range(newest, hi + 1, p))
        if newest > lo:  # a jump: keep the last point before each funding time crossed
            for source in self._sources:
                for ts in source.funding_times(lo, newest):
                    before = (ts - 1) - (ts - 1) % p
                    if before >= lo:
                        kept.add(before)
        self._cursor = now_ms
        out.extend(sorted(kept))
        return out
