"""Recording a tape from an exchange through a stock ccxt client.

``record_tape`` pages through each exchange's public REST API with plain since/limit loops it
controls (ccxt's ``paginate`` silently replaces an old ``since`` on several venues and cannot
walk most venues' trade history), checks every answer, and writes the tape with the tape
writer. Per-exchange differences are data (``record_profiles.PROFILES``); the loops live in
``record_paging``.

What is recorded, for ``[since, until)`` (``until`` defaults to, and is capped at, the
exchange's own clock):

- candles with open time in the range, closed ones only: a candle the exchange lacks stays
  missing, none is fetched twice;
- trades as far back as the exchange's public API goes (a warning is logged where it stops
  short: Bybit serves only its latest trades, OKX about three months);
- funding rates of perpetual swaps;
- one order-book snapshot, taken now (no exchange serves a past book);
- ``markets.json`` for the recorded symbols, from ccxt's markets (an existing one is
  replaced: record all of a tape's symbols of one exchange in one run).

Numbers come back from ccxt as floats and are written as the shortest decimal text that
round-trips (``decimal_text``). So recording a tape served by the replay exchange gives back
the same tape *value for value*: the same ts, ids and sides and equal ``Decimal`` values. The
text differs only where the source was not canonical (``1482.0`` is recorded as ``1482``) or
held more than 15 significant digits (a float cannot carry them).

Files are written atomically (``Staging``) and ``markets.json`` last, so a failed recording
leaves no half-written file and the presence of ``markets.json`` marks a finished one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ccxt

from crypto_pipelines.domain.symbols import symbol_to_dir
from crypto_pipelines.domain.timeframes import TimeframeError, timeframe_ms
from crypto_pipelines.exchanges.budget import SharedBudget, attach, attached
from crypto_pipelines.exchanges.client import make_client
from crypto_pipelines.exchanges.routing import point_ccxt_at, replay_url_from_env
from crypto_pipelines.exchanges.venues import VENUES
from crypto_pipelines.replay.record_budget import paying
from crypto_pipelines.replay.record_paging import Pager
from crypto_pipelines.replay.record_profiles import (
    PROFILES,
    FundingPaging,
    TradePaging,
    VenueProfile,
)
from crypto_pipelines.replay.record_support import (
    BadAnswer,
    RecordError,
    Staging,
    book_snapshot,
    decimal_text,
    precision_text,
)
from crypto_pipelines.replay.tape import writer
from crypto_pipelines.replay.tape.markets import MarketSpec

__all__ = [
    "PROFILES",
    "FundingPaging",
    "RecordError",
    "RecordSummary",
    "SeriesSummary",
    "TradePaging",
    "VenueProfile",
    "decimal_text",
    "make_exchange",
    "record_tape",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeriesSummary:
    symbol: str
    series: str  # "ohlcv 1m", "trades", "funding", "book"
    rows: int
    path: Path | None  # None when there was nothing to write


@dataclass
class RecordSummary:
    exchange: str
    out_dir: Path
    since_ms: int
    until_ms: int
    series: list[SeriesSummary] = field(default_factory=list)

    def rows(self, symbol: str, series: str) -> int:
        return sum(s.rows for s in self.series if s.symbol == symbol and s.series == series)


def make_exchange(exchange_id: str, replay_url: str | None = None) -> Any:
    """A stock ccxt client with its rate limiter on, routed to the replay exchange when
    ``replay_url`` is given or ``CRYPTO_PIPELINES_REPLAY_URL`` is set, carrying the
    exchange's request budget shared by every process on the machine, which ``record_tape``
    pays every request from: a recording beside running pipelines then stays inside each
    exchange's limits together with them instead of on top of them.

    The venues the pipelines load are made by their client factory
    (``exchanges.client.make_client``: the venue's ccxt options, its budget from
    ``SharedBudget.for_venue``). Other ccxt ids get a plain client: Binance's futures ids
    (``binanceusdm``, ``binancecoinm``, recorded into ``binance/``) with Binance's budget,
    whose weights cover their endpoints; ids no venue covers with no budget."""
    url = replay_url or replay_url_from_env()
    if exchange_id in VENUES:
        return make_client(exchange_id, replay_url=url, rate_budget=True)
    cls = getattr(ccxt, exchange_id, None)
    if not isinstance(cls, type) or not issubclass(cls, ccxt.Exchange):
        raise RecordError(f"{exchange_id}: not a ccxt exchange id")
    exchange = cls({"enableRateLimit": True})
    if url:
        point_ccxt_at(exchange, url)
    profile = PROFILES.get(exchange_id)
    if profile is not None and profile.tape_name in VENUES:
        attach(exchange, SharedBudget.for_venue(profile.tape_name, replay_url=url))
    return exchange


def record_tape(
    exchange: ccxt.Exchange,
    out_dir: Path | str,
    symbols: Sequence[str],
    timeframes: Sequence[str],
    since_ms: int,
    until_ms: int | None = None,
    *,
    trades: bool = True,
    funding: bool = True,
    book: bool = True,
    book_depth: int | None = None,
    compress: bool = False,
    progress: bool = False,
    retries: int = 3,
    retry_delay_s: float = 1.0,
    profile: VenueProfile | None = None,
) -> RecordSummary:
    """Record ``[since_ms, until_ms)`` of ``symbols`` into the tape folder ``out_dir``.

    Network-level failures are retried ``retries`` times (back-off from ``retry_delay_s``);
    anything else, and any answer that fails the checks (order, duplicates, alignment, range),
    raises RecordError naming exchange, symbol and problem. ``profile`` overrides the
    exchange's paging data (a venue not in PROFILES, or smaller pages in tests). ``progress``
    draws tqdm bars on stderr. Every request is first paid from the shared budget attached
    to the client, if any (``make_exchange`` attaches the machine's: ``record_budget``)."""
    ex: Any = exchange
    chosen = profile or PROFILES.get(ex.id)
    if chosen is None:
        raise RecordError(f"{ex.id}: no paging profile (known: {', '.join(sorted(PROFILES))})")
    pager = Pager(ex, chosen, progress=progress, retries=retries, retry_delay_s=retry_delay_s)
    recorder = _Recorder(pager, Path(out_dir), compress)
    with paying(ex, attached(ex)):
        return recorder.run(
            list(dict.fromkeys(symbols)),
            list(dict.fromkeys(timeframes)),
            since_ms,
            until_ms,
            trades=trades,
            funding=funding,
            book=book,
            book_depth=book_depth,
        )


class _Recorder:
    def __init__(self, pager: Pager, out_dir: Path, compress: bool) -> None:
        self.pager = pager
        self.ex = pager.ex
        self.tape_name = pager.p.tape_name
        self.out_dir = out_dir
        self.compress = compress

    def run(
        self,
        symbols: list[str],
        timeframes: list[str],
        since: int,
        until: int | None,
        *,
        trades: bool,
        funding: bool,
        book: bool,
        book_depth: int | None,
    ) -> RecordSummary:
        ex, pager = self.ex, self.pager
        for tf in timeframes:
            try:
                timeframe_ms(tf)
            except TimeframeError as exc:
                raise RecordError(f"{ex.id}: {exc}") from exc
        pager.call(f"{ex.id} markets", "load_markets")
        specs = [self.market_spec(symbol) for symbol in symbols]
        now = pager.now()
        pager.since, pager.until = since, min(until if until is not None else now, now)
        if pager.since >= pager.until:
            raise RecordError(
                f"{ex.id}: empty range: since {since} is not before {pager.until} (now {now})"
            )
        with_funding = funding and pager.p.funding is not FundingPaging.NONE
        summary = RecordSummary(ex.id, self.out_dir, pager.since, pager.until)
        staging = Staging(self.out_dir)
        try:
            for spec in specs:
                sym = spec.symbol
                # (series, file name, writer, lazy rows, writer's extra args); rows are
                # generators, so each series is fetched while it is written.
                jobs: list[tuple[str, str, Callable[..., int], Iterator[Any], tuple[str, ...]]] = [
                    (
                        f"ohlcv {tf}",
                        f"ohlcv_{tf}.csv",
                        writer.write_ohlcv,
                        pager.candles(sym, tf, now),
                        (tf,),
                    )
                    for tf in timeframes
                ]
                if trades:
                    jobs.append(
                        ("trades", "trades.csv", writer.write_trades, pager.trades(sym), ())
                    )
                if with_funding and spec.is_swap:
                    jobs.append(
                        ("funding", "funding.csv", writer.write_funding, pager.funding(sym), ())
                    )
                for series, name, write_fn, rows, extra in jobs:
                    summary.series.append(
                        self.write(staging, sym, series, name, write_fn, rows, *extra)
                    )
                if book:
                    summary.series.append(self.book(staging, sym, book_depth))
            writer.write_markets(staging.root, self.tape_name, specs)
            staging.commit(Path(self.tape_name) / "markets.json")
        finally:
            staging.close()
        return summary

    def write(
        self,
        staging: Staging,
        symbol: str,
        series: str,
        name: str,
        write_fn: Callable[..., int],
        rows: Iterator[Any],
        *extra: str,
    ) -> SeriesSummary:
        """Stream ``rows`` into a staged file and move it into place once complete."""
        relative = (
            Path(self.tape_name) / symbol_to_dir(symbol) / (name + (".gz" if self.compress else ""))
        )
        try:
            count = write_fn(
                staging.root, self.tape_name, symbol, *extra, rows, compress=self.compress
            )
        except BadAnswer as exc:
            staging.discard(relative)
            raise RecordError(f"{self.ex.id} {symbol} {series}: {exc}") from exc
        except BaseException:
            staging.discard(relative)
            raise
        if count == 0:
            staging.discard(relative)
            log.warning("%s %s %s: nothing in range, no file written", self.ex.id, symbol, series)
            return SeriesSummary(symbol, series, 0, None)
        return SeriesSummary(symbol, series, count, staging.commit(relative))

    def market_spec(self, symbol: str) -> MarketSpec:
        """The tape's market entry from ccxt's market: precision as decimal steps (TICK_SIZE
        floats written back as decimal text), contract size for swaps, listing time if known."""
        where = f"{self.ex.id} {symbol} markets"
        market = self.ex.markets.get(symbol)
        if market is None:
            raise RecordError(f"{where}: the exchange does not list {symbol}")
        if not (market.get("spot") or market.get("swap")):
            raise RecordError(
                f"{where}: a tape holds spot and perpetual swaps only, not {market.get('type')}"
            )
        try:
            symbol_to_dir(symbol)
            mode = self.ex.precisionMode
            precision, limits = market.get("precision") or {}, market.get("limits") or {}
            price_tick = precision_text(precision.get("price"), mode)
            amount_step = precision_text(precision.get("amount"), mode)
            if price_tick is None or amount_step is None:
                raise BadAnswer("the market has no price or amount precision")
            min_amount = (limits.get("amount") or {}).get("min")
            contract = market.get("contractSize") if market.get("swap") else None
            created = market.get("created")
            return MarketSpec(
                symbol=symbol,
                type="swap" if market.get("swap") else "spot",
                price_tick=price_tick,
                amount_step=amount_step,
                # The tape's own default when ccxt does not know the minimum (Coinbase).
                min_amount=decimal_text(min_amount) if min_amount else amount_step,
                contract_size=decimal_text(contract) if contract else None,
                # Binance reports onboardDate 0 for "unknown"; the tape then derives it.
                listed_ms=created if isinstance(created, int) and created > 0 else None,
            )
        except ValueError as exc:  # BadAnswer, SymbolError
            raise RecordError(f"{where}: {exc}") from exc

    def book(self, staging: Staging, symbol: str, depth: int | None) -> SeriesSummary:
        """One snapshot, stamped with the exchange's own time when ccxt reports it, else with
        the exchange clock read right after (Binance spot and Coinbase send no book time)."""
        where = f"{self.ex.id} {symbol} book"
        raw = self.pager.call(where, "fetch_order_book", symbol, depth)
        ts = raw.get("timestamp")
        try:
            snapshot = book_snapshot(int(ts) if ts is not None else self.pager.now(), raw)
        except BadAnswer as exc:
            raise RecordError(f"{where}: {exc}") from exc
        return self.write(
            staging, symbol, "book", "book.jsonl", writer.write_book, iter([snapshot])
        )
