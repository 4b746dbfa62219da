"""Running the replay exchange: in the foreground (CLI) or in a background thread (Python, tests)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from pathlib import Path
from types import TracebackType

import uvicorn

from crypto_pipelines.replay.app import ReplayApp
from crypto_pipelines.replay.clock import ReplayClock
from crypto_pipelines.replay.faults import FaultConfig
from crypto_pipelines.replay.tape import Tape

log = logging.getLogger(__name__)


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening socket; port 0 picks a free port (read it back from ``getsockname``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit TCP_NODELAY: without it a keep-alive client (requests,
    # ccxt's sync transport) waits ~40 ms per request on Nagle's algorithm and delayed ACKs.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


def _config(app: ReplayApp) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        loop="auto",
        http="auto",
        ws="auto",
        timeout_keep_alive=30,
        backlog=2048,
    )


def serve_forever(app: ReplayApp, sock: socket.socket) -> None:
    """Serve until interrupted (SIGINT/SIGTERM)."""
    uvicorn.Server(_config(app)).run(sockets=[sock])


class ReplayServer:
    """The replay exchange in a background thread::

    with ReplayServer(Tape.load(path)) as server:
        exchange = point_ccxt_at(ccxt.binance(), server.url)
    """

    def __init__(
        self,
        tape: Tape | Path | str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultConfig | None = None,
        enforce_limits: bool = False,
        clock: ReplayClock | None = None,
    ) -> None:
        self._owns_tape = not isinstance(tape, Tape)
        self.tape = tape if isinstance(tape, Tape) else Tape.load(tape)
        self.app = ReplayApp(self.tape, faults=faults, enforce_limits=enforce_limits, clock=clock)
        self._sock = bind(host, port)
        self.url = base_url(self._sock)
        self._server = uvicorn.Server(_config(self.app))
        self._thread = threading.Thread(target=self._run, name="replay-exchange", daemon=True)

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def start(self) -> ReplayServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("replay exchange failed to start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._sock.close()
        if self._owns_tape:
            self.tape.close()

    def set_faults(self, config: FaultConfig) -> None:
        self.app.set_faults(config)

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
