"""WebSocket faults (drops, stalls, garbled frames) and the clock the streams follow: each
fault happens, is counted in ``/_replay/stats``, and a client that catches up over REST after
a drop gets exactly what the stream missed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import ccxt
import ccxt.pro
import pytest
import websockets

from crypto_pipelines.replay import FaultConfig, ReplayClock, Tape, point_ccxt_at
from crypto_pipelines_tests.replay.ws_helpers import (
    NOW,
    STEP_MS,
    clock,
    collect,
    counter,
    ids,
    serve,
    stats,
    tape_trades,
    wait_subscribed,
    watched_trades,
    write_venue,
    ws_url,
)

SPOT = "BTC/USDT"
CLI = Path(sys.executable).parent / "crypto-pipelines"


@pytest.fixture(scope="module")
def tape_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ws-faults")
    write_venue(root, "binance", [SPOT])
    write_venue(root, "okx", [SPOT])
    return root


@pytest.fixture(scope="module")
def tape(tape_dir: Path) -> Iterator[Tape]:
    loaded = Tape.load(tape_dir)
    yield loaded
    loaded.close()


def pro(server_url: str, exchange_id: str = "binance") -> ccxt.pro.Exchange:
    return point_ccxt_at(getattr(ccxt.pro, exchange_id)({"enableRateLimit": False}), server_url)


async def test_a_drop_then_rest_catch_up_gives_every_trade_once(tape: Tape) -> None:
    with serve(tape, FaultConfig(ws_drop_every_s=1.5)) as server:
        client = pro(server.url)
        try:
            await client.load_markets()
            first = asyncio.ensure_future(client.watch_trades(SPOT))
            await wait_subscribed(server, "binance")
            clock(server).set_ms(NOW + 10_000)
            streamed = await watched_trades(client, SPOT, first, 40)
            with pytest.raises(ccxt.NetworkError, match="closing code 1001"):
                async with asyncio.timeout(5):
                    while True:
                        await client.watch_trades(SPOT)
            assert counter(server, "binance", "connection", "ws_drops") == 1
            server.set_faults(FaultConfig())  # no more drops for the rest of the test
            clock(server).set_ms(NOW + 20_000)  # the market moves on while disconnected
            resumed = asyncio.ensure_future(client.watch_trades(SPOT))
            await wait_subscribed(server, "binance", 2)
            clock(server).set_ms(NOW + 30_000)
            after = await watched_trades(client, SPOT, resumed, 40, held=40)
            # REST catch-up over the gap between the two streams: exactly what was missed.
            # (Binance's REST serves explicit time windows from the whole tape, past "now"
            # too, so the window is closed with endTime as a client closes it.)
            gap = await client.fetch_trades(
                SPOT,
                since=streamed[-1]["timestamp"] + 1,
                params={"endTime": after[0]["timestamp"] - 1},
            )
        finally:
            await client.close()
    assert len(gap) == 40
    assert ids(streamed + gap + after) == ids(tape_trades(tape, "binance", SPOT, NOW, NOW + 30_000))


async def test_a_stall_silences_the_connection_then_delivers_what_was_due(tape: Tape) -> None:
    faults = FaultConfig(ws_stall_every_s=0.5, ws_stall_s=1.0)
    with serve(tape, faults, speed=10.0) as server:
        async with websockets.connect(ws_url(server, "okx", "ws.okx.com:8443/ws/v5/public")) as ws:
            arg = {"channel": "trades", "instId": "BTC-USDT"}
            await ws.send(json.dumps({"op": "subscribe", "args": [arg]}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["event"] == "subscribe"
            arrivals: list[tuple[float, int]] = []
            deadline = time.monotonic() + 2.5
            while time.monotonic() < deadline:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 3))
                arrivals.append((time.monotonic(), int(frame["data"][0]["tradeId"])))
            await ws.send("ping")  # still open
            while (await asyncio.wait_for(ws.recv(), 3)) != "pong":
                pass
        assert counter(server, "okx", "connection", "ws_stalls") >= 1
    gaps = [b[0] - a[0] for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert max(gaps) >= 0.8  # silent for a stall (1 s), while 40 trades a second were due
    trade_ids = [i for _, i in arrivals]
    assert trade_ids == list(range(trade_ids[0], trade_ids[0] + len(trade_ids)))  # none lost


async def test_garbled_frames_are_counted(tape: Tape) -> None:
    with serve(tape, FaultConfig(ws_malformed=0.25, seed=4)) as server:
        url = ws_url(server, "binance", "stream.binance.com:9443/ws/btcusdt@trade")
        async with websockets.connect(url) as ws:
            await asyncio.sleep(0.2)
            clock(server).set_ms(NOW + 60_000)
            good, bad = [], 0
            for _ in range(60_000 // STEP_MS):
                text = await asyncio.wait_for(ws.recv(), 5)
                try:
                    good.append(json.loads(text))
                except json.JSONDecodeError:
                    bad += 1
                    assert isinstance(text, str) and text.startswith("{")
        assert counter(server, "binance", "trade", "ws_malformed") == bad
        assert counter(server, "binance", "trade", "ws_messages") == len(good) + bad
    assert 0 < bad < len(good)
    want = {t.id: t.ts for t in tape_trades(tape, "binance", SPOT, NOW, NOW + 60_000)}
    assert all(want[str(g["t"])] == g["T"] for g in good)


async def test_a_garbled_frame_silences_a_ccxt_pro_client_until_its_keep_alive_fails(
    tape: Tape,
) -> None:
    """What ``ws_malformed`` does to ccxt.pro 4.5.90: the JSON parse of a cut frame raises
    inside its receive loop, which then stops reading; the connection stays open and the
    watch waits until the client's ping-pong keep-alive gives up (``keepAlive`` x 2: 6 min
    for Binance by default, shortened here). A pipeline has to notice the silence itself."""
    with serve(tape, FaultConfig(ws_malformed=1.0)) as server:
        options = {"enableRateLimit": False, "streaming": {"keepAlive": 300}}
        client = point_ccxt_at(ccxt.pro.binance(options), server.url)
        try:
            await client.load_markets()
            first = asyncio.ensure_future(client.watch_trades(SPOT))
            await wait_subscribed(server, "binance")
            clock(server).set_ms(NOW + 1_000)
            with pytest.raises(ccxt.RequestTimeout, match="ping-pong keepalive"):
                await asyncio.wait_for(first, 5)
        finally:
            await client.close()
        assert counter(server, "binance", "trade", "ws_malformed") == 4


async def test_a_running_clock_streams_at_its_speed(tape: Tape) -> None:
    with serve(tape, speed=20.0) as server:
        client = pro(server.url, "okx")
        try:
            await client.load_markets()
            start = clock(server).now_ms()
            got = await collect(lambda: client.watch_trades(SPOT), 80, timeout=5)  # ~1 s
            end = clock(server).now_ms()
        finally:
            await client.close()
    assert start < got[0]["timestamp"] and got[-1]["timestamp"] <= end
    want = tape_trades(tape, "okx", SPOT, got[0]["timestamp"] - 1, got[-1]["timestamp"])
    assert ids(got) == ids(want)


def test_the_clock_moves_only_when_pinned() -> None:
    pinned = ReplayClock(start_ms=NOW, speed=0)
    assert pinned.advance(1_500) == NOW + 1_500 == pinned.now_ms()
    pinned.set_ms(NOW)
    assert pinned.now_ms() == NOW
    with pytest.raises(ValueError, match="real-time clock"):
        ReplayClock().advance(1)


def _request(
    url: str, method: str = "GET", body: dict[str, object] | None = None
) -> tuple[int, dict[str, object]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_lost_frames_are_counted_and_never_sent(tape: Tape) -> None:
    """A lost frame is silently skipped: the client sees only a jump in the trade ids."""
    with serve(tape, FaultConfig(ws_lost=0.2, seed=6)) as server:
        url = ws_url(server, "binance", "stream.binance.com:9443/ws/btcusdt@aggTrade")
        async with websockets.connect(url) as ws:
            await asyncio.sleep(0.2)
            clock(server).set_ms(NOW + 60_000)
            got = []
            with contextlib.suppress(TimeoutError):
                while True:
                    got.append(json.loads(await asyncio.wait_for(ws.recv(), 1.0))["a"])
        lost = counter(server, "binance", "aggTrade", "ws_lost")
        sent = counter(server, "binance", "aggTrade", "ws_messages")
    want = [int(t.id) for t in tape_trades(tape, "binance", SPOT, NOW, NOW + 60_000)]
    assert 0 < lost < sent == len(got) and len(got) + lost == len(want)
    assert set(got) < set(want) and got == sorted(got)


def test_faults_over_http_and_stats_reset(tape: Tape) -> None:
    with serve(tape) as server:
        fields: dict[str, object] = {
            "ws_drop_every_s": 30,
            "ws_stall_every_s": 10,
            "ws_stall_s": 2,
            "ws_malformed": 0.01,
            "ws_lost": 0.02,
        }
        status, config = _request(server.url + "/_replay/faults", "PUT", fields)
        assert status == 200 and {k: config[k] for k in fields} == fields
        assert server.app.faults.config.ws_drop_every_s == 30
        assert _request(server.url + "/_replay/faults", "PUT", {"ws_malformed": 2})[0] == 400
        assert _request(server.url + "/_replay/faults", "PUT", {"ws_stall_s": -1})[0] == 400
        assert stats(server)["totals"]["ws_drops"] == 0


def test_cli_flags(tape_dir: Path) -> None:
    proc = subprocess.Popen(
        [
            str(CLI),
            "replay",
            "serve",
            "--tape",
            str(tape_dir),
            "--ws-drop-every",
            "12",
            "--ws-stall-every",
            "7",
            "--ws-stall-for",
            "0.5",
            "--ws-malformed",
            "0.05",
            "--ws-lost",
            "0.01",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        url = lines.get(timeout=60).strip()
        _, config = _request(url + "/_replay/faults")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert (
        config["ws_drop_every_s"],
        config["ws_stall_every_s"],
        config["ws_stall_s"],
        config["ws_malformed"],
        config["ws_lost"],
    ) == (12, 7, 0.5, 0.05, 0.01)
