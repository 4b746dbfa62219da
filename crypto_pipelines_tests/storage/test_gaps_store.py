"""The ``gaps`` table: a window's rows follow its latest check; confirmation, filling,
attempts and backoff; on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crypto_pipelines.storage.gaps import GapStore, Series
from crypto_pipelines.storage.store import MarketStore

M = 60_000
W0, W1 = 0, 1440 * M  # one daily window
CANDLES = Series("binance", "BTC/USDT", "ohlcv", "1m")
TRADES = Series("binance", "BTC/USDT", "trades")


@pytest.fixture
def gaps(db_url: str) -> Iterator[GapStore]:
    with MarketStore.open(db_url) as store:
        yield GapStore(store.engine)


def _statuses(gaps: GapStore, series: Series = CANDLES) -> dict[tuple[int, int], str]:
    return {(r.start, r.end): r.status for r in gaps.records(series=series)}


def test_open_then_confirmed_after_refetch_then_filled(gaps: GapStore) -> None:
    missing = [(10 * M, 12 * M), (100 * M, 100 * M)]
    verdict = gaps.record_window(CANDLES, W0, W1, missing, step=M, now_ms=1, refetched=False)
    assert verdict.unconfirmed == tuple(missing) and verdict.confirmed == ()
    assert _statuses(gaps) == {missing[0]: "open", missing[1]: "open"}

    # a refetch filled the first gap; the second came back empty: confirmed
    verdict = gaps.record_window(CANDLES, W0, W1, missing[1:], step=M, now_ms=2, refetched=True)
    assert verdict.unconfirmed == () and verdict.newly_confirmed == (missing[1],)
    assert _statuses(gaps) == {missing[0]: "filled", missing[1]: "confirmed"}

    # a later ordinary check: the confirmed gap stays confirmed, a new hole is open
    new = (500 * M, 501 * M)
    verdict = gaps.record_window(
        CANDLES, W0, W1, [missing[1], new], step=M, now_ms=3, refetched=False
    )
    assert verdict.confirmed == (missing[1],) and verdict.unconfirmed == (new,)
    assert verdict.newly_confirmed == ()
    assert _statuses(gaps)[new] == "open"
    assert gaps.records(status="confirmed")[0].checked_at == 3


def test_a_confirmed_gap_partly_filled_later_keeps_its_rest(gaps: GapStore) -> None:
    gaps.record_window(CANDLES, W0, W1, [(10 * M, 19 * M)], step=M, now_ms=1, refetched=True)
    verdict = gaps.record_window(
        CANDLES, W0, W1, [(10 * M, 12 * M), (15 * M, 19 * M)], step=M, now_ms=2, refetched=False
    )
    assert verdict.confirmed == ((10 * M, 12 * M), (15 * M, 19 * M))
    assert verdict.unconfirmed == ()
    # a hole reaching past the confirmed range is confirmed only inside it
    verdict = gaps.record_window(
        CANDLES, W0, W1, [(15 * M, 25 * M)], step=M, now_ms=3, refetched=False
    )
    assert verdict.confirmed == ((15 * M, 19 * M),) and verdict.unconfirmed == ((20 * M, 25 * M),)


def test_windows_and_series_are_independent(gaps: GapStore) -> None:
    gaps.record_window(CANDLES, W0, W1, [(10 * M, 10 * M)], step=M, now_ms=1, refetched=False)
    gaps.record_window(CANDLES, W1, 2 * W1, [(W1, W1 + M)], step=M, now_ms=1, refetched=False)
    gaps.record_window(TRADES, W0, W1, [(7, 9)], step=1, now_ms=1, refetched=False)
    gaps.record_window(CANDLES, W0, W1, [], step=M, now_ms=2, refetched=False)
    assert _statuses(gaps) == {(10 * M, 10 * M): "filled", (W1, W1 + M): "open"}
    assert _statuses(gaps, TRADES) == {(7, 9): "open"}


def test_due_attempts_and_backoff(gaps: GapStore) -> None:
    gaps.record_window(CANDLES, W0, W1, [(10 * M, 10 * M)], step=M, now_ms=0, refetched=False)
    gaps.record_window(CANDLES, W1, 2 * W1, [(W1, W1)], step=M, now_ms=0, refetched=False)
    due = gaps.due(1000, max_attempts=2, backoff_ms=100)
    assert [(t.window_start, t.attempt, t.gaps) for t in due] == [(W0, 1, 1), (W1, 1, 1)]
    assert gaps.due(1000, max_attempts=2, backoff_ms=100, limit=1) == due[:1]
    assert gaps.mark_attempt(due[0], 1000) == 1
    # backoff: 100 ms after the first attempt, 200 after the second
    assert [t.window_start for t in gaps.due(1099, max_attempts=2, backoff_ms=100)] == [W1]
    again = gaps.due(1100, max_attempts=2, backoff_ms=100)
    assert [(t.window_start, t.attempt) for t in again] == [(W1, 1), (W0, 2)]
    gaps.mark_attempt(again[1], 1100)
    assert [t.window_start for t in gaps.due(10**9, max_attempts=2, backoff_ms=100)] == [W1]
    # a check that still finds the gap keeps its attempts; confirmed gaps are never due
    gaps.record_window(CANDLES, W0, W1, [(10 * M, 10 * M)], step=M, now_ms=2000, refetched=False)
    assert gaps.records(series=CANDLES, window_start=W0)[0].attempts == 2
    gaps.record_window(CANDLES, W1, 2 * W1, [(W1, W1)], step=M, now_ms=2000, refetched=True)
    assert gaps.due(10**9, max_attempts=5, backoff_ms=0)[0].window_start == W0
    assert len(gaps.due(10**9, max_attempts=5, backoff_ms=0)) == 1
