"""Audits of stored rows: each rule counted once per failing row, types checked before the
value rules, the window and trade-id rules, and JSON-ready summaries."""

from __future__ import annotations

import json

import pandas as pd

from crypto_pipelines.domain.audit import (
    audit_frame,
    canonical_trade_ids,
    open_bound,
    summarize,
)

T0 = 1_704_067_200_000  # 2024-01-01
DAY = 86_400_000
OHLCV_COLUMNS = ["exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"]
TRADE_COLUMNS = ["exchange", "symbol", "trade_id", "ts", "side", "price", "amount"]


def candles(n: int = 10) -> list[list[object]]:
    return [
        ["binance", "BTC/USDT", "1m", T0 + i * 60_000, 10.0, 12.0, 9.0, 11.0, 1.0] for i in range(n)
    ]


def frame(rows: list[list[object]], columns: list[str] = OHLCV_COLUMNS) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns, dtype=object)


def test_valid_rows_pass() -> None:
    audit = audit_frame("ohlcv", frame(candles()), window=(T0, T0 + DAY))
    assert audit.passed and audit.counts == {} and audit.rows_checked == 10
    assert audit.failing.empty


def test_each_corruption_under_its_rule_once() -> None:
    rows = candles()
    rows[1][5] = 8.0  # high below low (and below open/close): one rule
    rows[2][8] = -1.0  # negative volume
    rows[3][3] += 30_000  # misaligned
    rows[4][7] = "abc"  # text in a price column: reported as a type, not as a value
    rows[5][4] = 0.0  # a zero open: not positive, and below the low (two rules, one row)
    rows[6][8] = None  # volume may be null
    audit = audit_frame("ohlcv", frame(rows), window=(T0, T0 + DAY))
    assert audit.counts == {
        "close:dtype": 1,
        "high_ge_open_close": 1,
        "low_le_open_close": 1,
        "price_positive": 1,
        "ts_aligned": 1,
        "volume_non_negative": 1,
    }
    assert audit.rows_failed == 5
    rules = dict(zip(audit.failing["ts"], audit.failing["rules"], strict=True))
    assert rules == {
        T0 + 60_000: ["high_ge_open_close"],
        T0 + 120_000: ["volume_non_negative"],
        T0 + 210_000: ["ts_aligned"],
        T0 + 240_000: ["close:dtype"],
        T0 + 300_000: ["low_le_open_close", "price_positive"],
    }
    assert audit.failing.loc[audit.failing["ts"] == T0 + 240_000, "close"].item() == "abc"


def test_inside_partition_and_open_candles() -> None:
    rows = candles(3)
    rows[0][3] = T0 - 60_000
    now = T0 + 120_000 + 30_000  # the candle at T0 + 120 s is still open
    end = open_bound("ohlcv", now, "1m")
    audit = audit_frame("ohlcv", frame(rows), window=(T0, min(T0 + DAY, end)))
    assert audit.counts == {"inside_partition": 2}
    assert sorted(audit.failing["ts"]) == [T0 - 60_000, T0 + 120_000]
    assert open_bound("trades", now) == now + 1


def test_duplicate_keys_fail_on_every_copy() -> None:
    rows = candles(3)
    audit = audit_frame("ohlcv", frame([*rows, list(rows[1])]))
    assert audit.counts == {"unique_key": 2}


def test_trade_ids_spelled_twice_but_not_identical_content() -> None:
    base = ["okx", "BTC/USDT"]
    rows = [
        [*base, "123", T0, "buy", 1.0, 2.0],
        [*base, "0123", T0, "buy", 1.0, 2.0],  # the same trade, zero-padded
        [*base, "124", T0, "buy", 1.0, 2.0],  # same content, another trade: legitimate
        [*base, "125.0", T0, "sell", 1.0, 2.0],  # a float round trip
        [*base, "125", T0, "sell", 1.0, 2.0],
        [*base, "AbC-1", T0, "sell", 1.0, 2.0],
        [*base, "abc-1", T0, "sell", 1.0, 2.0],
    ]
    audit = audit_frame("trades", frame(rows, TRADE_COLUMNS))
    assert audit.counts == {"unique_trade_id": 6}
    assert "124" not in set(audit.failing["trade_id"])
    ids = pd.Series(["007", "0", "00", "12.00", " X1 ", "1e5"])
    assert canonical_trade_ids(ids).tolist() == ["7", "0", "0", "12", "x1", "1e5"]


def test_summary_is_json_ready_and_totals_units() -> None:
    bad = candles(3)
    bad[0][8] = -2.0
    bad[1][4] = float("nan")
    first = audit_frame("ohlcv", frame(bad), label="2024-01-01|BTC/USDT")
    second = audit_frame("ohlcv", frame(candles(4)), label="2024-01-02|BTC/USDT")
    summary = summarize([first, second])
    json.dumps(summary)
    assert summary["rows_checked"] == 7 and summary["units_checked"] == 2
    assert summary["failures_by_rule"] == {"open:not_nullable": 1, "volume_non_negative": 1}
    assert set(summary["failures_by_partition"]) == {"2024-01-01|BTC/USDT"}
    assert [row["partition"] for row in summary["sample"]] == ["2024-01-01|BTC/USDT"] * 2
    assert summary["sample"][1]["open"] is None


def test_reference_tables() -> None:
    pairs = pd.DataFrame(
        [
            ["binance", "BTC/USDT", "BTC", "USDT", 0.01, 0.001, 0.0, True, None, None],
            ["binance", "ETH/USDT", "ETH", "USDT", -1.0, 0.001, 0.0, True, None, None],
        ],
        columns=[
            "exchange",
            "symbol",
            "base",
            "quote",
            "price_tick",
            "amount_step",
            "min_amount",
            "active",
            "listed_ms",
            "delisted_ms",
        ],
        dtype=object,
    )
    audit = audit_frame("crypto_pairs", pairs, label="crypto_pairs")
    assert audit.counts == {"step_positive": 1}
    assert audit.failing["symbol"].tolist() == ["ETH/USDT"]
