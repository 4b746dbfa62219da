"""The recorder's checks on exchange answers and its number formatting, on hand-written
ccxt-shaped data: the answers a healthy replay exchange never gives (duplicates, misaligned or
out-of-window candles, unsorted books) still have to be refused by name."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from crypto_pipelines.replay.record_support import (
    DECIMAL_PLACES,
    TICK_SIZE,
    BadAnswer,
    ReverseSpool,
    Staging,
    book_snapshot,
    candle_rows,
    decimal_text,
    funding_rows,
    precision_text,
    trade_rows,
)
from crypto_pipelines.replay.tape.series import Trade

M = 60_000


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1482.0, "1482"),
        (0.09946999, "0.09946999"),
        (1e-08, "0.00000001"),
        (1.5e-07, "0.00000015"),
        (1e20, "100000000000000000000"),
        (73271.63, "73271.63"),
        (-0.0, "0"),
        (-0.00012, "-0.00012"),
        (3, "3"),
        ("1.50", "1.5"),
        (Decimal("2E+3"), "2000"),
    ],
)
def test_decimal_text_is_shortest_round_trip_without_exponent(value: object, text: str) -> None:
    assert decimal_text(value) == text
    if isinstance(value, float):
        assert float(text) == value  # round-trips


@pytest.mark.parametrize("value", [None, float("nan"), float("inf"), True, "abc", [1]])
def test_decimal_text_refuses_non_numbers(value: object) -> None:
    with pytest.raises(BadAnswer):
        decimal_text(value)


def test_precision_modes() -> None:
    assert precision_text(0.01, TICK_SIZE) == "0.01"
    assert precision_text(1e-05, TICK_SIZE) == "0.00001"
    assert precision_text(8, DECIMAL_PLACES) == "0.00000001"
    assert precision_text(0, DECIMAL_PLACES) == "1"
    assert precision_text(None, TICK_SIZE) is None
    with pytest.raises(BadAnswer, match="significant digits"):
        precision_text(3, 3)


def candle(ts: int, volume: object = 1.5) -> list[object]:
    return [ts, 1.0, 2.0, 0.5, 1.25, volume]


def test_candle_rows_accepts_gaps_and_unknown_volume() -> None:
    rows = candle_rows(
        [candle(0), candle(2 * M, None), candle(5 * M, float("nan"))], 0, 10 * M, M, 0, None
    )
    assert [(c.ts, c.close, c.volume) for c in rows] == [
        (0, "1.25", "1.5"),
        (2 * M, "1.25", "nan"),
        (5 * M, "1.25", "nan"),
    ]


@pytest.mark.parametrize(
    ("raw", "after", "problem"),
    [
        ([candle(M), candle(M)], None, "candle 60000 returned twice"),
        ([candle(2 * M), candle(M)], None, "candle 60000 out of order"),
        ([candle(M)], M, "candle 60000 returned twice"),  # already recorded by the previous page
        ([candle(M + 5)], None, "not aligned"),
        ([candle(10 * M)], None, r"outside the requested window \[0, 600000\)"),
        ([[M, 1.0, None, 0.5, 1.0, 1.0]], None, "missing number"),
        ([[M, 1.0]], None, "2 fields"),
        ([[float(M), 1.0, 2.0, 0.5, 1.0, 1.0]], None, "integer timestamp"),
    ],
)
def test_candle_rows_refuses_bad_answers(
    raw: list[list[object]], after: int | None, problem: str
) -> None:
    with pytest.raises(BadAnswer, match=problem):
        candle_rows(raw, 0, 10 * M, M, 0, after)


def test_weekly_candles_align_to_mondays() -> None:
    week, monday = 7 * 86_400_000, 4 * 86_400_000  # the epoch was a Thursday
    assert (
        candle_rows([candle(monday + week)], 0, 10 * week, week, monday, None)[0].ts
        == monday + week
    )
    with pytest.raises(BadAnswer, match="not aligned"):
        candle_rows([candle(week)], 0, 10 * week, week, monday, None)


def trade(ts: int, trade_id: object, side: object = "buy") -> dict[str, object]:
    return {"timestamp": ts, "id": trade_id, "side": side, "price": 10.5, "amount": 0.25}


def test_trade_rows_orders_ties_by_numeric_id() -> None:
    # ccxt sorts ties by id *text* ('1000' < '999'); the tape wants numeric order.
    rows = trade_rows([trade(5, "1000"), trade(5, "999"), trade(4, "1001")])
    assert [t.id for t in rows] == ["1001", "999", "1000"]
    assert rows[0] == Trade(4, "1001", "buy", "10.5", "0.25")


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ([trade(1, "7"), trade(2, "7")], "trade id 7 returned twice"),
        ([trade(1, None)], "without an id"),
        ([trade(1, "a,b")], "cannot be written to CSV"),
        ([trade(1, "7", "Buy")], "side 'Buy'"),
        ([trade(None, "7")], "integer timestamp"),  # type: ignore[arg-type]
    ],
)
def test_trade_rows_refuses_bad_answers(raw: list[dict[str, object]], problem: str) -> None:
    with pytest.raises(BadAnswer, match=problem):
        trade_rows(raw)


def test_funding_rows() -> None:
    rows = funding_rows(
        [{"timestamp": 2, "fundingRate": -1e-05}, {"timestamp": 1, "fundingRate": 0.0001}]
    )
    assert [(r.ts, r.rate) for r in rows] == [(1, "0.0001"), (2, "-0.00001")]
    with pytest.raises(BadAnswer, match="funding time 1 returned twice"):
        funding_rows([{"timestamp": 1, "fundingRate": 0.1}, {"timestamp": 1, "fundingRate": 0.1}])


def test_book_snapshot_checks_sides() -> None:
    snap = book_snapshot(7, {"bids": [[100.0, 1.0, 0], [99.5, 2.0, 0]], "asks": [[100.5, 3.0]]})
    assert (snap.ts, snap.bids, snap.asks) == (7, [("100", "1"), ("99.5", "2")], [("100.5", "3")])
    with pytest.raises(BadAnswer, match="bids not sorted"):
        book_snapshot(7, {"bids": [[99.0, 1.0], [99.0, 2.0]], "asks": []})
    with pytest.raises(BadAnswer, match="asks not sorted"):
        book_snapshot(7, {"bids": [], "asks": [[101.0, 1.0], [100.0, 2.0]]})


def test_reverse_spool_spills_and_hands_out_oldest_first() -> None:
    spool = ReverseSpool(max_rows=5)
    pages = [
        [Trade(ts, str(ts), "buy", "1", "2") for ts in range(start, start + 3)]
        for start in (9, 6, 3, 0)
    ]
    for page in pages:  # newest page first, as backward paging delivers them
        spool.push(page)
    assert [t.ts for t in spool.ascending(Trade)] == list(range(12))
    assert all(isinstance(t, Trade) for t in ReverseSpool(1).ascending(Trade))


def test_staging_replaces_the_other_compression_variant(tmp_path: Path) -> None:
    staging = Staging(tmp_path)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.csv.gz").write_text("old")
    (staging.root / "x").mkdir()
    (staging.root / "x" / "a.csv").write_text("new")
    staging.commit(Path("x/a.csv"))
    staging.close()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.csv", "x"]
