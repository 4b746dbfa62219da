"""Bybit v5 ``tickers.<symbol>`` for linear and inverse perpetuals: a snapshot on subscribing,
then deltas holding only the fields that changed (plus ``symbol``), as Bybit documents.

The ticker is the REST ticker of ``venues.bybit_markets.contract_ticker`` (24-hour statistics
from the candles, best bid and ask from the book) evaluated along the replay clock, with the
parts a stream must not take from the future replaced: ``lastPrice`` is the last trade at or
before the replay time (the candle's close without trades), and ``markPrice``, ``indexPrice``,
``fundingRate`` and ``nextFundingTime`` are derived as ``ws.marks`` documents (the funding grid
after the tape's last row is the tape's own funding period, as the REST instrument says).
Bybit pushes contract tickers every 100 ms when something changed; the replay evaluates the
ticker once a second of replay time (``ts`` and ``cs`` are that time), which keeps a fast clock
cheap and is finer than anything the tape derives the mark and funding from. Split from
``bybit.py`` to keep each module readable.
"""

from __future__ import annotations

from typing import Any

from crypto_pipelines.replay.tape import SymbolTape
from crypto_pipelines.replay.venues.bybit_markets import contract_ticker, funding_minutes
from crypto_pipelines.replay.venues.common import DayStats, day_stats
from crypto_pipelines.replay.ws.base import Subscription, dumps
from crypto_pipelines.replay.ws.marks import MINUTE_MS, GridFeed, MarkSource

#: How often the ticker is evaluated (ms of replay time); see the module docstring.
TICKER_PERIOD_MS = 1_000


class _Ticker:
    """The ticker of one contract at a replay time (None before the tape can tell one)."""

    def __init__(self, market_id: str, category: str, series: SymbolTape) -> None:
        self.market_id = market_id
        self.category = category
        self.series = series
        self.minutes = funding_minutes(series)
        self.source = MarkSource(series, self.minutes * MINUTE_MS)
        self._stats: tuple[int, DayStats | None] | None = None

    def _day_stats(self, t: int) -> DayStats | None:
        # The 24-hour window moves with the candles, once a minute: computed once per minute.
        minute = t // MINUTE_MS
        if self._stats is None or self._stats[0] != minute:
            self._stats = (minute, day_stats(self.series, t))
        return self._stats[1]

    def at(self, t: int) -> dict[str, Any] | None:
        state = self.source.at(t)
        stats = self._day_stats(t)
        if state is None or stats is None:
            return None
        ticker = contract_ticker(self.market_id, self.category, stats, self.series, t, self.minutes)
        last = stats.last
        if self.series.trades is not None:
            trades = self.series.trades.between(None, t, 1, newest=True)
            last = trades[0].price if trades else last
        ticker.update(
            lastPrice=last,
            markPrice=state.mark,
            indexPrice=state.mark,
            fundingRate=state.rate,
            nextFundingTime=str(state.funding_time),
        )
        return ticker


def ticker_subscription(
    topic: str, market_id: str, category: str, series: SymbolTape, start_ms: int
) -> Subscription:
    """The ``tickers.<symbol>`` subscription of a contract whose tape has funding rows."""
    ticker = _Ticker(market_id, category, series)
    grid = GridFeed(TICKER_PERIOD_MS, start_ms, first=True, sources=(ticker.source,))
    sent: dict[str, Any] = {}

    def poll(now: int) -> list[str]:
        out = []
        for t in grid.poll(now):
            data = ticker.at(t)
            if data is None:
                continue
            if not sent:
                kind = "snapshot"
                body = data
            else:
                kind = "delta"
                body = {"symbol": market_id}
                body.update((k, v) for k, v in data.items() if sent.get(k) != v)
                if len(body) == 1:
                    continue  # nothing changed: Bybit sends nothing
            sent.clear()
            sent.update(data)
            out.append(dumps({"topic": topic, "type": kind, "data": body, "cs": t, "ts": t}))
        return out

    return Subscription("tickers", poll)
