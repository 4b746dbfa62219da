"""Partitions: ``date`` (daily or monthly, UTC) x ``symbol`` (dynamic, per exchange).

Monthly dates for candles of every timeframe and for funding rates (a year of 1m candles is 12
partitions, not 365: each partition of a run costs Dagster events), daily for trades and open
interest (a day of them is already a useful amount of data). Symbols
are dynamic partitions whose keys are ccxt unified symbols, one set per exchange and kind of
market a dataset exists for (``MarketDataset.market_types``): ``<exchange>_symbols`` (spot
pairs and perpetual swaps: candles, trades) and ``<exchange>_perps`` (perpetual swaps only:
funding rates, open interest), kept equal to the universe by ``crypto-pipelines partitions
sync`` and by a sensor.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg

from crypto_pipelines.domain.datasets import MarketDataset, MarketType, market_type
from crypto_pipelines.domain.universe import ExchangeUniverse

DATE = "date"
SYMBOL = "symbol"

ALL_MARKETS: frozenset[MarketType] = frozenset({"spot", "swap"})
_SET_SUFFIX: dict[frozenset[MarketType], str] = {
    ALL_MARKETS: "symbols",
    frozenset({"swap"}): "perps",
    frozenset({"spot"}): "spot",
}


@dataclass(frozen=True, slots=True)
class SymbolSet:
    """One exchange's dynamic partition set of symbols for datasets that exist for the same
    kinds of market: ``<exchange>_symbols`` (every market), ``<exchange>_perps`` (perpetual
    swaps only). A dataset partitioned over markets it does not exist for (funding of a spot
    pair) would show partitions that can never hold data, "missing" forever."""

    exchange: str
    market_types: frozenset[MarketType]

    @property
    def name(self) -> str:
        return f"{self.exchange}_{_SET_SUFFIX[self.market_types]}"

    def holds(self, symbol: str) -> bool:
        """Whether ``symbol`` belongs in this set (its kind of market is one of the set's)."""
        return market_type(symbol) in self.market_types

    def members(self, symbols: Iterable[str]) -> tuple[str, ...]:
        """The symbols of ``symbols`` this set holds, in their order, once each."""
        return tuple(dict.fromkeys(s for s in symbols if self.holds(s)))

    def partitions_def(self) -> dg.DynamicPartitionsDefinition:
        return dg.DynamicPartitionsDefinition(name=self.name)


def symbol_set(exchange: str, spec: MarketDataset) -> SymbolSet:
    """The symbol partitions of ``spec`` on ``exchange``, from the markets it exists for."""
    return SymbolSet(exchange, spec.market_types)


def symbol_sets(exchange: str, config: ExchangeUniverse) -> list[SymbolSet]:
    """Every symbol partition set the exchange's assets use: ``<exchange>_symbols`` always
    (its candles; the cross-exchange check reads it), then the others its datasets need."""
    sets = [SymbolSet(exchange, ALL_MARKETS)]
    for spec, _timeframe in config.series_datasets():
        one = symbol_set(exchange, spec)
        if one not in sets:
            sets.append(one)
    return sets


def symbols_partitions_name(exchange: str) -> str:
    """``<exchange>_symbols``: every market of the exchange (candles, trades)."""
    return SymbolSet(exchange, ALL_MARKETS).name


def perps_partitions_name(exchange: str) -> str:
    """``<exchange>_perps``: the exchange's perpetual swaps (funding rates, open interest)."""
    return SymbolSet(exchange, frozenset({"swap"})).name


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


def market_partitions(
    exchange: str, start: str, spec: MarketDataset, timeframe: str | None = None
) -> dg.MultiPartitionsDefinition:
    """``date x symbol`` of ``spec`` (and ``timeframe``) on ``exchange``: its date cadence and
    the symbol set of the markets it exists for. The asset and its checks share it."""
    return dg.MultiPartitionsDefinition(
        {
            DATE: date_partitions(start, monthly=spec.is_monthly(timeframe)),
            SYMBOL: symbol_set(exchange, spec).partitions_def(),
        }
    )


@dataclass(frozen=True, slots=True)
class SymbolRange:
    """A contiguous run of date partitions of one symbol: what one fetch covers."""

    symbol: str
    start_ms: int
    end_ms: int  # exclusive
    partition_keys: tuple[str, ...]


def partition_window(partition_key: str, *, monthly: bool) -> tuple[int, int]:
    """The ``[start, end)`` ms window of a ``date|symbol`` partition key."""
    return _window_ms(str(partition_key).split("|", 1)[0], monthly)


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
