"""``crypto-pipelines api``: serve ``crypto_pipelines.api:app`` with uvicorn."""

from __future__ import annotations

import os

import typer

from crypto_pipelines.api.serve import INSECURE_ENV
from crypto_pipelines.api.settings import ApiConfigError, ApiSettings
from crypto_pipelines.domain.universe import UniverseError, load_universe
from crypto_pipelines.storage.engine import OPEN_ERRORS, default_db_url, unusable_message
from crypto_pipelines.storage.store import MarketStore


def api(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: int = typer.Option(1, min=1, help="Worker processes (each has its own budgets)."),
    insecure_dev: bool = typer.Option(
        False, "--insecure-dev", help="Serve without API keys (development only)."
    ),
) -> None:
    """Serve the ingestion and control API (OpenAPI page at /docs). Keys from
    CRYPTO_PIPELINES_API_KEYS or CRYPTO_PIPELINES_API_KEYS_FILE; without one it refuses to
    start (exit 2) unless --insecure-dev."""
    import uvicorn

    try:
        settings = ApiSettings.from_env(insecure_dev=insecure_dev)
    except ApiConfigError as exc:
        typer.echo(f"crypto-pipelines api: {exc}", err=True)
        raise typer.Exit(2) from None
    try:  # what each worker opens, checked once here so a mistake is one clear message
        universe = load_universe()
        url = default_db_url(universe.source)
        with MarketStore.open(url):
            pass
    except UniverseError as exc:
        typer.echo(f"crypto-pipelines api: {exc}", err=True)
        raise typer.Exit(2) from None
    except OPEN_ERRORS as exc:
        typer.echo(f"crypto-pipelines api: {unusable_message(url, exc)}", err=True)
        raise typer.Exit(2) from None
    if settings.insecure_dev and not settings.keys:
        typer.echo("crypto-pipelines api: --insecure-dev: every request is accepted", err=True)
    os.environ[INSECURE_ENV] = "1" if insecure_dev else "0"
    uvicorn.run(
        "crypto_pipelines.api:app",
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=False,
    )
