"""Bybit replay: errors as ccxt sees them (unknown symbols, bad parameters, injected faults,
enforced rate limits), the recorded response shapes and the real tapes."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import pytest

from crypto_pipelines.replay import FaultConfig, ReplayClock, ReplayServer, Tape, point_ccxt_at
from crypto_pipelines_tests.replay.shape import recorded_responses, shape_differences
from crypto_pipelines_tests.replay.test_bybit import NOW, T0, build_tape, client, stats


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tape]:
    loaded = Tape.load(build_tape(tmp_path_factory.mktemp("bybit-tape")))
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def server(tape: Tape) -> Iterator[ReplayServer]:
    with ReplayServer(tape, clock=ReplayClock(start_ms=NOW, speed=0)) as srv:
        yield srv


def _get(
    server: ReplayServer, path: str, query: dict[str, Any]
) -> tuple[int, dict[str, str], bytes]:
    """One raw request, as a client without ccxt's throttle would send it."""
    host, port = urllib.parse.urlsplit(server.url).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", f"/bybit/api.bybit.com{path}?{urllib.parse.urlencode(query)}")
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# -- bad requests ---------------------------------------------------------------------------
def test_unknown_symbols_are_bad_symbol(server: ReplayServer) -> None:
    ex = client(server)
    ex.load_markets()
    with pytest.raises(ccxt.BadSymbol):  # ccxt refuses symbols the exchange did not list
        ex.fetch_ohlcv("DOGE/USDT", "1m")
    for path, query in (
        ("kline", {"category": "linear", "symbol": "DOGEUSDT", "interval": "1"}),
        ("kline", {"category": "linear", "symbol": "ETHUSDT", "interval": "1"}),  # spot-only id
        ("kline", {"category": "inverse", "symbol": "BTCUSDT", "interval": "1"}),  # linear id
        ("recent_trade", {"category": "spot", "symbol": "BTCUSD"}),
        ("orderbook", {"category": "option", "symbol": "BTC-29DEC23-80000-C"}),
        ("tickers", {"category": "linear", "symbol": "DOGEUSDT"}),
        ("tickers", {"category": "spot", "symbol": "ETHUSDT"}),  # listed, but no data to report
        ("funding_history", {"category": "linear", "symbol": "DOGEUSDT"}),
    ):
        with pytest.raises(ccxt.BadSymbol, match="Not supported symbols"):
            getattr(ex, f"public_get_v5_market_{path}")(query)
    status, _, body = _get(
        server, "/v5/market/kline", {"category": "linear", "symbol": "XUSDT", "interval": "1"}
    )
    assert status == 200 and json.loads(body)["retCode"] == 10001


def test_bad_parameters_are_bad_request(server: ReplayServer) -> None:
    ex = client(server)
    ex.load_markets()
    with pytest.raises(ccxt.BadRequest, match="10001"):
        ex.public_get_v5_market_kline({"category": "linear", "symbol": "BTCUSDT", "interval": "7"})
    with pytest.raises(ccxt.BadRequest, match="endTime"):  # Bybit refuses startTime alone
        ex.public_get_v5_market_funding_history(
            {"category": "linear", "symbol": "BTCUSDT", "startTime": T0}
        )
    with pytest.raises(ccxt.BadRequest, match="category"):
        ex.public_get_v5_market_funding_history({"category": "spot", "symbol": "BTCUSDT"})
    with pytest.raises(ccxt.BadRequest):  # a route the replay does not serve
        ex.public_get_v5_market_mark_price_kline(
            {"category": "linear", "symbol": "BTCUSDT", "interval": "1"}
        )
    with pytest.raises(ccxt.NotSupported):  # refused by ccxt itself
        ex.fetch_funding_rate_history("BTC/USDT")


# -- injected faults ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("faults", "error", "counter"),
    [
        (FaultConfig(rate_limit=1.0), ccxt.RateLimitExceeded, "rate_limited"),
        (FaultConfig(server_error=1.0), ccxt.ExchangeNotAvailable, "server_errors"),
        (FaultConfig(timeout=1.0, timeout_s=1.5), ccxt.RequestTimeout, "timeouts"),
    ],
)
def test_injected_faults_reach_ccxt_as_the_exchange_errors(
    tape: Tape, faults: FaultConfig, error: type[Exception], counter: str
) -> None:
    with ReplayServer(tape, clock=ReplayClock(start_ms=NOW, speed=0)) as srv:
        ex = client(srv, timeout=500)
        ex.load_markets()
        srv.set_faults(faults)
        with pytest.raises(error):
            ex.fetch_ohlcv("BTC/USDT", "1m", since=T0, limit=5)
        if error is ccxt.RateLimitExceeded:
            status, headers, body = _get(srv, "/v5/market/time", {})
            assert status == 200 and json.loads(body)["retMsg"] == "Too many visits!"
            assert headers["x-bapi-limit"] == "600" and headers["x-bapi-limit-status"] == "0"
        assert stats(srv)["/v5/market/kline"][counter] >= 1


async def test_injected_server_error_reaches_the_async_client(tape: Tape) -> None:
    with ReplayServer(
        tape, clock=ReplayClock(start_ms=NOW, speed=0), faults=FaultConfig(server_error=1.0)
    ) as srv:
        ex = point_ccxt_at(ccxt_async.bybit({"enableRateLimit": False}), srv.url)
        try:
            with pytest.raises(ccxt.ExchangeNotAvailable):
                await ex.fetch_time()
        finally:
            await ex.close()


# -- enforced rate limits ---------------------------------------------------------------------------
def test_enforced_ip_limit_answers_10006_with_bapi_headers(tape: Tape) -> None:
    """600 requests per 5 s window per IP: the 601st is answered retCode 10006 with the
    X-Bapi-Limit headers, and a ccxt client that ignores limits gets RateLimitExceeded."""
    with ReplayServer(tape, clock=ReplayClock(start_ms=NOW, speed=0), enforce_limits=True) as srv:
        remaining: list[int] = []
        while len(remaining) < 1300:
            status, headers, body = _get(srv, "/v5/market/time", {})
            if json.loads(body)["retCode"] != 0:
                break
            remaining.append(int(headers["x-bapi-limit-status"]))
        # whatever window the run started in, the refused request's window took 600 first
        assert remaining[-600:] == list(range(599, -1, -1))
        assert status == 200 and json.loads(body) == {
            "retCode": 10006,
            "retMsg": "Too many visits!",
            "result": {},
            "retExtInfo": {},
            "time": NOW,
        }
        assert headers["x-bapi-limit"] == "600" and headers["x-bapi-limit-status"] == "0"
        reset = int(headers["x-bapi-limit-reset-timestamp"])
        assert reset % 5000 == 0  # the end of the 5-second window
        ex = client(srv)
        with pytest.raises(ccxt.RateLimitExceeded):
            for _ in range(700):
                ex.fetch_time()
        assert stats(srv)["/v5/market/time"]["rate_limited"] >= 2


# -- recorded shapes ---------------------------------------------------------------------------------
def test_responses_have_the_recorded_shapes(server: ReplayServer) -> None:
    recorded = recorded_responses("bybit")
    ex = client(server)
    ex.load_markets()
    linear = {"category": "linear", "symbol": "BTCUSDT"}
    replayed = {
        ("fetchOHLCV", "BTC/USDT:USDT"): ex.public_get_v5_market_kline(
            {**linear, "interval": "1", "limit": 3}
        ),
        ("fetchTrades", "BTC/USDT:USDT"): ex.public_get_v5_market_recent_trade(
            {**linear, "limit": 1}
        ),
        ("fetchOrderBook", "BTC/USDT:USDT"): ex.public_get_v5_market_orderbook(
            {**linear, "limit": 2}
        ),
        ("fetchOrderBook", "BTC/USDT"): ex.public_get_v5_market_orderbook(
            {"category": "spot", "symbol": "BTCUSDT", "limit": 2}
        ),
        ("fetchTicker", "BTC/USDT:USDT"): ex.public_get_v5_market_tickers(linear),
        ("fetchFundingRate", "BTC/USDT:USDT"): ex.public_get_v5_market_tickers(linear),
        ("fetchFundingRates", "BTC/USDT:USDT"): ex.public_get_v5_market_tickers(
            {"category": "linear"}
        ),
    }
    compared = 0
    for (method, symbol), response in replayed.items():
        for case in recorded[method]:
            first = case["input"][0]
            if (first[0] if isinstance(first, list) else first) != symbol:
                continue
            expected = json.loads(json.dumps(case["httpResponse"]))
            if method in ("fetchFundingRate", "fetchFundingRates"):
                # ccxt writes the envelope time into the item before storing it: not Bybit's
                for item in expected["result"]["list"]:
                    item.pop("timestamp", None)
            body = response["result"]
            assert body.get("list", body.get("b")), (
                f"{method} {symbol}: empty replay proves nothing"
            )
            assert shape_differences(expected, response) == [], f"{method} {symbol}"
            compared += 1
    assert compared == 7


# -- real tapes --------------------------------------------------------------------------------------
def test_real_tapes_round_trip(real_tape: Tape) -> None:
    venue = real_tape.exchanges["bybit"]
    clock = ReplayClock(start_ms=T0, speed=0)
    checked = 0
    with ReplayServer(real_tape, clock=clock) as srv:
        ex = client(srv)
        ex.load_markets()
        for symbol, series in venue.symbols.items():
            for timeframe, candles in series.ohlcv.items():
                clock.start_ms = int(candles.file.ts[-1]) + 1
                expected = [
                    [c.ts, *(float(v) for v in c[1:])] for c in candles.rows(0, len(candles))
                ]
                got = ex.fetch_ohlcv(
                    symbol,
                    timeframe,
                    since=candles.first_ts,
                    params={"paginate": True, "until": candles.last_ts},
                )
                assert _same(got, expected), f"{symbol} {timeframe}"
                checked += 1
            if series.book is not None:
                for i in range(len(series.book)):
                    snap = series.book.snapshot(i)
                    clock.start_ms = snap.ts
                    book = ex.fetch_order_book(symbol, limit=500)
                    assert book["timestamp"] == snap.ts
                    assert book["bids"] == [[float(p), float(a)] for p, a in snap.bids[:500]]
                    assert book["asks"] == [[float(p), float(a)] for p, a in snap.asks[:500]]
                    checked += 1
    assert checked >= 3 + 50


def _same(got: list[list[float]], expected: list[list[float]]) -> bool:
    """Equal rows, NaN (the tape's unknown volume, passed through) equal to NaN."""
    return len(got) == len(expected) and all(
        all(a == b or (a != a and b != b) for a, b in zip(g, e, strict=True))
        for g, e in zip(got, expected, strict=True)
    )
