"""Funding from the stream, on Binance, OKX and Bybit over real WebSockets (stock ccxt.pro
against the replay exchange): the announced rate and mark price reach the handlers as
``mark`` batches (never stored); when the announced settlement time moves on, the settled
rate is fetched over REST into ``funding_rates``, as the tape has it; settlements missed
before the stream started are caught up when it connects; a perpetual without a funding
channel does not disturb the rest of the stream."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from crypto_pipelines.replay import ReplayClock, ReplayServer
from crypto_pipelines.replay.tape.writer import write_funding, write_ohlcv, write_trades
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines.stream import StreamService, StreamSettings
from crypto_pipelines.stream.events import StreamBatch

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
HOUR = 3_600_000
SETTLE = T0 + 8 * HOUR  # the settlement the stream sees pass
PERP = "BTC/USDT:USDT"
RATES = {T0 - 8 * HOUR: "0.0001", T0: "0.00012", SETTLE: "-0.00005", T0 + 16 * HOUR: "0.0003"}
START = SETTLE - 60_000  # the clock starts a minute before the settlement
SPEED = 5.0
VENUES = ("binance", "bybit", "okx")


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("funding-tape")
    for exchange in VENUES:
        first = SETTLE - 30 * 60_000
        trades = [
            (first + i * 500, 1_000 + i, "buy" if i % 2 else "sell", "42000.5", "0.01")
            for i in range(6 * 60 * 60 * 2)  # 30 min before the settlement to 2.5 h after
        ]
        write_trades(root, exchange, PERP, trades)
        candles = [
            (first + m * 60_000, "42000", "42010", "41990", f"{42000 + m}", "5") for m in range(180)
        ]
        write_ohlcv(root, exchange, PERP, "1m", candles)
        write_funding(root, exchange, PERP, sorted(RATES.items()))
    return root


@pytest.fixture
def server(tape: Path) -> Iterator[ReplayServer]:
    with ReplayServer(tape, clock=ReplayClock(start_ms=START, speed=SPEED)) as srv:
        yield srv


class Recorder:
    """A handler of our own, as a user adds one: keeps the ``mark`` batches."""

    def __init__(self) -> None:
        self.marks: list[StreamBatch] = []

    async def handle(self, batch: StreamBatch) -> None:
        if batch.kind == "mark":
            self.marks.append(batch)

    async def close(self) -> None:
        return None


@pytest.mark.parametrize("exchange", VENUES)
def test_settlements_are_stored_as_the_venue_records_them(
    server: ReplayServer, tmp_path: Path, exchange: str
) -> None:
    recorder = Recorder()
    settings = StreamSettings(
        funding=True, watchdog_s=10, flush_ms=100, catch_up_lookback_ms=60_000
    )
    with MarketStore.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        service = StreamService(
            {exchange: [PERP]},
            store,
            settings=settings,
            replay_url=server.url,
            handlers=[recorder],
        )
        # 20 s of wall time are 100 s of the venue's: OKX announces once a minute
        stats = asyncio.run(service.run_for(20.0))
        stored = store.read("funding_rates", exchange=exchange, symbol=PERP)
        trades = store.count("trades")
    # Caught up at the start (the rates of the past week the venue has), then the settlement
    # the stream saw pass; never the one still ahead, never an announced estimate.
    assert [int(ts) for ts in stored["ts"]] == [T0 - 8 * HOUR, T0, SETTLE], stats.as_json()
    assert [float(r) for r in stored["rate"]] == [0.0001, 0.00012, -0.00005]
    assert stats.funding_rows[exchange] == 3
    assert trades > 0  # the trades streamed on beside it
    rows = [row for batch in recorder.marks for row in batch.rows]
    announced = [(row["next_funding_ms"], row["funding_rate"]) for row in rows]
    # The rate for 08:00 announced before it (so the catch-up when connecting was before the
    # settlement, and the 08:00 row stored came from the stream seeing it pass), then 16:00's.
    assert (SETTLE, -0.00005) in announced
    assert (T0 + 16 * HOUR, 0.0003) in announced
    marks = [row["mark_price"] for row in rows if row["mark_price"] is not None]
    if exchange != "okx":  # OKX's funding-rate channel carries no mark price
        assert marks and all(42000 <= m <= 42180 for m in marks)


def test_a_perpetual_without_a_funding_channel_does_not_disturb_the_stream(
    tape: Path, tmp_path: Path
) -> None:
    """The replay serves funding channels only for perpetuals with funding rows (a real venue
    has them for all): refused, the loop idles, and trades go on without reconnects."""
    root = tmp_path / "tape"
    trades = [(START + i * 500, 1 + i, "buy", "42000.5", "0.01") for i in range(400)]
    write_trades(root, "binance", PERP, trades)
    write_ohlcv(root, "binance", PERP, "1m", [(START - 60_000, "1", "1", "1", "1", "1")])
    settings = StreamSettings(funding=True, watchdog_s=10, flush_ms=100)
    with (
        ReplayServer(root, clock=ReplayClock(start_ms=START, speed=SPEED)) as srv,
        MarketStore.open(f"sqlite:///{tmp_path / 'm.db'}") as store,
    ):
        service = StreamService({"binance": [PERP]}, store, settings=settings, replay_url=srv.url)
        stats = asyncio.run(service.run_for(4.0))
        stored = store.count("trades")
    assert stored > 0
    assert dict(stats.reconnects) == {}, stats.as_json()
