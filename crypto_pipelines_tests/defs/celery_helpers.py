"""Real infrastructure for the Celery executor tests: a RabbitMQ virtual host and a PostgreSQL
database of their own (so concurrent test sessions never take each other's steps or runs),
and ``crypto-pipelines worker`` processes started, found and stopped by process id."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from celery import Celery
from sqlalchemy import make_url
from sqlalchemy.pool import NullPool

from crypto_pipelines.storage.engine import make_engine

BIN = Path(sys.executable).parent
RABBITMQ = ("127.0.0.1", 5672)
REDIS = ("127.0.0.1", 6379)


def reachable(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=2):
            return True
    except OSError:
        return False


@contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """A fresh virtual host (guest may use it) when ``rabbitmqctl`` is allowed here, deleted
    afterwards, with the queues in it; else the default one ("")."""
    ctl = shutil.which("rabbitmqctl")
    name = f"crypto_pipelines_test_{uuid.uuid4().hex[:12]}"

    def run(*args: str) -> bool:
        assert ctl is not None
        done = subprocess.run([ctl, "-q", *args], capture_output=True, timeout=60)
        return done.returncode == 0

    if ctl is None or not run("add_vhost", name):
        yield ""
        return
    try:
        assert run("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield name
    finally:
        run("delete_vhost", name)


@contextmanager
def postgres_database(base_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the server of ``base_url`` (a SQLAlchemy URL), as
    a plain ``postgresql://`` URL for dagster-postgres; dropped afterwards."""
    name = f"dagster_test_{uuid.uuid4().hex[:12]}"
    admin = make_engine(base_url, poolclass=NullPool).execution_options(
        isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(base_url).set(drivername="postgresql", database=name, query={})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.dispose()


@dataclass
class Worker:
    """A ``crypto-pipelines worker`` process, leader of its own process group (its Celery pool
    processes are in it)."""

    node: str
    process: subprocess.Popen[bytes]
    log: Path

    def owns(self, pid: int) -> bool:
        """Whether ``pid`` is this worker or one of its pool processes."""
        try:
            return os.getpgid(pid) == self.process.pid
        except ProcessLookupError:
            return False

    def kill(self) -> None:
        """SIGKILL to the worker and its pool processes: a machine lost mid-step."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """Celery's warm shutdown (SIGTERM), SIGKILL if it does not end in time."""
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def start_worker(env: Mapping[str, str], name: str, log_dir: Path) -> Worker:
    """``crypto-pipelines worker --concurrency 1`` on every queue, named ``name@<host>``."""
    node = f"{name}@{socket.gethostname()}"
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "crypto-pipelines"), "worker", "--concurrency", "1", "--name", node],
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Worker(node, process, log)


def control_app(broker: str) -> Celery:
    """A bare Celery app on ``broker``: enough to ping and inspect workers."""
    return Celery("crypto_pipelines_tests", broker=broker)


def wait_until_ready(broker: str, workers: list[Worker], timeout_s: float = 90) -> None:
    """Until every worker answers a ping on the broker (each has loaded the code location)."""
    app = control_app(broker)
    deadline = time.monotonic() + timeout_s
    waiting = {w.node for w in workers}
    while waiting and time.monotonic() < deadline:
        for worker in workers:
            assert worker.process.poll() is None, f"{worker.node} exited:\n{worker.output()}"
        replies = app.control.ping(destination=sorted(waiting), timeout=1.0) or []
        for reply in replies:
            waiting -= set(reply)
    app.close()
    assert not waiting, f"workers not ready: {waiting}"


def busy_worker(broker: str, workers: list[Worker], timeout_s: float) -> Worker:
    """The worker executing a step, once one is (Celery's ``inspect active``)."""
    app = control_app(broker)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            active = app.control.inspect(timeout=1.0).active() or {}
            for worker in workers:
                if active.get(worker.node):
                    return worker
            time.sleep(0.2)
    finally:
        app.close()
    raise AssertionError("no worker took a step in time")
