"""The stream service over real WebSockets: stock ccxt.pro against the replay exchange's
WebSocket side, on all four venues, with and without faults (drops, stalls, garbled frames).

The replay clock runs faster than real time from inside the tape; when the service stops,
every trade from the tape's start up to the newest one stored must be stored, exactly once:
REST catch-up before connecting, a bridge catch-up after the first message, reconnects with
catch-up after every drop, the watchdog for silent connections, failover to REST polling
when the WebSocket keeps failing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from crypto_pipelines.replay import FaultConfig, ReplayClock, ReplayServer
from crypto_pipelines.replay.tape.writer import write_ohlcv, write_trades
from crypto_pipelines.storage.gaps import GapStore
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines.stream import StreamService, StreamSettings, StreamStats

T0 = 1_704_067_200_000
STEP_MS = 100
N = 12_000  # 20 minutes of tape
SYMBOLS = {
    "binance": ["BTC/USDT", "BTC/USDT:USDT"],
    "bybit": ["BTC/USDT", "BTC/USDT:USDT"],
    "okx": ["BTC/USDT", "BTC/USDT:USDT"],
    "coinbaseexchange": ["BTC/USD"],
}
START = T0 + 60_000  # the clock starts one minute into the tape
SPEED = 4.0


def _tape(root: Path) -> Path:
    for exchange, symbols in SYMBOLS.items():
        for k, symbol in enumerate(symbols):
            trades = [
                (T0 + i * STEP_MS, 1_000 + i, "buy" if (i + k) % 3 else "sell", "42000.5", "0.25")
                for i in range(N)
            ]
            write_trades(root, exchange, symbol, trades)
            candles = [
                (T0 + m * 60_000, "42000.5", "42000.5", "42000.5", "42000.5", "150")
                for m in range(N * STEP_MS // 60_000)
            ]
            write_ohlcv(root, exchange, symbol, "1m", candles)
    return root


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tape(tmp_path_factory.mktemp("stream-tape"))


@pytest.fixture
def server(tape: Path, request: pytest.FixtureRequest) -> Iterator[ReplayServer]:
    faults: FaultConfig = getattr(request, "param", FaultConfig())
    clock = ReplayClock(start_ms=START, speed=SPEED)
    with ReplayServer(tape, clock=clock, faults=faults) as srv:
        yield srv


async def _stream(
    server: ReplayServer, db: Path, exchange: str, seconds: float, **settings: float
) -> tuple[StreamStats, dict[str, list[int]]]:
    chosen: dict[str, float] = {
        "backoff_base_s": 0.05,
        "backoff_max_s": 0.2,
        "watchdog_s": 1.5,
        "flush_ms": 100,
        **settings,
    }
    config = StreamSettings(**chosen)  # type: ignore[arg-type]
    with MarketStore.open(f"sqlite:///{db}") as store:
        service = StreamService(
            {exchange: SYMBOLS[exchange]}, store, settings=config, replay_url=server.url
        )
        stats = await service.run_for(seconds)
        stored = {
            s: sorted(int(i) for i in store.read("trades", exchange=exchange, symbol=s)["trade_id"])
            for s in SYMBOLS[exchange]
        }
    return stats, stored


def _assert_complete(
    stored: dict[str, list[int]], streamed_at_least: int, first: int | None = 1_000
) -> None:
    """Every id from ``first`` (None: the first stored, for a venue whose REST keeps only
    its latest trades) to the newest stored, once; and the stream went on past the start."""
    for symbol, ids in stored.items():
        assert ids, symbol
        begin = ids[0] if first is None else first
        assert ids == list(range(begin, ids[-1] + 1)), f"{symbol}: a hole or a duplicate"
        # caught up to the clock's start, then streamed on
        assert ids[-1] - 1_000 + 1 >= (START - T0) // STEP_MS + streamed_at_least, symbol


@pytest.mark.parametrize("exchange", sorted(SYMBOLS))
async def test_every_trade_once_on_every_venue(
    server: ReplayServer, tmp_path: Path, exchange: str
) -> None:
    stats, stored = await _stream(server, tmp_path / "m.db", exchange, 8.0)
    # Bybit's REST has its latest trades only (60 of a spot pair): the start is what it had
    _assert_complete(stored, streamed_at_least=20, first=None if exchange == "bybit" else 1_000)
    assert stats.messages[f"{exchange}:trades"] > 10, stats.as_json()
    assert stats.failovers.get(exchange, 0) == 0 and not stats.errors, stats.as_json()
    assert stats.lag_ms(0.99) is not None


FAULTS = [
    pytest.param(FaultConfig(ws_drop_every_s=1.0), id="drops"),
    pytest.param(FaultConfig(ws_stall_every_s=1.0, ws_stall_s=2.0), id="stalls"),
    pytest.param(FaultConfig(ws_malformed=0.05, seed=3), id="malformed"),
]


@pytest.mark.parametrize("server", FAULTS, indirect=True)
async def test_faults_lose_nothing(server: ReplayServer, tmp_path: Path) -> None:
    stats, stored = await _stream(server, tmp_path / "m.db", "binance", 8.0)
    # exactness is the point; how far the stream got in 8 s depends on the machine's load
    _assert_complete(stored, streamed_at_least=10)
    assert stats.reconnects["binance"] >= 1, stats.as_json()


@pytest.mark.parametrize("server", [FaultConfig(ws_lost=0.05, seed=5)], indirect=True)
async def test_a_trade_the_connection_skipped_is_repaired(
    server: ReplayServer, tmp_path: Path
) -> None:
    """A frame silently never sent (no error, no reconnect): Binance's aggregate trade ids
    count up by one, so the jump is seen and the skipped trades are fetched over REST."""
    stats, stored = await _stream(server, tmp_path / "m.db", "binance", 8.0)
    counts = server.app.stats.snapshot()["exchanges"]["binance"]
    assert sum(c.get("ws_lost", 0) for c in counts.values()) >= 1, counts
    _assert_complete(stored, streamed_at_least=10)
    assert stats.id_jumps["binance"] >= 1 and stats.repaired_rows["binance"] >= 1, stats.as_json()
    assert not stats.reconnects.get("binance"), stats.as_json()


@pytest.mark.parametrize("server", [FaultConfig(ws_malformed=1.0)], indirect=True)
async def test_a_broken_websocket_fails_over_to_rest(server: ReplayServer, tmp_path: Path) -> None:
    """Every frame garbled: ccxt.pro stops reading, the watchdog notices, and after a few
    attempts the exchange is polled over REST; nothing is lost meanwhile."""
    stats, stored = await _stream(
        server,
        tmp_path / "m.db",
        "okx",
        10.0,
        watchdog_s=0.4,
        failover_after=2,
        poll_s=0.3,
        ws_retry_s=10.0,
    )
    assert stats.failovers["okx"] >= 1 and stats.polled_rows["okx"] > 0, stats.as_json()
    _assert_complete(stored, streamed_at_least=20)


async def test_a_hole_beyond_recent_only_rest_history_is_recorded(
    server: ReplayServer, tmp_path: Path
) -> None:
    """Bybit's REST keeps the newest 60 trades of a spot pair and 1,000 of a perpetual: when
    the stream was away longer than that, the hole is recorded in ``gaps`` (confirmed, with
    the reason), never silently ignored; the perpetual's history still bridged it."""
    db = tmp_path / "m.db"
    _stats, before = await _stream(server, db, "bybit", 2.0)
    await asyncio.sleep(3.0)  # 12 s of tape at speed 4: 120 trades, more than 60
    stats, after = await _stream(server, db, "bybit", 2.0)
    with MarketStore.open(f"sqlite:///{db}") as store:
        holes = GapStore(store.engine).records(status="confirmed")
    assert [(h.symbol, h.dataset) for h in holes] == [("BTC/USDT", "trades")], stats.as_json()
    assert "latest trades" in (holes[0].reason or "")
    spot = after["BTC/USDT"]
    assert spot[0] == before["BTC/USDT"][0] and spot != list(range(spot[0], spot[-1] + 1))
    perp = after["BTC/USDT:USDT"]
    assert perp == list(range(perp[0], perp[-1] + 1))
