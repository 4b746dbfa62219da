"""The SQL screen of the schema audit: every row the pandas audit fails, the screen flags
(on SQLite and PostgreSQL), clean windows stay clean with their row counts, and every rule
of the partitioned datasets has SQL."""

from __future__ import annotations

import math
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crypto_pipelines.domain.audit import audit_frame
from crypto_pipelines.domain.datasets import MARKET_DATASETS
from crypto_pipelines.domain.schemas import get_dataset
from crypto_pipelines.storage import MarketStore
from crypto_pipelines.storage.schema import table_for
from crypto_pipelines.storage.screen import WindowScreen, screen_windows, unscreened_rules

T0 = 1_704_067_200_000  # 2024-01-01
DAY = 86_400_000
MIN = 60_000
FAR = T0 + 400 * DAY  # an open bound no test row reaches


def _candle(i: int, **values: Any) -> dict[str, Any]:
    price = 100.0 + i % 10
    row = {
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "timeframe": "1m",
        "ts": T0 + i * MIN,
        "open": price,
        "high": price + 2,
        "low": price - 1,
        "close": price + 1,
        "volume": 1.5,
    }
    return {**row, **values}


def _trade(i: int, **values: Any) -> dict[str, Any]:
    row = {
        "exchange": "okx",
        "symbol": "BTC/USDT",
        "trade_id": str(1000 + i),
        "ts": T0 + i * 1000,
        "side": "buy",
        "price": 100.0,
        "amount": 0.5,
    }
    return {**row, **values}


def _funding(i: int, **values: Any) -> dict[str, Any]:
    row = {"exchange": "binance", "symbol": "BTC/USDT:USDT", "ts": T0 + i * 8 * 3_600_000}
    return {**row, "rate": 0.0001, **values}


def _open_interest(i: int, **values: Any) -> dict[str, Any]:
    row = {"exchange": "binance", "symbol": "BTC/USDT:USDT", "ts": T0 + i * 300_000}
    return {**row, "open_interest": 10.0, "open_interest_value": 1e6, **values}


MAKERS = {
    "ohlcv": _candle,
    "trades": _trade,
    "funding_rates": _funding,
    "open_interest": _open_interest,
}

# (dataset, the bad row's overrides, databases it can be stored in)
BAD_ROWS = [
    ("ohlcv", {"open": -1.0}, ("sqlite", "postgresql")),
    ("ohlcv", {"high": math.inf}, ("sqlite", "postgresql")),
    ("ohlcv", {"high": 90.0}, ("sqlite", "postgresql")),
    ("ohlcv", {"low": 200.0}, ("sqlite", "postgresql")),
    ("ohlcv", {"volume": -0.5}, ("sqlite", "postgresql")),
    ("ohlcv", {"ts": T0 + 7 * MIN + 1}, ("sqlite", "postgresql")),
    # SQLite keeps text in a REAL or INTEGER column
    ("ohlcv", {"close": "abc"}, ("sqlite",)),
    ("ohlcv", {"volume": "abc"}, ("sqlite",)),
    ("ohlcv", {"open": b"\x00"}, ("sqlite",)),
    ("trades", {"price": "abc"}, ("sqlite",)),
    ("trades", {"amount": "1e3x"}, ("sqlite",)),
    ("trades", {"side": 1}, ("sqlite",)),
    ("funding_rates", {"rate": "abc"}, ("sqlite",)),
    ("open_interest", {"open_interest": "abc"}, ("sqlite",)),
    ("open_interest", {"open_interest_value": "abc"}, ("sqlite",)),
    ("ohlcv", {"ts": T0 + 7 * MIN + 0.5}, ("sqlite",)),
    ("ohlcv", {"close": math.nan}, ("postgresql",)),  # SQLite stores NaN as NULL
    ("trades", {"price": 0.0}, ("sqlite", "postgresql")),
    ("trades", {"amount": -1.0}, ("sqlite", "postgresql")),
    ("trades", {"side": "long"}, ("sqlite", "postgresql")),
    ("trades", {"trade_id": "01003"}, ("sqlite", "postgresql")),  # the day's first id twice
    ("trades", {"trade_id": "1003.0"}, ("sqlite", "postgresql")),
    ("funding_rates", {"rate": 2.0}, ("sqlite", "postgresql")),
    ("funding_rates", {"rate": -math.inf}, ("sqlite", "postgresql")),
    (
        "open_interest",
        {"open_interest": None, "open_interest_value": None},
        ("sqlite", "postgresql"),
    ),
    ("open_interest", {"open_interest": -3.0}, ("sqlite", "postgresql")),
]


def _insert(engine: Engine, dataset: str, rows: list[dict[str, Any]]) -> None:
    """Rows as another tool would write them: straight SQL, no validation (into tables the
    store created; the NOT NULL constraints stay, so nulls are not among the cases)."""
    MarketStore(engine)
    table = table_for(dataset)
    with engine.begin() as connection:
        for row in rows:
            columns = ", ".join(row)
            marks = ", ".join(f":{name}" for name in row)
            connection.execute(
                sa.text(f"INSERT INTO {table.name} ({columns}) VALUES ({marks})"), row
            )


def _screen(engine: Engine, dataset: str, windows: list[tuple[int, int]], bound: int = FAR):
    row = MAKERS[dataset](0)
    return screen_windows(
        engine,
        dataset,
        exchange=row["exchange"],
        symbol=row["symbol"],
        timeframe=row.get("timeframe"),
        windows=windows,
        open_bound=bound,
    )


def _audit(store: MarketStore, dataset: str, window: tuple[int, int], bound: int = FAR):
    row = MAKERS[dataset](0)
    raw = store.read(
        dataset,
        exchange=row["exchange"],
        symbol=row["symbol"],
        timeframe=row.get("timeframe"),
        start_ts=window[0],
        end_ts=window[1],
        typed=False,
    )
    return audit_frame(dataset, raw, window=(window[0], min(window[1], bound)))


@pytest.mark.parametrize("dataset", sorted(MARKET_DATASETS))
def test_every_rule_of_a_partitioned_dataset_has_sql(dataset: str) -> None:
    if dataset == "order_book_snapshots":
        assert MARKET_DATASETS[dataset] is not None  # no partitioned asset: never screened
        return
    assert unscreened_rules(dataset) == []


@pytest.mark.parametrize("dataset", sorted(MAKERS))
def test_a_row_the_audit_fails_is_flagged(engine: Engine, dataset: str) -> None:
    """Each bad row of the dataset that this database can hold, on a day of its own beside
    good rows: the audit fails that day, and the screen (one scan of all days) flags it."""
    cases = [bad for name, bad, dbs in BAD_ROWS if name == dataset and engine.dialect.name in dbs]
    assert cases
    store = MarketStore(engine)
    make = MAKERS[dataset]
    per_day = {"ohlcv": 1440, "trades": 86_400, "funding_rates": 3, "open_interest": 288}[dataset]
    days = [(T0 + d * DAY, T0 + (d + 1) * DAY) for d in range(len(cases) + 1)]
    rows = []
    for day, bad in enumerate(cases, start=1):
        first = day * per_day
        rows += [make(first + i) for i in range(2)] + [make(first + 2, **_on_day(bad, day))]
    _insert(engine, dataset, [make(i) for i in range(3)] + rows)
    screened = _screen(engine, dataset, days)
    assert screened[0] == WindowScreen(*days[0], 3, True)
    for day, bad in enumerate(cases, start=1):
        assert not _audit(store, dataset, days[day]).passed, bad  # the case breaks a rule
        assert screened[day].rows == 3 and not screened[day].clean, bad


def _on_day(bad: dict[str, Any], day: int) -> dict[str, Any]:
    """A case's overrides moved to its day (a ts given relative to day 0, a trade id that
    repeats one of that day's ids)."""
    out = dict(bad)
    if isinstance(out.get("ts"), int | float):
        out["ts"] = out["ts"] + day * DAY
    if "trade_id" in out:
        out["trade_id"] = out["trade_id"].replace("1003", str(1000 + day * 86_400))
    return out


@pytest.mark.parametrize("dataset", sorted(MAKERS))
def test_clean_windows_are_counted(engine: Engine, dataset: str) -> None:
    store = MarketStore(engine)
    make = MAKERS[dataset]
    _insert(engine, dataset, [make(i) for i in range(6)])
    window = (T0, T0 + 3 * DAY)
    assert _audit(store, dataset, window).passed
    assert _screen(engine, dataset, [window]) == [WindowScreen(T0, T0 + 3 * DAY, 6, True)]


def test_days_are_bucketed_in_one_scan_and_only_the_bad_day_is_flagged(engine: Engine) -> None:
    days = [(T0 + d * DAY, T0 + (d + 1) * DAY) for d in range(3)]
    per_day = 1440
    rows = [_candle(i) for i in range(per_day)] + [_candle(2 * per_day + i) for i in range(10)]
    rows[-1]["volume"] = -1.0
    _insert(engine, "ohlcv", rows)
    screened = _screen(engine, "ohlcv", days)
    assert [(s.rows, s.clean) for s in screened] == [(per_day, True), (0, True), (10, False)]


def test_months_and_the_open_bound(engine: Engine) -> None:
    feb = 1_706_745_600_000  # 2024-02-01
    mar = 1_709_251_200_000
    _insert(engine, "ohlcv", [_candle(i) for i in range(3)])
    _insert(engine, "ohlcv", [_candle(0, ts=feb + i * MIN) for i in range(4)])
    windows = [(T0, feb), (feb, mar)]
    screened = _screen(engine, "ohlcv", windows)
    assert [(s.rows, s.clean) for s in screened] == [(3, True), (4, True)]
    # candles at or after the open bound (not closed yet) belong to no complete partition
    screened = _screen(engine, "ohlcv", windows, bound=feb + 2 * MIN)
    assert [(s.rows, s.clean) for s in screened] == [(3, True), (4, False)]
    assert not _audit(MarketStore(engine), "ohlcv", windows[1], bound=feb + 2 * MIN).passed


def test_a_bad_filter_value_flags_every_window_with_rows(engine: Engine) -> None:
    _insert(engine, "ohlcv", [_candle(i, symbol="BTCUSDT") for i in range(3)])
    screened = screen_windows(
        engine,
        "ohlcv",
        exchange="binance",
        symbol="BTCUSDT",
        timeframe="1m",
        windows=[(T0, T0 + DAY), (T0 + DAY, T0 + 2 * DAY)],
        open_bound=FAR,
    )
    assert [(s.rows, s.clean) for s in screened] == [(3, False), (0, True)]


def test_calendar_month_candles_are_not_screened(engine: Engine) -> None:
    assert (
        screen_windows(
            engine,
            "ohlcv",
            exchange="binance",
            symbol="BTC/USDT",
            timeframe="1M",
            windows=[(T0, T0 + 31 * DAY)],
            open_bound=FAR,
        )
        is None
    )
    assert get_dataset("ohlcv").rules  # the audit in pandas judges them instead
