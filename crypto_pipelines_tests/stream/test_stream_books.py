"""Order book snapshots from the stream: stock ccxt.pro against the replay exchange's
WebSocket books on all four venues, stored through the sink into SQLite.

How a stored snapshot is checked against the tape: its ``ts`` is the book's own time, the
venue's time of the last change ccxt.pro applied (Binance ``E``, Bybit and OKX ``ts``,
Coinbase Exchange ``time``; each is the time of one of the tape's snapshots, from which the
replay derives its updates), or the time of a REST snapshot (Binance). So the tape's book at
or before ``ts`` (``BookSeries.at``) is the book the venue had at that time, and the stored
levels must equal its top ``book_depth`` levels exactly. The tape's books move every
``BOOK_STEP_MS``, adding, changing and removing levels on both sides, so a lost or
misapplied change shows."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from crypto_pipelines.exchanges.book_checks import okx_checksum
from crypto_pipelines.exchanges.client import make_stream_client
from crypto_pipelines.replay import FaultConfig, ReplayClock, ReplayServer
from crypto_pipelines.replay.tape import BookSnapshot, Tape
from crypto_pipelines.replay.tape.writer import write_book, write_trades
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines.stream import StreamBatch, StreamService, StreamSettings, StreamStats
from crypto_pipelines.stream.books import BookLoop

T0 = 1_704_067_200_000
BOOK_STEP_MS = 500
BOOKS = 2_400  # 20 minutes of tape
LEVELS = 20  # per side on the tape
DEPTH = 10  # per side stored
SYMBOLS = {
    "binance": ["BTC/USDT", "BTC/USDT:USDT"],
    "bybit": ["BTC/USDT", "BTC/USDT:USDT"],
    "okx": ["BTC/USDT", "BTC/USDT:USDT"],
    "coinbaseexchange": ["BTC/USD"],
}
START = T0 + 60_000
SPEED = 4.0


def _text(value: Decimal) -> str:
    """A decimal as venues write it: no exponent, no trailing zeros."""
    text = f"{value.normalize():f}"
    return text


def _books(seed: int) -> list[BookSnapshot]:
    """A random walk of the mid price in ticks of 0.5, levels skipped at random and amounts
    redrawn at random: each snapshot adds, changes and removes levels of both sides."""
    rng = random.Random(seed)
    mid = 84_000  # in ticks
    out = []
    for k in range(BOOKS):
        mid += rng.choice((-2, -1, 0, 0, 1, 2))
        sides: list[list[tuple[str, str]]] = []
        for sign in (-1, 1):
            levels: list[tuple[str, str]] = []
            tick = mid + sign
            while len(levels) < LEVELS:
                if rng.random() < 0.8:
                    amount = Decimal(rng.randint(1, 50_000)) / 1000
                    levels.append((_text(Decimal(tick) / 2), _text(amount)))
                tick += sign
            sides.append(levels)
        out.append(BookSnapshot(T0 + k * BOOK_STEP_MS, sides[0], sides[1]))
    return out


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("books-tape")
    for exchange, symbols in SYMBOLS.items():
        for k, symbol in enumerate(symbols):
            write_book(root, exchange, symbol, _books(seed=len(exchange) * 10 + k))
            trades = [(T0 + i * 1_000, 1_000 + i, "buy", "42000.5", "0.25") for i in range(1_200)]
            write_trades(root, exchange, symbol, trades)
    # prices with a trailing zero: text OKX would not send, so its checksum cannot match
    padded = [
        BookSnapshot(b.ts, [(p + "0" if "." in p else p + ".0", a) for p, a in b.bids], b.asks)
        for b in _books(seed=99)
    ]
    write_book(root, "okx", "ETH/USDT", padded)
    return root


@pytest.fixture
def server(tape: Path, request: pytest.FixtureRequest) -> Iterator[ReplayServer]:
    faults: FaultConfig = getattr(request, "param", FaultConfig())
    with ReplayServer(tape, clock=ReplayClock(start_ms=START, speed=SPEED), faults=faults) as srv:
        yield srv


async def _stream(
    server: ReplayServer,
    db: Path,
    exchange: str,
    seconds: float,
    *,
    watchdog_s: float = 3.0,
    symbols: list[str] | None = None,
) -> tuple[StreamStats, pd.DataFrame]:
    settings = StreamSettings(
        trades=False,
        books=True,
        book_depth=DEPTH,
        book_every_s=0.2,
        watchdog_s=watchdog_s,
        flush_ms=100,
        backoff_base_s=0.05,
        backoff_max_s=0.2,
    )
    watched = {exchange: symbols or SYMBOLS[exchange]}
    with MarketStore.open(f"sqlite:///{db}") as store:
        service = StreamService(watched, store, settings=settings, replay_url=server.url)
        stats = await service.run_for(seconds)
        stored = store.read("order_book_snapshots", exchange=exchange)
    return stats, stored


def _levels(rows: pd.DataFrame, side: str) -> list[tuple[float, float]]:
    part = rows[rows["side"] == side].sort_values("level")
    assert part["level"].tolist() == list(range(len(part))), "levels numbered 0, 1, ..."
    return list(zip(part["price"].tolist(), part["amount"].tolist(), strict=True))


def _assert_tape_books(tape: Path, exchange: str, stored: pd.DataFrame) -> dict[str, int]:
    """Every stored snapshot is the tape's book at its ts, cut to ``DEPTH``; returns the
    number of snapshots per symbol."""
    loaded = Tape.load(tape)
    counts: dict[str, int] = {}
    for (symbol, ts), rows in stored.groupby(["symbol", "ts"]):
        series = loaded.exchanges[exchange].symbols[str(symbol)].book
        assert series is not None
        book = series.at(int(ts))
        assert book is not None, (symbol, ts)
        bids, asks = _levels(rows, "bid"), _levels(rows, "ask")
        assert 0 < len(bids) <= DEPTH and 0 < len(asks) <= DEPTH
        assert bids[0][0] < asks[0][0], f"{symbol} at {ts}: crossed"
        want = [[(float(p), float(a)) for p, a in side[:DEPTH]] for side in (book.bids, book.asks)]
        assert [bids, asks] == want, f"{symbol} at {ts}: not the tape's book"
        counts[str(symbol)] = counts.get(str(symbol), 0) + 1
    return counts


@pytest.mark.parametrize("exchange", sorted(SYMBOLS))
async def test_snapshots_are_the_venue_books(
    server: ReplayServer, tape: Path, tmp_path: Path, exchange: str
) -> None:
    stats, stored = await _stream(server, tmp_path / "m.db", exchange, 5.0)
    counts = _assert_tape_books(tape, exchange, stored)
    assert sorted(counts) == sorted(SYMBOLS[exchange]), stats.as_json()
    assert min(counts.values()) >= 5, (counts, stats.as_json())
    assert not stats.errors and not stats.reconnects, stats.as_json()
    assert not stats.book_resyncs and stats.rows_rejected == 0, stats.as_json()
    assert not stats.touched  # committed, but no partition of an asset to report
    first = stored.groupby(["symbol", "ts"]).size()
    assert (first == 2 * DEPTH).all()  # the tape has more levels than stored


@pytest.mark.parametrize("server", [FaultConfig(ws_lost=0.1, seed=7)], indirect=True)
@pytest.mark.parametrize("exchange", ["binance", "okx"])
async def test_a_sequence_gap_resyncs_the_book_and_stores_no_broken_one(
    server: ReplayServer, tape: Path, tmp_path: Path, exchange: str
) -> None:
    """Book updates silently lost (no error, no reconnect): ccxt.pro sees the next update
    not follow the last (Binance: ``U`` after ``u``; OKX: ``prevSeqId``) and drops its book;
    the stream counts it and subscribes again for a fresh snapshot (Binance: over REST; OKX:
    unsubscribed and subscribed, a lost OKX snapshot found by the book's own watchdog), and
    every snapshot stored, before and after, is the venue's book at its time."""
    stats, stored = await _stream(server, tmp_path / "m.db", exchange, 6.0, watchdog_s=1.5)
    counts = server.app.stats.snapshot()["exchanges"][exchange]
    assert sum(c.get("ws_lost", 0) for c in counts.values()) >= 1, counts
    assert stats.book_resyncs[exchange] >= 1, stats.as_json()
    assert not stats.reconnects, stats.as_json()  # one book's gap is not the connection's
    snapshots = _assert_tape_books(tape, exchange, stored)
    assert sorted(snapshots) == SYMBOLS[exchange], (snapshots, stats.as_json())


async def test_a_book_failing_its_checksum_is_never_stored(
    server: ReplayServer, tmp_path: Path
) -> None:
    """OKX's checksum is over the venue's own text of the top 25 levels; the tape's
    ``ETH/USDT`` writes its prices with a trailing zero (``2500.50``), which no client holding
    numbers reproduces, so every book fails it although its sequence ids follow: each is
    dropped and taken afresh (resyncs spaced out), and none is stored."""
    stats, stored = await _stream(server, tmp_path / "m.db", "okx", 4.0, symbols=["ETH/USDT"])
    assert stats.book_resyncs["okx"] >= 3, stats.as_json()
    assert stored.empty and not stats.reconnects, stats.as_json()


def test_okx_checksum_is_the_venues() -> None:
    """The client-side checksum of a book equals the replay's (OKX's algorithm over the
    venue's text) for a book written as OKX writes numbers, and changes with any level."""
    import ccxt.pro

    from crypto_pipelines.replay.ws.okx import checksum

    client = ccxt.pro.okx()
    for snap in _books(seed=1)[:50]:
        book = {
            side: [[float(p), float(a)] for p, a in levels]
            for side, levels in (("bids", snap.bids), ("asks", snap.asks))
        }
        assert okx_checksum(client, book) == checksum(snap)
        book["asks"][3][1] += 1
        assert okx_checksum(client, book) != checksum(snap)


async def test_a_book_that_needs_keys_is_parked_not_the_connection(server: ReplayServer) -> None:
    """Coinbase Exchange's ``level2`` needs a signed subscription: a client without keys
    cannot watch it (ccxt.pro raises before sending). The symbol's book loop says so in the
    statistics and waits, rather than returning or raising, which would end the exchange's
    whole connection (its trades too)."""
    stats = StreamStats()
    client = make_stream_client("coinbaseexchange", replay_url=server.url)

    async def emit(batch: StreamBatch) -> None:
        raise AssertionError("nothing to emit")

    loop = BookLoop(
        "coinbaseexchange", stats, emit, lambda watch: watch, lambda: None, depth=5, every_s=0.1
    )
    task = asyncio.create_task(loop.run(client, "BTC/USD"))
    try:
        for _ in range(100):
            if stats.errors or task.done():
                break
            await asyncio.sleep(0.05)
        assert not task.done()
        assert "AuthenticationError" in stats.errors["coinbaseexchange:books"], stats.errors
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
