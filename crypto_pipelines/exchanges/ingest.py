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


def _load(
    report: LoadReport,
    store: MarketStore,
    chunks: Callable[[int, FetchStats], Iterator[pd.DataFrame]],
    resume_from: int,
) -> LoadReport:
    t0 = time.monotonic()
    stats = FetchStats()
    report.fetched_from_ms = resume_from
    for chunk in chunks(resume_from, stats):
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


def _resume_point(
    store: MarketStore,
    dataset: str,
    spec: VenueSpec,
    symbol: str,
    timeframe: str | None,
    start_ms: int,
    end_ms: int,
    step: int,
) -> int:
    latest = store.latest_ts(
        dataset,
        exchange=spec.id,
        symbol=symbol,
        timeframe=timeframe,
        start_ts=start_ms,
        end_ts=end_ms,
    )
    return start_ms if latest is None else max(start_ms, latest + step)


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
    now = exchange_time_ms(client) if now_ms is None else now_ms
    step = timeframe_ms(timeframe)
    frm = (
        _resume_point(store, "ohlcv", spec, symbol, timeframe, start_ms, end_ms, step)
        if resume
        else start_ms
    )
    report = LoadReport("ohlcv", spec.id, symbol, timeframe, start_ms, end_ms, frm)
    report.expected = closed_slots(start_ms, end_ms, timeframe, now)
    return _load(
        report,
        store,
        lambda begin, stats: iter_ohlcv(
            client, spec, symbol, timeframe, begin, end_ms, stats=stats, now_ms=now
        ),
        frm,
    )


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
    now = exchange_time_ms(client) if now_ms is None else now_ms
    frm = (
        _resume_point(store, "trades", spec, symbol, None, start_ms, end_ms, 0)
        if resume
        else start_ms
    )
    report = LoadReport("trades", spec.id, symbol, None, start_ms, end_ms, frm)
    return _load(
        report,
        store,
        lambda begin, stats: iter_trades(
            client, spec, symbol, begin, end_ms, stats=stats, now_ms=now
        ),
        frm,
    )


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
    now = exchange_time_ms(client) if now_ms is None else now_ms
    frm = (
        _resume_point(store, "funding_rates", spec, symbol, None, start_ms, end_ms, 1)
        if resume
        else start_ms
    )
    report = LoadReport("funding_rates", spec.id, symbol, None, start_ms, end_ms, frm)
    return _load(
        report,
        store,
        lambda begin, stats: iter_funding_rates(
            client, spec, symbol, begin, end_ms, stats=stats, now_ms=now
        ),
        frm,
    )
