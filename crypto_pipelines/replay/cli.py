"""``crypto-pipelines replay serve | synth | record``."""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from crypto_pipelines.replay.faults import FaultConfig
from crypto_pipelines.replay.tape import Tape, TapeError

if TYPE_CHECKING:
    from crypto_pipelines.replay.synth import SynthSpec

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
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _split(values: list[str] | None) -> list[str]:
    """Values of a list option given repeated, comma-separated, or both."""
    return [item.strip() for value in values or [] for item in value.split(",") if item.strip()]


def _symbols_option(
    values: list[str] | None, exchanges: tuple[str, ...]
) -> dict[str, list[str]] | None:
    """``--symbols`` values: plain symbols apply to every exchange; ``EXCHANGE=SYM[,SYM...]``
    sets one exchange's symbols (later plain items in the same value stay with it)."""
    everywhere: list[str] = []
    per_exchange: dict[str, list[str]] = {}
    for value in values or []:
        current: list[str] | None = None
        for item in (i.strip() for i in value.split(",")):
            if not item:
                continue
            if "=" in item:
                exchange, _, symbol = item.partition("=")
                current = per_exchange.setdefault(exchange.strip(), [])
                item = symbol.strip()
                if not item:
                    continue
            (everywhere if current is None else current).append(item)
    if not everywhere and not per_exchange:
        return None
    chosen = {exchange: list(everywhere) for exchange in exchanges} if everywhere else {}
    chosen.update(per_exchange)
    return chosen


def _synth_spec(
    *,
    exchanges: list[str] | None,
    symbols: list[str] | None,
    timeframes: list[str] | None = None,
    start: str | None = None,
    days: int = 3,
    seed: int = 7,
    trades: bool = True,
    books: bool = True,
    funding: bool = True,
    gap_rate: float = 0.002,
    compress: bool = False,
) -> SynthSpec:
    """A SynthSpec from CLI options; SynthError (a ValueError) names any bad value."""
    from crypto_pipelines.replay.synth import (
        DEFAULT_START,
        DEFAULT_TIMEFRAMES,
        KNOWN_EXCHANGES,
        SynthError,
        SynthSpec,
    )

    chosen = tuple(_split(exchanges)) or KNOWN_EXCHANGES
    start_dt = DEFAULT_START
    if start is not None:
        try:
            start_ms = _parse_time(start)
        except ValueError as exc:
            raise SynthError(
                f"--start is not a date, ISO 8601 time or ms timestamp: {start!r}"
            ) from exc
        assert start_ms is not None
        start_dt = datetime.fromtimestamp(start_ms / 1000, UTC)
    return SynthSpec(
        exchanges=chosen,
        symbols=_symbols_option(symbols, chosen),
        timeframes=tuple(_split(timeframes)) or DEFAULT_TIMEFRAMES,
        start=start_dt,
        days=days,
        seed=seed,
        trades=trades,
        books=books,
        funding=funding,
        gap_rate=gap_rate,
        compress=compress,
    )


_EXCHANGES_HELP = "Exchanges (binance, okx, bybit, coinbaseexchange); repeat or comma-separate. Default: all four."
_SYMBOLS_HELP = (
    "Unified symbols for every exchange (BTC/USDT,ETH/USDT:USDT), or EXCHANGE=SYM[,SYM] for one "
    "exchange; repeat or comma-separate. Default: BTC and ETH spot and USDT perpetuals "
    "(BTC/USD, ETH/USD on coinbaseexchange, which has no perpetuals)."
)


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
    ws_drop_every: float = typer.Option(
        0.0, "--ws-drop-every", help="Close every WebSocket connection after S seconds (0: never)."
    ),
    ws_stall_every: float = typer.Option(
        0.0,
        "--ws-stall-every",
        help="Every S seconds, a WebSocket connection goes silent but stays open (0: never).",
    ),
    ws_stall_for: float = typer.Option(
        5.0, "--ws-stall-for", help="How long a WebSocket stall lasts (seconds)."
    ),
    ws_malformed: float = typer.Option(
        0.0, "--ws-malformed", help="Probability that a WebSocket data message is garbled."
    ),
    ws_lost: float = typer.Option(
        0.0, "--ws-lost", help="Probability that a WebSocket data message is silently not sent."
    ),
    seed: int | None = typer.Option(None, help="Seed for faults (and the synthetic tape)."),
    now: str | None = typer.Option(
        None, help="Replay clock start (ISO 8601 or ms); default: real time."
    ),
    speed: float = typer.Option(1.0, help="Replay clock speed when --now is given (0 = frozen)."),
    days: int = typer.Option(3, help="Days of data for --synthetic."),
    exchanges: list[str] | None = typer.Option(
        None, "--exchanges", help=_EXCHANGES_HELP + " (--synthetic)"
    ),
    symbols: list[str] | None = typer.Option(
        None, "--symbols", help=_SYMBOLS_HELP + " (--synthetic)"
    ),
) -> None:
    """Serve a tape; prints the base URL as the first line on stdout."""
    from crypto_pipelines.replay.app import ReplayApp
    from crypto_pipelines.replay.clock import ReplayClock
    from crypto_pipelines.replay.server import base_url, bind, serve_forever

    if (tape is None) == (not synthetic):
        raise typer.BadParameter("give exactly one of --tape DIR or --synthetic")
    if not synthetic and (exchanges or symbols):
        raise typer.BadParameter("--exchanges and --symbols only apply with --synthetic")
    workdir: tempfile.TemporaryDirectory[str] | None = None
    if synthetic:
        from crypto_pipelines.replay.synth import write_synthetic_tape

        try:
            spec = _synth_spec(
                exchanges=exchanges,
                symbols=symbols,
                days=days,
                seed=seed if seed is not None else 7,
            )
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        workdir = tempfile.TemporaryDirectory(prefix="replay-synth-")
        tape = Path(workdir.name)
        write_synthetic_tape(tape, spec)
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
            ws_drop_every_s=ws_drop_every,
            ws_stall_every_s=ws_stall_every,
            ws_stall_s=ws_stall_for,
            ws_malformed=ws_malformed,
            ws_lost=ws_lost,
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
def synth(
    out_dir: Path = typer.Argument(
        ..., file_okay=False, help="Folder to write the tape into (new or empty)."
    ),
    exchanges: list[str] | None = typer.Option(None, "--exchanges", "-e", help=_EXCHANGES_HELP),
    symbols: list[str] | None = typer.Option(None, "--symbols", "-s", help=_SYMBOLS_HELP),
    timeframes: list[str] | None = typer.Option(
        None,
        "--timeframes",
        "-t",
        help="Candle timeframes, whole minutes (1m, 5m, 1h, 1d, 1w); repeat or comma-separate.",
    ),
    start: str = typer.Option("2024-01-01", help="First minute (UTC date, ISO 8601 time or ms)."),
    days: int = typer.Option(3, help="Days of data."),
    seed: int = typer.Option(7, help="Random seed: the same seed writes the same bytes."),
    trades: bool = typer.Option(
        True, "--trades/--no-trades", help="Write trades (off: candles drawn directly, fast)."
    ),
    books: bool = typer.Option(
        True, "--books/--no-books", help="Write L2 book snapshots every 5 minutes."
    ),
    funding: bool = typer.Option(
        True, "--funding/--no-funding", help="Write funding rates for perpetuals."
    ),
    gap_rate: float = typer.Option(
        0.002, help="Probability of a minute without trades (a missing 1m candle)."
    ),
    compress: bool = typer.Option(False, "--compress", help="Write .gz files."),
) -> None:
    """Write a deterministic synthetic tape (candles, trades, books, funding, markets.json)."""
    from crypto_pipelines.replay.synth import write_synthetic_tape

    try:
        spec = _synth_spec(
            exchanges=exchanges,
            symbols=symbols,
            timeframes=timeframes,
            start=start,
            days=days,
            seed=seed,
            trades=trades,
            books=books,
            funding=funding,
            gap_rate=gap_rate,
            compress=compress,
        )
        if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
            raise ValueError(f"{out_dir} exists and is not an empty folder; choose a new one")
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    summary = write_synthetic_tape(out_dir, spec)
    typer.echo(
        f"{out_dir}: {summary.series} series, {summary.candles} candles, {summary.trades} trades, "
        f"{summary.books} book snapshots, {summary.funding} funding rates"
    )


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


@replay_app.command()
def record(
    out_dir: Path = typer.Argument(..., file_okay=False, help="Tape folder to write into."),
    exchange: str = typer.Option(
        ..., "--exchange", help="ccxt exchange id: binance, okx, bybit, coinbaseexchange."
    ),
    symbols: list[str] = typer.Option(
        ...,
        "--symbols",
        help="Unified symbols (BTC/USDT, BTC/USDT:USDT), comma-separated or repeated.",
    ),
    timeframes: list[str] = typer.Option(
        ["1m"], "--timeframes", help="Candle timeframes, comma-separated or repeated."
    ),
    since: str = typer.Option(..., "--since", help="Start, inclusive (ISO 8601 or ms)."),
    until: str | None = typer.Option(
        None,
        "--until",
        help="End, exclusive (ISO 8601 or ms); default and cap: the exchange's now.",
    ),
    trades: bool = typer.Option(
        True, "--trades/--no-trades", help="Trades, as far back as the public API serves them."
    ),
    funding: bool = typer.Option(True, "--funding/--no-funding", help="Funding rates of swaps."),
    book: bool = typer.Option(True, "--book/--no-book", help="One order-book snapshot, taken now."),
    gzip: bool = typer.Option(False, "--gzip", help="Write .csv.gz / .jsonl.gz files."),
    replay_url: str | None = typer.Option(
        None,
        "--replay-url",
        help="Record from a replay exchange at this URL (default: $CRYPTO_PIPELINES_REPLAY_URL).",
    ),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Progress bars on stderr."
    ),
) -> None:
    """Record a tape from an exchange's public REST API through stock ccxt, rate limiter on,
    paying the exchange's request budget shared with the pipelines on this machine.

    Prints one line per series written. On failure exits 1 naming exchange, symbol and problem.
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    from crypto_pipelines.replay.record import RecordError, make_exchange, record_tape

    symbol_list = _split(symbols)
    if not symbol_list:
        raise typer.BadParameter("give at least one symbol", param_hint="--symbols")
    try:
        since_ms = _parse_time(since)
        until_ms = _parse_time(until)
    except ValueError as exc:
        raise typer.BadParameter(f"not a time (ISO 8601 or ms): {exc}") from exc
    assert since_ms is not None
    try:
        client = make_exchange(exchange, replay_url)
        with logging_redirect_tqdm():
            summary = record_tape(
                client,
                out_dir,
                symbol_list,
                _split(timeframes),
                since_ms,
                until_ms,
                trades=trades,
                funding=funding,
                book=book,
                compress=gzip,
                progress=progress,
            )
    except RecordError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    for series in summary.series:
        written = f"{series.rows} rows" if series.path else "nothing in range, no file"
        typer.echo(f"{summary.exchange} {series.symbol} {series.series}: {written}")
