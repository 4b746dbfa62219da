"""``crypto-pipelines replay serve | synth | record``."""

from __future__ import annotations

import sys
import tempfile
from datetime import datetime
from pathlib import Path

import typer

from crypto_pipelines.replay.faults import FaultConfig
from crypto_pipelines.replay.tape import Tape, TapeError

replay_app = typer.Typer(
    help="The replay exchange: serve a tape, make one, record one.", no_args_is_help=True
)


def _parse_time(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        from datetime import UTC

        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@replay_app.command()
def serve(
    tape: Path | None = typer.Option(None, "--tape", help="Tape folder to serve.", file_okay=False),
    synthetic: bool = typer.Option(
        False, "--synthetic", help="Serve a freshly generated synthetic tape."
    ),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(0, help="Port (0 = a free port)."),
    enforce_limits: bool = typer.Option(
        False, "--enforce-limits", help="Apply each exchange's real rate limits."
    ),
    fail_rate_limit: float = typer.Option(
        0.0, help="Probability of the exchange's rate-limit answer."
    ),
    fail_server_error: float = typer.Option(0.0, help="Probability of a 5xx answer."),
    fail_timeout: float = typer.Option(
        0.0, help="Probability of hanging past the client's timeout."
    ),
    timeout_s: float = typer.Option(30.0, help="How long a timed-out request hangs."),
    latency_ms: float = typer.Option(0.0, help="Mean added latency (exponential)."),
    seed: int | None = typer.Option(None, help="Seed for faults (and the synthetic tape)."),
    now: str | None = typer.Option(
        None, help="Replay clock start (ISO 8601 or ms); default: real time."
    ),
    speed: float = typer.Option(1.0, help="Replay clock speed when --now is given (0 = frozen)."),
    days: int = typer.Option(3, help="Days of data for --synthetic."),
) -> None:
    """Serve a tape; prints the base URL as the first line on stdout."""
    from crypto_pipelines.replay.app import ReplayApp
    from crypto_pipelines.replay.clock import ReplayClock
    from crypto_pipelines.replay.server import base_url, bind, serve_forever

    if (tape is None) == (not synthetic):
        raise typer.BadParameter("give exactly one of --tape DIR or --synthetic")
    workdir: tempfile.TemporaryDirectory[str] | None = None
    if synthetic:
        from crypto_pipelines.replay.synth import SynthSpec, write_synthetic_tape

        workdir = tempfile.TemporaryDirectory(prefix="replay-synth-")
        tape = Path(workdir.name)
        write_synthetic_tape(tape, SynthSpec(days=days, seed=seed if seed is not None else 7))
    assert tape is not None
    try:
        loaded = Tape.load(tape)
        faults = FaultConfig(
            rate_limit=fail_rate_limit,
            server_error=fail_server_error,
            timeout=fail_timeout,
            timeout_s=timeout_s,
            latency_ms=latency_ms,
            seed=seed,
        )
        clock = ReplayClock(_parse_time(now), speed) if now else ReplayClock()
        application = ReplayApp(loaded, faults=faults, enforce_limits=enforce_limits, clock=clock)
    except (TapeError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    sock = bind(host, port)
    sys.stdout.write(base_url(sock) + "\n")
    sys.stdout.flush()
    try:
        serve_forever(application, sock)
    finally:
        loaded.close()
        if workdir is not None:
            workdir.cleanup()


@replay_app.command()
def validate(tape: Path = typer.Argument(..., file_okay=False)) -> None:
    """Check a tape against the format; exits non-zero naming the first problem."""
    try:
        loaded = Tape.load(tape)
    except TapeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    for exchange in loaded.exchanges.values():
        typer.echo(
            f"{exchange.exchange}: {len(exchange.markets)} markets, {len(exchange.symbols)} symbols with data"
        )
    loaded.close()
