"""``crypto-pipelines worker``: a Celery worker executing this code location's steps.

Runs launched with ``CRYPTO_PIPELINES_EXECUTOR=celery`` send each step to a queue
(``defs.executor``: one per exchange, plus dagster-celery's default queue for the rest); this
command starts a worker on such queues, on any machine with the package and the same
environment (universe, market database, Dagster instance storage, broker).

The worker's Celery app is built the way dagster-celery's executor builds its own
(``make_app`` over the executor's settings, with dagster-celery's step task), from the same
``celery_settings``: the two cannot disagree on broker, backend or late acknowledgement. Not
``dagster-celery worker start``: it caps a worker at four queues (a Celery 4 bug) where a
worker of every queue here has five, and takes its settings from a YAML file it turns into a
Python module under ``$DAGSTER_HOME`` on every start.
"""

from __future__ import annotations

import importlib
import uuid

import typer

DEFINITIONS_MODULE = "crypto_pipelines.definitions"


def worker(
    queues: list[str] | None = typer.Option(
        None,
        "--queues",
        "-Q",
        help="Queues to take steps from, comma-separated or repeated: exchange ids (their "
        "exchange's steps) and 'dagster' (steps calling no exchange). Default: every queue.",
    ),
    concurrency: int | None = typer.Option(
        None, "--concurrency", "-c", min=1, help="Steps at once (default: the CPU count)."
    ),
    name: str | None = typer.Option(
        None, "--name", "-n", help="Celery node name (default: crypto_pipelines-<random>@host)."
    ),
    loglevel: str = typer.Option("INFO", "--loglevel", "-l", help="Celery's log level."),
) -> None:
    """Start a Celery worker for this code location (runs use it with
    CRYPTO_PIPELINES_EXECUTOR=celery). Broker and backend: CRYPTO_PIPELINES_CELERY_BROKER and
    CRYPTO_PIPELINES_CELERY_BACKEND, as for the runs. Stops on Ctrl-C or SIGTERM after its
    running steps; steps of a worker that dies are taken by another one."""
    from crypto_pipelines.defs.executor import worker_queues
    from crypto_pipelines.defs.universe_check import load_checked_universe
    from crypto_pipelines.domain.universe import UniverseError

    try:
        universe = load_checked_universe()
    except UniverseError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    known = worker_queues(universe.exchanges)
    chosen = [q.strip() for item in queues or [] for q in item.split(",") if q.strip()] or known
    unknown = [q for q in chosen if q not in known]
    if unknown:
        # A misspelt queue would be created by the broker and never receive a step.
        typer.echo(f"error: unknown queue(s) {unknown}; this code location's: {known}", err=True)
        raise typer.Exit(2)
    raise typer.Exit(run_worker(chosen, concurrency, name, loglevel))


def run_worker(queues: list[str], concurrency: int | None, name: str | None, loglevel: str) -> int:
    """Load the code location (a worker that cannot load it must not take steps), then run
    the Celery worker in this process until it is stopped."""
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    from crypto_pipelines.defs.executor import celery_settings

    # Loaded before the pool forks, so every pool process starts with it loaded.
    importlib.import_module(DEFINITIONS_MODULE)
    app = make_app(CeleryExecutor.for_cli(**celery_settings().executor_config()).app_args())
    create_task(app)
    argv = [
        "worker",
        f"--queues={','.join(queues)}",
        f"--hostname={name or f'crypto_pipelines-{uuid.uuid4().hex[:6]}@%h'}",
        f"--loglevel={loglevel}",
    ]
    if concurrency is not None:
        argv.append(f"--concurrency={concurrency}")
    app.worker_main(argv)
    return 0
