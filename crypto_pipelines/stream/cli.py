"""``crypto-pipelines stream run``: the stream service without Dagster.

Same universe, ``CRYPTO_PIPELINES_SOURCE``, ``CRYPTO_PIPELINES_REPLAY_URL`` and
``CRYPTO_PIPELINES_DB_URL`` as the assets. Runs until ``--for`` seconds have passed or
SIGTERM/SIGINT arrives, then flushes, closes and prints its final statistics as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import signal

import typer

stream_app = typer.Typer(help="The real-time stream (ccxt.pro WebSockets).", no_args_is_help=True)


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@stream_app.command("run")
def run(
    exchanges: str = typer.Option(None, "--exchanges", help="Comma-separated (default: all)."),
    symbols: str = typer.Option(None, "--symbols", help="Comma-separated (default: universe)."),
    seconds: float = typer.Option(0, "--for", help="Stop after SECONDS (default: until signal)."),
    timeframes: str = typer.Option("", "--timeframes", help="Candles to stream too, e.g. 1m."),
    books: bool = typer.Option(False, "--books", help="Order book snapshots too."),
    book_depth: int = typer.Option(10, "--book-depth", min=1, help="Book levels per side."),
    funding: bool = typer.Option(
        False,
        "--funding",
        help="Perpetuals' funding channel: mark price and announced rate to the handlers, "
        "each settlement's rate into funding_rates as it passes.",
    ),
    book_every_s: float = typer.Option(
        1.0, "--book-every", min=0.01, help="One book snapshot per symbol every SECONDS."
    ),
) -> None:
    """Stream trades (and candles, and order books) of the universe's symbols into the market
    database."""
    from crypto_pipelines.defs.universe_check import load_checked_universe
    from crypto_pipelines.domain.redis_url import redis_url_from_env
    from crypto_pipelines.exchanges.routing import replay_url_from_env
    from crypto_pipelines.storage.store import MarketStore
    from crypto_pipelines.stream.service import StreamService, StreamSettings

    universe = load_checked_universe()
    wanted = _split(exchanges) or list(universe.exchanges)
    unknown = [e for e in wanted if e not in universe.exchanges]
    if unknown:
        raise typer.BadParameter(
            f"not in the universe: {', '.join(unknown)}", param_hint="--exchanges"
        )
    only = _split(symbols)
    chosen = {
        e: [s for s in universe.exchanges[e].symbols if only is None or s in only] for e in wanted
    }
    chosen = {e: names for e, names in chosen.items() if names}
    replay_url = replay_url_from_env() if universe.source == "replay" else None
    settings = StreamSettings(
        timeframes=tuple(_split(timeframes) or ()),
        books=books,
        funding=funding,
        book_depth=book_depth,
        book_every_s=book_every_s,
    )

    async def main() -> dict[str, object]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if seconds > 0:
            loop.call_later(seconds, stop.set)
        with MarketStore.open(source=universe.source) as store:
            service = StreamService(
                chosen,
                store,
                settings=settings,
                replay_url=replay_url,
                redis_url=redis_url_from_env(),
            )
            service.stats.track_partitions = False  # nothing here reports partitions
            stats = await service.run(stop)
        return stats.as_json()

    typer.echo(json.dumps(asyncio.run(main()), sort_keys=True))
