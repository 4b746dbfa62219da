"""The dataset models: every rule is named, catches what it should and nothing else."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.errors as pa_errors
import pytest

from crypto_pipelines.domain.schemas import DATASETS, get_dataset
from crypto_pipelines.domain.validation import (
    DatasetValidationError,
    failure_counts,
    validate_frame,
)

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC, a Monday
MIN = 60_000


def candles(n: int = 5, **overrides: object) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": "BTC/USDT",
            "timeframe": "1m",
            "ts": T0 + np.arange(n, dtype=np.int64) * MIN,
            "open": 100.0,
            "high": 102.0,
            "low": 99.0,
            "close": 101.0,
            "volume": 3.5,
        }
    )
    for column, value in overrides.items():
        frame[column] = value
    return frame


def counts_of(dataset: str, frame: pd.DataFrame) -> dict[str, int]:
    with pytest.raises(DatasetValidationError) as info:
        validate_frame(dataset, frame)
    return info.value.counts


def test_registry_keys_and_columns() -> None:
    assert DATASETS["ohlcv"].key == ("exchange", "symbol", "timeframe", "ts")
    assert DATASETS["trades"].key == ("exchange", "symbol", "trade_id")
    assert DATASETS["funding_rates"].key == ("exchange", "symbol", "ts")
    assert DATASETS["ohlcv"].columns == (
        "exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume",
    )  # fmt: skip
    assert DATASETS["trades"].columns == (
        "exchange", "symbol", "trade_id", "ts", "side", "price", "amount",
    )  # fmt: skip
    assert DATASETS["funding_rates"].columns == ("exchange", "symbol", "ts", "rate")
    assert DATASETS["order_book_snapshots"].columns == (
        "exchange", "symbol", "ts", "side", "level", "price", "amount",
    )  # fmt: skip
    with pytest.raises(ValueError, match="unknown dataset 'candles'; known: ohlcv"):
        get_dataset("candles")


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_check_has_an_explicit_name(name: str) -> None:
    """Asset checks are built per rule name: no rule may fall back to a generated name."""
    ds = DATASETS[name]
    assert ds.rules, name
    assert "unique_key" in ds.rules
    for rule in ds.rules:
        assert rule.isidentifier() and not rule.startswith("_"), rule


def test_valid_candles_pass_with_dtypes_coerced() -> None:
    frame = candles(open=100, volume=np.nan)  # ints become float64; volume may be null
    out = validate_frame("ohlcv", frame)
    assert out["open"].dtype == np.float64
    assert out["ts"].dtype == np.int64
    assert out["volume"].isna().all()


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (lambda f: f.assign(open=-1.0, high=-1.0, low=-1.0, close=-1.0), "price_positive"),
        (lambda f: f.assign(volume=[1.0, -1.0, 1.0, 1.0, 1.0]), "volume_non_negative"),
        (lambda f: f.assign(high=[102.0, 100.5, 102.0, 102.0, 102.0]), "high_ge_open_close"),
        (lambda f: f.assign(low=[99.0, 100.5, 99.0, 99.0, 99.0]), "low_le_open_close"),
        (lambda f: f.assign(timeframe="1x"), "timeframe_valid"),
        (lambda f: f.assign(ts=f["ts"] + 1), "ts_aligned"),
        (lambda f: f.assign(ts=f["ts"] // 1000), "ts_epoch_ms"),
        (lambda f: f.assign(symbol="BTCUSDT"), "symbol_unified"),
        (lambda f: f.assign(exchange="Binance"), "exchange_id"),
    ],
)
def test_each_candle_rule_reports_itself_only(change: object, rule: str) -> None:
    frame = change(candles())  # type: ignore[operator]
    counts = counts_of("ohlcv", frame)
    assert rule in counts
    # ts in seconds is also off the minute grid; everything else is a single-rule mistake.
    assert set(counts) - {"ts_aligned"} == {rule} or set(counts) == {rule}


def test_duplicates_report_every_copy_under_unique_key() -> None:
    frame = pd.concat([candles(3), candles(1)], ignore_index=True)
    assert counts_of("ohlcv", frame) == {"unique_key": 2}


def test_nulls_and_missing_columns_are_named_column_colon_check() -> None:
    frame = candles().drop(columns=["volume"])
    frame.loc[2, "close"] = np.nan
    counts = counts_of("ohlcv", frame)
    assert counts == {"close:not_nullable": 1, "volume:column_in_dataframe": 1}


def test_alignment_of_weeks_and_months() -> None:
    week = candles(2, timeframe="1w", ts=[T0, T0 + 7 * 86_400_000])  # Mondays
    validate_frame("ohlcv", week)
    assert counts_of("ohlcv", week.assign(ts=[T0 + 86_400_000, T0 + 8 * 86_400_000])) == {
        "ts_aligned": 2
    }
    feb_1 = 1_706_745_600_000
    month = candles(2, timeframe="1M", ts=[T0, feb_1])
    validate_frame("ohlcv", month)
    assert counts_of("ohlcv", month.assign(ts=[T0, feb_1 + 86_400_000])) == {"ts_aligned": 1}


def test_error_message_names_dataset_rule_column_and_rows() -> None:
    frame = candles(6)
    frame.loc[4, "low"] = -5.0
    with pytest.raises(DatasetValidationError) as info:
        validate_frame("ohlcv", frame)
    text = str(info.value)
    assert text.startswith("ohlcv: 1 rule(s) failed on 1 of 6 row(s)")
    assert "price_positive in low: 1 row(s) at rows 4" in text
    assert "-5.0" in text  # the offending row is shown
    assert info.value.dataset == "ohlcv"
    assert info.value.counts == {"price_positive": 1}


def test_failure_counts_from_a_raw_schema_errors() -> None:
    """What the asset checks will do with a lazily validated stored frame."""
    frame = candles(4, high=[102.0, 98.0, 102.0, 98.0])
    with pytest.raises(pa_errors.SchemaErrors) as info:
        DATASETS["ohlcv"].schema.validate(frame, lazy=True)
    assert failure_counts("ohlcv", info.value.failure_cases) == {"high_ge_open_close": 2}


def test_trades_rules() -> None:
    trades = pd.DataFrame(
        {
            "exchange": "okx",
            "symbol": "BTC/USDT:USDT",
            "trade_id": ["1", "2", "3"],
            "ts": [T0, T0 + 5, T0 + 5],
            "side": ["buy", "sell", "buy"],
            "price": [1.0, 2.0, 3.0],
            "amount": [0.1, 0.2, 0.3],
        }
    )
    validate_frame("trades", trades)
    bad = trades.assign(side=["buy", "BUY", "sell"], amount=[0.1, 0.0, 0.3])
    assert counts_of("trades", bad) == {"side_buy_sell": 1, "amount_positive": 1}
    assert counts_of("trades", trades.assign(trade_id="1")) == {"unique_key": 3}


def test_funding_rates_need_swaps_and_allow_negative_rates() -> None:
    rates = pd.DataFrame(
        {
            "exchange": "bybit",
            "symbol": "BTC/USDT:USDT",
            "ts": [T0, T0 + 8 * 3_600_000],
            "rate": [-0.0001, 0.0003],
        }
    )
    validate_frame("funding_rates", rates)
    assert counts_of("funding_rates", rates.assign(symbol="BTC/USDT")) == {"symbol_is_swap": 2}


def test_order_book_rules() -> None:
    book = pd.DataFrame(
        {
            "exchange": "bybit",
            "symbol": "XRP/USDT:USDT",
            "ts": T0,
            "side": ["bid", "bid", "ask"],
            "level": [0, 1, 0],
            "price": [0.5, 0.49, 0.51],
            "amount": [10.0, 0.0, 3.0],
        }
    )
    validate_frame("order_book_snapshots", book)
    bad = book.assign(side=["bid", "buy", "ask"], level=[0, -1, 0])
    assert counts_of("order_book_snapshots", bad) == {"side_bid_ask": 1, "level_non_negative": 1}
    assert counts_of("order_book_snapshots", book.assign(level=0, side="bid")) == {"unique_key": 3}
