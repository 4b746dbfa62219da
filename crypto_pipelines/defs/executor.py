"""Where a run's steps execute: in the run's own process (the default), or on Celery workers
(``dagster-celery``, Dagster's own executor) when ``CRYPTO_PIPELINES_EXECUTOR=celery``.

With Celery, the run process only orchestrates: each step is a Celery task that a worker
(``crypto-pipelines worker``) picks from a queue and executes against the same Dagster
instance (its storage must therefore be shared: PostgreSQL, not the per-machine SQLite). Every
step that calls an exchange is routed to that exchange's queue (``exchange_queue``), so an
operator can pin a venue's work to the machines (egress IPs) the venue accepts; the other
steps (the catalog, the checks) go to dagster-celery's default queue.

The executor and the workers build their Celery app from the same settings
(``celery_settings``), so the two cannot disagree on broker, backend or acknowledgement mode.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import dagster as dg

from crypto_pipelines.defs.interruptible import interruptible

EXECUTOR_ENV: Final = "CRYPTO_PIPELINES_EXECUTOR"
BROKER_ENV: Final = "CRYPTO_PIPELINES_CELERY_BROKER"
BACKEND_ENV: Final = "CRYPTO_PIPELINES_CELERY_BACKEND"
IN_PROCESS: Final = "in_process"
CELERY: Final = "celery"
DEFAULT_BROKER: Final = "amqp://guest:guest@127.0.0.1:5672//"
DEFAULT_QUEUE: Final = "dagster"
"""dagster-celery's ``task_default_queue``: the queue of steps that call no exchange."""
QUEUE_TAG: Final = "dagster-celery/queue"
"""The op tag dagster-celery routes a step by."""

CELERY_SETTINGS: Final[Mapping[str, Any]] = {
    # A task is acknowledged when it ends, not when a worker takes it: a worker that dies
    # mid-step (SIGKILL, lost machine) leaves it unacknowledged, and the broker hands it to
    # another worker. Re-running a step is safe: the loaders resume from coverage.
    "task_acks_late": True,
    # ... and the same when only the worker's pool process dies (the worker itself survives).
    "task_reject_on_worker_lost": True,
    # A worker reserves no task beyond those it runs: a queued step waits for any free worker
    # instead of behind a busy one.
    "worker_prefetch_multiplier": 1,
}


@dataclass(frozen=True)
class CelerySettings:
    """The broker and result backend the executor and every worker share."""

    broker: str
    backend: str

    def executor_config(self) -> dict[str, Any]:
        """``celery_executor``'s config: also what a worker builds its Celery app from."""
        return {
            "broker": self.broker,
            "backend": self.backend,
            "config_source": dict(CELERY_SETTINGS),
        }


def celery_settings(environ: Mapping[str, str] = os.environ) -> CelerySettings:
    """``CRYPTO_PIPELINES_CELERY_BROKER`` (default the local RabbitMQ) and
    ``CRYPTO_PIPELINES_CELERY_BACKEND``. Without a backend, results go back through the broker:
    the broker itself when it is Redis, else Celery's ``rpc://`` (replies over AMQP)."""
    broker = environ.get(BROKER_ENV, "").strip() or DEFAULT_BROKER
    default_backend = broker if broker.startswith(("redis://", "rediss://")) else "rpc://"
    backend = environ.get(BACKEND_ENV, "").strip() or default_backend
    return CelerySettings(broker=broker, backend=backend)


def executor_from_env(
    default: dg.ExecutorDefinition, environ: Mapping[str, str] = os.environ
) -> dg.ExecutorDefinition:
    """``default`` (``in_process``: ``build.EXECUTOR`` says why), made to stop on SIGTERM/SIGINT
    while a step waits for a pool slot (``defs.interruptible``: Dagster's in-process loop does
    not), or, with ``celery``, the Celery executor. Anything else fails the code location's
    load: a misspelt setting must not quietly run every step in the run's process."""
    choice = environ.get(EXECUTOR_ENV, "").strip().lower() or IN_PROCESS
    if choice == IN_PROCESS:
        return interruptible(default)
    if choice == CELERY:
        # Imported only when chosen: the default path does not pay for importing Celery.
        from dagster_celery import celery_executor

        return celery_executor.configured(celery_settings(environ).executor_config(), name="celery")
    raise ValueError(f"{EXECUTOR_ENV}={choice!r}: expected {IN_PROCESS!r} or {CELERY!r}")


def exchange_queue(exchange: str) -> str:
    """The Celery queue of the steps calling ``exchange``: the exchange id itself."""
    return exchange


def exchange_op_tags(exchange: str) -> dict[str, str]:
    """Op tags routing a step that calls ``exchange`` to its queue (ignored in process)."""
    return {QUEUE_TAG: exchange_queue(exchange)}


def worker_queues(exchanges: Iterable[str]) -> list[str]:
    """Every queue of the code location: one per exchange, and the default queue."""
    return [*(exchange_queue(e) for e in exchanges), DEFAULT_QUEUE]


def worker_id() -> str:
    """``hostname:pid`` of the process executing a step, recorded on its materializations:
    with Celery, which worker (machine, egress IP) did the work."""
    return f"{socket.gethostname()}:{os.getpid()}"
