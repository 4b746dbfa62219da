"""Partitions: ``date`` (daily or monthly, UTC) x ``symbol`` (dynamic, per exchange).

Daily dates for data that is dense (timeframes under 1h, trades); monthly for 1h and longer
candles and for funding rates, so a partition always holds a useful amount of data. Symbols
are dynamic partitions named ``<exchange>_symbols`` whose keys are ccxt unified symbols, kept
equal to the universe by ``crypto-pipelines partitions sync`` and by a sensor.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg

from crypto_pipelines.domain.datasets import get_market_dataset

DATE = "date"
SYMBOL = "symbol"


def symbols_partitions_name(exchange: str) -> str:
    return f"{exchange}_symbols"


def symbols_partitions(exchange: str) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=symbols_partitions_name(exchange))


def date_partitions(start: str, *, monthly: bool) -> dg.TimeWindowPartitionsDefinition:
    """``end_offset=1``: the current (still open) day or month is a partition too, so the
    incremental sensor can load today's closed candles as they close; its materializations
    hold closed data only, and later runs resume after the newest stored row. Months start
    on the 1st of ``start``'s month: Dagster's first monthly partition is the first whole
    month after its start date, which would leave a mid-month start's first days without one."""
    if monthly:
        first_of_month = f"{start[:7]}-01"
        return dg.MonthlyPartitionsDefinition(
            start_date=first_of_month, timezone="UTC", end_offset=1
        )
    return dg.DailyPartitionsDefinition(start_date=start, timezone="UTC", end_offset=1)


def is_monthly(dataset: str, timeframe: str | None = None) -> bool:
    """Monthly for 1h+ candles and funding rates; daily for finer candles, trades and open
    interest (``MarketDataset.monthly_from_ms``)."""
    return get_market_dataset(dataset).is_monthly(timeframe)


def market_partitions(exchange: str, start: str, *, monthly: bool) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition(
        {DATE: date_partitions(start, monthly=monthly), SYMBOL: symbols_partitions(exchange)}
    )


@dataclass(frozen=True, slots=True)
class SymbolRange:
    """A contiguous run of date partitions of one symbol: what one fetch covers."""

    symbol: str
    start_ms: int
    end_ms: int  # exclusive
    partition_keys: tuple[str, ...]


def _window_ms(date_key: str, monthly: bool) -> tuple[int, int]:
    start = datetime.strptime(date_key, "%Y-%m-%d").replace(tzinfo=UTC)
    if monthly:
        end = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    else:
        end = start + timedelta(days=1)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def symbol_ranges(partition_keys: Iterable[str], *, monthly: bool) -> list[SymbolRange]:
    """Group multi-partition keys (``2024-03-05|BTC/USDT``) into contiguous ranges per
    symbol, so a backfill run fetches each symbol's span once instead of day by day."""
    by_symbol: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for key in partition_keys:
        date_key, symbol = str(key).split("|", 1)
        start, end = _window_ms(date_key, monthly)
        by_symbol[symbol].append((start, end, str(key)))
    ranges: list[SymbolRange] = []
    for symbol, windows in sorted(by_symbol.items()):
        windows.sort()
        run: list[tuple[int, int, str]] = []
        for window in windows:
            if run and window[0] != run[-1][1]:
                ranges.append(_range(symbol, run))
                run = []
            run.append(window)
        if run:
            ranges.append(_range(symbol, run))
    return ranges


def _range(symbol: str, run: Sequence[tuple[int, int, str]]) -> SymbolRange:
    return SymbolRange(symbol, run[0][0], run[-1][1], tuple(w[2] for w in run))
