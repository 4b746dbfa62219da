"""Coinbase Exchange through stock ccxt clients: trades, book, tickers, errors, limits, the
recorded response shapes and the real tapes, on the tape ``test_coinbaseexchange.py`` writes."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import orjson
import pytest

from crypto_pipelines.replay import FaultConfig, ReplayServer, Tape
from crypto_pipelines.replay.tape import Trade
from crypto_pipelines_tests.replay.shape import recorded_responses, shape_differences
from crypto_pipelines_tests.replay.test_coinbaseexchange import (
    N_TRADES,
    NOW,
    VENUE,
    as_ccxt,
    async_client,
    client,
    pinned_server,
    wire,
    write_tape,
)


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tape]:
    loaded = Tape.load(write_tape(tmp_path_factory.mktemp("coinbase-tape")))
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def server(tape: Tape) -> Iterator[ReplayServer]:
    with pinned_server(tape) as srv:
        yield srv


def tape_trades(tape: Tape, end: int = NOW) -> list[Trade]:
    series = tape.exchanges[VENUE].symbols["BTC/USD"].trades
    assert series is not None
    return series.between(None, end, 10**9)


def unified(trades: list[Trade]) -> list[tuple[Any, ...]]:
    return [(t.id, t.ts, t.side, float(t.price), float(t.amount)) for t in trades]


def seen(trades: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(t["id"], t["timestamp"], t["side"], t["price"], t["amount"]) for t in trades]


# -- trades ------------------------------------------------------------------------------------
def test_trades_are_the_newest_1000_at_or_before_now(server: ReplayServer, tape: Tape) -> None:
    ex = client(server)
    expected = tape_trades(tape)
    assert len(expected) == 3601 < N_TRADES
    got = ex.fetch_trades("BTC/USD", limit=5000)  # ccxt sends 5000; the venue caps pages at 1000
    assert seen(got) == unified(expected[-1000:])
    raw = got[-1]["info"]
    # Coinbase reports the MAKER side: the tape's taker side comes back inverted on the wire,
    # and ccxt inverts it again, so the unified side is the tape's.
    assert raw["side"] == {"buy": "sell", "sell": "buy"}[expected[-1].side]
    assert raw["trade_id"] == int(expected[-1].id) and raw["time"] == "2024-03-15T12:00:00.123000Z"
    assert ex.fetch_trades("BTC/USD", limit=3) == got[-3:]
    assert ex.last_response_headers["CB-BEFORE"] == expected[-1].id
    assert ex.last_response_headers["CB-AFTER"] == expected[-3].id


def test_trades_page_back_with_after_and_forward_with_before(
    server: ReplayServer, tape: Tape
) -> None:
    """ccxt never pages Coinbase trades itself; a caller reads CB-AFTER and passes ``after``
    to go back, CB-BEFORE with ``before`` to come forward again."""
    ex = client(server)
    pages = [ex.fetch_trades("BTC/USD", limit=1000)]
    while pages[-1]:
        cursor = ex.last_response_headers["CB-AFTER"]
        pages.append(ex.fetch_trades("BTC/USD", limit=1000, params={"after": cursor}))
    assert [len(p) for p in pages] == [1000, 1000, 1000, 601, 0]
    older_first = [t for page in reversed(pages) for t in page]
    assert seen(older_first) == unified(tape_trades(tape))
    forward: list[dict[str, Any]] = []
    cursor = str(int(tape_trades(tape)[0].id) - 1)
    while page := ex.fetch_trades("BTC/USD", limit=700, params={"before": cursor}):
        forward += page
        cursor = ex.last_response_headers["CB-BEFORE"]
    assert seen(forward) == unified(tape_trades(tape))  # and nothing after "now"


async def test_async_client_pages_trades(server: ReplayServer, tape: Tape) -> None:
    ex = async_client(server)
    try:
        first = await ex.fetch_trades("BTC/USD", limit=200)
        # aiohttp hands ccxt the headers as sent (lower case here, as over HTTP/2 at the venue)
        headers = {k.lower(): v for k, v in ex.last_response_headers.items()}
        older = await ex.fetch_trades("BTC/USD", limit=200, params={"after": headers["cb-after"]})
        book = await ex.fetch_order_book("BTC/USD")
    finally:
        await ex.close()
    assert seen(older + first) == unified(tape_trades(tape)[-400:])
    assert book["nonce"] == (NOW - 10_000) * 1000


# -- book, ticker, time --------------------------------------------------------------------------
def test_order_book_is_the_snapshot_at_or_before_now(server: ReplayServer, tape: Tape) -> None:
    ex = client(server)
    book_series = tape.exchanges[VENUE].symbols["BTC/USD"].book
    assert book_series is not None
    snap = book_series.at(NOW)
    assert snap is not None and snap.ts == NOW - 10_000  # not the one 20 s after "now"
    book = ex.fetch_order_book("BTC/USD", limit=5)  # ccxt neither sends nor applies the limit
    assert book["bids"] == [[float(p), float(a), 1] for p, a in snap.bids]
    assert book["asks"] == [[float(p), float(a), 1] for p, a in snap.asks]
    assert book["nonce"] == snap.ts * 1000 and book["timestamp"] is None  # ccxt ignores "time"
    raw = orjson.loads(ex.last_http_response)
    assert (
        raw["bids"][0] == [snap.bids[0][0], snap.bids[0][1], 1]
        and raw["time"] == "2024-03-15T12:00:20.000000Z"
    )
    top = ex.fetch_order_book("BTC/USD", params={"level": 1})
    assert (top["bids"], top["asks"]) == (
        [[float(snap.bids[0][0]), float(snap.bids[0][1]), 1]],
        [[float(snap.asks[0][0]), float(snap.asks[0][1]), 1]],
    )


def test_ticker_stats_and_time(server: ReplayServer, tape: Tape) -> None:
    ex = client(server)
    last = tape_trades(tape)[-1]
    minutes = (
        tape.exchanges[VENUE]
        .symbols["BTC/USD"]
        .ohlcv["1m"]
        .between(NOW - 86_400_000 + 1, NOW, 10**9)
    )
    day_volume = float(sum((Decimal(c.volume) for c in minutes), Decimal(0)))
    ticker = ex.fetch_ticker("BTC/USD")
    assert (ticker["last"], ticker["timestamp"], ticker["baseVolume"]) == (
        float(last.price),
        last.ts,
        day_volume,
    )
    assert (ticker["bid"], ticker["ask"]) == (60000 - 1 + 0.5, 60001 + 1 + 0.5)  # the book at now
    assert ticker["info"]["trade_id"] == int(last.id)
    ex.options["fetchTickerMethod"] = "publicGetProductsIdStats"
    stats = ex.fetch_ticker("BTC/USD")
    assert (stats["open"], stats["last"], stats["baseVolume"]) == (
        float(minutes[0].open),
        float(minutes[-1].close),
        day_volume,
    )
    assert stats["high"] == max(float(c.high) for c in minutes) and stats["low"] == min(
        float(c.low) for c in minutes
    )
    # a market with candles only: the last close, no trade behind it
    eth = client(server).fetch_ticker("ETH/BTC")
    assert eth["last"] == 0.0515 and eth["info"]["trade_id"] == 0
    assert ex.fetch_time() == NOW
    assert ex.public_get_time()["iso"] == "2024-03-15T12:00:30.000Z"


def test_spark_lines_give_fetch_tickers_the_last_close(server: ReplayServer, tape: Tape) -> None:
    tickers = client(server).fetch_tickers()
    assert set(tickers) == {"BTC/USD", "ETH/BTC"}
    assert tickers["BTC/USD"]["last"] == float(
        tape.exchanges[VENUE]
        .symbols["BTC/USD"]
        .ohlcv["1m"]
        .between(None, NOW, 1, newest=True)[0]
        .close
    )


# -- errors, faults, limits --------------------------------------------------------------------
def test_unknown_products_and_ccxts_odd_error_mapping(server: ReplayServer) -> None:
    ex = client(server)
    ex.load_markets()
    with pytest.raises(ccxt.BadSymbol):  # refused by the client: not in /products
        ex.fetch_trades("DOGE/USD")
    # The venue answers an unknown product with 404 {"message":"NotFound"}; ccxt's exact map
    # turns "NotFound" into OrderNotFound (it is written for private order endpoints).
    with pytest.raises(ccxt.OrderNotFound):
        ex.public_get_products_id_trades({"id": "DOGE-USD"})
    with pytest.raises(ccxt.OrderNotFound):  # the tape's perpetual is no product either
        ex.public_get_products_id_candles({"id": "BTC-USDT", "granularity": 60})
    # Any other 400/404 message becomes a plain ExchangeError (not BadSymbol/BadRequest).
    with pytest.raises(ccxt.ExchangeError, match="Invalid product_id") as caught:
        ex.public_get_products_id_book({"id": "BTCUSD"})
    assert type(caught.value) is ccxt.ExchangeError
    status, _, body = _get(
        server.url + f"/{VENUE}/api.exchange.coinbase.com/products/DOGE-USD/candles?granularity=60"
    )
    assert (status, orjson.loads(body)) == (404, {"message": "NotFound"})


@pytest.mark.parametrize(
    ("faults", "error", "counter"),
    [
        (FaultConfig(rate_limit=1.0), ccxt.RateLimitExceeded, "rate_limited"),
        (FaultConfig(server_error=1.0), ccxt.ExchangeNotAvailable, "server_errors"),
        (FaultConfig(timeout=1.0, timeout_s=0.5), ccxt.RequestTimeout, "timeouts"),
    ],
)
def test_injected_faults_reach_ccxt_as_the_exchange_errors(
    tape: Tape, faults: FaultConfig, error: type[Exception], counter: str
) -> None:
    with ReplayServer(tape, faults=faults) as srv:
        with pytest.raises(error):
            client(srv, timeout=200).fetch_time()
        stats = srv.app.stats.snapshot()["exchanges"][VENUE]["/time"]
        assert stats[counter] >= 1
        if counter == "rate_limited":
            status, _, body = _get(srv.url + f"/{VENUE}/api.exchange.coinbase.com/time")
            assert (status, orjson.loads(body)) == (429, {"message": "Public rate limit exceeded"})


def test_enforced_limit_is_10_requests_a_second(tape: Tape) -> None:
    """A client that ignores limits gets the venue's 429 within its 11th request of a second;
    a stock client gets RateLimitExceeded (which ccxt's paginate does not retry)."""
    with ReplayServer(tape, enforce_limits=True) as srv:
        url = srv.url + f"/{VENUE}/api.exchange.coinbase.com/time"
        answers = [_get(url) for _ in range(21)]  # well under a second: at most two windows
        statuses = [a[0] for a in answers]
        # one of the (at most two) one-second windows saw 11 or more requests
        assert set(statuses) == {200, 429} and 10 <= statuses.count(200) <= 20
        refused = answers[statuses.index(429)]
        assert orjson.loads(refused[2]) == {"message": "Public rate limit exceeded"}
        ex = client(srv)
        with pytest.raises(ccxt.RateLimitExceeded):
            for _ in range(21):
                ex.fetch_time()


# -- recorded shapes and real tapes ----------------------------------------------------------------
def test_responses_have_the_recorded_shapes(server: ReplayServer) -> None:
    recorded = recorded_responses(VENUE)
    ex = client(server)
    replayed = {
        "fetchTrades": ex.public_get_products_id_trades({"id": "BTC-USD", "limit": 2}),
        "fetchTicker": ex.public_get_products_id_ticker({"id": "BTC-USD"}),
        "fetchOHLCV": ex.public_get_products_id_candles({"id": "BTC-USD", "granularity": 3600}),
    }
    for method, response in replayed.items():
        assert response, f"{method}: an empty replay response proves nothing"
        for case in recorded[method]:
            # The fixture stores trade_id as a string; the venue (and the replay) send an int.
            assert shape_differences(case["httpResponse"], response) == [], method
    assert len(recorded["fetchOHLCV"][0]["httpResponse"][0]) == len(replayed["fetchOHLCV"][0]) == 6


def test_real_tapes_round_trip(real_tape_dir: Path, tmp_path: Path) -> None:
    """The real Coinbase tapes (2018 5m candles with real gaps), window by window as a caller
    must page them, come back exactly: every candle, every gap, the exact decimal text."""
    (tmp_path / VENUE).symlink_to(real_tape_dir / VENUE)  # only this venue's folder
    tape = Tape.load(tmp_path)
    try:
        with ReplayServer(tape) as srv:
            ex = client(srv)
            assert set(ex.load_markets()) == set(tape.exchanges[VENUE].markets)
            checked = 0
            for symbol, series in tape.exchanges[VENUE].symbols.items():
                for timeframe, candles in series.ohlcv.items():
                    rows = candles.rows(0, len(candles))
                    step = 300 * candles.timeframe_ms
                    got: list[list[Any]] = []
                    assert candles.first_ts is not None and candles.last_ts is not None
                    for since in range(candles.first_ts, candles.last_ts + 1, step):
                        got += ex.fetch_ohlcv(symbol, timeframe, since=since, limit=300)
                        assert ex.last_http_response == wire(
                            candles.between(since, since + step - 1, 300)
                        )
                    assert got == as_ccxt(rows), f"{symbol} {timeframe}"
                    checked += len(rows)
            assert checked > 10_000
    finally:
        tape.close()


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()
