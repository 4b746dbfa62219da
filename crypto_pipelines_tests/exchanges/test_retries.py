"""Failures from the replay exchange's fault injection: transient ones are retried (with
backoff and the exchange's own wait), permanent ones end the load with a clear message."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import ccxt
import pandas as pd
import pytest

from crypto_pipelines.exchanges import (
    FetchStats,
    RetriesExhausted,
    RetryPolicy,
    get_venue,
    iter_ohlcv,
    iter_trades,
)
from crypto_pipelines.replay import FaultConfig, ReplayServer
from crypto_pipelines_tests.exchanges.conftest import client_for
from crypto_pipelines_tests.exchanges.tapes import MIN, SPOT, T0, Rows, candle_frame

END = T0 + 3 * 1440 * MIN


@pytest.fixture
def fresh_server(tape: tuple[Path, Rows]) -> Iterator[ReplayServer]:
    """A server of its own: faults are per server and its request counters start at zero."""
    with ReplayServer(tape[0]) as srv:
        yield srv


def _faulty_load(
    exchange: str, server: ReplayServer, faults: FaultConfig, policy: RetryPolicy, **client: object
) -> tuple[pd.DataFrame, FetchStats]:
    c = client_for(exchange, server.url, **client)
    c.load_markets()  # markets first: the faults are about the data requests
    server.app.stats.reset()
    server.set_faults(faults)
    stats = FetchStats()
    chunks = iter_ohlcv(
        c, get_venue(exchange), SPOT[exchange], "1m", T0, END, stats=stats, policy=policy
    )
    return pd.concat(chunks, ignore_index=True), stats


def test_rate_limits_and_server_errors_are_retried(
    exchange: str, fresh_server: ReplayServer, rows: Rows
) -> None:
    waits: list[float] = []
    # Half the requests fail, and seed 1 draws 13 faults in a row early on (draws 24-36):
    # enough attempts to outlast that run, which is what a real load would want too.
    policy = RetryPolicy(max_attempts=15, seed=3, sleep=waits.append)
    faults = FaultConfig(rate_limit=0.3, server_error=0.2, seed=1)
    frame, stats = _faulty_load(exchange, fresh_server, faults, policy)
    want = candle_frame(rows.candles)
    pd.testing.assert_frame_equal(frame[list(want.columns)], want)
    assert stats.retries > 0 and len(waits) == stats.retries
    served = fresh_server.app.stats.snapshot()["totals"]
    assert served["rate_limited"] > 0 and served["server_errors"] > 0
    assert served["rate_limited"] + served["server_errors"] == stats.retries
    assert served["requests"] == stats.requests
    if exchange in ("binance", "bybit"):
        # Binance's 429 carries Retry-After: 1, Bybit's 10006 a reset time 1 s ahead (in
        # X-Bapi-Limit-Reset-Timestamp); no retry after one may come sooner.
        assert any(w >= 0.9 for w in waits)


def test_timeouts_are_retried(exchange: str, fresh_server: ReplayServer, rows: Rows) -> None:
    waits: list[float] = []
    policy = RetryPolicy(max_attempts=8, seed=5, sleep=waits.append)
    faults = FaultConfig(timeout=0.25, timeout_s=1.0, seed=1)  # the first request times out
    c = client_for(exchange, fresh_server.url, timeout_ms=250)
    c.load_markets()
    fresh_server.set_faults(faults)
    stats = FetchStats()
    start, end = T0, T0 + 600 * MIN
    frame = pd.concat(
        iter_ohlcv(
            c, get_venue(exchange), SPOT[exchange], "1m", start, end, stats=stats, policy=policy
        )
    )
    want = candle_frame([r for r in rows.candles if start <= r[0] < end])
    pd.testing.assert_frame_equal(frame[list(want.columns)].reset_index(drop=True), want)
    assert stats.retries > 0


def test_permanent_failure_ends_after_bounded_attempts(
    exchange: str, fresh_server: ReplayServer
) -> None:
    policy = RetryPolicy(max_attempts=3, sleep=lambda _s: None)
    c = client_for(exchange, fresh_server.url)
    c.load_markets()
    fresh_server.set_faults(FaultConfig(server_error=1.0))
    stats = FetchStats()
    with pytest.raises(RetriesExhausted) as caught:
        list(
            iter_ohlcv(
                c, get_venue(exchange), SPOT[exchange], "1m", T0, END, stats=stats, policy=policy
            )
        )
    message = str(caught.value)
    assert f"{exchange} {SPOT[exchange]} 1m candles [2024-01-01T00:00:00.000Z" in message
    assert "gave up after 3 attempts" in message and "ExchangeNotAvailable" in message
    assert stats.requests == 3 and stats.retries == 2
    assert isinstance(caught.value.__cause__, ccxt.ExchangeNotAvailable)


def test_trades_survive_faults(exchange: str, fresh_server: ReplayServer, rows: Rows) -> None:
    policy = RetryPolicy(max_attempts=12, seed=4, sleep=lambda _s: None)
    c = client_for(exchange, fresh_server.url)
    c.load_markets()
    fresh_server.set_faults(FaultConfig(rate_limit=0.25, server_error=0.25, seed=9))
    stats = FetchStats()
    end = T0 + 6 * 3_600_000
    frame = pd.concat(
        iter_trades(c, get_venue(exchange), SPOT[exchange], T0, end, stats=stats, policy=policy)
    )
    expected = len(rows.trades) if exchange != "bybit" else 60
    assert len(frame) == expected and frame["trade_id"].is_unique and stats.retries > 0


def test_bad_symbol_is_not_retried(exchange: str, fresh_server: ReplayServer) -> None:
    """Refused at once with ccxt's class, before any data request."""
    waits: list[float] = []
    c = client_for(exchange, fresh_server.url)
    stats = FetchStats()
    with pytest.raises(ccxt.BadSymbol, match="does not have market symbol"):
        iter_ohlcv(
            c,
            get_venue(exchange),
            "NOPE/USDT",
            "1m",
            T0,
            END,
            stats=stats,
            policy=RetryPolicy(sleep=waits.append),
        )
    assert waits == [] and stats.retries == 0 and stats.requests == 1  # load_markets only


def test_a_refused_request_is_not_retried(fresh_server: ReplayServer) -> None:
    """An exchange-side BadSymbol (a market ccxt knows but the exchange refuses) keeps its
    class and gains the context; nothing is retried."""
    pytest.importorskip("crypto_pipelines.replay.venues.binance")
    c = client_for("binance", fresh_server.url)
    c.load_markets()
    stats = FetchStats()
    policy = RetryPolicy(sleep=lambda _s: pytest.fail("must not retry"))
    c.markets["BTC/USDT"]["id"] = "NOSUCH"  # listed by ccxt, unknown to the exchange
    with pytest.raises(ccxt.BadSymbol, match=r"binance BTC/USDT 1m candles \[2024-01-01"):
        list(
            iter_ohlcv(
                c, get_venue("binance"), "BTC/USDT", "1m", T0, END, stats=stats, policy=policy
            )
        )
    assert stats.retries == 0 and stats.requests == 1
