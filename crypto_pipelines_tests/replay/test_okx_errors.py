"""OKX errors, injected faults, enforced rate limits, recorded response shapes and the real
tapes, through stock ccxt clients against the replay exchange."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import pytest

from crypto_pipelines.replay import FaultConfig, ReplayClock, ReplayServer, Tape, point_ccxt_at
from crypto_pipelines_tests.conftest import REAL_TAPES, require_shared
from crypto_pipelines_tests.replay.shape import recorded_responses, shape_differences
from crypto_pipelines_tests.replay.test_okx import LINEAR, MIN, NOW, SPOT, T0, build_tape, client

API = "/okx/www.okx.com/api/v5"


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tape]:
    loaded = Tape.load(build_tape(tmp_path_factory.mktemp("okx-errors-tape")))
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def server(tape: Tape) -> Iterator[ReplayServer]:
    with ReplayServer(tape, clock=ReplayClock(start_ms=NOW, speed=0)) as srv:
        yield srv


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize(
    ("faults", "error", "status", "body"),
    [
        (
            FaultConfig(rate_limit=1.0),
            ccxt.RateLimitExceeded,
            429,
            {"msg": "Too Many Requests", "code": "50011"},
        ),
        (
            FaultConfig(server_error=1.0),
            ccxt.ExchangeNotAvailable,
            500,
            {"code": "50026", "msg": "System error. Try again later.", "data": []},
        ),
        (FaultConfig(timeout=1.0, timeout_s=2.0), ccxt.RequestTimeout, None, None),
    ],
)
def test_injected_faults_reach_ccxt_as_the_exchange_errors(
    tape: Tape, faults: FaultConfig, error: type[Exception], status: int | None, body: Any
) -> None:
    with ReplayServer(tape, clock=ReplayClock(start_ms=NOW, speed=0)) as srv:
        ex = client(srv, timeout=500)
        ex.load_markets()
        srv.set_faults(faults)
        with pytest.raises(error) as raised:
            ex.fetch_ohlcv(SPOT, "1m", since=T0, limit=5)
        # Exactly the class (50026 is not 50001's OnMaintenance; 50011 is not a plain 429).
        assert type(raised.value) is error
        if status is not None:
            assert get(srv.url + f"{API}/market/ticker?instId=BTC-USDT") == (status, body)


async def test_injected_faults_reach_the_async_client(tape: Tape) -> None:
    with ReplayServer(tape, clock=ReplayClock(start_ms=NOW, speed=0)) as srv:
        ex = point_ccxt_at(ccxt_async.okx({"enableRateLimit": False}), srv.url)
        try:
            await ex.load_markets()
            srv.set_faults(FaultConfig(rate_limit=1.0))
            with pytest.raises(ccxt.RateLimitExceeded):
                await ex.fetch_trades(SPOT)
            srv.set_faults(FaultConfig(server_error=1.0))
            with pytest.raises(ccxt.ExchangeNotAvailable):
                await ex.fetch_order_book(SPOT)
        finally:
            await ex.close()


def _start_of_a_window(window_ms: int = 2_000) -> None:
    """Sleep into the first moments of a fresh wall-clock window (OKX's windows are fixed)."""
    now = time.time() * 1000
    time.sleep((window_ms - now % window_ms + 20) / 1000)


def test_enforced_limits_are_per_endpoint_and_answer_429_50011(tape: Tape) -> None:
    with ReplayServer(tape, enforce_limits=True, clock=ReplayClock(start_ms=NOW, speed=0)) as srv:
        ex = client(srv)  # ignores limits: enableRateLimit=False
        ex.load_markets()
        history = (
            srv.url
            + f"{API}/market/history-candles?instId=BTC-USDT&bar=1m&limit=1&after={T0 + 9 * MIN}"
        )
        _start_of_a_window()
        answers = [get(history) for _ in range(21)]
        assert [s for s, _ in answers[:20]] == [200] * 20, "20 requests per 2 s are allowed"
        assert answers[20] == (429, {"msg": "Too Many Requests", "code": "50011"})
        with pytest.raises(ccxt.RateLimitExceeded):
            ex.fetch_ohlcv(SPOT, "1m", since=T0, limit=3)
        assert ex.fetch_ohlcv(SPOT, "1m")  # market/candles has its own budget (40 / 2 s)
        spot = srv.url + f"{API}/public/instruments?instType=SPOT"
        assert [get(spot)[0] for _ in range(21)][-1] == 429
        assert (
            get(srv.url + f"{API}/public/instruments?instType=SWAP")[0] == 200
        )  # keyed by instType
        stats = srv.app.stats.snapshot()["exchanges"]["okx"]
        assert stats["/api/v5/market/history-candles"]["rate_limited"] >= 2


def test_ccxt_throttle_stays_inside_the_enforced_limits(tape: Tape) -> None:
    """ccxt spaces market/candles 55 ms apart (cost 1/2 of 110 ms): at most 37 per 2 s < 40."""
    with ReplayServer(tape, enforce_limits=True, clock=ReplayClock(start_ms=NOW, speed=0)) as srv:
        ex = point_ccxt_at(ccxt.okx(), srv.url)
        ex.load_markets()
        for _ in range(42):
            assert len(ex.fetch_ohlcv(SPOT, "1m", limit=5)) == 5
        assert srv.app.stats.snapshot()["totals"]["rate_limited"] == 0


def test_errors_map_to_the_ccxt_classes_okx_causes(server: ReplayServer) -> None:
    ex = client(server)
    ex.load_markets()
    with pytest.raises(ccxt.BadSymbol):
        ex.fetch_ticker("FOO/BAR")  # unknown unified symbol: refused by ccxt before any request
    with pytest.raises(ccxt.BadSymbol):
        ex.public_get_market_ticker({"instId": "FOO-BAR"})
    assert get(server.url + f"{API}/market/ticker?instId=FOO-BAR") == (
        200,
        {"code": "51001", "msg": "Instrument ID or Spread ID doesn't exist.", "data": []},
    )
    with pytest.raises(ccxt.BadSymbol):
        ex.public_get_public_funding_rate_history({"instId": "BTC-USDT"})  # spot has no funding
    with pytest.raises(ccxt.BadRequest):
        ex.public_get_market_candles({"bar": "1m"})
    assert get(server.url + f"{API}/market/candles?bar=1m") == (
        400,
        {"code": "50014", "msg": "Parameter instId can not be empty", "data": []},
    )
    with pytest.raises(ccxt.BadRequest, match="Parameter bar error"):
        ex.fetch_ohlcv(SPOT, "7m")
    with pytest.raises(ccxt.BadRequest):
        ex.public_get_market_history_candles({"instId": "BTC-USDT", "limit": "many"})
    with pytest.raises(ccxt.ExchangeError) as raised:
        ex.fetch_trades(
            SPOT, params={"method": "publicGetMarketHistoryTrades", "type": "2", "before": str(T0)}
        )
    assert type(raised.value) is ccxt.ExchangeError and "50039" in str(raised.value)
    with pytest.raises(ccxt.ExchangeError) as raised:
        ex.fetch_mark_ohlcv(LINEAR, "1m")  # an endpoint the replay does not serve
    assert type(raised.value) is ccxt.ExchangeError
    with pytest.raises(ccxt.ExchangeError):
        ex.public_get_public_instruments({"instType": "OPTION"})  # 50015: uly or instFamily needed
    with pytest.raises(ccxt.BadRequest):
        ex.public_get_public_instruments({})


def test_responses_have_the_recorded_shapes(server: ReplayServer) -> None:
    recorded = recorded_responses("okx")
    ex = client(server)
    ex.load_markets()
    calls = {
        "fetchOHLCV": lambda case: ex.fetch_ohlcv(SPOT, "1m", T0, 3),
        "fetchOrderBook": lambda case: ex.fetch_order_book(case["input"][0], 2),
        "fetchStatus": lambda case: ex.fetch_status(),
        "fetchTime": lambda case: ex.fetch_time(),
        "fetchTicker": lambda case: ex.fetch_ticker(SPOT),
        "fetchTrades": lambda case: ex.fetch_trades(SPOT, None, 1),
    }
    assert set(recorded) - set(calls) == {
        "fetchOpenInterest",
        "fetchTakerBuySellVolume",
    }  # not served
    compared = 0
    for method, call in calls.items():
        for case in recorded[method]:
            ex.last_json_response = None
            call(case)
            replayed = ex.last_json_response
            assert replayed and (replayed["data"] or method == "fetchStatus"), (
                f"{method}: nothing to compare"
            )
            assert (
                shape_differences(case["httpResponse"], replayed, allow_extra_keys=False) == []
            ), method
            compared += 1
    assert compared == 7


def test_real_tapes_round_trip(tmp_path: Path) -> None:
    """The okx folder of ../shared/tapes/real served alone (other venues' folders need not
    load here); every candle comes back with its exact decimal text."""
    real = require_shared(REAL_TAPES / "okx")
    os.symlink(real, tmp_path / "okx")
    tape = Tape.load(tmp_path)
    try:
        with ReplayServer(tape) as srv:
            ex = client(srv)
            ex.load_markets()
            checked = 0
            for symbol, data in tape.exchanges["okx"].symbols.items():
                for timeframe, candles in data.ohlcv.items():
                    rows = candles.rows(0, len(candles))
                    got: list[list[str]] = []
                    since, step = rows[0].ts, 300 * candles.timeframe_ms
                    while since <= rows[-1].ts:
                        ex.fetch_ohlcv(symbol, timeframe, since=since, limit=300)
                        got.extend(r[:6] for r in reversed(ex.last_json_response["data"]))
                        since += step
                    assert got == [
                        [str(c.ts), c.open, c.high, c.low, c.close, c.volume] for c in rows
                    ], f"{symbol} {timeframe}"
                    checked += len(rows)
            assert checked > 20_000
    finally:
        tape.close()
