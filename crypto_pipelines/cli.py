"""``crypto-pipelines``: the project's command line.

Sub-commands are grouped by concern (``replay ...`` today); each group lives in its own
module so that the CLI stays a thin shell over the plain-Python cores.
"""

from __future__ import annotations

import logging

import typer

from crypto_pipelines.defs.cli import partitions_app
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


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    # Our own messages at INFO (DEBUG with -v); libraries (alembic, dagster) only warnings.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("crypto_pipelines").setLevel(logging.DEBUG if verbose else logging.INFO)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
