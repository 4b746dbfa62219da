"""``crypto-pipelines partitions sync``: register the universe's symbols as dynamic partitions."""

import os

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
    equal to the universe (idempotent), with the symbols added or removed through the API
    (stored in the market database). Uses the Dagster instance of $DAGSTER_HOME."""
    import dagster as dg
    import sqlalchemy as sa
    import yaml

    from crypto_pipelines.defs.universe_check import load_checked_universe
    from crypto_pipelines.defs.universe_sync import sync_symbol_partitions
    from crypto_pipelines.domain.universe import UniverseError
    from crypto_pipelines.storage.engine import OPEN_ERRORS, default_db_url, unusable_message
    from crypto_pipelines.storage.store import MarketStore

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
    except Exception as exc:  # its storage (PostgreSQL) unreachable or refusing us: the
        # storage plugin's own error (dagster-postgres: "too many retries") wraps the driver's
        cause = _database_cause(exc, sa.exc.DBAPIError)
        if cause is None:
            raise
        typer.echo(f"error: {_instance_storage_message(cause)}", err=True)
        raise typer.Exit(2) from exc
    url = default_db_url(loaded.source)
    try:  # symbols added or removed through the API are stored beside the market data
        store = MarketStore.open(url)
    except OPEN_ERRORS as exc:
        typer.echo(f"error: {unusable_message(url, exc)}", err=True)
        raise typer.Exit(2) from exc
    with instance, store:
        try:
            results = sync_symbol_partitions(instance, loaded, remove=not keep_removed, store=store)
        except sa.exc.OperationalError as exc:  # the instance's storage went away meanwhile
            typer.echo(f"error: {_instance_storage_message(exc)}", err=True)
            raise typer.Exit(2) from exc
        for result in results:
            typer.echo(
                f"{result.partitions}: {len(result.added)} added {list(result.added)}, "
                f"{len(result.removed)} removed {list(result.removed)}"
            )


def _database_cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first ``kind`` error in ``exc``'s chain of causes, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _instance_storage_message(exc: BaseException) -> str:
    """The Dagster instance's storage named by where it is configured, with the driver's
    first line (no credentials: the driver's message names host and port, not the URL)."""
    home = os.environ.get("DAGSTER_HOME", "")
    first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return (
        f"the Dagster instance's storage (configured in {home}/dagster.yaml, DAGSTER_HOME) "
        f"cannot be reached: {first}"
    )


def refetch(
    asset: str = typer.Argument(..., help="The asset, e.g. binance/ohlcv_1m."),
    partition: str | None = typer.Option(None, help="One partition, e.g. '2024-03-01|BTC/USDT'."),
    partition_range: str | None = typer.Option(
        None,
        "--partition-range",
        help="A range of one symbol's partitions, e.g. '2024-01-01|BTC/USDT...2024-03-01|BTC/USDT'.",
    ),
) -> None:
    """Refetch partitions whole from the exchange (ignoring coverage) and re-run their checks,
    as gap repair does: one run on the Dagster instance of $DAGSTER_HOME, tagged
    crypto_pipelines/refetch=true (`dagster asset materialize` cannot set tags)."""
    import dagster as dg

    from crypto_pipelines.defs.assets.market_data import REFETCH_TAG
    from crypto_pipelines.defs.run_requests import RANGE_END_TAG, RANGE_START_TAG

    if (partition is None) == (partition_range is None):
        typer.echo("error: give exactly one of --partition or --partition-range", err=True)
        raise typer.Exit(2)
    tags = {REFETCH_TAG: "true"}
    if partition_range is not None:
        first, sep, last = partition_range.partition("...")
        if not sep or not first or not last:
            typer.echo(
                f"error: --partition-range {partition_range!r} is not FIRST...LAST", err=True
            )
            raise typer.Exit(2)
        tags |= {RANGE_START_TAG: first, RANGE_END_TAG: last}
    from crypto_pipelines.definitions import defs

    key = dg.AssetKey.from_user_string(asset)
    if key not in set(defs.resolve_all_asset_keys()):
        typer.echo(f"error: no asset {asset!r} in the code location", err=True)
        raise typer.Exit(2)
    job = defs.resolve_implicit_job_def_def_for_assets([key])
    assert job is not None
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance,
            asset_selection=[key],
            partition_key=partition,
            tags=tags,
            raise_on_error=False,
        )
    typer.echo(f"run {result.run_id}: {'success' if result.success else 'FAILURE'}")
    raise typer.Exit(0 if result.success else 1)
