"""The sink: valid rows stored exactly, invalid ones quarantined with their rules, a later
valid row resolving them, coverage written with the rows, and a malformed batch refused
whole with nothing written; on SQLite and PostgreSQL."""

from __future__ import annotations

import pandas as pd
import pytest

from crypto_pipelines.domain.datasets import SeriesKey
from crypto_pipelines.domain.validation import DatasetValidationError
from crypto_pipelines.ingest import Sink, key_text
from crypto_pipelines.storage.coverage import covered, uncovered
from crypto_pipelines.storage.rejections import rejections
from crypto_pipelines.storage.store import MarketStore

T0 = 1_704_067_200_000
M = 60_000
SERIES = SeriesKey("binance", "BTC/USDT", "ohlcv", "1m")


def candles(n: int, **changes: dict[int, float]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": "BTC/USDT",
            "timeframe": "1m",
            "ts": [T0 + i * M for i in range(n)],
            "open": 100.0,
            "high": 101.0,
            "low": 99.0,
            "close": 100.5,
            "volume": 2.0,
        }
    )
    for column, rows in changes.items():
        for row, value in rows.items():
            frame.loc[row, column] = value
    return frame


def test_invalid_rows_are_quarantined_and_valid_rows_stored(db_url: str) -> None:
    bad = candles(10, high={3: 98.0}, volume={7: -1.0})  # high < low; negative volume
    with MarketStore.open(db_url) as store:
        sink = Sink(store, source="rest")
        report = sink.write("ohlcv", bad, series=SERIES, coverage=(T0, T0 + 10 * M), now_ms=5)
        stored = store.read("ohlcv", exchange="binance", symbol="BTC/USDT", timeframe="1m")
        quarantined = rejections(store.engine, series=SERIES)
        cover = covered(store.engine, SERIES)
    assert (report.fetched, report.written, report.rejected, report.unchanged) == (10, 8, 2, 0)
    assert stored["ts"].tolist() == [T0 + i * M for i in range(10) if i not in (3, 7)]
    assert [(r.ts, r.rules, r.source, r.received_at) for r in quarantined] == [
        (T0 + 3 * M, ("high_ge_open_close",), "rest", 5),
        (T0 + 7 * M, ("volume_non_negative",), "rest", 5),
    ]
    assert quarantined[0].raw["high"] == 98.0 and quarantined[0].key == str(T0 + 3 * M)
    assert cover == [(T0, T0 + 10 * M)]


def test_a_later_valid_row_resolves_the_rejection_and_a_bad_one_reopens_it(db_url: str) -> None:
    with MarketStore.open(db_url) as store:
        sink = Sink(store, source="rest")
        sink.write("ohlcv", candles(5, low={2: 200.0}), series=SERIES, now_ms=1)
        fixed = sink.write("ohlcv", candles(5), now_ms=2)  # series found from the rows
        assert fixed.resolved == 1 and fixed.written == 1 and fixed.unchanged == 4
        assert rejections(store.engine, series=SERIES) == []
        [resolved] = rejections(store.engine, series=SERIES, open_only=False)
        assert resolved.resolved_at == 2 and resolved.rules == ("low_le_open_close",)
        again = Sink(store, source="stream").write("ohlcv", candles(5, low={2: 200.0}), now_ms=3)
        [reopened] = rejections(store.engine, series=SERIES)
    assert again.rejected == 1
    assert (reopened.source, reopened.received_at, reopened.resolved_at) == ("stream", 3, None)


def test_duplicate_keys_in_a_batch_keep_the_last_row(db_url: str) -> None:
    frame = pd.concat([candles(3), candles(3, close={1: 100.75})], ignore_index=True)
    with MarketStore.open(db_url) as store:
        report = Sink(store, source="stream").write("ohlcv", frame)
        stored = store.read("ohlcv")
    assert (report.duplicates, report.rejected, report.written) == (3, 0, 3)
    assert stored["close"].tolist() == [100.5, 100.75, 100.5]


def test_a_malformed_batch_is_refused_whole_and_nothing_is_written(db_url: str) -> None:
    with MarketStore.open(db_url) as store:
        sink = Sink(store, source="api")
        sink.write("ohlcv", candles(3), series=SERIES, coverage=(T0, T0 + 3 * M))
        with pytest.raises(DatasetValidationError, match="volume"):
            sink.write("ohlcv", candles(5).drop(columns=["volume"]), series=SERIES)
        assert store.count("ohlcv") == 3
        assert rejections(store.engine) == []


def test_coverage_merges_and_reports_what_is_left(db_url: str) -> None:
    with MarketStore.open(db_url) as store:
        sink = Sink(store, source="rest")
        empty = candles(0)
        for span in [(T0, T0 + 5 * M), (T0 + 9 * M, T0 + 12 * M), (T0 + 5 * M, T0 + 7 * M)]:
            sink.write("ohlcv", empty, series=SERIES, coverage=span)
        cover = covered(store.engine, SERIES)
    assert cover == [(T0, T0 + 7 * M), (T0 + 9 * M, T0 + 12 * M)]
    assert uncovered((T0 - M, T0 + 20 * M), cover) == [
        (T0 - M, T0),
        (T0 + 7 * M, T0 + 9 * M),
        (T0 + 12 * M, T0 + 20 * M),
    ]


def test_trade_keys_and_funding_rules() -> None:
    assert key_text([1704067200000.0]) == "1704067200000"
    assert key_text(["0042"]) == "0042"
    assert key_text([float("nan")]) == ""


def test_every_dataset_quarantines(db_url: str) -> None:
    trades = pd.DataFrame(
        {
            "exchange": "okx",
            "symbol": "BTC/USDT",
            "trade_id": ["1", "2", "3"],
            "ts": [T0, T0 + 1, T0 + 2],
            "side": ["buy", "sell", "hold"],
            "price": [1.0, -1.0, 1.0],
            "amount": [1.0, 1.0, 1.0],
        }
    )
    funding = pd.DataFrame(
        {
            "exchange": "okx",
            "symbol": "BTC/USDT:USDT",
            "ts": [T0, T0 + 8 * 60 * M],
            "rate": [1e-4, 3.5],
        }
    )
    interest = pd.DataFrame(
        {
            "exchange": "okx",
            "symbol": "BTC/USDT:USDT",
            "ts": [T0, T0 + 5 * M, T0 + 10 * M],
            "open_interest": [10.0, -1.0, None],
            "open_interest_value": [1e6, 1e6, None],
        }
    )
    with MarketStore.open(db_url) as store:
        sink = Sink(store, source="rest")
        reports = [
            sink.write(name, frame)
            for name, frame in (
                ("trades", trades),
                ("funding_rates", funding),
                ("open_interest", interest),
            )
        ]
        rules = {(r.series.dataset, r.key): r.rules for r in rejections(store.engine)}
        counts = [store.count(name) for name in ("trades", "funding_rates", "open_interest")]
    assert [r.rejected for r in reports] == [2, 1, 2]
    assert counts == [1, 1, 1]
    assert rules == {
        ("trades", "2"): ("price_positive",),
        ("trades", "3"): ("side_buy_sell",),
        ("funding_rates", str(T0 + 8 * 60 * M)): ("rate_bounded",),
        ("open_interest", str(T0 + 5 * M)): ("open_interest_non_negative",),
        ("open_interest", str(T0 + 10 * M)): ("some_value",),
    }


def _sources(store: MarketStore) -> dict[int, str | None]:
    import sqlalchemy as sa

    from crypto_pipelines.storage.schema import table_for

    table = table_for("ohlcv")
    with store.engine.connect() as connection:
        rows = connection.execute(sa.select(table.c.ts, table.c.source).order_by(table.c.ts))
        return {int(ts): source for ts, source in rows}


def test_each_row_records_the_source_that_wrote_its_values(db_url: str) -> None:
    """Provenance: an unchanged re-send by another source keeps the first writer (and counts
    as unchanged); a changed value takes the new source. Reads return the model's columns."""
    with MarketStore.open(db_url) as store:
        Sink(store, source="rest").write("ohlcv", candles(3), now_ms=1)
        again = Sink(store, source="api:desk").write("ohlcv", candles(3, close={1: 100.7}))
        assert (again.written, again.unchanged) == (1, 2)
        assert _sources(store) == {T0: "rest", T0 + M: "api:desk", T0 + 2 * M: "rest"}
        store.upsert("ohlcv", candles(4))  # a direct write names no source; T0 + M reverted
        assert _sources(store) == {T0: "rest", T0 + M: None, T0 + 2 * M: "rest", T0 + 3 * M: None}
        stored = store.read("ohlcv", exchange="binance")
    assert "source" not in stored.columns
