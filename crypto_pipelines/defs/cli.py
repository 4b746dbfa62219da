"""``crypto-pipelines partitions sync``: register the universe's symbols as dynamic partitions."""

import typer

partitions_app = typer.Typer(help="Dagster partitions of the universe.", no_args_is_help=True)


@partitions_app.command()
def sync(
    universe: str | None = typer.Option(
        None, help="Universe YAML (default: $CRYPTO_PIPELINES_UNIVERSE or the default)."
    ),
    keep_removed: bool = typer.Option(
        False, "--keep-removed", help="Do not drop symbols missing from the universe."
    ),
) -> None:
    """Make each <exchange>_symbols (and <exchange>_perps: perpetual swaps only) partition set
    equal to the universe (idempotent). Uses the Dagster instance of $DAGSTER_HOME."""
    import dagster as dg
    import yaml

    from crypto_pipelines.defs.universe_check import load_checked_universe
    from crypto_pipelines.defs.universe_sync import sync_symbol_partitions
    from crypto_pipelines.domain.universe import UniverseError

    # Bad configuration is a message naming what to fix and exit status 2, not a traceback.
    try:
        loaded = load_checked_universe(universe)
    except UniverseError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        instance = dg.DagsterInstance.get()
    except (dg.DagsterError, yaml.YAMLError) as exc:  # $DAGSTER_HOME unset or missing,
        # or its dagster.yaml not YAML or not a valid instance configuration
        typer.echo(f"error: cannot open the Dagster instance: {exc}", err=True)
        raise typer.Exit(2) from exc
    with instance:
        for result in sync_symbol_partitions(instance, loaded, remove=not keep_removed):
            typer.echo(
                f"{result.partitions}: {len(result.added)} added {list(result.added)}, "
                f"{len(result.removed)} removed {list(result.removed)}"
            )
