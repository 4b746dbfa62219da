"""``iter_ohlcv`` against the replay exchange, for every venue: exactly the tape, closed
candles only, gaps kept, resumable, chunked."""

from __future__ import annotations

from pathlib import Path

import ccxt
import numpy as np
import pandas as pd
import pytest

from crypto_pipelines.exchanges import (
    OHLCV_COLUMNS,
    FetchStats,
    UnsupportedRequest,
    exchange_time_ms,
    get_venue,
    iter_ohlcv,
)
from crypto_pipelines.replay import ReplayClock, ReplayServer
from crypto_pipelines_tests.exchanges.conftest import client_for
from crypto_pipelines_tests.exchanges.tapes import (
    DAYS,
    INVERSE,
    MIN,
    SPOT,
    SWAP,
    T0,
    Rows,
    candle_frame,
)

END = T0 + DAYS * 1440 * MIN


def load(
    exchange: str, url: str, symbol: str, start: int, end: int, **kwargs: object
) -> tuple[pd.DataFrame, list[pd.DataFrame], FetchStats]:
    stats = FetchStats()
    client = client_for(exchange, url)
    chunks = list(
        iter_ohlcv(client, get_venue(exchange), symbol, "1m", start, end, stats=stats, **kwargs)
    )  # type: ignore[arg-type]
    frame = (
        pd.concat(chunks, ignore_index=True)
        if chunks
        else pd.DataFrame(columns=list(OHLCV_COLUMNS))
    )
    return frame, chunks, stats


def expected(
    candles: list[tuple[int, str, str, str, str, str]], start: int, end: int
) -> pd.DataFrame:
    frame = candle_frame([c for c in candles if start <= c[0] < end])
    return frame.reset_index(drop=True)


def assert_tape(frame: pd.DataFrame, want: pd.DataFrame, exchange: str, symbol: str) -> None:
    assert list(frame.columns) == list(OHLCV_COLUMNS)
    assert frame["ts"].dtype == np.int64
    assert all(frame[c].dtype == np.float64 for c in ("open", "high", "low", "close", "volume"))
    assert (frame["exchange"] == exchange).all() and (frame["symbol"] == symbol).all()
    assert (frame["timeframe"] == "1m").all()
    pd.testing.assert_frame_equal(frame[list(want.columns)].reset_index(drop=True), want)


def test_spot_candles_equal_the_tape(exchange: str, server: ReplayServer, rows: Rows) -> None:
    """Values, count and omitted candles (single ones, a 1,500-minute gap longer than any
    request window, unknown volumes as NaN) exactly as the tape has them."""
    frame, _, stats = load(exchange, server.url, SPOT[exchange], T0, END)
    want = expected(rows.candles, T0, END)
    assert len(want) == 2815
    assert_tape(frame, want, exchange, SPOT[exchange])
    assert frame["volume"].isna().sum() == 2
    assert stats.rows == len(want) and stats.retries == 0 and stats.requests > 1


def test_swap_candles_equal_the_tape(exchange: str, server: ReplayServer, rows: Rows) -> None:
    if exchange not in SWAP:
        pytest.skip(f"{exchange} lists no perpetual swaps")
    frame, _, _ = load(exchange, server.url, SWAP[exchange], T0, END)
    assert_tape(frame, expected(rows.swap_candles, T0, END), exchange, SWAP[exchange])


def test_inverse_swap_candles_equal_the_tape(
    exchange: str, server: ReplayServer, rows: Rows
) -> None:
    """Coin-margined perpetuals: base-currency volume is read from the column ccxt reads it
    from (Binance COIN-M col 7, OKX volCcy, Bybit turnover)."""
    if exchange not in SWAP:
        pytest.skip(f"{exchange} lists no perpetual swaps")
    frame, _, _ = load(exchange, server.url, INVERSE, T0, END)
    assert_tape(frame, expected(rows.swap_candles[:1500], T0, END), exchange, INVERSE)


def test_only_closed_candles_with_a_pinned_clock(exchange: str, tape: tuple[Path, Rows]) -> None:
    """ "Now" mid-candle inside the tape: the forming candle and everything after it are left
    out, whatever the venue serves past now (Binance's startTime ignores it). OKX serves the
    recent part from market/candles and the rest from history-candles."""
    now = T0 + 3000 * MIN + 30_000
    with ReplayServer(tape[0], clock=ReplayClock(start_ms=now, speed=0)) as pinned:
        assert exchange_time_ms(client_for(exchange, pinned.url)) == now
        frame, _, _ = load(exchange, pinned.url, SPOT[exchange], T0, END, now_ms=now)
    want = expected(tape[1].candles, T0, T0 + 3000 * MIN)
    assert_tape(frame, want, exchange, SPOT[exchange])
    assert frame["ts"].max() == T0 + 2999 * MIN


def test_gap_longer_than_a_request_window(exchange: str, server: ReplayServer, rows: Rows) -> None:
    """A range with no candle at all is walked to its end, not mistaken for the end of data."""
    empty, chunks, _ = load(exchange, server.url, SPOT[exchange], T0 + 1000 * MIN, T0 + 2500 * MIN)
    assert chunks == [] and empty.empty
    frame, _, _ = load(exchange, server.url, SPOT[exchange], T0 + 900 * MIN, T0 + 2600 * MIN)
    want = expected(rows.candles, T0 + 900 * MIN, T0 + 2600 * MIN)
    assert len(want) == 200
    assert_tape(frame, want, exchange, SPOT[exchange])


def test_a_leading_gap_costs_few_requests(exchange: str, server: ReplayServer, rows: Rows) -> None:
    """A backfill that starts 60 days before the first candle: venues that anchor at the
    start (Binance, Bybit) jump straight to it, OKX crosses the gap with growing ranges;
    Coinbase refuses ranges over 300 candles, so it walks (60 days = 288 windows)."""
    start = T0 - 60 * 1440 * MIN
    frame, _, stats = load(exchange, server.url, SPOT[exchange], start, END)
    assert_tape(frame, expected(rows.candles, T0, END), exchange, SPOT[exchange])
    windows = 60 * 1440 // 300
    budget = {"binance": 5, "bybit": 5, "okx": 100, "coinbaseexchange": windows + 20}[exchange]
    assert stats.requests <= budget


def test_resuming_from_mid_range_gives_the_same_remainder(
    exchange: str, server: ReplayServer
) -> None:
    full, _, _ = load(exchange, server.url, SPOT[exchange], T0, END)
    for k in (1, len(full) // 2, len(full) - 1):
        stored_until = int(full["ts"].iloc[k - 1])
        rest, _, _ = load(exchange, server.url, SPOT[exchange], stored_until + MIN, END)
        pd.testing.assert_frame_equal(rest, full.iloc[k:].reset_index(drop=True))
    inside_gap, _, _ = load(exchange, server.url, SPOT[exchange], T0 + 1500 * MIN + 1, END)
    pd.testing.assert_frame_equal(
        inside_gap, full[full["ts"] >= T0 + 2500 * MIN].reset_index(drop=True)
    )


def test_chunks_are_bounded_and_deterministic(exchange: str, server: ReplayServer) -> None:
    one, _, _ = load(exchange, server.url, SPOT[exchange], T0, END)
    again, chunks, stats = load(exchange, server.url, SPOT[exchange], T0, END, chunk_rows=400)
    pd.testing.assert_frame_equal(again, one)
    assert len(chunks) >= 3 and stats.chunks == len(chunks)
    page = max(q.max_rows for qs in get_venue(exchange).ohlcv.queries.values() for q in qs)
    assert all(len(c) < 400 + page for c in chunks)
    assert all(c["ts"].is_monotonic_increasing and c["ts"].is_unique for c in chunks)


def test_unaligned_bounds(exchange: str, server: ReplayServer, rows: Rows) -> None:
    """A start inside a candle starts at the next one; the end is exclusive."""
    frame, _, _ = load(exchange, server.url, SPOT[exchange], T0 + 10 * MIN + 1, T0 + 20 * MIN)
    assert frame["ts"].tolist() == [T0 + i * MIN for i in range(11, 20)]


def test_unknown_symbol_and_timeframe_are_refused(exchange: str, server: ReplayServer) -> None:
    stats = FetchStats()
    client = client_for(exchange, server.url)
    with pytest.raises(ccxt.BadSymbol, match=f"{exchange} FOO/BAR 1m candles"):
        iter_ohlcv(client, get_venue(exchange), "FOO/BAR", "1m", T0, END, stats=stats)
    assert stats.retries == 0
    with pytest.raises(UnsupportedRequest, match="no 7m candles"):
        iter_ohlcv(client, get_venue(exchange), SPOT[exchange], "7m", T0, END, stats=stats)
