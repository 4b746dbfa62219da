"""Synthetic tapes: deterministic, realistic market data for tests, demos and benchmarks.

``write_synthetic_tape(root, SynthSpec(...))`` writes a tape (``shared/tape-format.md``) for
the four venues the replay exchange serves. The same spec and seed always give the same
bytes, so a test can regenerate its fixture instead of storing it, and a benchmark can ask
for ten million candles without shipping them. The data is shaped to exercise what the
pipelines check: candles derive exactly from trades and aggregate exactly into coarser
timeframes, some minutes have no trades (so their candles are missing, as on a real
exchange), the same pair on two venues stays within a few bps, perpetuals pay funding every
8 h and report open interest every 5 minutes, and books are uncrossed snapshots on the tick
grid. The model lives in
``synth_model``/``synth_series``; fast exact number rendering in ``synth_format``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from crypto_pipelines.domain.symbols import parse_symbol
from crypto_pipelines.domain.timeframes import (
    MINUTE_MS,
    TimeframeError,
    grid_offset_ms,
    timeframe_ms,
)
from crypto_pipelines.replay.synth_format import (
    CandleArrays,
    Choice,
    IntArray,
    Num,
    Part,
    Rollup,
    Sink,
    candle_parts,
    render,
)
from crypto_pipelines.replay.synth_markets import (
    KNOWN_EXCHANGES,
    NO_SWAPS,
    SynthError,
    market_kind,
    market_spec,
)
from crypto_pipelines.replay.synth_model import Instrument, ModelOptions
from crypto_pipelines.replay.synth_series import SeriesModel
from crypto_pipelines.replay.tape.markets import MarketSpec
from crypto_pipelines.replay.tape.series import (
    FUNDING_HEADER,
    OHLCV_HEADER,
    OPEN_INTEREST_HEADER,
    TRADES_HEADER,
)
from crypto_pipelines.replay.tape.writer import symbol_dir, write_markets

log = logging.getLogger(__name__)

_USDT_SET = ("BTC/USDT", "ETH/USDT", "BTC/USDT:USDT", "ETH/USDT:USDT")
DEFAULT_SYMBOLS: dict[str, tuple[str, ...]] = {
    "binance": _USDT_SET,
    "okx": _USDT_SET,
    "bybit": _USDT_SET,
    "coinbaseexchange": ("BTC/USD", "ETH/USD"),
}
DEFAULT_TIMEFRAMES: tuple[str, ...] = ("1m", "5m", "1h", "1d")
DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Chunk sizes bound memory: trades are dense (~10 a minute), candles are one a minute.
_TRADE_CHUNK_DAYS = 4
_CANDLE_CHUNK_DAYS = 64


@dataclass(frozen=True)
class SynthSpec:
    """What to generate. ``symbols`` maps an exchange to its unified symbols; exchanges it
    does not name get ``DEFAULT_SYMBOLS``. Invalid specs raise SynthError on construction,
    so a CLI can report them before writing anything."""

    exchanges: tuple[str, ...] = KNOWN_EXCHANGES
    symbols: Mapping[str, Sequence[str]] | None = None
    timeframes: tuple[str, ...] = DEFAULT_TIMEFRAMES
    start: datetime = DEFAULT_START
    days: int = 3
    seed: int = 7
    trades: bool = True
    books: bool = True
    funding: bool = True
    open_interest: bool = True
    gap_rate: float = 0.002
    outages_per_day: float = 0.5
    trades_per_minute: float = 6.0
    book_every_minutes: int = 5
    book_depth: int = 20
    compress: bool = False
    _resolved: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # A lone string is one item, not a sequence of characters.
        for name in ("exchanges", "timeframes"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        if self.start.tzinfo is None:
            object.__setattr__(self, "start", self.start.replace(tzinfo=UTC))
        self._check_numbers()
        self._check_timeframes()
        object.__setattr__(self, "_resolved", self._resolve_symbols())

    def _check_numbers(self) -> None:
        if isinstance(self.days, bool) or not isinstance(self.days, int) or self.days <= 0:
            raise SynthError(f"days must be a positive whole number, got {self.days!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise SynthError(f"seed must be a non-negative integer, got {self.seed!r}")
        if (self.start - _EPOCH) % timedelta(minutes=1):
            raise SynthError(f"start must be a whole minute, got {self.start.isoformat()}")
        if not 0.0 <= self.gap_rate < 1.0:
            raise SynthError(f"gap_rate must be in [0, 1), got {self.gap_rate!r}")
        if self.outages_per_day < 0:
            raise SynthError(f"outages_per_day must be >= 0, got {self.outages_per_day!r}")
        if not self.trades_per_minute > 0:
            raise SynthError(f"trades_per_minute must be > 0, got {self.trades_per_minute!r}")
        if self.book_every_minutes <= 0:
            raise SynthError(f"book_every_minutes must be > 0, got {self.book_every_minutes!r}")
        if not 1 <= self.book_depth <= 500:
            raise SynthError(f"book_depth must be 1..500, got {self.book_depth!r}")

    def _check_timeframes(self) -> None:
        if not self.timeframes:
            raise SynthError("at least one timeframe is required")
        for tf in self.timeframes:
            try:
                ms = timeframe_ms(tf)
            except TimeframeError as exc:
                raise SynthError(str(exc)) from exc
            if ms % MINUTE_MS:
                raise SynthError(
                    f"timeframe {tf!r} is not a whole number of minutes (1m is the finest)"
                )
        if len(set(self.timeframes)) != len(self.timeframes):
            raise SynthError(f"duplicate timeframe in {list(self.timeframes)}")

    def _resolve_symbols(self) -> dict[str, tuple[str, ...]]:
        if not self.exchanges:
            raise SynthError("at least one exchange is required")
        for exchange in self.exchanges:
            if exchange not in KNOWN_EXCHANGES:
                raise SynthError(
                    f"unknown exchange {exchange!r} (known: {', '.join(KNOWN_EXCHANGES)})"
                )
        if len(set(self.exchanges)) != len(self.exchanges):
            raise SynthError(f"duplicate exchange in {list(self.exchanges)}")
        given = dict(self.symbols or {})
        for exchange in given:
            if exchange not in self.exchanges:
                raise SynthError(
                    f"symbols given for {exchange!r}, which is not among the exchanges {list(self.exchanges)}"
                )
        resolved: dict[str, tuple[str, ...]] = {}
        for exchange in self.exchanges:
            chosen = given.get(exchange, DEFAULT_SYMBOLS[exchange])
            symbols = (chosen,) if isinstance(chosen, str) else tuple(chosen)
            if not symbols:
                raise SynthError(f"no symbols for {exchange!r}")
            if len(set(symbols)) != len(symbols):
                raise SynthError(f"duplicate symbol for {exchange!r} in {list(symbols)}")
            for symbol in symbols:
                market_kind(exchange, symbol)
            resolved[exchange] = symbols
        return resolved

    @property
    def start_ms(self) -> int:
        return (self.start - _EPOCH) // timedelta(milliseconds=1)

    def symbols_for(self, exchange: str) -> tuple[str, ...]:
        """The symbols generated for ``exchange`` (given or default)."""
        return self._resolved[exchange]


@dataclass(frozen=True)
class _Units:
    """How a market's integer counts render: ``count * units`` with ``decimals`` digits."""

    decimals: int
    units: int

    @classmethod
    def of(cls, increment: str) -> _Units:
        value = Decimal(increment).normalize()
        decimals = max(0, -int(value.as_tuple().exponent))
        return cls(decimals, int(value.scaleb(decimals)))


@dataclass
class SynthSummary:
    """Row counts of what ``write_synthetic_tape`` wrote."""

    series: int = 0
    candles: int = 0
    trades: int = 0
    books: int = 0
    funding: int = 0
    open_interest: int = 0


def write_synthetic_tape(root: Path | str, spec: SynthSpec | None = None) -> SynthSummary:
    """Write the tape ``spec`` describes into ``root`` (created if needed; files of the same
    names are overwritten, anything else in it is left alone)."""
    spec = spec or SynthSpec()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    opts = ModelOptions(
        seed=spec.seed,
        start_ms=spec.start_ms,
        trades=spec.trades,
        books=spec.books,
        funding=spec.funding,
        gap_rate=spec.gap_rate,
        outages_per_day=spec.outages_per_day,
        trades_per_minute=spec.trades_per_minute,
        book_every_minutes=spec.book_every_minutes,
        book_depth=spec.book_depth,
        open_interest=spec.open_interest,
    )
    summary = SynthSummary()
    for exchange in spec.exchanges:
        markets = [market_spec(exchange, s, spec.start_ms) for s in spec.symbols_for(exchange)]
        write_markets(root, exchange, markets)
        for market in markets:
            _write_series(root, spec, opts, exchange, market, summary)
    log.info(
        "synthetic tape %s: %d series, %d candles, %d trades, %d book snapshots, %d funding rates",
        root,
        summary.series,
        summary.candles,
        summary.trades,
        summary.books,
        summary.funding,
    )
    return summary


def _write_series(
    root: Path,
    spec: SynthSpec,
    opts: ModelOptions,
    exchange: str,
    market: MarketSpec,
    summary: SynthSummary,
) -> None:
    parsed = parse_symbol(market.symbol)
    kind = market_kind(exchange, market.symbol)
    price, amount = _Units.of(market.price_tick), _Units.of(market.amount_step)
    inst = Instrument(
        exchange=exchange,
        symbol=market.symbol,
        base=parsed.base,
        quote=parsed.quote,
        kind=kind,
        tick=float(market.price_tick),
        step=float(market.amount_step),
        min_steps=int(Decimal(market.min_amount) / Decimal(market.amount_step)),
        contract_size=float(market.contract_size or "1"),
    )
    folder = symbol_dir(root, exchange, market.symbol)
    model = SeriesModel(opts, inst)
    chunk_days = _TRADE_CHUNK_DAYS if spec.trades else _CANDLE_CHUNK_DAYS
    with ExitStack() as stack:

        def sink(name: str, header: Sequence[str] | None) -> Sink:
            out = stack.enter_context(Sink(folder / name, spec.compress))
            if header is not None:
                out.write((",".join(header) + "\n").encode())
            return out

        candle_sinks = {tf: sink(f"ohlcv_{tf}.csv", OHLCV_HEADER) for tf in spec.timeframes}
        rollups = {
            tf: Rollup(timeframe_ms(tf), grid_offset_ms(tf))
            for tf in spec.timeframes
            if timeframe_ms(tf) != MINUTE_MS
        }
        trades = sink("trades.csv", TRADES_HEADER) if spec.trades else None
        books = sink("book.jsonl", None) if spec.books else None
        funding = sink("funding.csv", FUNDING_HEADER) if spec.funding and kind != "spot" else None
        swap_oi = spec.open_interest and kind != "spot"
        interest = sink("open_interest.csv", OPEN_INTEREST_HEADER) if swap_oi else None

        def candles_out(tf: str, candles: CandleArrays) -> None:
            n = len(candles[0])
            ts, o, h, lo, c, v = candles
            scaled = (
                ts,
                o * price.units,
                h * price.units,
                lo * price.units,
                c * price.units,
                v * amount.units,
            )
            candle_sinks[tf].write(
                render(candle_parts(scaled, price.decimals, amount.decimals), n), n
            )

        for d0 in range(0, spec.days, chunk_days):
            data = model.chunk(d0, min(spec.days, d0 + chunk_days))
            for tf in spec.timeframes:
                candles_out(tf, rollups[tf].push(data.candles) if tf in rollups else data.candles)
            if trades is not None and data.trades is not None:
                ts, ids, side, px, amt = data.trades
                parts: list[Part] = [
                    Num(ts), b",", Num(ids), b",", Choice(side, (b"buy", b"sell")), b",",
                    Num(px * price.units, price.decimals), b",", Num(amt * amount.units, amount.decimals), b"\n",
                ]  # fmt: skip
                trades.write(render(parts, len(ts)), len(ts))
            if books is not None and data.books is not None:
                books.write(*_book_bytes(data.books, price, amount))
            if funding is not None and data.funding is not None:
                ts, rate = data.funding
                funding.write(render([Num(ts), b",", Num(rate, 8), b"\n"], len(ts)), len(ts))
            if interest is not None and data.open_interest is not None:
                ts, steps, value = data.open_interest
                parts = [
                    Num(ts), b",", Num(steps * amount.units, amount.decimals), b",",
                    Num(value, model.open_interest.value_decimals), b"\n",
                ]  # fmt: skip
                interest.write(render(parts, len(ts)), len(ts))
        for tf, rollup in rollups.items():
            candles_out(tf, rollup.flush())
        summary.series += 1
        summary.candles += sum(s.rows for s in candle_sinks.values())
        summary.trades += trades.rows if trades else 0
        summary.books += books.rows if books else 0
        summary.funding += funding.rows if funding else 0
        summary.open_interest += interest.rows if interest else 0
    log.debug("synthetic series %s %s written", exchange, market.symbol)


def _book_bytes(
    books: tuple[IntArray, IntArray, IntArray, IntArray, IntArray], price: _Units, amount: _Units
) -> tuple[bytes, int]:
    """``book.jsonl`` lines in the writer's layout: ``{"ts": T, "bids": [[p,a],...], "asks": [...]}``."""
    ts, bids, bid_amt, asks, ask_amt = books  # level arrays are (snapshots, depth)
    parts: list[Part] = [b'{"ts": ', Num(ts), b', "bids": [']
    for side, (prices, amounts) in enumerate(((bids, bid_amt), (asks, ask_amt))):
        if side:
            parts.append(b'], "asks": [')
        for level in range(prices.shape[1]):
            parts.extend(
                [
                    b"[" if level == 0 else b",[",
                    Num(prices[:, level] * price.units, price.decimals),
                    b",",
                    Num(amounts[:, level] * amount.units, amount.decimals),
                    b"]",
                ]
            )
    parts.append(b"]}\n")
    return render(parts, len(ts)), len(ts)


__all__ = [
    "DEFAULT_START",
    "DEFAULT_SYMBOLS",
    "DEFAULT_TIMEFRAMES",
    "KNOWN_EXCHANGES",
    "NO_SWAPS",
    "SynthError",
    "SynthSpec",
    "SynthSummary",
    "market_spec",
    "write_synthetic_tape",
]
