"""Reads over real HTTP: stored rows paged by an opaque cursor (every row exactly once, in key
order, end exclusive), refusals, and a symbol's latest state from SQL and from the machine's
real Redis hot cache (as the stream writes it). On SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pandas as pd
import pytest

from crypto_pipelines.api import ApiSettings
from crypto_pipelines.api.latest import HotCache
from crypto_pipelines.api.routes import reads
from crypto_pipelines.domain.checks import is_exchange_id, is_timeframe
from crypto_pipelines.domain.symbols import SymbolError, parse_symbol
from crypto_pipelines.ingest import Sink
from crypto_pipelines.stream.cache import RedisCache
from crypto_pipelines.stream.events import StreamBatch, book_rows, candle_rows, trade_rows
from crypto_pipelines.stream.funding import mark_row
from crypto_pipelines_tests.api.conftest import DESK, OTHER, RunningApi, free_port, serve_api

REDIS_URL = os.environ.get("CRYPTO_PIPELINES_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T0 = 1_704_067_200_000
M = 60_000
H = 3_600_000
READS = ("/v1/ohlcv", "/v1/trades", "/v1/funding-rates")


def candles(n: int, step: int = M, start: int = T0) -> list[list[Any]]:
    return [
        [start + i * step, 100.0 + i, 101.0 + i, 99.0 + i, 100.5 + i, float(i)] for i in range(n)
    ]


def post(client: httpx.Client, path: str, rows: list[list[Any]], **series: str) -> None:
    answer = client.post(path, json={**series, "rows": rows})
    assert answer.status_code == 201, answer.text


def walk(client: httpx.Client, path: str, **params: Any) -> tuple[list[list[Any]], int]:
    """Every row of a read, following ``next`` to the end; and the number of pages."""
    rows: list[list[Any]] = []
    pages = 0
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor is not None else {})}
        answer = client.get(path, params=query)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert len(body["rows"]) <= params.get("limit", 1_000)
        rows += body["rows"]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            return rows, pages
        assert pages < 10_000, "the cursor does not advance"


def test_candles_page_through_every_row_once_with_end_exclusive(api: RunningApi) -> None:
    btc = candles(50)
    with api.client() as client:
        post(client, "/v1/ohlcv", btc, exchange="binance", symbol="BTC/USDT", timeframe="1m")
        post(
            client,
            "/v1/ohlcv",
            candles(5, H),
            exchange="binance",
            symbol="BTC/USDT",
            timeframe="1h",
        )
        post(client, "/v1/ohlcv", candles(9), exchange="binance", symbol="ETH/USDT", timeframe="1m")
        series = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m"}
        rows, pages = walk(
            client, "/v1/ohlcv", **series, start=T0 + 3 * M, end=T0 + 45 * M, limit=7
        )
        whole, whole_pages = walk(client, "/v1/ohlcv", **series)
        hours, _ = walk(client, "/v1/ohlcv", **{**series, "timeframe": "1h"}, limit=2)
        first = client.get("/v1/ohlcv", params={**series, "limit": 7}).json()
    assert rows == btc[3:45]  # ts of row 45 == end: excluded
    assert pages == 6  # 42 rows by 7: the last full page says there is no next
    assert whole == btc and whole_pages == 1
    assert hours == candles(5, H)
    assert {k: v for k, v in first.items() if k not in ("rows", "next")} == series
    assert first["rows"] == btc[:7] and isinstance(first["next"], str)


def test_default_limit_is_1000_and_the_maximum_10000(api: RunningApi) -> None:
    rows = candles(1_500)
    series = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m"}
    with api.client() as client:
        post(client, "/v1/ohlcv", rows, **series)
        first = client.get("/v1/ohlcv", params=series).json()
        second = client.get("/v1/ohlcv", params={**series, "cursor": first["next"]}).json()
        big = client.get("/v1/ohlcv", params={**series, "limit": 10_000})
        too_big = client.get("/v1/ohlcv", params={**series, "limit": 10_001})
    assert len(first["rows"]) == 1_000 and first["next"] is not None
    assert first["rows"] + second["rows"] == rows and second["next"] is None
    assert big.status_code == 200 and len(big.json()["rows"]) == 1_500
    assert too_big.status_code == 422
    assert too_big.json()["errors"][0]["field"] == "limit"


def test_trades_page_in_ts_then_trade_id_order(api: RunningApi) -> None:
    # Four trades per millisecond whose ids fall as time rises: neither the id order nor the
    # insertion order is the read order, and pages of 3 split every millisecond's group.
    sent: list[list[Any]] = [
        [f"{97 - i:03d}", T0 + i // 4, "buy" if i % 2 else "sell", 10.0 + i, 0.5] for i in range(30)
    ]
    expected = sorted(sent, key=lambda row: (row[1], row[0]))
    with api.client() as client:
        post(client, "/v1/trades", sent, exchange="binance", symbol="BTC/USDT")
        post(client, "/v1/trades", sent[:3], exchange="binance", symbol="ETH/USDT")
        rows, pages = walk(client, "/v1/trades", exchange="binance", symbol="BTC/USDT", limit=3)
        early, _ = walk(
            client, "/v1/trades", exchange="binance", symbol="BTC/USDT", end=T0 + 5, limit=6
        )
    assert rows == expected
    assert pages == 10
    assert early == [row for row in expected if row[1] < T0 + 5] and len(early) == 20


def test_funding_rates_page(api: RunningApi) -> None:
    sent = [[T0 + i * 8 * H, 0.0001 * (i - 2)] for i in range(5)]
    with api.client() as client:
        post(client, "/v1/funding-rates", sent, exchange="binance", symbol="BTC/USDT:USDT")
        rows, pages = walk(
            client, "/v1/funding-rates", exchange="binance", symbol="BTC/USDT:USDT", limit=2
        )
        spot = client.get("/v1/funding-rates", params={"exchange": "binance", "symbol": "BTC/USDT"})
    assert rows == sent and pages == 3
    assert spot.status_code == 200 and spot.json()["rows"] == []


def test_bad_cursors_and_malformed_series_are_refused_unknown_ones_are_empty(
    api: RunningApi,
) -> None:
    ohlcv = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m"}
    trades = {"exchange": "binance", "symbol": "BTC/USDT"}
    with api.client() as client:
        post(client, "/v1/ohlcv", candles(3), **ohlcv)
        post(
            client, "/v1/trades", [["1", T0, "buy", 1.0, 1.0], ["2", T0, "buy", 1.0, 1.0]], **trades
        )
        trades_cursor = client.get("/v1/trades", params={**trades, "limit": 1}).json()["next"]
        candles_cursor = client.get("/v1/ohlcv", params={**ohlcv, "limit": 1}).json()["next"]
        assert trades_cursor and candles_cursor

        def status(path: str, **params: Any) -> tuple[int, str | None]:
            answer = client.get(path, params=params)
            errors = answer.json().get("errors") or [{}]
            return answer.status_code, errors[0].get("field")

        for cursor in (
            "not a cursor!",
            "e30",  # {}
            trades_cursor,  # [ts, trade_id] where [ts] belongs
            candles_cursor[:-2],
            "W3RydWVd",  # [true]
        ):
            assert status("/v1/ohlcv", **ohlcv, cursor=cursor) == (422, "cursor"), cursor
        assert status("/v1/trades", **trades, cursor=candles_cursor) == (422, "cursor")
        assert status("/v1/trades", **trades, cursor=trades_cursor)[0] == 200
        assert status("/v1/ohlcv", **{**ohlcv, "timeframe": "7x"}) == (422, "timeframe")
        assert status("/v1/ohlcv", exchange="binance", symbol="BTC/USDT") == (422, "timeframe")
        assert status("/v1/trades", exchange="binance", symbol="BTCUSDT") == (422, "symbol")
        assert status("/v1/trades", exchange="Bin ance", symbol="BTC/USDT") == (422, "exchange")
        assert status("/v1/trades", **trades, end=2**63) == (422, "end")
        for series in ({**trades, "exchange": "kraken"}, {**trades, "symbol": "DOGE/USDT"}):
            answer = client.get("/v1/trades", params=series)
            assert answer.status_code == 200
            assert answer.json() == {**series, "rows": [], "next": None}


def test_reads_need_a_known_key(api: RunningApi) -> None:
    params = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m"}
    with api.client(None) as anonymous, api.client(OTHER) as other:
        for path in (*READS, "/v1/latest/binance/BTC/USDT"):
            answer = anonymous.get(path, params=params if path in READS else None)
            assert answer.status_code == 401, path
            assert answer.headers["www-authenticate"] == "Bearer"
        assert other.get("/v1/ohlcv", params=params).status_code == 200
    with httpx.Client(
        base_url=api.url, headers={"Authorization": "Bearer not-a-key-0123456789"}
    ) as c:
        assert c.get("/v1/trades", params=params).status_code == 401


def seed_latest(api: RunningApi) -> dict[str, Any]:
    """Trades, candles and two book snapshots of binance BTC/USDT in SQL, plus a newer
    candle of the swap BTC/USDT:USDT that must not show as the spot's; what the spot's
    latest state is."""
    trades = [["9", T0 + 5, "buy", 10.0, 1.0], ["10", T0 + 7, "sell", 11.0, 2.0]]
    trades.append(["11", T0 + 7, "buy", 12.0, 3.0])  # same ms: the larger id is newer
    with api.client() as client:
        post(client, "/v1/trades", trades, exchange="binance", symbol="BTC/USDT")
        for timeframe, step in (("1h", H), ("1m", M)):
            rows = candles(3, step)
            post(
                client,
                "/v1/ohlcv",
                rows,
                exchange="binance",
                symbol="BTC/USDT",
                timeframe=timeframe,
            )
        swap = candles(1, M, T0 + 10 * M)
        post(client, "/v1/ohlcv", swap, exchange="binance", symbol="BTC/USDT:USDT", timeframe="1m")
        rates = [[T0 - 8 * H, 0.0001], [T0, -0.0002]]
        post(client, "/v1/funding-rates", rates, exchange="binance", symbol="BTC/USDT:USDT")
    snapshots = [
        *book_rows("binance", "BTC/USDT", T0, [[99.0, 1.0]], [[101.0, 1.0]], depth=5),
        *book_rows(
            "binance", "BTC/USDT", T0 + 1_000, [[99.5, 2.0], [99.0, 4.0]], [[100.5, 3.0]], 5
        ),
    ]
    Sink(api.store, source="stream").write("order_book_snapshots", pd.DataFrame(snapshots))
    return {
        "trade": ["11", T0 + 7, "buy", 12.0, 3.0],
        "candles": {
            "1m": {"closed": candles(3, M)[-1], "forming": None},
            "1h": {"closed": candles(3, H)[-1], "forming": None},
        },
        "book": {
            "ts": T0 + 1_000,
            "bid": {"price": 99.5, "amount": 2.0},
            "ask": {"price": 100.5, "amount": 3.0},
        },
        "funding": None,
    }


def test_latest_from_sql(api: RunningApi) -> None:
    expected = seed_latest(api)
    with api.client() as client:
        answer = client.get("/v1/latest/binance/BTC/USDT")
        swap = client.get("/v1/latest/binance/BTC/USDT:USDT")
        unknown = client.get("/v1/latest/binance/ETH/USDT")
        malformed = client.get("/v1/latest/binance/BTCUSDT")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body == {"exchange": "binance", "symbol": "BTC/USDT", "source": "sql", **expected}
    assert list(body["candles"]) == ["1m", "1h"]
    assert swap.json()["candles"] == {
        "1m": {"closed": candles(1, M, T0 + 10 * M)[0], "forming": None}
    }
    assert swap.json()["trade"] is None and swap.json()["book"] is None
    assert swap.json()["funding"] == {  # the last settled rate
        "ts": T0,
        "mark_price": None,
        "funding_rate": -0.0002,
        "next_funding_ms": None,
        "settled": True,
    }
    assert unknown.status_code == 404 and "nothing is known" in unknown.json()["detail"]
    assert malformed.status_code == 422


@pytest.fixture
async def redis_cache() -> AsyncIterator[RedisCache]:
    """The stream's cache writer on the real Redis, under a key prefix of its own."""
    import redis.asyncio as redis

    probe = redis.from_url(REDIS_URL)
    try:
        await probe.ping()
    except (OSError, redis.ConnectionError):
        pytest.skip(f"no Redis at {REDIS_URL}")
    finally:
        await probe.aclose()
    cache = RedisCache(REDIS_URL, prefix=f"test-reads-{uuid.uuid4().hex[:8]}", ttl_s=60)
    yield cache
    keys = await cache.client.keys(f"{cache.prefix}:*")
    if keys:
        await cache.client.delete(*keys)
    await cache.close()


MARK_PRICE: dict[str, Any] = {  # ccxt.pro's watch_mark_price structure (Binance markPriceUpdate)
    "symbol": "BTC/USDT:USDT",
    "timestamp": T0 + 20,
    "markPrice": 42001.5,
    "info": {"e": "markPriceUpdate", "p": "42001.5", "r": "0.00015", "T": T0 + 8 * 3_600_000},
}


async def test_latest_from_the_redis_hot_cache(api: RunningApi, redis_cache: RedisCache) -> None:
    now = time.monotonic()
    spot, swap = "BTC/USDT", "BTC/USDT:USDT"
    trades = [
        {"id": i, "timestamp": T0 + i, "side": "sell", "price": 10.0 + i, "amount": 1.0}
        for i in range(3)
    ]
    batches = [
        StreamBatch("trades", "binance", spot, trade_rows("binance", spot, trades), now),
        StreamBatch(
            "candles", "binance", spot, candle_rows("binance", spot, "1m", candles(2)), now, "1m"
        ),
        StreamBatch(
            "forming",
            "binance",
            spot,
            candle_rows("binance", spot, "1m", [candles(3)[2]]),
            now,
            "1m",
        ),
        StreamBatch(
            "candles", "binance", spot, candle_rows("binance", spot, "1h", candles(1, H)), now, "1h"
        ),
        StreamBatch(
            "books",
            "binance",
            spot,
            book_rows("binance", spot, T0 + 9, [[99.0, 1.5], [98.0, 1.0]], [[101.0, 0.5]], 5),
            now,
        ),
        # The swap's keys start with the spot's: they must not be read as the spot's.
        StreamBatch(
            "forming", "binance", swap, candle_rows("binance", swap, "1m", candles(1)), now, "1m"
        ),
        StreamBatch("mark", "binance", swap, [mark_row("binance", swap, MARK_PRICE)], now),
    ]
    for batch in batches:
        await redis_cache.handle(batch)
    with api.client() as client:  # a symbol the cache does not know, stored in SQL only
        post(client, "/v1/ohlcv", candles(2), exchange="binance", symbol="ETH/USDT", timeframe="1m")

    settings = ApiSettings(keys=(DESK,), redis_url=REDIS_URL)
    with serve_api(settings, api.services) as running:
        running.app.state.hot_cache = HotCache(REDIS_URL, prefix=redis_cache.prefix)  # type: ignore[attr-defined]
        with running.client() as client:
            answer = client.get("/v1/latest/binance/BTC/USDT")
            swap_answer = client.get("/v1/latest/binance/BTC/USDT:USDT")
            stored = client.get("/v1/latest/binance/ETH/USDT")
            unknown = client.get("/v1/latest/okx/BTC/USDT")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "exchange": "binance",
        "symbol": spot,
        "source": "redis",
        "trade": ["2", T0 + 2, "sell", 12.0, 1.0],
        "candles": {
            "1m": {"closed": candles(2)[1], "forming": candles(3)[2]},
            "1h": {"closed": candles(1, H)[0], "forming": None},
        },
        "book": {
            "ts": T0 + 9,
            "bid": {"price": 99.0, "amount": 1.5},
            "ask": {"price": 101.0, "amount": 0.5},
        },
        "funding": None,
    }
    assert swap_answer.json()["source"] == "redis"
    assert swap_answer.json()["funding"] == {  # announced for the next settlement
        "ts": T0 + 20,
        "mark_price": 42001.5,
        "funding_rate": 0.00015,
        "next_funding_ms": T0 + 8 * H,
        "settled": False,
    }
    assert swap_answer.json()["candles"] == {"1m": {"closed": None, "forming": candles(1)[0]}}
    assert stored.json()["source"] == "sql"
    assert stored.json()["candles"] == {"1m": {"closed": candles(2)[1], "forming": None}}
    assert unknown.status_code == 404


def test_latest_falls_back_to_sql_when_redis_is_unreachable(api: RunningApi) -> None:
    settings = ApiSettings(keys=(DESK,), redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with serve_api(settings, api.services) as running, running.client() as client:
        post(client, "/v1/ohlcv", candles(2), exchange="binance", symbol="BTC/USDT", timeframe="1m")
        started = time.monotonic()
        answer = client.get("/v1/latest/binance/BTC/USDT")
        took = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert answer.json()["source"] == "sql"
    assert answer.json()["candles"] == {"1m": {"closed": candles(2)[1], "forming": None}}
    assert took < 5


def _is_symbol(value: str) -> bool:
    try:
        parse_symbol(value)
    except SymbolError:
        return False
    return True


@pytest.mark.parametrize(
    ("pattern", "rule", "samples"),
    [
        (
            reads.EXCHANGE_PATTERN,
            is_exchange_id,
            ["binance", "okx", "gateio2", "", "Binance", "1inch", "bin ance", "kraken-x"],
        ),
        (
            reads.SYMBOL_PATTERN,
            _is_symbol,
            ["BTC/USDT", "BTC/USDT:USDT", "1000PEPE/USDT", "a.b/c-d:e", "BTCUSDT", "BTC/"]
            + ["/USDT", "BTC/USDT:", "BTC USDT/X", "BTC/USDT:USDT:X", "BTC/USDT/ETH", ""],
        ),
        (
            reads.TIMEFRAME_PATTERN,
            is_timeframe,
            ["1m", "15m", "1h", "1d", "1w", "1M", "12M", "01m", "0m", "0M", "01M", "1y", "m"]
            + ["1mm", "", "1 m", "-1m"],
        ),
    ],
)
def test_the_schema_patterns_accept_what_the_domain_rules_accept(
    pattern: str, rule: Any, samples: list[str]
) -> None:
    for value in samples:
        assert (re.search(pattern, value) is not None) == rule(value), value
