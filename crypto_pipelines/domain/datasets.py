"""Market datasets described once: what each is keyed by, its time grid, its partitions, the
markets it exists for, how a load resumes and whether gaps can be found in it.

Every layer that used to tell datasets apart by name (the store, the loader, the partitions,
the sensors, the checks) reads a ``MarketDataset`` instead, so a new dataset is one entry in
``MARKET_DATASETS`` plus its Pandera model, its venue data and a migration. ``SeriesKey`` names
one stored series (exchange, symbol, dataset, timeframe) everywhere a series is filtered on.

Plain Python: no Dagster, no exchanges, no storage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from crypto_pipelines.domain.schemas import Dataset, get_dataset
from crypto_pipelines.domain.symbols import parse_symbol
from crypto_pipelines.domain.timeframes import TimeframeError, timeframe_ms

MarketType = Literal["spot", "swap"]
GapCheck = Literal["grid", "ids"]
"""``grid``: one row per step of a time grid (candles); ``ids``: sequentially numbered rows
(trades of a venue that numbers them, see ``VenueSpec.trades.sequential_ids``)."""

OHLCV: Final = "ohlcv"
TRADES: Final = "trades"
FUNDING_RATES: Final = "funding_rates"
OPEN_INTEREST: Final = "open_interest"

OPEN_INTEREST_PERIOD: Final = "5m"
"""Open interest is stored at 5-minute resolution: the finest period Binance, OKX and Bybit
all offer for its history."""


def market_type(symbol: str) -> MarketType:
    """The kind of market a ccxt unified symbol names: ``swap`` when it has a settle currency
    (``BTC/USDT:USDT``), else ``spot``."""
    return "swap" if parse_symbol(symbol).settle is not None else "spot"


@dataclass(frozen=True, slots=True)
class MarketDataset:
    """One market dataset.

    ``asset``: the asset name within an exchange's group (``{timeframe}`` is filled in for
    candles). ``universe_flag``: the universe key that enables it per exchange (None: always,
    one asset per configured timeframe). ``grid``: the fixed time grid of a dataset sampled
    at a period (open interest), None for candles (their timeframe) and event data.
    ``resume_step``: what follows the newest stored row when a load continues (candles: one
    timeframe; trades: 0, several share a millisecond and upserts dedupe; events: 1 ms)."""

    name: str
    asset: str
    universe_flag: str | None
    market_types: frozenset[MarketType]
    monthly_from_ms: int | None
    """Partitioned monthly when the series' step is at least this (None: always daily; 0:
    always monthly), so a partition always holds a useful amount of data."""
    resume: Literal["step", "same_ms", "next_ms"]
    gap_check: GapCheck | None
    grid: str | None = None
    per_timeframe: bool = False
    description: str = ""
    unit: str = "rows"
    """What one row is called in metadata and messages (``candles_expected``)."""

    @property
    def table(self) -> Dataset:
        """The SQL table's dataset (model, key, columns): ``domain.schemas``."""
        return get_dataset(self.name)

    @property
    def series_columns(self) -> tuple[str, ...]:
        """The key columns that name a series (the rest of the key names a row in it)."""
        return tuple(c for c in ("exchange", "symbol", "timeframe") if c in self.table.columns)

    @property
    def row_key(self) -> tuple[str, ...]:
        """The key columns that name a row within its series (``ts``, or ``trade_id``)."""
        return tuple(c for c in self.table.key if c not in self.series_columns)

    def step_ms(self, timeframe: str | None = None) -> int | None:
        """The grid step in ms: the candle length, the sampling period, or None (events)."""
        if self.per_timeframe:
            if timeframe is None:
                raise ValueError(f"{self.name} needs a timeframe")
            return timeframe_ms(timeframe)
        return timeframe_ms(self.grid) if self.grid else None

    def is_monthly(self, timeframe: str | None = None) -> bool:
        if self.monthly_from_ms is None:
            return False
        step = self.step_ms(timeframe)
        return (step or 0) >= self.monthly_from_ms

    def resume_step(self, timeframe: str | None = None) -> int:
        """How far past the newest stored ``ts`` the next fetch starts."""
        if self.resume == "step":
            return self.step_ms(timeframe) or 1
        return 0 if self.resume == "same_ms" else 1

    def open_bound(self, now_ms: int, timeframe: str | None = None) -> int:
        """The exclusive upper bound of ``ts`` for rows complete at ``now_ms``: a candle must
        have closed (``ts + timeframe <= now``), any other row must not be in the future."""
        if self.per_timeframe and timeframe is not None:
            try:
                return now_ms - timeframe_ms(timeframe) + 1
            except TimeframeError:  # calendar months: only "not in the future"
                return now_ms + 1
        return now_ms + 1

    def has_market(self, symbol: str) -> bool:
        """Whether this dataset exists for the market ``symbol`` names (spot or swap)."""
        return market_type(symbol) in self.market_types

    def asset_name(self, timeframe: str | None = None) -> str:
        if self.per_timeframe:
            if timeframe is None:
                raise ValueError(f"{self.name} needs a timeframe")
            return self.asset.format(timeframe=timeframe)
        return self.asset

    def series(self, exchange: str, symbol: str, timeframe: str | None = None) -> SeriesKey:
        return SeriesKey(exchange, symbol, self.name, timeframe or "")


@dataclass(frozen=True, slots=True, order=True)
class SeriesKey:
    """One stored series: an exchange's symbol in one dataset (and timeframe, '' for datasets
    without one). The filter every read, gap check and coverage record of a series uses."""

    exchange: str
    symbol: str
    dataset: str
    timeframe: str = ""

    @property
    def spec(self) -> MarketDataset:
        return get_market_dataset(self.dataset)

    @property
    def timeframe_or_none(self) -> str | None:
        return self.timeframe or None

    def filters(self) -> dict[str, str | None]:
        """The store's read filters for this series: ``store.read(s.dataset, **s.filters())``."""
        return {
            "exchange": self.exchange,
            "symbol": self.symbol,
            "timeframe": self.timeframe_or_none,
        }

    def __str__(self) -> str:
        tf = f" {self.timeframe}" if self.timeframe else ""
        return f"{self.exchange} {self.symbol} {self.dataset}{tf}"


_BOTH: Final[frozenset[MarketType]] = frozenset({"spot", "swap"})
_SWAPS: Final[frozenset[MarketType]] = frozenset({"swap"})

MARKET_DATASETS: Final[Mapping[str, MarketDataset]] = MappingProxyType(
    {
        d.name: d
        for d in (
            MarketDataset(
                OHLCV,
                asset="ohlcv_{timeframe}",
                universe_flag=None,
                market_types=_BOTH,
                # Monthly for every timeframe: a year of 1m candles is 12 partitions per
                # symbol (12 materializations and check results, not 365: each Dagster event
                # costs ~10 ms), and a month x symbol grid reads better than 1,000 days.
                monthly_from_ms=0,
                resume="step",
                gap_check="grid",
                per_timeframe=True,
                description="closed candles",
                unit="candles",
            ),
            MarketDataset(
                TRADES,
                asset="trades",
                universe_flag="trades",
                market_types=_BOTH,
                monthly_from_ms=None,
                resume="same_ms",
                gap_check="ids",
                description="public trades (taker side)",
                unit="trades",
            ),
            MarketDataset(
                FUNDING_RATES,
                asset="funding_rates",
                universe_flag="funding",
                market_types=_SWAPS,
                monthly_from_ms=0,
                resume="next_ms",
                gap_check=None,
                description="funding rate history of the perpetual swaps",
            ),
            MarketDataset(
                OPEN_INTEREST,
                asset="open_interest",
                universe_flag="open_interest",
                market_types=_SWAPS,
                monthly_from_ms=None,
                resume="step",
                gap_check=None,
                grid=OPEN_INTEREST_PERIOD,
                description="open interest history of the perpetual swaps, every 5 minutes",
                unit="samples",
            ),
        )
    }
)
"""Every market dataset by name (read-only)."""


STREAM_DATASETS: Final[Mapping[str, MarketDataset]] = MappingProxyType(
    {
        d.name: d
        for d in (
            MarketDataset(
                "order_book_snapshots",
                asset="order_book_snapshots",
                universe_flag=None,
                market_types=_BOTH,
                monthly_from_ms=None,
                resume="next_ms",
                gap_check=None,
                description="order book snapshots (top levels of each side), from the stream",
                unit="levels",
            ),
        )
    }
)
"""Market tables only the stream feeds: no REST history to load, so no assets, partitions or
gap checks (the Dagster layer builds those from ``MARKET_DATASETS``), yet written through the
ingestion core's sink like every other source: validated by the model, quarantined, upserted
by the table's key."""


def get_stored_dataset(name: str) -> MarketDataset:
    """A market dataset or a stream-only table: what the sink may write as ``name``."""
    if name in STREAM_DATASETS:
        return STREAM_DATASETS[name]
    return get_market_dataset(name)


def get_market_dataset(name: str) -> MarketDataset:
    """The market dataset called ``name``; a ValueError listing the known ones otherwise."""
    try:
        return MARKET_DATASETS[name]
    except KeyError:
        known = ", ".join(MARKET_DATASETS)
        raise ValueError(f"unknown market dataset {name!r}; known: {known}") from None
