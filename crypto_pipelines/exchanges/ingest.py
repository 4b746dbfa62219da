"""Loading a range of one series from an exchange into the store, chunk by chunk.

The glue between ``exchanges.loader`` (what the exchange has) and ``storage.MarketStore``
(what we keep): each chunk is validated and upserted in its own transaction, in ts order, so
a run killed at any point leaves a complete prefix of the range; a re-run resumes after the
newest stored row of the range (``resume=True``) and upserts make repeating work harmless.
The report carries what a Dagster materialization shows: rows written, first and last ts,
candles expected against present, requests, retries and duration.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from crypto_pipelines.domain.timeframes import timeframe_ms
from crypto_pipelines.exchanges.loader import (
    FetchStats,
    exchange_time_ms,
    iter_funding_rates,
    iter_ohlcv,
    iter_trades,
)
from crypto_pipelines.exchanges.venues import VenueSpec
from crypto_pipelines.storage.store import MarketStore


@dataclass
class LoadReport:
    """What loading ``[start_ms, end_ms)`` of one series did."""

    dataset: str
    exchange: str
    symbol: str
    timeframe: str | None
    start_ms: int
    end_ms: int
    fetched_from_ms: int
    rows_written: int = 0
    rows_fetched: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    present: int = 0
    expected: int | None = None
    requests: int = 0
    retries: int = 0
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def closed_slots(start_ms: int, end_ms: int, timeframe: str, now_ms: int) -> int:
    """How many candles of ``timeframe`` open in ``[start_ms, end_ms)`` and are closed by
    ``now_ms``: what a complete series holds (before the exchange's own gaps)."""
    step = timeframe_ms(timeframe)
    first = -(-start_ms // step) * step
    last_open = min(end_ms - 1, now_ms - step)
    return 0 if last_open < first else (last_open - first) // step + 1


#: What each dataset's fetcher needs besides (begin, stats, now): client, spec, symbol, end.
Fetch = Callable[[int, FetchStats, int], Iterator[pd.DataFrame]]


def _load(
    client: Any,
    spec: VenueSpec,
    store: MarketStore,
    report: LoadReport,
    fetch: Fetch,
    *,
    now_ms: int | None,
    resume: bool,
    resume_step: int,
) -> LoadReport:
    """Fetch ``report``'s range (from just after the newest stored row when resuming),
    upserting chunk by chunk, and fill in the report."""
    t0 = time.monotonic()
    now = exchange_time_ms(client) if now_ms is None else now_ms
    if report.timeframe is not None and report.dataset == "ohlcv":
        report.expected = closed_slots(report.start_ms, report.end_ms, report.timeframe, now)
    if resume:
        latest = store.latest_ts(
            report.dataset,
            exchange=spec.id,
            symbol=report.symbol,
            timeframe=report.timeframe,
            start_ts=report.start_ms,
            end_ts=report.end_ms,
        )
        if latest is not None:
            report.fetched_from_ms = max(report.start_ms, latest + resume_step)
    stats = FetchStats()
    for chunk in fetch(report.fetched_from_ms, stats, now):
        if chunk.empty:
            continue
        report.rows_written += store.upsert(report.dataset, chunk)
        report.rows_fetched += len(chunk)
        first, last = int(chunk["ts"].iloc[0]), int(chunk["ts"].iloc[-1])
        report.first_ts = first if report.first_ts is None else min(report.first_ts, first)
        report.last_ts = last if report.last_ts is None else max(report.last_ts, last)
    report.present = store.count(
        report.dataset,
        exchange=report.exchange,
        symbol=report.symbol,
        timeframe=report.timeframe,
        start_ts=report.start_ms,
        end_ts=report.end_ms,
    )
    report.requests, report.retries, report.notes = stats.requests, stats.retries, list(stats.notes)
    report.duration_s = time.monotonic() - t0
    return report


def load_ohlcv(
    client: Any,
    spec: VenueSpec,
    store: MarketStore,
    symbol: str,
    timeframe: str,
    start_ms: int,
    end_ms: int,
    *,
    now_ms: int | None = None,
    resume: bool = True,
) -> LoadReport:
    """Closed candles of ``[start_ms, end_ms)`` into the store."""
    report = LoadReport("ohlcv", spec.id, symbol, timeframe, start_ms, end_ms, start_ms)

    def fetch(begin: int, stats: FetchStats, now: int) -> Iterator[pd.DataFrame]:
        return iter_ohlcv(client, spec, symbol, timeframe, begin, end_ms, stats=stats, now_ms=now)

    step = timeframe_ms(timeframe)
    return _load(client, spec, store, report, fetch, now_ms=now_ms, resume=resume, resume_step=step)


def load_trades(
    client: Any,
    spec: VenueSpec,
    store: MarketStore,
    symbol: str,
    start_ms: int,
    end_ms: int,
    *,
    now_ms: int | None = None,
    resume: bool = True,
) -> LoadReport:
    """Public trades of ``[start_ms, end_ms)`` into the store. Resuming restarts at the newest
    stored trade's ts (not after it: several trades share a millisecond; upserts dedupe)."""
    report = LoadReport("trades", spec.id, symbol, None, start_ms, end_ms, start_ms)

    def fetch(begin: int, stats: FetchStats, now: int) -> Iterator[pd.DataFrame]:
        return iter_trades(client, spec, symbol, begin, end_ms, stats=stats, now_ms=now)

    return _load(client, spec, store, report, fetch, now_ms=now_ms, resume=resume, resume_step=0)


def load_funding_rates(
    client: Any,
    spec: VenueSpec,
    store: MarketStore,
    symbol: str,
    start_ms: int,
    end_ms: int,
    *,
    now_ms: int | None = None,
    resume: bool = True,
) -> LoadReport:
    """Funding rates of ``[start_ms, end_ms)`` into the store."""
    report = LoadReport("funding_rates", spec.id, symbol, None, start_ms, end_ms, start_ms)

    def fetch(begin: int, stats: FetchStats, now: int) -> Iterator[pd.DataFrame]:
        return iter_funding_rates(client, spec, symbol, begin, end_ms, stats=stats, now_ms=now)

    return _load(client, spec, store, report, fetch, now_ms=now_ms, resume=resume, resume_step=1)
