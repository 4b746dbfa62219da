"""OKX trades (recent and both history pagings), order books and funding-rate history
through stock ccxt clients against the replay exchange (tape and helpers: ``test_okx``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from crypto_pipelines.replay import ReplayClock, ReplayServer, Tape
from crypto_pipelines_tests.replay.test_okx import (
    DAY,
    FUNDING0,
    LINEAR,
    MIN,
    NOW,
    ODD,
    SPOT,
    T0,
    as_tuples,
    build_tape,
    client,
    series,
    tape_trades,
)


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tape]:
    loaded = Tape.load(build_tape(tmp_path_factory.mktemp("okx-trades-tape")))
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def server(tape: Tape) -> Iterator[ReplayServer]:
    with ReplayServer(tape, clock=ReplayClock(start_ms=NOW, speed=0)) as srv:
        yield srv


def test_trades_latest_and_the_500_cap(server: ReplayServer, tape: Tape) -> None:
    ex = client(server)
    expected = tape_trades(tape, SPOT)
    assert as_tuples(ex.fetch_trades(SPOT)) == expected[-100:]
    assert as_tuples(ex.fetch_trades(SPOT, limit=800)) == expected[-500:]
    assert (
        as_tuples(ex.fetch_trades(SPOT, since=expected[-10][1])) == expected[-10:]
    )  # ccxt filters since itself
    assert ex.last_json_response["data"][0]["tradeId"] == expected[-1][0]  # newest first


def test_history_trades_page_back_by_trade_id_through_the_whole_tape(
    server: ReplayServer, tape: Tape
) -> None:
    ex = client(server)
    got: list[dict[str, Any]] = []
    params: dict[str, Any] = {"method": "publicGetMarketHistoryTrades"}
    while page := ex.fetch_trades(SPOT, limit=100, params=params):
        assert len(page) <= 100
        got = page + got
        params["after"] = page[0]["id"]
    assert as_tuples(got) == tape_trades(tape, SPOT) and len(got) == 1928
    # before alone returns the latest rows newer than the id; with after it bounds a range.
    newest = ex.fetch_trades(
        SPOT, params={"method": "publicGetMarketHistoryTrades", "before": "5000"}
    )
    assert as_tuples(newest) == tape_trades(tape, SPOT)[-100:]
    window = ex.fetch_trades(
        SPOT, params={"method": "publicGetMarketHistoryTrades", "before": "5003", "after": "5015"}
    )
    assert [t["id"] for t in window] == ["5006", "5009", "5012"]


def test_history_trades_page_back_by_timestamp(server: ReplayServer, tape: Tape) -> None:
    ex = client(server)
    got: list[dict[str, Any]] = []
    params: dict[str, Any] = {"method": "publicGetMarketHistoryTrades", "type": "2"}
    while page := ex.fetch_trades(SPOT, limit=100, params=params):
        got = page + got
        params["after"] = page[0]["timestamp"]
    assert as_tuples(got) == tape_trades(tape, SPOT)


def test_history_trades_with_non_integer_ids_page_by_position(
    server: ReplayServer, tape: Tape
) -> None:
    ex = client(server)
    got: list[dict[str, Any]] = []
    params: dict[str, Any] = {"method": "publicGetMarketHistoryTrades"}
    while page := ex.fetch_trades(ODD, limit=100, params=params):
        got = page + got
        params["after"] = ex.last_json_response["data"][-1]["tradeId"]  # oldest of the page
    assert sorted(as_tuples(got)) == sorted(tape_trades(tape, ODD)) and len(got) == 300


def test_trades_paginate_advances_one_trade_per_call_as_ccxt_does(
    server: ReplayServer, tape: Tape
) -> None:
    """ccxt's cursor is the newest trade's id, so each of its 10 calls moves back one trade."""
    ex = client(server)
    server.app.stats.reset()
    got = ex.fetch_trades(SPOT, params={"paginate": True, "method": "publicGetMarketHistoryTrades"})
    assert (
        server.app.stats.snapshot()["exchanges"]["okx"]["/api/v5/market/history-trades"]["ok"] == 10
    )
    expected = tape_trades(tape, SPOT)
    assert len(got) == 1000 and sorted(set(as_tuples(got))) == expected[-109:]


def test_order_book_is_the_snapshot_at_or_before_now(tape: Tape) -> None:
    clock = ReplayClock(start_ms=T0 + 2 * DAY + 4 * MIN + 59_000, speed=0)
    book = series(tape, SPOT).book
    with ReplayServer(tape, clock=clock) as srv:
        ex = client(srv)
        snap = book.snapshot(4)
        got = ex.fetch_order_book(SPOT, 5)
        assert got["timestamp"] == snap.ts and ex.last_request_url.endswith("sz=5")
        assert got["bids"] == [[float(p), float(a), 0] for p, a in snap.bids[:5]]
        assert got["asks"] == [[float(p), float(a), 0] for p, a in snap.asks[:5]]
        assert ex.last_json_response["data"][0]["bids"][0] == [
            snap.bids[0][0],
            snap.bids[0][1],
            "0",
            "1",
        ]
        full = ex.fetch_order_book(SPOT)  # ccxt sends sz=100: the whole 30-level snapshot
        assert len(full["bids"]) == len(full["asks"]) == 30
        assert (
            len(ex.fetch_order_book(SPOT, 1000)["asks"]) == 30
            and "/market/books-full?" in ex.last_request_url
        )
        assert ex.public_get_market_books({"instId": "BTC-USDT"})["data"][0]["asks"] == [
            [*snap.asks[0], "0", "1"]
        ]  # sz defaults to 1
        clock.start_ms = T0  # before the first snapshot: an empty book
        empty = ex.fetch_order_book(SPOT)
        assert (empty["bids"], empty["asks"], empty["timestamp"]) == ([], [], T0)


def test_funding_rate_history(server: ReplayServer, tape: Tape) -> None:
    ex = client(server)
    f = series(tape, LINEAR).funding
    expected = [(r.ts, float(r.rate)) for r in f.rows(0, len(f)) if r.ts <= NOW]
    as_pairs = lambda rates: [(r["timestamp"], r["fundingRate"]) for r in rates]  # noqa: E731
    assert as_pairs(ex.fetch_funding_rate_history(LINEAR)) == expected[-100:]
    assert (
        ex.last_json_response["data"][0]["realizedRate"]
        == ex.last_json_response["data"][0]["fundingRate"]
    )
    # Chosen semantics: before alone returns the newest rows after it (see okx.py).
    assert as_pairs(ex.fetch_funding_rate_history(LINEAR, since=FUNDING0, limit=5)) == expected[-5:]
    got: list[dict[str, Any]] = []
    params: dict[str, Any] = {}
    while page := ex.fetch_funding_rate_history(LINEAR, params=params):
        got = page + got
        params["after"] = page[0]["timestamp"]
    assert as_pairs(got) == expected and len(expected) > 150
