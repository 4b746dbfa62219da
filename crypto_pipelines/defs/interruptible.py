"""A run whose step waits for a concurrency-pool slot stops on SIGTERM and SIGINT.

Why this exists: in Dagster 1.13 the in-process executor waits for a pool slot in a loop that
never looks at the interrupts Dagster has captured. ``dagster asset materialize`` and the run
worker a launcher starts (``dagster api execute_run``) execute under Dagster's
``capture_interrupts``: SIGINT, and SIGTERM mapped onto it, only set a flag, raised at the next
interruptible point (entering a step's own code, ``dg.raise_execution_interrupts``). The
multiprocess and step-delegating executors check that flag in their loops; the in-process loop
does not. So a step blocked on its exchange's pool (the slot held by a killed run, say) ignored
Ctrl-C, ``kill`` and the UI's Terminate (which interrupts the run worker with SIGINT) for as
long as the slot stayed taken; the flag was only raised once a slot freed and the step began.
The same loop never sleeps either (its pause until the next claim check is ``min(0, ...)``,
never positive), so the wait also holds a core at 100 %.

Nothing in that loop calls code of ours, and Dagster re-installs its own signal handlers around
every step, so a handler of ours would not last. What does last is the wakeup fd
(``signal.set_wakeup_fd``): Python's C-level handler writes each caught signal's number to it,
whichever Python handler is installed. ``interruptible`` wraps an executor so that, for the
run's duration, a thread reads that fd. After a SIGINT or SIGTERM it checks every second
whether the run is waiting on a pool (a queued, unassigned claim of this run and no slot held;
with the in-process executor no step is then executing). If so it does what Dagster does for
an interrupted run: reports it canceled (when a Terminate asked for that) or failed, takes the
run's claims out of the pools' queues, and ends the process (exit status 128 + the signal's
number, as a shell reports a process a signal ended). A signal that arrives while a step
executes is Dagster's to handle, as before: the step is interrupted; if the run then blocks on
a pool, it stops the same way.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Final

import dagster as dg

log = logging.getLogger(__name__)

STOP_SIGNALS: Final = frozenset({signal.SIGINT, signal.SIGTERM})
CHECK_INTERVAL_S: Final = 1.0
"""After a stop signal, how often the run's pool claims are looked at (one query)."""


def blocked_steps(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """The run's steps queued for a pool slot, by step key: their pool. Empty when the run holds
    a slot (one of its steps is executing) or waits for none."""
    storage = instance.event_log_storage
    infos = storage.get_concurrency_infos(sorted(storage.get_concurrency_keys()))
    if any(slot.run_id == run_id for info in infos.values() for slot in info.claimed_slots):
        return {}
    return {
        step.step_key: pool
        for pool, info in infos.items()
        for step in info.pending_steps
        if step.run_id == run_id and step.assigned_timestamp is None
    }


def stop_blocked_run(
    instance: dg.DagsterInstance, run_id: str, signum: int, blocked: dict[str, str]
) -> None:
    """Record the end of a run stopped while ``blocked`` on pools: canceled when a Terminate
    asked for it (the run is CANCELING), else failed; then take its claims out of the pools'
    queues, so no slot is ever handed to a step that will not run."""
    name = signal.Signals(signum).name
    waits = ", ".join(f"{step} on pool {pool}" for step, pool in sorted(blocked.items()))
    message = (
        f"{name} received while waiting for a concurrency slot ({waits}): run stopped. "
        "Dagster's in-process executor does not act on signals while a step waits for a pool; "
        "crypto_pipelines.defs.interruptible does."
    )
    run = instance.get_run_by_id(run_id)
    if run is not None and not run.is_finished:
        if run.status == dg.DagsterRunStatus.CANCELING:
            instance.report_run_canceled(run, message=message)
        else:
            instance.report_run_failed(run, message=message)
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    log.warning("run %s: %s", run_id, message)


class SignalWatch:
    """For the run's duration, a thread that reads the signals Python caught (through the
    wakeup fd) and, after a stop signal, ends the run once it is found waiting on a pool.

    Does nothing off the main thread (only it may set the wakeup fd, and only it receives
    signals) or when something else already uses the wakeup fd (an asyncio loop's signal
    handlers): taking it over would starve that reader."""

    def __init__(self, instance: dg.DagsterInstance, run_id: str) -> None:
        self.instance = instance
        self.run_id = run_id
        self._done = threading.Event()
        self._lock = threading.Lock()  # the run's end: by its own course, or by this watch
        self._sockets: tuple[socket.socket, socket.socket] | None = None
        self._previous_fd = -1

    def __enter__(self) -> SignalWatch:
        if threading.current_thread() is not threading.main_thread():
            return self
        reader, writer = socket.socketpair()
        writer.setblocking(False)  # set_wakeup_fd requires it: a signal handler cannot block
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        if previous != -1:
            signal.set_wakeup_fd(previous)
            reader.close()
            writer.close()
            log.info("wakeup fd in use: a step blocked on a pool ignores stop signals")
            return self
        self._sockets = (reader, writer)
        threading.Thread(target=self._watch, name="pool-wait-signals", daemon=True).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._lock:  # waits for a stop in progress (which ends the process)
            self._done.set()
        if self._sockets is None or threading.current_thread() is not threading.main_thread():
            return  # (a generator finalized elsewhere: the fd stays open, never reused)
        signal.set_wakeup_fd(-1)
        for sock in self._sockets:
            sock.close()  # the reader's recv returns: the thread ends
        self._sockets = None

    def _watch(self) -> None:
        assert self._sockets is not None
        reader = self._sockets[0]
        signum = 0
        while not signum:
            try:
                received = reader.recv(64)
            except OSError:  # closed by __exit__
                return
            if not received:
                return
            signum = next((s for s in received if s in STOP_SIGNALS), 0)
        log.info("run %s: %s received", self.run_id, signal.Signals(signum).name)
        while not self._done.wait(CHECK_INTERVAL_S):
            with self._lock:
                if self._done.is_set():
                    return
                blocked = blocked_steps(self.instance, self.run_id)
                if blocked:
                    stop_blocked_run(self.instance, self.run_id, signum, blocked)
                    logging.shutdown()  # flush what was logged: os._exit does not
                    os._exit(128 + signum)


class InterruptibleExecutor(dg.Executor):
    """``inner``, with a ``SignalWatch`` around its execution of each run."""

    def __init__(self, inner: dg.Executor) -> None:
        self.inner = inner

    @property
    def retries(self) -> Any:
        return self.inner.retries

    @property
    def step_dependency_config(self) -> Any:
        return self.inner.step_dependency_config

    def execute(self, plan_context: Any, execution_plan: Any) -> Iterator[dg.DagsterEvent]:
        with SignalWatch(plan_context.instance, plan_context.run_id):
            yield from self.inner.execute(plan_context, execution_plan)


def interruptible(base: dg.ExecutorDefinition) -> dg.ExecutorDefinition:
    """``base`` (same name, configuration and requirements) whose runs stop on SIGTERM/SIGINT
    while a step waits for a concurrency-pool slot. For executors that orchestrate in the run's
    main thread (``in_process``)."""
    create = base.executor_creation_fn
    if create is None:
        raise ValueError(f"executor {base.name!r} has no creation function to wrap")

    def _create(init_context: dg.InitExecutorContext) -> dg.Executor:
        return InterruptibleExecutor(create(init_context))

    return dg.ExecutorDefinition(
        name=base.name,
        config_schema=base.config_schema.as_field(),
        requirements=base.get_requirements,
        executor_creation_fn=_create,
        description=base.description,
    )
