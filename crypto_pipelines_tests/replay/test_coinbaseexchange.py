"""Coinbase Exchange through stock ccxt ``coinbaseexchange`` clients: markets and candles.

Trades, book, tickers, errors, limits, recorded shapes and the real tapes are in
``test_coinbaseexchange_more.py``, which reuses this module's tape and server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import pytest

from crypto_pipelines.replay import ReplayClock, ReplayServer, Tape, point_ccxt_at
from crypto_pipelines.replay.tape import BookSnapshot, Candle
from crypto_pipelines.replay.tape.markets import MarketSpec
from crypto_pipelines.replay.tape.writer import (
    write_book,
    write_funding,
    write_markets,
    write_ohlcv,
    write_trades,
)

VENUE = "coinbaseexchange"
T0 = 1_710_288_000_000  # 2024-03-13 00:00 UTC
MIN = 60_000
HOUR = 3_600_000
DAYS = 4
NOW = T0 + 60 * HOUR + 30_000  # the pinned replay "now": 2.5 days into the tape
MISSING = {5, 6, 7, 1000, 3000}  # minutes with no candle: the venue publishes none
N_TRADES = 4000  # one a minute; the first 3601 are at or before NOW
NAN_HOUR = 10  # ETH/BTC's candle with unknown volume


def _minute(i: int) -> tuple[int, str, str, str, str, str]:
    base = 60000 + (i % 97) - (i % 13) * 0.5
    return (
        T0 + i * MIN,
        f"{base:.2f}",
        f"{base + 3.25:.2f}",
        f"{base - 2.5:.2f}",
        f"{base + 1.01:.2f}",
        f"{(i % 17) * 0.125 + 0.00000001:.8f}",
    )


def _snapshot(ts: int, shift: int) -> BookSnapshot:
    return BookSnapshot(
        ts,
        [(f"{60000 - j - shift}.5", f"{j + 1}.25") for j in range(40)],
        [(f"{60001 + j + shift}.5", f"0.{j + 2:04d}") for j in range(40)],
    )


def write_tape(root: Path) -> Path:
    """The test tape: BTC/USD (1m with gaps, 1h, trades, book), ETH/BTC (1h, one candle of
    unknown volume) and a perpetual the venue must not list."""
    write_ohlcv(
        root, VENUE, "BTC/USD", "1m", [_minute(i) for i in range(DAYS * 1440) if i not in MISSING]
    )
    write_ohlcv(
        root,
        VENUE,
        "BTC/USD",
        "1h",
        [
            (T0 + h * HOUR, "60000.00", "60100.00", "59900.00", "60050.00", "12.5")
            for h in range(DAYS * 24)
        ],
    )
    write_trades(
        root,
        VENUE,
        "BTC/USD",
        [
            (
                T0 + i * MIN + 123,
                9_000_000 + 2 * i,
                "buy" if i % 3 else "sell",
                f"{60000 + i % 50}.{i % 100:02d}",
                f"0.{i % 97 + 1:05d}",
            )
            for i in range(N_TRADES)
        ],
    )
    write_book(
        root,
        VENUE,
        "BTC/USD",
        [_snapshot(NOW - 40_000, 0), _snapshot(NOW - 10_000, 1), _snapshot(NOW + 20_000, 2)],
    )
    write_ohlcv(
        root,
        VENUE,
        "ETH/BTC",
        "1h",
        [
            (
                T0 + h * HOUR,
                "0.05123",
                "0.05200",
                "0.05001",
                "0.05150",
                "nan" if h == NAN_HOUR else f"{h}.5",
            )
            for h in range(DAYS * 24)
        ],
    )
    # A perpetual on the tape: Coinbase Exchange has none, so it must not be listed.
    write_ohlcv(root, VENUE, "BTC/USDT:USDT", "1m", [_minute(i) for i in range(10)])
    write_funding(root, VENUE, "BTC/USDT:USDT", [(T0 + k * 8 * HOUR, "0.0001") for k in range(3)])
    write_markets(
        root,
        VENUE,
        [
            MarketSpec("BTC/USD", "spot", "0.01", "0.00000001", "0.0001", None, T0),
            MarketSpec("ETH/BTC", "spot", "0.00001", "0.00001", "0.001", None, T0),
            MarketSpec("BTC/USDT:USDT", "swap", "0.1", "0.001", "0.001", "1", T0),
        ],
    )
    return root


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tape]:
    loaded = Tape.load(write_tape(tmp_path_factory.mktemp("coinbase-tape")))
    yield loaded
    loaded.close()


def pinned_server(tape: Tape) -> ReplayServer:
    """A server whose "now" is NOW, frozen, so "latest" questions have one answer."""
    return ReplayServer(tape, clock=ReplayClock(start_ms=NOW, speed=0))


@pytest.fixture(scope="module")
def server(tape: Tape) -> Iterator[ReplayServer]:
    with pinned_server(tape) as srv:
        yield srv


def client(server: ReplayServer, **config: Any) -> ccxt.coinbaseexchange:
    return point_ccxt_at(ccxt.coinbaseexchange({"enableRateLimit": False, **config}), server.url)


def async_client(server: ReplayServer, **config: Any) -> ccxt_async.coinbaseexchange:
    return point_ccxt_at(
        ccxt_async.coinbaseexchange({"enableRateLimit": False, **config}), server.url
    )


def candles(
    tape: Tape, symbol: str, timeframe: str, start: int = 0, end: int = NOW
) -> list[Candle]:
    series = tape.exchanges[VENUE].symbols[symbol].ohlcv[timeframe]
    return series.between(start, end, 10**9)


def as_ccxt(rows: list[Candle]) -> list[list[float | None]]:
    """What ccxt makes of tape candles: floats, unknown volume as None."""
    return [
        [
            c.ts,
            float(c.open),
            float(c.high),
            float(c.low),
            float(c.close),
            None if c.volume == "nan" else float(c.volume),
        ]
        for c in rows
    ]


def wire(rows: list[Candle]) -> str:
    """The venue's bytes for tape candles: newest first, [t_s, low, high, open, close, volume]
    as raw JSON numbers holding the tape's exact decimal text."""
    return (
        "["
        + ",".join(
            f"[{c.ts // 1000},{c.low},{c.high},{c.open},{c.close},{'null' if c.volume == 'nan' else c.volume}]"
            for c in reversed(rows)
        )
        + "]"
    )


def requests_to(server: ReplayServer, path: str) -> int:
    return int(
        server.app.stats.snapshot()["exchanges"].get(VENUE, {}).get(path, {}).get("requests", 0)
    )


# -- markets ---------------------------------------------------------------------------------
def test_load_markets_lists_spot_products_only(server: ReplayServer) -> None:
    ex = client(server)
    markets = ex.load_markets()
    assert set(markets) == {"BTC/USD", "ETH/BTC"}  # the tape's perpetual is not a Coinbase product
    btc, eth = markets["BTC/USD"], markets["ETH/BTC"]
    assert (btc["id"], btc["type"], btc["spot"], btc["swap"], btc["contract"], btc["active"]) == (
        "BTC-USD",
        "spot",
        True,
        False,
        False,
        True,
    )
    assert (btc["precision"]["price"], btc["precision"]["amount"]) == (0.01, 0.00000001)
    assert (eth["id"], eth["precision"]["price"], eth["precision"]["amount"]) == (
        "ETH-BTC",
        0.00001,
        0.00001,
    )
    # ccxt reads no amount limits from Coinbase products; the tape knows no minimum order value.
    assert btc["limits"]["amount"]["min"] is None and btc["limits"]["cost"]["min"] == 0.0
    # /currencies is derived from the listed markets, each at its finest step.
    assert set(ex.currencies) == {"BTC", "USD", "ETH"}
    assert (
        ex.currencies["BTC"]["precision"],
        ex.currencies["USD"]["precision"],
        ex.currencies["ETH"]["precision"],
    ) == (0.00000001, 0.01, 0.00001)
    product = ex.public_get_products_id({"id": "BTC-USD"})
    assert (
        product["status"] == "online"
        and product["quote_increment"] == "0.01"
        and product["base_increment"] == "0.00000001"
    )


def test_no_funding_and_no_status_on_this_venue(server: ReplayServer) -> None:
    ex = client(server)
    with pytest.raises(ccxt.NotSupported):
        ex.fetch_funding_rate_history("BTC/USD")
    with pytest.raises(ccxt.NotSupported):
        ex.fetch_status()
    with pytest.raises(ccxt.BadSymbol):  # not listed, so the client refuses it
        ex.fetch_ohlcv("BTC/USDT:USDT", "1m")


# -- candles -----------------------------------------------------------------------------------
def test_ohlcv_since_limit_covers_limit_buckets_and_gaps_stay_gaps(
    server: ReplayServer, tape: Tape
) -> None:
    ex = client(server)
    got = ex.fetch_ohlcv("BTC/USD", "1m", since=T0, limit=10)
    # ccxt asks for start..start+9 min; minutes 5-7 have no candle and are not invented.
    assert got == as_ccxt(candles(tape, "BTC/USD", "1m", T0, T0 + 9 * MIN))
    assert [c[0] for c in got] == [T0 + i * MIN for i in (0, 1, 2, 3, 4, 8, 9)]
    assert ex.last_http_response == wire(candles(tape, "BTC/USD", "1m", T0, T0 + 9 * MIN))


def test_ohlcv_rows_are_raw_numbers_and_unknown_volume_is_null(
    server: ReplayServer, tape: Tape
) -> None:
    ex = client(server)
    got = ex.fetch_ohlcv("ETH/BTC", "1h", since=T0, limit=24)
    rows = candles(tape, "ETH/BTC", "1h", T0, T0 + 23 * HOUR)
    assert got == as_ccxt(rows) and got[NAN_HOUR][5] is None
    assert ex.last_http_response == wire(rows) and '"' not in ex.last_http_response


def test_ohlcv_unaligned_since_includes_the_bucket_holding_it(
    server: ReplayServer, tape: Tape
) -> None:
    ex = client(server)
    ex.load_markets()
    raw = ex.public_get_products_id_candles(
        {
            "id": "BTC-USD",
            "granularity": 60,
            "start": "2024-03-13T00:10:30.5Z",
            "end": "2024-03-13T00:12:00Z",
        }
    )
    assert [r[0] * 1000 for r in raw] == [
        T0 + 12 * MIN,
        T0 + 11 * MIN,
        T0 + 10 * MIN,
    ]  # newest first
    # unix seconds work as well as ISO 8601
    same = ex.public_get_products_id_candles(
        {
            "id": "BTC-USD",
            "granularity": 60,
            "start": str((T0 + 10 * MIN + 30_500) / 1000),
            "end": str((T0 + 12 * MIN) // 1000),
        }
    )
    assert same == raw
    # ccxt then drops the bucket that starts before ``since``
    got = ex.fetch_ohlcv("BTC/USD", "1m", since=T0 + 10 * MIN + 1234, limit=3)
    assert [c[0] for c in got] == [T0 + 11 * MIN, T0 + 12 * MIN]


def test_ohlcv_without_since_is_the_300_buckets_ending_now(
    server: ReplayServer, tape: Tape
) -> None:
    ex = client(server)
    window_start = NOW - NOW % MIN - 299 * MIN
    expected = as_ccxt(candles(tape, "BTC/USD", "1m", window_start, NOW))
    assert len(expected) == 300  # no gap in that window; the in-progress minute is included
    assert ex.fetch_ohlcv("BTC/USD", "1m") == expected
    assert ex.fetch_ohlcv("BTC/USD", "1m", limit=5) == expected[-5:]
    # ccxt drops ``until`` when there is no ``since``: the same newest window comes back.
    assert ex.fetch_ohlcv("BTC/USD", "1m", params={"until": T0 + 10 * MIN}) == expected


def test_ohlcv_never_serves_candles_after_now(server: ReplayServer, tape: Tape) -> None:
    got = client(server).fetch_ohlcv("BTC/USD", "1m", since=NOW - NOW % MIN - 100 * MIN, limit=300)
    assert got[-1][0] == NOW - NOW % MIN and len(got) == 101


def test_ohlcv_more_than_300_buckets_is_refused_not_clamped(server: ReplayServer) -> None:
    ex = client(server)
    with pytest.raises(ccxt.ExchangeError, match="Count of aggregations requested exceeds 300"):
        ex.fetch_ohlcv("BTC/USD", "1m", since=T0, params={"until": T0 + 301 * MIN})
    # 300 intervals is the most the venue accepts (the bucket holding ``start`` plus 300 more
    # would be 301: the oldest is dropped)
    got = ex.fetch_ohlcv("BTC/USD", "1m", since=T0 + 2000 * MIN, params={"until": T0 + 2300 * MIN})
    assert len(got) == 300 and got[-1][0] == T0 + 2300 * MIN


def test_ohlcv_unsupported_granularity(server: ReplayServer) -> None:
    # ccxt sends timeframes it has no mapping for verbatim ("granularity=2h")
    with pytest.raises(ccxt.ExchangeError, match="Unsupported granularity"):
        client(server).fetch_ohlcv("BTC/USD", "2h")


def test_ohlcv_multi_day_by_explicit_since_steps(server: ReplayServer, tape: Tape) -> None:
    """What works for history: one 300-candle window per call, stepping ``since`` by hand
    (with ``limit`` or with an ``until`` at most 299 buckets later)."""
    ex = client(server)
    by_limit: list[list[Any]] = []
    by_until: list[list[Any]] = []
    for since in range(T0, NOW, 300 * MIN):
        by_limit += ex.fetch_ohlcv("BTC/USD", "1m", since=since, limit=300)
        by_until += ex.fetch_ohlcv(
            "BTC/USD", "1m", since=since, params={"until": since + 299 * MIN}
        )
    expected = as_ccxt(candles(tape, "BTC/USD", "1m"))
    assert by_limit == expected and by_until == expected
    assert len(expected) == 3601 - 5  # 60 h and the in-progress minute, 5 missing minutes


def test_ccxt_paginate_with_until_fails_on_the_300_candle_rule(tape: Tape) -> None:
    """ccxt's paginate keeps ``until`` in every sub-call's params, so each window is sent as
    ``start=step, end=until``: the first window spans the whole range, the venue refuses it
    (400 "exceeds 300"), ccxt retries it 3 times and raises ExchangeError."""
    with pinned_server(tape) as srv:
        ex = client(srv)
        ex.load_markets()
        with pytest.raises(ccxt.ExchangeError, match="exceeds 300"):
            ex.fetch_ohlcv(
                "BTC/USD", "1m", since=T0, params={"paginate": True, "until": T0 + 2 * 1440 * MIN}
            )
        assert requests_to(srv, "/products/BTC-USD/candles") == 4
        # more windows than paginationCalls (10): refused by ccxt before any request
        with pytest.raises(ccxt.BadRequest, match="required calls"):
            ex.fetch_ohlcv(
                "BTC/USD", "1m", since=T0, params={"paginate": True, "until": T0 + 3 * 1440 * MIN}
            )
        assert requests_to(srv, "/products/BTC-USD/candles") == 4
        # a range of at most 300 buckets is one ordinary request
        got = ex.fetch_ohlcv(
            "BTC/USD", "1m", since=T0, params={"paginate": True, "until": T0 + 299 * MIN}
        )
        assert got == as_ccxt(candles(tape, "BTC/USD", "1m", T0, T0 + 299 * MIN))


def test_ccxt_paginate_without_until_follows_the_wall_clock(server: ReplayServer) -> None:
    """Without ``until`` ccxt replaces an old ``since`` by (wall-clock now - 10 windows): for a
    replay of 2024 that asks for windows after the replay's "now", which hold nothing."""
    ex = client(server)
    before = requests_to(server, "/products/BTC-USD/candles")
    assert ex.fetch_ohlcv("BTC/USD", "1m", since=T0, params={"paginate": True}) == []
    assert requests_to(server, "/products/BTC-USD/candles") - before == 10  # paginationCalls
    sent = [r for r in ex.last_request_url.split("?")[1].split("&") if r.startswith("start=")]
    assert sent and not sent[0].startswith("start=2024-03")


async def test_async_client_reads_the_same_candles(server: ReplayServer, tape: Tape) -> None:
    """The async client sends paginate's windows concurrently (gather); every window but the
    last still spans start..until (> 300 buckets), so it fails the same way as the sync one."""
    ex = async_client(server)
    try:
        got: list[list[Any]] = []
        for since in range(T0, T0 + 1440 * MIN, 300 * MIN):
            got += await ex.fetch_ohlcv("BTC/USD", "1m", since=since, limit=300)
        hourly = await ex.fetch_ohlcv("ETH/BTC", "1h", since=T0, limit=48)
        with pytest.raises(ccxt.ExchangeError, match="exceeds 300"):
            await ex.fetch_ohlcv(
                "BTC/USD", "1m", since=T0, params={"paginate": True, "until": T0 + 1440 * MIN}
            )
    finally:
        await ex.close()
    assert got == as_ccxt(candles(tape, "BTC/USD", "1m", T0, T0 + 1500 * MIN - 1))  # 5 windows
    assert hourly == as_ccxt(candles(tape, "ETH/BTC", "1h", T0, T0 + 47 * HOUR))
