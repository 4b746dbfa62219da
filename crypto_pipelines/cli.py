"""``crypto-pipelines``: the project's command line.

Sub-commands are grouped by concern (``replay ...`` today); each group lives in its own
module so that the CLI stays a thin shell over the plain-Python cores.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from crypto_pipelines.api.cli import api
from crypto_pipelines.defs.cli import partitions_app, refetch
from crypto_pipelines.defs.worker_cli import worker
from crypto_pipelines.replay.cli import replay_app
from crypto_pipelines.stream.cli import stream_app

app = typer.Typer(
    name="crypto-pipelines",
    help="Crypto market data pipelines: replay exchange, partitions, ingestion.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(replay_app, name="replay")
app.add_typer(partitions_app, name="partitions")
app.add_typer(stream_app, name="stream")
app.command()(refetch)
app.command()(api)
app.command()(worker)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    # Our own messages at INFO (DEBUG with -v); libraries (alembic, dagster) only warnings.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("crypto_pipelines").setLevel(logging.DEBUG if verbose else logging.INFO)


@app.command()
def demo(
    root: Path = typer.Option(Path(".demo"), "--dir", help="Where the demo keeps its files."),
    days: int = typer.Option(3, min=1, max=60, help="Days of synthetic data, up to today."),
    port: int = typer.Option(3000, help="Port of the Dagster UI."),
    seed: int = typer.Option(7, help="Seed of the synthetic tape."),
) -> None:
    """Offline demo: a synthetic tape served by the replay exchange (clock near its end), the
    Dagster UI and daemon on the demo's own DAGSTER_HOME. Ctrl-C stops everything."""
    from crypto_pipelines.replay.demo import prepare, run

    config = Path("dagster.yaml")
    setup = prepare(
        root.resolve(), days=days, seed=seed, instance_config=config if config.exists() else None
    )
    typer.echo(
        f"demo: DAGSTER_HOME={setup.home}, universe {setup.universe}, tape {setup.tape}; "
        f"UI on http://127.0.0.1:{port} (Ctrl-C stops)"
    )
    raise typer.Exit(run(setup, port=port))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
