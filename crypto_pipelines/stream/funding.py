"""Perpetuals' funding from the stream: the announced rate and mark price live, the settled
rate stored.

One loop per perpetual swap watches the venue's funding channel through ccxt.pro
(``VenueSpec.ws_funding``: Binance ``@markPrice``, OKX ``funding-rate``, Bybit ``tickers``)
and hands each message to the handlers as a ``mark`` batch (mark price, the rate announced
for the next settlement and that settlement's time): what a hot cache or a user's handler
wants, never stored. Why the settled rate is not taken from the stream:

- **An announcement is an estimate.** Until the settlement the announced rate moves with the
  premium; the rate that was paid is the venue's record of it, which is what the
  ``funding_rates`` dataset holds on the REST path. Storing the last announcement instead
  would put two different numbers for one settlement in one table.
- **The stream says when to ask.** When a message's next funding time moves past the one
  announced before, that settlement has happened: the loop asks the REST side (``settle``)
  for the funding rates since the newest stored one, so ``funding_rates`` is current within
  seconds of each settlement rather than at the next incremental sensor run. A venue may
  publish the settled rate a little after the settlement: the ask is repeated a few times,
  and what still is not there is the incremental sensor's to fetch (it stays the safety net).
- **A (re)start catches up.** Settlements missed while the stream was down are fetched when
  it connects, like trades (``ExchangeStream.catch_up``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, NoReturn

import ccxt

from crypto_pipelines.exchanges.venues import get_venue
from crypto_pipelines.stream.events import StreamBatch
from crypto_pipelines.stream.stats import StreamStats

log = logging.getLogger(__name__)

SETTLE_RETRIES_S: Final = (2.0, 10.0, 60.0)
"""Waits between asks for a settled rate the venue has not published yet."""

SETTLEMENT_SLACK_MS: Final = 1_000
"""A stored funding time this close before the announced one is that settlement (Binance's
carry a few milliseconds of offset)."""

Settle = Callable[[str], Awaitable[int | None]]
"""Fetch a symbol's funding rates since the newest stored over REST; returns the newest stored
funding time afterwards (None: none stored, or the fetch failed)."""


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def mark_row(exchange: str, symbol: str, item: dict[str, Any]) -> dict[str, Any] | None:
    """A ccxt.pro funding/mark structure as a ``mark`` row: ``ts``, ``mark_price``,
    ``funding_rate`` (announced), ``next_funding_ms``; None when the message has neither a
    rate nor a mark (a Bybit ticker delta that changed other fields)."""
    spec = get_venue(exchange).ws_funding
    if spec is None:
        return None
    info = item.get("info") if isinstance(item.get("info"), dict) else {}
    rate = _number(info.get(spec.rate)) if info else None
    if rate is None:
        rate = _number(item.get("fundingRate"))
    mark = _number(info.get(spec.mark)) if info and spec.mark else None
    if mark is None:
        mark = _number(item.get("markPrice"))
    next_time = _number(info.get(spec.next_time)) if info else None
    if rate is None and mark is None:
        return None
    ts = _number(item.get("timestamp"))
    return {
        "exchange": exchange,
        "symbol": symbol,
        "ts": int(ts) if ts is not None else None,
        "mark_price": mark,
        "funding_rate": rate,
        "next_funding_ms": int(next_time) if next_time is not None else None,
    }


class FundingLoop:
    """One exchange's perpetuals: their funding channel watched, settlements fetched."""

    def __init__(
        self,
        exchange: str,
        stats: StreamStats,
        emit: Callable[[StreamBatch], Awaitable[None]],
        next_message: Callable[[Awaitable[Any]], Awaitable[Any]],
        alive: Callable[[], None],
        settle: Settle,
    ) -> None:
        self.exchange = exchange
        self.spec = get_venue(exchange).ws_funding
        self.stats = stats
        self.emit = emit
        self._next = next_message
        self._alive = alive
        self.settle = settle
        self.announced: dict[str, int] = {}
        """Per symbol, the settlement time of the newest announcement."""
        self._settling: set[asyncio.Task[None]] = set()

    async def run(self, client: Any, symbol: str) -> None:
        assert self.spec is not None, f"{self.exchange} has no funding channel"
        watch = getattr(client, self.spec.method)
        while True:
            try:
                item = await self._next(watch(symbol))
            except ccxt.ExchangeError as exc:  # refused (not a network failure): not ours to fix
                await self._refused(symbol, exc)
            received = time.monotonic()
            self._alive()
            row = mark_row(self.exchange, symbol, item)
            self.stats.message(self.exchange, "funding", 1)
            if row is None:
                continue
            await self.emit(StreamBatch("mark", self.exchange, symbol, [row], received))
            settlement = row["next_funding_ms"]
            if settlement is None:
                continue
            before = self.announced.get(symbol)
            if before is not None and settlement > before:
                task = asyncio.create_task(self._settled(symbol, before))
                self._settling.add(task)
                task.add_done_callback(self._settling.discard)
            self.announced[symbol] = max(settlement, before or settlement)

    async def _refused(self, symbol: str, exc: Exception) -> NoReturn:
        """The venue refused the channel for ``symbol``: noted once, then this loop idles
        until the connection ends (returning would end the connection's watch; raising would
        reconnect the trades, which are fine, for nothing)."""
        note = f"{self.spec.method if self.spec else 'funding'} refused: {exc}"[:500]
        self.stats.errors[f"{self.exchange}:{symbol}:funding"] = note
        log.warning("%s %s: %s", self.exchange, symbol, note)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def _settled(self, symbol: str, at_ms: int) -> None:
        """The settlement at ``at_ms`` happened: fetch it (and any missed before it)."""
        log.info("%s %s: funding settled at %d, fetching it", self.exchange, symbol, at_ms)
        for wait in (0.0, *SETTLE_RETRIES_S):
            await asyncio.sleep(wait)
            newest = await self.settle(symbol)
            if newest is not None and newest >= at_ms - SETTLEMENT_SLACK_MS:
                return
        log.warning(
            "%s %s: the settlement at %d is not published yet; the incremental sensor will "
            "fetch it",
            self.exchange,
            symbol,
            at_ms,
        )

    async def close(self) -> None:
        """Let settlements being fetched finish their transactions."""
        for task in list(self._settling):
            task.cancel()
        if self._settling:
            await asyncio.wait(list(self._settling), timeout=5)
