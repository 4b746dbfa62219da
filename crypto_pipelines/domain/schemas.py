"""The market datasets' columns and rules: one Pandera model per dataset, and the registry.

These models are the single definition of each dataset. The SQL tables
(``crypto_pipelines.storage.schema``) are derived from them, the store validates every
batch against them before writing, and the Dagster asset checks run them lazily on stored
data. Every value rule is a *named* check (``price_positive``, ``high_ge_open_close``,
``unique_key`` ...) so a ``SchemaErrors``' failure cases group into per-rule counts
(``crypto_pipelines.domain.validation.failure_counts``) that map one-to-one onto checks.

Conventions: ``ts`` is int64 epoch milliseconds UTC; ``exchange`` is the ccxt exchange id;
``symbol`` the ccxt unified symbol. Crypto trades 24/7, so there are no sessions or calendars.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from crypto_pipelines.domain import checks

OHLCV_KEY: Final = ("exchange", "symbol", "timeframe", "ts")
TRADES_KEY: Final = ("exchange", "symbol", "trade_id")
FUNDING_RATES_KEY: Final = ("exchange", "symbol", "ts")
OPEN_INTEREST_KEY: Final = ("exchange", "symbol", "ts")
ORDER_BOOK_KEY: Final = ("exchange", "symbol", "ts", "side", "level")
ASSET_KEY: Final = ("code",)
PAIR_KEY: Final = ("exchange", "symbol")
PERP_KEY: Final = ("exchange", "symbol")


class _Market(pa.DataFrameModel):
    """Columns and rules every market dataset shares.

    Each check method is named after its rule as well as passing ``name=``: Pandera drops the
    ``name=`` of checks inherited by a second subclass and falls back to the method name."""

    exchange: Series[str] = pa.Field(description="ccxt exchange id, e.g. binance")
    symbol: Series[str] = pa.Field(description="ccxt unified symbol, e.g. BTC/USDT:USDT")

    @pa.check("exchange", name="exchange_id")
    def exchange_id(cls, series: pd.Series) -> pd.Series:
        return checks.exchange_id(series)

    @pa.check("symbol", name="symbol_unified")
    def symbol_unified(cls, series: pd.Series) -> pd.Series:
        return checks.unified_symbol(series)

    @pa.check("ts", name="ts_epoch_ms")
    def ts_epoch_ms(cls, series: pd.Series) -> pd.Series:
        return checks.ts_epoch_ms(series)

    class Config:
        coerce = True  # ints for prices become float64; a value that cannot is reported


class OHLCV(_Market):
    """Candles. ``ts`` is the candle's open time; ``volume`` is in base units and may be null
    where a source recorded none (never zero-filled: zero is a real, quiet candle)."""

    timeframe: Series[str] = pa.Field(description="ccxt timeframe, e.g. 1m, 1h, 1d")
    ts: Series[np.int64] = pa.Field(description="candle open time, epoch ms UTC")
    open: Series[float]
    high: Series[float]
    low: Series[float]
    close: Series[float]
    volume: Series[float] = pa.Field(nullable=True, description="base volume; null when unknown")

    @pa.check("timeframe", name="timeframe_valid")
    def timeframe_valid(cls, series: pd.Series) -> pd.Series:
        return checks.valid_timeframe(series)

    @pa.check("open", "high", "low", "close", name="price_positive")
    def price_positive(cls, series: pd.Series) -> pd.Series:
        return (series > 0) & (series < np.inf)  # a positive, finite number

    @pa.check("volume", name="volume_non_negative")
    def volume_non_negative(cls, series: pd.Series) -> pd.Series:
        return (series >= 0) & (series < np.inf)

    @pa.dataframe_check(name="high_ge_open_close")
    def high_ge_open_close(cls, df: pd.DataFrame) -> pd.Series:
        # Written as "not below" so a null price fails only its own not_nullable check.
        return ~((df["high"] < df["open"]) | (df["high"] < df["close"]))

    @pa.dataframe_check(name="low_le_open_close")
    def low_le_open_close(cls, df: pd.DataFrame) -> pd.Series:
        return ~((df["low"] > df["open"]) | (df["low"] > df["close"]))

    @pa.dataframe_check(name="ts_aligned")
    def ts_aligned(cls, df: pd.DataFrame) -> pd.Series:
        return checks.ts_aligned(df)

    @pa.dataframe_check(name="unique_key")
    def unique_key(cls, df: pd.DataFrame) -> pd.Series:
        return checks.unique_key(df, OHLCV_KEY)


class Trades(_Market):
    """Public trades. ``side`` is the taker's side; ``amount`` is in base units."""

    trade_id: Series[str] = pa.Field(description="the venue's trade id, as a string")
    ts: Series[np.int64] = pa.Field(description="trade time, epoch ms UTC")
    side: Series[str] = pa.Field(description="taker side: buy or sell")
    price: Series[float]
    amount: Series[float]

    @pa.check("side", name="side_buy_sell")
    def side_buy_sell(cls, series: pd.Series) -> pd.Series:
        return series.isin(("buy", "sell"))

    @pa.check("price", name="price_positive")
    def price_positive(cls, series: pd.Series) -> pd.Series:
        return (series > 0) & (series < np.inf)

    @pa.check("amount", name="amount_positive")
    def amount_positive(cls, series: pd.Series) -> pd.Series:
        return (series > 0) & (series < np.inf)

    @pa.dataframe_check(name="unique_key")
    def unique_key(cls, df: pd.DataFrame) -> pd.Series:
        return checks.unique_key(df, TRADES_KEY)


class FundingRates(_Market):
    """Perpetual-swap funding rates, one row per funding event (``ts`` = funding time)."""

    ts: Series[np.int64] = pa.Field(description="funding time, epoch ms UTC")
    rate: Series[float] = pa.Field(description="rate per funding interval (0.0001 = 0.01%)")

    @pa.check("symbol", name="symbol_is_swap")
    def symbol_is_swap(cls, series: pd.Series) -> pd.Series:
        return checks.unified_symbol(series, swap=True)

    @pa.check("rate", name="rate_finite")
    def rate_finite(cls, series: pd.Series) -> pd.Series:
        return series.abs() < float("inf")

    @pa.check("rate", name="rate_bounded")
    def rate_bounded(cls, series: pd.Series) -> pd.Series:
        # Exchanges cap funding at a few percent per interval; 100% is a corrupt value.
        return ~(series.abs() >= 1.0)

    @pa.dataframe_check(name="unique_key")
    def unique_key(cls, df: pd.DataFrame) -> pd.Series:
        return checks.unique_key(df, FUNDING_RATES_KEY)


class OpenInterest(_Market):
    """Open interest of a perpetual swap, sampled every 5 minutes (``ts`` = sample time).

    ``open_interest`` is in contracts (base units for linear swaps) and
    ``open_interest_value`` in the quote currency; a venue that reports only one of the two
    leaves the other null (Bybit's history has no value)."""

    ts: Series[np.int64] = pa.Field(description="sample time, epoch ms UTC")
    open_interest: Series[float] = pa.Field(nullable=True, description="contracts outstanding")
    open_interest_value: Series[float] = pa.Field(
        nullable=True, description="their value in the quote currency"
    )

    @pa.check("symbol", name="symbol_is_swap")
    def symbol_is_swap(cls, series: pd.Series) -> pd.Series:
        return checks.unified_symbol(series, swap=True)

    @pa.check("open_interest", "open_interest_value", name="open_interest_non_negative")
    def open_interest_non_negative(cls, series: pd.Series) -> pd.Series:
        return ~((series < 0) | (series == np.inf))  # null is allowed

    @pa.dataframe_check(name="some_value")
    def some_value(cls, df: pd.DataFrame) -> pd.Series:
        return df["open_interest"].notna() | df["open_interest_value"].notna()

    @pa.dataframe_check(name="unique_key")
    def unique_key(cls, df: pd.DataFrame) -> pd.Series:
        return checks.unique_key(df, OPEN_INTEREST_KEY)


class OrderBookSnapshots(_Market):
    """Order book snapshots, one row per price level; ``level`` 0 is the best price."""

    ts: Series[np.int64] = pa.Field(description="snapshot time, epoch ms UTC")
    side: Series[str] = pa.Field(description="bid or ask")
    level: Series[np.int64] = pa.Field(description="0 = best bid/ask, then outwards")
    price: Series[float]
    amount: Series[float]

    @pa.check("side", name="side_bid_ask")
    def side_bid_ask(cls, series: pd.Series) -> pd.Series:
        return series.isin(("bid", "ask"))

    @pa.check("level", name="level_non_negative")
    def level_non_negative(cls, series: pd.Series) -> pd.Series:
        return series >= 0

    @pa.check("price", name="price_positive")
    def price_positive(cls, series: pd.Series) -> pd.Series:
        return series > 0

    @pa.check("amount", name="amount_non_negative")
    def amount_non_negative(cls, series: pd.Series) -> pd.Series:
        return series >= 0

    @pa.dataframe_check(name="unique_key")
    def unique_key(cls, df: pd.DataFrame) -> pd.Series:
        return checks.unique_key(df, ORDER_BOOK_KEY)


class CryptoAssets(pa.DataFrameModel):
    """One row per currency code."""

    code: Series[str]

    @pa.check("code", name="currency_code")
    def currency_code(cls, series: pd.Series) -> pd.Series:
        return checks.currency_code(series)

    @pa.dataframe_check(name="unique_key")
    def unique_key(cls, df: pd.DataFrame) -> pd.Series:
        return checks.unique_key(df, ASSET_KEY)

    class Config:
        coerce = True


class _Listing(pa.DataFrameModel):
    """Columns and rules both instrument tables share (method names = rule names, as in
    ``_Market``)."""

    exchange: Series[str]
    symbol: Series[str]
    base: Series[str]
    quote: Series[str]

    @pa.check("exchange", name="exchange_id")
    def exchange_id(cls, series: pd.Series) -> pd.Series:
        return checks.exchange_id(series)

    @pa.check("base", "quote", name="currency_code")
    def currency_code(cls, series: pd.Series) -> pd.Series:
        return checks.currency_code(series)

    @pa.check("price_tick", "amount_step", name="step_positive")
    def step_positive(cls, series: pd.Series) -> pd.Series:
        return series > 0

    @pa.check("min_amount", name="min_amount_non_negative")
    def min_amount_non_negative(cls, series: pd.Series) -> pd.Series:
        return series >= 0

    class Config:
        coerce = True


class CryptoPairs(_Listing):
    """One row per spot market: the fields of ``instruments.CryptoPair``, in order."""

    price_tick: Series[float] = pa.Field(nullable=True)
    amount_step: Series[float] = pa.Field(nullable=True)
    min_amount: Series[float] = pa.Field(nullable=True)
    active: Series[bool]
    listed_ms: Series[pd.Int64Dtype] = pa.Field(nullable=True)
    delisted_ms: Series[pd.Int64Dtype] = pa.Field(nullable=True)

    @pa.check("symbol", name="symbol_is_spot")
    def symbol_is_spot(cls, series: pd.Series) -> pd.Series:
        return checks.unified_symbol(series, swap=False)

    @pa.dataframe_check(name="unique_key")
    def unique_key(cls, df: pd.DataFrame) -> pd.Series:
        return checks.unique_key(df, PAIR_KEY)


class CryptoPerps(_Listing):
    """One row per perpetual swap: the fields of ``instruments.CryptoPerp``, in order."""

    settle: Series[str]
    linear: Series[bool]
    contract_size: Series[float] = pa.Field(nullable=True)
    price_tick: Series[float] = pa.Field(nullable=True)
    amount_step: Series[float] = pa.Field(nullable=True)
    min_amount: Series[float] = pa.Field(nullable=True)
    funding_interval_ms: Series[pd.Int64Dtype] = pa.Field(nullable=True)
    active: Series[bool]
    listed_ms: Series[pd.Int64Dtype] = pa.Field(nullable=True)
    delisted_ms: Series[pd.Int64Dtype] = pa.Field(nullable=True)

    @pa.check("symbol", name="symbol_is_swap")
    def symbol_is_swap(cls, series: pd.Series) -> pd.Series:
        return checks.unified_symbol(series, swap=True)

    @pa.check("settle", name="settle_currency_code")
    def settle_currency_code(cls, series: pd.Series) -> pd.Series:
        return checks.currency_code(series)

    @pa.check("contract_size", name="contract_size_positive")
    def contract_size_positive(cls, series: pd.Series) -> pd.Series:
        return series > 0

    @pa.check("funding_interval_ms", name="funding_interval_positive")
    def funding_interval_positive(cls, series: pd.Series) -> pd.Series:
        return series > 0

    @pa.dataframe_check(name="unique_key")
    def unique_key(cls, df: pd.DataFrame) -> pd.Series:
        return checks.unique_key(df, PERP_KEY)


@dataclass(frozen=True)
class Dataset:
    """A dataset's name (= its SQL table), model, primary key and secondary indexes.

    ``time_column`` is the column range reads filter on, None for reference data."""

    name: str
    model: type[pa.DataFrameModel]
    key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()
    time_column: str | None = "ts"
    schema: pa.DataFrameSchema = field(init=False, repr=False, compare=False)
    columns: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """Column names in model order (the SQL column order too)."""
    rules: frozenset[str] = field(init=False, repr=False, compare=False)
    """Names of the model's value rules (column and dataframe checks)."""

    def __post_init__(self) -> None:
        # Derived once: to_schema() walks the class on each call and shows up in profiles.
        schema = self.model.to_schema()
        rules = {check.name for check in schema.checks}
        for column in schema.columns.values():
            rules.update(check.name for check in column.checks)
        object.__setattr__(self, "schema", schema)
        object.__setattr__(self, "columns", tuple(schema.columns))
        object.__setattr__(self, "rules", frozenset(name for name in rules if name))
        missing = [column for column in self.key if column not in self.columns]
        if missing:
            raise ValueError(f"{self.name}: key columns {missing} are not in {self.model.__name__}")


DATASETS: Final[Mapping[str, Dataset]] = MappingProxyType(
    {
        dataset.name: dataset
        for dataset in (
            Dataset("ohlcv", OHLCV, OHLCV_KEY),
            Dataset("trades", Trades, TRADES_KEY, indexes=(("exchange", "symbol", "ts"),)),
            Dataset("funding_rates", FundingRates, FUNDING_RATES_KEY),
            Dataset("open_interest", OpenInterest, OPEN_INTEREST_KEY),
            Dataset("order_book_snapshots", OrderBookSnapshots, ORDER_BOOK_KEY),
            Dataset("crypto_assets", CryptoAssets, ASSET_KEY, time_column=None),
            Dataset("crypto_pairs", CryptoPairs, PAIR_KEY, time_column=None),
            Dataset("crypto_perps", CryptoPerps, PERP_KEY, time_column=None),
        )
    }
)
"""Every dataset by name (read-only: the tables and migrations are derived from it)."""


def get_dataset(name: str) -> Dataset:
    """The dataset called ``name``; a ValueError listing the known ones otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None
