"""``iter_trades`` and ``iter_funding_rates`` against the replay exchange, for every venue."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crypto_pipelines.exchanges import (
    FUNDING_COLUMNS,
    TRADE_FRAME_COLUMNS,
    FetchStats,
    Quirk,
    TradesPaging,
    UnsupportedRequest,
    get_venue,
    iter_funding_rates,
    iter_trades,
)
from crypto_pipelines.replay import ReplayServer
from crypto_pipelines_tests.exchanges.conftest import client_for
from crypto_pipelines_tests.exchanges.tapes import HOUR, SPOT, SWAP, T0, Rows

TRADES_END = T0 + 6 * HOUR
FUNDING_END = T0 + 60 * 24 * HOUR


def trades(
    exchange: str, url: str, start: int, end: int, **kwargs: object
) -> tuple[pd.DataFrame, FetchStats]:
    stats = FetchStats()
    client = client_for(exchange, url)
    chunks = list(
        iter_trades(client, get_venue(exchange), SPOT[exchange], start, end, stats=stats, **kwargs)
    )  # type: ignore[arg-type]
    frame = (
        pd.concat(chunks, ignore_index=True)
        if chunks
        else pd.DataFrame(columns=list(TRADE_FRAME_COLUMNS))
    )
    return frame, stats


def tape_trades(rows: Rows, start: int, end: int) -> pd.DataFrame:
    kept = [r for r in rows.trades if start <= r[0] < end]
    return pd.DataFrame(
        {
            "trade_id": [str(r[1]) for r in kept],
            "ts": np.array([r[0] for r in kept], dtype=np.int64),
            "side": [r[2] for r in kept],
            "price": np.array([float(r[3]) for r in kept]),
            "amount": np.array([float(r[4]) for r in kept]),
        }
    )


def assert_trades(frame: pd.DataFrame, want: pd.DataFrame, exchange: str) -> None:
    assert list(frame.columns) == list(TRADE_FRAME_COLUMNS)
    assert (frame["exchange"] == exchange).all() and (frame["symbol"] == SPOT[exchange]).all()
    pd.testing.assert_frame_equal(
        frame[list(want.columns)].reset_index(drop=True), want, check_dtype=False
    )
    assert frame["trade_id"].is_unique
    assert frame.empty or frame["ts"].dtype == np.int64


def test_trades_equal_the_tape(exchange: str, server: ReplayServer, rows: Rows) -> None:
    """Every trade of the range in order, taker side (Coinbase sends the maker's), trades
    sharing a millisecond across page boundaries kept, an hour without trades walked
    through. Bybit has no trade history: only its latest trades, and a note saying so."""
    frame, stats = trades(exchange, server.url, T0, TRADES_END)
    want = tape_trades(rows, T0, TRADES_END)
    if get_venue(exchange).trades.paging is TradesPaging.RECENT_ONLY:
        assert get_venue(exchange).has(Quirk.NO_TRADE_HISTORY)
        assert_trades(frame, want.tail(60).reset_index(drop=True), exchange)
        assert len(stats.notes) == 1 and "latest 60 trades" in stats.notes[0]
        return
    assert len(want) == len(rows.trades) == 3000
    assert_trades(frame, want, exchange)
    assert stats.notes == [] and stats.rows == 3000


@pytest.mark.parametrize(
    "start, end",
    [
        (T0 + 20_000, T0 + 20_001),  # one millisecond shared by four trades
        (T0 + 1_000_000 + 1, T0 + 2 * HOUR + 10_000),  # unaligned, up to the quiet hour
        (T0 + 2 * HOUR, T0 + 3 * HOUR),  # the quiet hour itself
        (T0 + 3 * HOUR + 1, TRADES_END),
    ],
)
def test_trade_sub_ranges(
    exchange: str, server: ReplayServer, rows: Rows, start: int, end: int
) -> None:
    if get_venue(exchange).trades.paging is TradesPaging.RECENT_ONLY:
        pytest.skip("no trade history to select from")
    frame, _ = trades(exchange, server.url, start, end)
    want = tape_trades(rows, start, end)
    assert len(want) > 0 or start == T0 + 2 * HOUR
    assert_trades(frame, want, exchange)


def test_recent_trades_inside_the_range_are_complete(server: ReplayServer, rows: Rows) -> None:
    """A range inside what Bybit still publishes is served whole, with no note."""
    pytest.importorskip("crypto_pipelines.replay.venues.bybit")
    start = rows.trades[-40][0]
    frame, stats = trades("bybit", server.url, start, TRADES_END)
    assert_trades(frame, tape_trades(rows, start, TRADES_END), "bybit")
    assert stats.notes == []


def test_funding_rates_equal_the_tape(exchange: str, server: ReplayServer, rows: Rows) -> None:
    """Funding every 8 h, then every 4 h: denser than the 8-hour windows OKX and Bybit are
    asked in, so full pages are followed by the rest of their window."""
    spec = get_venue(exchange)
    client = client_for(exchange, server.url)
    stats = FetchStats()
    if exchange not in SWAP:
        with pytest.raises(UnsupportedRequest, match="no perpetual swaps"):
            iter_funding_rates(client, spec, SPOT[exchange], T0, FUNDING_END, stats=stats)
        return
    chunks = list(
        iter_funding_rates(
            client, spec, SWAP[exchange], T0, FUNDING_END, stats=stats, chunk_rows=50
        )
    )
    frame = pd.concat(chunks, ignore_index=True)
    assert list(frame.columns) == list(FUNDING_COLUMNS)
    assert frame["ts"].tolist() == [r[0] for r in rows.funding]
    assert frame["rate"].tolist() == [float(r[1]) for r in rows.funding]
    assert (frame["symbol"] == SWAP[exchange]).all() and frame["ts"].dtype == np.int64
    part = pd.concat(
        iter_funding_rates(
            client, spec, SWAP[exchange], rows.funding[100][0], rows.funding[150][0], stats=stats
        )
    )
    assert part["ts"].tolist() == [r[0] for r in rows.funding[100:150]]


def test_funding_needs_a_swap(exchange: str, server: ReplayServer) -> None:
    if exchange not in SWAP:
        pytest.skip("spot-only venue")
    with pytest.raises(UnsupportedRequest, match="perpetual swaps only"):
        iter_funding_rates(
            client_for(exchange, server.url),
            get_venue(exchange),
            SPOT[exchange],
            T0,
            FUNDING_END,
            stats=FetchStats(),
        )
