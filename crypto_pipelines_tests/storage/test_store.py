"""MarketStore on SQLite and PostgreSQL: idempotent, atomic, validated upserts; typed reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from crypto_pipelines.domain.instruments import CryptoAsset, CryptoPair, CryptoPerp
from crypto_pipelines.domain.validation import DatasetValidationError
from crypto_pipelines.storage import MarketStore

T0 = 1_704_067_200_000
MIN = 60_000


def candles(
    n: int = 10, symbol: str = "BTC/USDT", start: int = 0, **overrides: object
) -> pd.DataFrame:
    ts = T0 + (start + np.arange(n, dtype=np.int64)) * MIN
    price = 100.0 + np.arange(n)
    frame = pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": symbol,
            "timeframe": "1m",
            "ts": ts,
            "open": price,
            "high": price + 2,
            "low": price - 1,
            "close": price + 1,
            "volume": np.linspace(0.5, 5, n),
        }
    )
    return frame.assign(**overrides)


@pytest.fixture
def store(engine: Engine) -> MarketStore:
    return MarketStore(engine)


def test_upsert_twice_changes_nothing(store: MarketStore) -> None:
    batch = candles(50)
    assert store.upsert("ohlcv", batch) == 50
    before = store.read("ohlcv")
    assert store.upsert("ohlcv", batch) == 0  # nothing inserted, nothing changed
    pd.testing.assert_frame_equal(store.read("ohlcv"), before)
    assert store.count("ohlcv") == 50


def test_conflicts_update_values(store: MarketStore) -> None:
    store.upsert("ohlcv", candles(10))
    revised = candles(4, start=8).assign(close=[500.0] * 4, high=[600.0] * 4, volume=np.nan)
    assert store.upsert("ohlcv", revised) == 4  # 2 updated + 2 new
    out = store.read("ohlcv")
    assert len(out) == 12
    assert out["close"].tolist()[8:] == [500.0] * 4
    assert out["volume"].isna().tolist() == [False] * 8 + [True] * 4  # NULL, not NaN
    assert out["open"].tolist()[:8] == candles(10)["open"].tolist()[:8]


def test_a_bad_batch_leaves_the_table_unchanged(store: MarketStore) -> None:
    store.upsert("ohlcv", candles(10))
    before = store.read("ohlcv")
    # Rejected by validation: nothing of the good rows is written either.
    bad = candles(20, start=5)
    bad.loc[15, "low"] = -1.0
    with pytest.raises(DatasetValidationError):
        store.upsert("ohlcv", bad)
    pd.testing.assert_frame_equal(store.read("ohlcv"), before)
    # Rejected by the database half-way through (validation skipped): rolled back too.
    broken = candles(120_000, start=5).astype({"close": object})
    broken.loc[110_000, "close"] = None
    with pytest.raises(Exception, match="(?i)not null|null value"):
        store.upsert("ohlcv", broken, validate=False)
    pd.testing.assert_frame_equal(store.read("ohlcv"), before)


def test_validation_error_names_dataset_rule_column_and_row(store: MarketStore) -> None:
    bad = candles(5)
    bad.loc[3, "volume"] = -2.0
    with pytest.raises(DatasetValidationError) as info:
        store.upsert("ohlcv", bad)
    message = str(info.value)
    assert message.startswith("ohlcv: ")
    assert "volume_non_negative in volume: 1 row(s) at rows 3" in message
    with pytest.raises(DatasetValidationError, match="close:not_nullable"):
        store.upsert("ohlcv", candles(3).assign(close=np.nan))
    with pytest.raises(ValueError, match="unknown dataset 'candles'"):
        store.upsert("candles", candles(1))
    assert store.count("ohlcv") == 0


def test_read_filters_sorting_and_dtypes(store: MarketStore) -> None:
    store.upsert("ohlcv", pd.concat([candles(10, "ETH/USDT"), candles(10, "BTC/USDT")]))
    store.upsert("ohlcv", candles(5).assign(timeframe="5m", ts=T0 + np.arange(5) * 5 * MIN))
    out = store.read(
        "ohlcv",
        exchange="binance",
        symbol="BTC/USDT",
        timeframe="1m",
        start_ts=T0 + 2 * MIN,
        end_ts=T0 + 6 * MIN,
    )
    assert out["ts"].tolist() == [T0 + i * MIN for i in range(2, 6)]  # end is exclusive
    assert out.dtypes.astype(str).to_dict() == {
        "exchange": "str", "symbol": "str", "timeframe": "str", "ts": "int64",
        "open": "float64", "high": "float64", "low": "float64", "close": "float64", "volume": "float64",
    }  # fmt: skip
    everything = store.read("ohlcv")
    assert len(everything) == 25
    keys = list(zip(everything["symbol"], everything["timeframe"], everything["ts"], strict=True))
    assert keys == sorted(keys)  # sorted by key
    assert store.read("ohlcv", symbol="DOGE/USDT").empty
    assert store.read("ohlcv", symbol="DOGE/USDT").dtypes["ts"] == np.int64
    with pytest.raises(ValueError, match="trades has no 'timeframe' column"):
        store.read("trades", timeframe="1m")


def test_latest_count_and_timestamps(store: MarketStore) -> None:
    series = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m"}
    assert store.latest_ts("ohlcv", **series) is None
    gappy = candles(10).drop(index=[3, 4])
    store.upsert("ohlcv", gappy)
    store.upsert("ohlcv", candles(3, "ETH/USDT", start=100))
    assert store.latest_ts("ohlcv", **series) == T0 + 9 * MIN
    assert store.latest_ts("ohlcv", **series, start_ts=T0, end_ts=T0 + 5 * MIN) == T0 + 2 * MIN
    assert store.latest_ts("ohlcv", **series, start_ts=T0 + 3 * MIN, end_ts=T0 + 5 * MIN) is None
    assert store.count("ohlcv", **series) == 8
    assert store.count("ohlcv", start_ts=T0 + 9 * MIN) == 4
    assert store.timestamps("ohlcv", **series) == gappy["ts"].tolist()
    assert store.timestamps("ohlcv", **series, start_ts=T0 + 5 * MIN, end_ts=T0 + 7 * MIN) == [
        T0 + 5 * MIN,
        T0 + 6 * MIN,
    ]


def test_trades_and_funding_rates_round_trip(store: MarketStore) -> None:
    trades = pd.DataFrame(
        {
            "exchange": "binance", "symbol": "XRP/ETH", "trade_id": ["10", "11", "9"],
            "ts": [T0 + 5, T0 + 7, T0 + 1], "side": ["buy", "sell", "sell"],
            "price": [0.0013, 0.0014, 0.0012], "amount": [10.0, 5.5, 1.0],
        }
    )  # fmt: skip
    assert store.upsert("trades", trades) == 3
    out = store.read("trades", exchange="binance", symbol="XRP/ETH", start_ts=T0, end_ts=T0 + 6)
    assert out["trade_id"].tolist() == ["10", "9"]  # key order: trade_id is a string
    assert store.latest_ts("trades", exchange="binance", symbol="XRP/ETH") == T0 + 7
    rates = pd.DataFrame(
        {
            "exchange": "bybit",
            "symbol": "BTC/USDT:USDT",
            "ts": [T0, T0 + 28_800_000],
            "rate": [0.0001, -0.00025],
        }
    )
    store.upsert("funding_rates", rates)
    pd.testing.assert_frame_equal(
        store.read("funding_rates"), rates.astype({"exchange": "str", "symbol": "str"})
    )


def test_instruments_upsert_and_read(store: MarketStore) -> None:
    pair = CryptoPair(
        exchange="okx",
        symbol="BTC/USDT",
        base="BTC",
        quote="USDT",
        price_tick=0.1,
        amount_step=1e-8,
        min_amount=1e-5,
        listed_ms=1509836520000,
    )
    perp = CryptoPerp(
        exchange="bybit",
        symbol="BTC/USD:BTC",
        base="BTC",
        quote="USD",
        settle="BTC",
        linear=False,
        contract_size=1.0,
        funding_interval_ms=28_800_000,
    )
    written = store.upsert_instruments(assets=[CryptoAsset("ETH")], pairs=[pair], perps=[perp])
    assert written == {"crypto_assets": 4, "crypto_pairs": 1, "crypto_perps": 1}
    assert store.read("crypto_assets")["code"].tolist() == ["BTC", "ETH", "USD", "USDT"]
    pairs = store.read("crypto_pairs", exchange="okx")
    assert pairs.to_dict("records") == [
        {"exchange": "okx", "symbol": "BTC/USDT", "base": "BTC", "quote": "USDT", "price_tick": 0.1,
         "amount_step": 1e-8, "min_amount": 1e-5, "active": True, "listed_ms": 1509836520000, "delisted_ms": None}
    ]  # fmt: skip
    perps = store.read("crypto_perps")
    assert perps.dtypes[["linear", "active", "funding_interval_ms"]].astype(str).tolist() == [
        "bool",
        "bool",
        "Int64",
    ]
    assert bool(perps.loc[0, "linear"]) is False and pd.isna(perps.loc[0, "price_tick"])
    delisted = CryptoPerp(
        exchange="bybit",
        symbol="BTC/USD:BTC",
        base="BTC",
        quote="USD",
        settle="BTC",
        linear=False,
        contract_size=1.0,
        funding_interval_ms=28_800_000,
        active=False,
    )
    assert store.upsert_instruments(perps=[delisted]) == {
        "crypto_assets": 0,
        "crypto_pairs": 0,
        "crypto_perps": 1,
    }
    assert store.read("crypto_perps")["active"].tolist() == [False]


def test_empty_batches_are_no_ops(store: MarketStore) -> None:
    assert store.upsert("ohlcv", candles(0)) == 0
    assert store.upsert_instruments() == {"crypto_assets": 0, "crypto_pairs": 0, "crypto_perps": 0}
    assert store.count("ohlcv") == 0
