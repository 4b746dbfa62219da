"""The recorder's paging loops: candles, trades and funding rates of one symbol.

Every loop is a generator of validated tape rows, oldest first, so the tape writer can stream a
long series to disk; an exchange answer that fails a check raises BadAnswer mid-stream and the
half-written file is discarded by the caller.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import ccxt
from tqdm import tqdm

from crypto_pipelines.domain.timeframes import grid_offset_ms, timeframe_ms
from crypto_pipelines.replay.record_profiles import FundingPaging, TradePaging, VenueProfile
from crypto_pipelines.replay.record_support import (
    BadAnswer,
    RecordError,
    ReverseSpool,
    candle_rows,
    funding_rows,
    numeric_ids,
    trade_rows,
)
from crypto_pipelines.replay.tape.series import Candle, FundingRate, Trade

log = logging.getLogger(__name__)

_BAR = "{desc}: {percentage:3.0f}%|{bar:20}| {postfix} [{elapsed}<{remaining}]"


class Pager:
    """Pages one exchange over ``[since, until)`` with the data of its VenueProfile."""

    def __init__(
        self,
        exchange: Any,
        profile: VenueProfile,
        *,
        progress: bool = False,
        retries: int = 3,
        retry_delay_s: float = 1.0,
    ) -> None:
        self.ex = exchange
        self.p = profile
        self.progress = progress
        self.retries = retries
        self.retry_delay_s = retry_delay_s
        self.since = 0
        self.until = 0

    # -- plumbing ---------------------------------------------------------------------------
    def call(self, where: str, method: str, *args: Any) -> Any:
        """One ccxt call. Network-level failures (timeouts, 5xx, rate limits) are retried with
        exponential back-off, since a long recording should survive a blip; anything else is
        a RecordError at once."""
        for attempt in range(self.retries + 1):
            try:
                return getattr(self.ex, method)(*args)
            except ccxt.NetworkError as exc:
                if attempt == self.retries:
                    raise RecordError(
                        f"{where}: {type(exc).__name__} after {attempt + 1} tries: {exc}"
                    ) from exc
                log.info("%s: %s, retrying: %s", where, type(exc).__name__, exc)
                time.sleep(self.retry_delay_s * 2**attempt)
            except ccxt.BaseError as exc:
                raise RecordError(f"{where}: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")

    def now(self) -> int:
        """The exchange's clock (the replay exchange's when replaying), else local time: what
        decides which candle is still open."""
        if self.ex.has.get("fetchTime"):
            return int(self.call(self.ex.id, "fetch_time"))
        return int(self.ex.milliseconds())

    def bar(self, desc: str, total: int) -> Any:
        return tqdm(
            total=max(total, 1),
            desc=desc,
            file=sys.stderr,
            disable=not self.progress,
            leave=False,
            bar_format=_BAR,
        )

    def in_range(self, rows: Sequence[Any]) -> list[Any]:
        return [r for r in rows if self.since <= r.ts < self.until]

    # -- candles ----------------------------------------------------------------------------
    def candles(self, symbol: str, tf: str, now: int) -> Iterator[Candle]:
        """Windows of ``ohlcv_limit`` slots over [since, until), closed candles only. The next
        window starts where this one ends whatever came back: an empty window is a gap."""
        step = timeframe_ms(tf)
        offset = grid_offset_ms(tf)
        cursor = offset + math.ceil((self.since - offset) / step) * step
        stop = min(self.until, now - step + 1)  # a candle is closed once ts + step <= now
        last: int | None = None
        where = f"{self.ex.id} {symbol} ohlcv {tf}"
        with self.bar(where, stop - cursor) as bar:
            while cursor < stop:
                slots = min(self.p.ohlcv_limit, -(-(stop - cursor) // step))
                end = cursor + slots * step
                raw = self.call(where, "fetch_ohlcv", symbol, tf, cursor, slots, {"until": end - 1})
                # The window may reach past `stop` (the open candle, an unaligned until): the
                # exchange answering there is right, the recorder just does not keep it.
                rows = [c for c in candle_rows(raw, cursor, end, step, offset, last) if c.ts < stop]
                if rows:
                    last = rows[-1].ts
                yield from rows
                bar.update(min(end, stop) - cursor)
                cursor = end

    # -- trades -----------------------------------------------------------------------------
    def trade_page(
        self, symbol: str, since: int | None, params: Mapping[str, object]
    ) -> list[Trade]:
        where = f"{self.ex.id} {symbol} trades"
        merged = {**self.p.trade_params, **params}
        return trade_rows(
            self.call(where, "fetch_trades", symbol, since, self.p.trade_limit, merged)
        )

    def trades(self, symbol: str) -> Iterator[Trade]:
        if self.p.trades is TradePaging.FORWARD:
            return self.trades_forward(symbol)
        if self.p.trades is TradePaging.BACKWARD:
            return self.trades_backward(symbol)
        return self.trades_latest(symbol)

    def seed_forward(self, symbol: str) -> list[Trade]:
        """The first page of forward id paging: trades from the first one at or after
        ``since``. An active market has trades in the first time window; Binance answers a
        window holding more than ``limit`` trades with its *last* ones (ccxt's documented
        caveat), so the window is halved until the page is not full. An empty first window
        (a quiet market, a ``since`` before the listing) switches to a search over ids."""
        end = min(self.since + self.p.trade_seed_window_ms, self.until)
        page = self.trade_page(symbol, self.since, {"until": end - 1})
        while len(page) >= self.p.trade_limit and end - self.since > 1:
            end = self.since + (end - self.since) // 2
            page = self.trade_page(symbol, self.since, {"until": end - 1})
        if len(page) >= self.p.trade_limit:
            raise BadAnswer(f"more than {self.p.trade_limit} trades at ts {self.since}")
        return page or self.seed_by_id(symbol)

    def seed_by_id(self, symbol: str) -> list[Trade]:
        """Binary search for the first trade id whose trade is at or after ``since`` (ids grow
        with time): about log2(newest id) one-trade probes, however long the quiet stretch."""
        cursor = str(self.p.trade_cursor)

        def probe(trade_id: int | None, limit: int = 1) -> list[Trade]:
            params = {} if trade_id is None else {cursor: trade_id}
            where = f"{self.ex.id} {symbol} trades"
            merged = {**self.p.trade_params, **params}
            return trade_rows(self.call(where, "fetch_trades", symbol, None, limit, merged))

        newest = probe(None)
        if not newest or newest[-1].ts < self.since or not numeric_ids(newest):
            return []
        lo, hi = 0, int(newest[-1].id)  # the first trade at or after since has an id in [lo, hi]
        while lo < hi:
            mid = (lo + hi) // 2
            found = probe(mid if self.p.trade_cursor_inclusive else mid - 1)
            if not found or not numeric_ids(found):
                raise BadAnswer(f"no trade at or after id {mid} although {hi} exists")
            if found[0].ts >= self.since:
                hi = mid
            else:
                lo = int(found[0].id) + 1
        return probe(lo if self.p.trade_cursor_inclusive else lo - 1, self.p.trade_limit)

    def trades_forward(self, symbol: str) -> Iterator[Trade]:
        """The first window's trades, then ids upwards until past ``until``."""
        p = self.p
        with self.bar(f"{self.ex.id} {symbol} trades", self.until - self.since) as bar:
            page = self.seed_forward(symbol)
            last_id: int | None = None
            while page:
                if not numeric_ids(page):
                    raise BadAnswer("trade ids are not integers, cannot page by id")
                ids = [int(t.id) for t in page]
                if last_id is not None and min(ids) <= last_id:
                    raise BadAnswer(f"trade id {min(ids)} repeats or goes back (last id {last_id})")
                yield from self.in_range(page)
                bar.update(max(0, min(page[-1].ts, self.until) - self.since - bar.n))
                if page[-1].ts >= self.until:
                    return
                last_id = max(ids)
                cursor_id = last_id + 1 if p.trade_cursor_inclusive else last_id
                page = self.trade_page(symbol, None, {str(p.trade_cursor): cursor_id})

    def trades_backward(self, symbol: str) -> Iterator[Trade]:
        """From ``until`` (or from the newest trade, where the exchange cannot start at a time)
        down past ``since`` by id cursor; spooled, then written oldest first."""
        p = self.p
        spool = ReverseSpool()
        params: dict[str, object] = dict(p.trade_seed_params)
        if p.trade_seed_end:
            params[p.trade_seed_end] = self.until
        oldest_id: int | None = None
        oldest_ts: int | None = None
        with self.bar(f"{self.ex.id} {symbol} trades", self.until - self.since) as bar:
            page = self.trade_page(symbol, None, params)
            while page:
                if not numeric_ids(page):
                    raise BadAnswer("trade ids are not integers, cannot page by id")
                ids = [int(t.id) for t in page]
                if oldest_id is not None and max(ids) >= oldest_id:
                    raise BadAnswer(
                        f"trade id {max(ids)} repeats or goes forward (oldest id {oldest_id})"
                    )
                spool.push(self.in_range(page))
                oldest_id, oldest_ts = min(ids), page[0].ts
                bar.update(max(0, self.until - max(oldest_ts, self.since) - bar.n))
                if oldest_ts < self.since:
                    break
                page = self.trade_page(symbol, None, {str(p.trade_cursor): oldest_id})
            else:
                log.warning(
                    "%s %s trades: the exchange serves no trades before ts %s (history limit or "
                    "listing); recorded what it has",
                    self.ex.id,
                    symbol,
                    oldest_ts,
                )
        yield from spool.ascending(Trade)

    def trades_latest(self, symbol: str) -> Iterator[Trade]:
        """One page of the newest trades: all this exchange's public API has."""
        page = self.trade_page(symbol, None, {})
        if not page or page[0].ts > self.since:
            log.warning(
                "%s %s trades: the public API serves only the latest %d trades, no history; "
                "trades before ts %s are not available",
                self.ex.id,
                symbol,
                self.p.trade_limit,
                page[0].ts if page else None,
            )
        yield from self.in_range(page)

    # -- funding ----------------------------------------------------------------------------
    def funding_page(
        self, symbol: str, since: int | None, params: Mapping[str, object]
    ) -> list[FundingRate]:
        where = f"{self.ex.id} {symbol} funding"
        raw = self.call(
            where, "fetch_funding_rate_history", symbol, since, self.p.funding_limit, dict(params)
        )
        return funding_rows(raw)

    def funding(self, symbol: str) -> Iterator[FundingRate]:
        if self.p.funding is FundingPaging.FORWARD:
            return self.funding_forward(symbol)
        return self.funding_backward(symbol)

    def funding_forward(self, symbol: str) -> Iterator[FundingRate]:
        cursor = self.since
        while cursor < self.until:
            page = self.funding_page(symbol, cursor, {"until": self.until - 1})
            if not page:
                return
            if page[0].ts < cursor:
                raise BadAnswer(f"funding time {page[0].ts} before the requested start {cursor}")
            yield from self.in_range(page)
            cursor = page[-1].ts + 1

    def funding_backward(self, symbol: str) -> Iterator[FundingRate]:
        p = self.p
        spool = ReverseSpool()
        inclusive = p.funding_end_inclusive
        end = self.until - 1 if inclusive else self.until
        oldest: int | None = None
        while True:
            page = self.funding_page(symbol, None, {str(p.funding_end): end})
            if not page:
                log.warning("%s %s funding: none served before ts %s", self.ex.id, symbol, oldest)
                break
            if oldest is not None and page[-1].ts >= oldest:
                raise BadAnswer(
                    f"funding time {page[-1].ts} repeats or goes forward (oldest {oldest})"
                )
            spool.push(self.in_range(page))
            oldest = page[0].ts
            if oldest < self.since:
                break
            end = oldest - 1 if inclusive else oldest
        yield from spool.ascending(FundingRate)
