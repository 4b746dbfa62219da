"""``dead_runs_sensor``: a run whose process died never blocks later work.

A run killed with ``kill -9`` (or by the OOM killer, or a crashed machine) cannot record its
own end: it stays STARTED and keeps its exchange's concurrency-pool slot, so every later step
of that pool waits forever. A run the daemon launched (``DefaultRunLauncher``) has its worker
watched by the code server that started it, which fails the run when the worker dies; Dagster's
run monitoring (``run_monitoring`` in ``dagster.yaml``) then frees the slots of ended runs, but
cannot itself check a worker under this launcher. A run started from the command line
(``dagster asset materialize``, ``crypto-pipelines refetch``) has nobody watching, and a worker
whose code server died with it has nobody left. This sensor covers all: every minute it
looks at the runs still STARTING, STARTED or CANCELING, takes the run worker's process id from
the run's own ``RUN_START`` event, and where that process no longer exists (or is a zombie) it
reports the run failed (with the reason) and frees the run's pool slots, what the UI's "free
concurrency slots" action does. A step blocked on the pool then proceeds at its next check.

Process ids are this machine's: the sensor acts only with Dagster's ``DefaultRunLauncher``,
whose run workers are child processes on the machine the code location runs on. Deployments
with other launchers (Kubernetes, ECS) rely on run monitoring alone.
"""

import os
from pathlib import Path

import dagster as dg

DEAD_RUNS_SENSOR = "dead_runs_sensor"
UNFINISHED = [
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The process that started the run (its ``RUN_START`` event), None before it started."""
    found = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.RUN_START, limit=1
    ).records
    if not found or found[0].event_log_entry.dagster_event is None:
        return None
    return found[0].event_log_entry.dagster_event.pid


def process_exists(pid: int) -> bool:
    """Whether ``pid`` is a live process: a zombie (exited, its parent has not collected it)
    still answers signal 0 but runs nothing, and keeps answering as long as its parent lives."""
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return not zombie(pid)


def zombie(pid: int) -> bool:
    """Linux's ``/proc/<pid>/stat`` says the process is a zombie (False where there is none)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rpartition(")")[2].split()  # after "(command)", which may hold spaces
    return bool(fields) and fields[0] == "Z"


def dead_runs(instance: dg.DagsterInstance) -> list[tuple[dg.DagsterRun, int]]:
    """Unfinished runs whose worker process is gone, with that process id."""
    dead = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=UNFINISHED)):
        pid = worker_pid(instance, record.dagster_run.run_id)
        if pid is not None and not process_exists(pid):
            dead.append((record.dagster_run, pid))
    return dead


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Report each dead run failed and free its pool slots; their run ids."""
    ended = []
    for run, pid in dead_runs(instance):
        instance.report_run_failed(
            run,
            message=f"the run's process (pid {pid}) no longer exists: killed or crashed. "
            f"Marked failed and its pool slots freed by {DEAD_RUNS_SENSOR}.",
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        ended.append(run.run_id)
    return ended


def dead_runs_sensor(minimum_interval_seconds: int = 60) -> dg.SensorDefinition:
    @dg.sensor(
        name=DEAD_RUNS_SENSOR,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Marks failed the runs whose process died (kill -9, a crash) and frees "
        "their concurrency-pool slots, so later runs of the same exchange are not blocked.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        if type(context.instance.run_launcher).__name__ != "DefaultRunLauncher":
            return dg.SkipReason("not a DefaultRunLauncher: run monitoring covers dead runs")
        ended = fail_dead_runs(context.instance)
        if ended:
            context.log.warning(f"runs whose process died, marked failed: {ended}")
            return dg.SkipReason(f"{len(ended)} dead run(s) marked failed, slots freed: {ended}")
        return dg.SkipReason("no dead runs")

    return _sensor
