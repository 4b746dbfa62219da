"""Shared pieces of the WebSocket tests: a small tape written per venue, a server whose clock
the test moves (speed 0: time stands still until ``clock.set_ms``), and ways to wait for
subscriptions and to collect what stock ccxt.pro clients yield."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from crypto_pipelines.replay import FaultConfig, ReplayClock, ReplayServer, Tape
from crypto_pipelines.replay.tape import BookSnapshot, Trade
from crypto_pipelines.replay.tape.writer import write_book, write_ohlcv, write_trades

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
MIN = 60_000
MINUTES = 10
STEP_MS = 250  # a trade every 250 ms
NOW = T0 + 2 * MIN + 30_000  # where each test's clock starts: inside the tape, mid-minute
BOOKS = 16  # book snapshots, one every 30 s from T0 (the fifth is the book at NOW)


def write_venue(root: Path, exchange: str, symbols: Sequence[str], seed: int = 0) -> None:
    """Trades every 250 ms, the 1m candles they make, and book snapshots every 30 s for
    each symbol (ids increase across the tape; prices wander so every candle differs)."""
    for n, symbol in enumerate(symbols):
        trades = []
        for i in range(MINUTES * MIN // STEP_MS):
            price = 100 + (i * 7 + n + seed) % 23 + ((i // 40) % 5) * 0.5
            amount = f"0.{(i * 3 + n) % 9 + 1:03d}"
            side = "buy" if (i + n) % 3 else "sell"
            trades.append((T0 + i * STEP_MS, 10_000 + i, side, f"{price:.1f}", amount))
        write_trades(root, exchange, symbol, trades)
        write_ohlcv(root, exchange, symbol, "1m", _candles(trades))
        write_book(root, exchange, symbol, [_book(k, n) for k in range(BOOKS)])


def _candles(trades: list[tuple[int, int, str, str, str]]) -> list[tuple[Any, ...]]:
    out = []
    for start in range(T0, T0 + MINUTES * MIN, MIN):
        rows = [t for t in trades if start <= t[0] < start + MIN]
        prices = [float(t[3]) for t in rows]
        volume = sum(int(t[4].split(".")[1]) for t in rows)
        out.append(
            (
                start,
                rows[0][3],
                f"{max(prices):.1f}",
                f"{min(prices):.1f}",
                rows[-1][3],
                f"{volume / 1000:.3f}",
            )
        )
    return out


def _book(k: int, n: int) -> BookSnapshot:
    """Snapshot k: levels shift with k, so consecutive snapshots add, change and drop
    levels on both sides."""
    bids = [(f"{99 - j - (k % 3) * 0.5:.1f}", f"{(j + k + n) % 7 + 1}.5") for j in range(12)]
    asks = [
        (f"{101 + j + (k % 2) * 0.5:.1f}", f"{(j * 2 + k) % 5 + 1}.25") for j in range(12 - k % 4)
    ]
    return BookSnapshot(T0 + k * 30_000, bids, asks)


@contextmanager
def serve(
    tape: Tape, faults: FaultConfig | None = None, speed: float = 0.0
) -> Iterator[ReplayServer]:
    """A server on ``tape`` whose clock starts at ``NOW`` (``server.app.clock``)."""
    with ReplayServer(tape, clock=ReplayClock(start_ms=NOW, speed=speed), faults=faults) as srv:
        yield srv


def clock(server: ReplayServer) -> ReplayClock:
    return server.app.clock


def tape_trades(tape: Tape, exchange: str, symbol: str, start: int, end: int) -> list[Trade]:
    """The tape's trades with ``start < ts <= end``: what a stream from ``start`` sends
    once the clock reaches ``end``."""
    series = tape.exchanges[exchange].symbols[symbol].trades
    assert series is not None
    return series.between(start + 1, end, 1_000_000)


def closed_candles(
    tape: Tape, exchange: str, symbol: str, start: int, end: int
) -> list[list[float]]:
    """The tape's 1m candles whose minute ended in ``(start, end]``, as ccxt numbers."""
    series = tape.exchanges[exchange].symbols[symbol].ohlcv["1m"]
    rows = series.between(start - MIN + 1, end - MIN, 1_000_000)
    return [[c.ts, *(float(v) for v in c[1:])] for c in rows]


def stats(server: ReplayServer) -> dict[str, Any]:
    with urllib.request.urlopen(server.url + "/_replay/stats", timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
    return result


def counter(server: ReplayServer, exchange: str, channel: str, name: str) -> int:
    endpoint = stats(server)["exchanges"].get(exchange, {}).get("ws:" + channel, {})
    return int(endpoint.get(name, 0))


async def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(check):
            await asyncio.sleep(0.02)


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Until ``check()`` holds, looked at every 10 ms on this loop: for state a ccxt.pro
    client updates from every frame it receives (its caches), whether or not a watch call
    is pending when the frame arrives."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def wait_subscribed(server: ReplayServer, exchange: str, n: int = 1) -> None:
    """Until ``n`` subscriptions have been made on ``exchange`` (stats count them when the
    acknowledgement has been sent, after which the stream starts at the clock's time)."""

    def done() -> bool:
        return int(stats(server)["totals"]["ws_subscribed"]) >= n

    await wait_until(done)


async def collect(
    watch: Callable[[], Awaitable[list[Any]]], n: int, timeout: float = 10.0
) -> list[Any]:
    """What successive ``watch()`` calls yield (ccxt.pro returns what is new each call) until
    there are at least ``n`` items."""
    got: list[Any] = []
    async with asyncio.timeout(timeout):
        while len(got) < n:
            got.extend(await watch())
    return got


async def nothing_more(watch: Callable[[], Awaitable[list[Any]]], wait_s: float = 0.3) -> bool:
    """Whether ``watch()`` stays pending for ``wait_s`` (nothing new is sent)."""
    try:
        await asyncio.wait_for(watch(), wait_s)
    except TimeoutError:
        return True
    return False


def ids(trades: Sequence[Any]) -> list[str]:
    return [t["id"] if isinstance(t, dict) else t.id for t in trades]


def ws_url(server: ReplayServer, exchange: str, host_path: str) -> str:
    return server.url.replace("http://", "ws://") + f"/{exchange}/{host_path}"


def tape_book(
    tape: Tape, exchange: str, symbol: str, at_ms: int
) -> tuple[list[list[float]], list[list[float]]]:
    """The tape's book at ``at_ms`` as ccxt numbers (bids, asks)."""
    series = tape.exchanges[exchange].symbols[symbol].book
    assert series is not None
    snap = series.at(at_ms)
    assert snap is not None
    return (
        [[float(p), float(a)] for p, a in snap.bids],
        [[float(p), float(a)] for p, a in snap.asks],
    )


async def follow_book(
    server: ReplayServer,
    tape: Tape,
    client: Any,
    exchange: str,
    symbol: str,
    depth: int | None = None,
) -> int:
    """Move the clock to each later book snapshot of the tape in turn and check, after each,
    that the book the ccxt.pro client built (``client.orderbooks``, what ``watch_order_book``
    returns) equals the tape's, cut to ``depth`` levels; returns how many deltas were applied."""
    steps = 0
    for k in range((NOW - T0) // 30_000 + 1, BOOKS):
        at = T0 + k * 30_000
        clock(server).set_ms(at)

        def reached(at: int = at) -> bool:
            return bool((client.orderbooks.get(symbol) or {}).get("timestamp") == at)

        await until(reached)
        book = client.orderbooks[symbol].limit()
        bids, asks = tape_book(tape, exchange, symbol, at)
        assert [list(b) for b in book["bids"]] == bids[:depth]
        assert [list(a) for a in book["asks"]] == asks[:depth]
        steps += 1
    return steps


async def watched_trades(
    client: Any, symbol: str, first: Awaitable[list[Any]], n: int, held: int = 0
) -> list[Any]:
    """The ``n`` trades a ccxt.pro client receives for ``symbol`` after the ``held`` it
    already had (its cache, which successive ``watch_trades`` calls return slices of),
    checking that the pending ``first`` call returned a run of them. Polling the cache, not
    calling ``watch_trades`` again, because a frame handled while no call is pending resolves
    nothing: a second call could wait forever for trades already received."""
    got = ids(await first)
    await until(lambda: len(client.trades.get(symbol) or []) >= held + n)
    cache = list(client.trades[symbol])
    start = ids(cache).index(got[0])
    assert ids(cache[start : start + len(got)]) == got
    return cache[held:]
