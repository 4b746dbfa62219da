"""Fast, exact text output for the synthetic tape generator.

The generator keeps every price and amount as an integer count of the market's tick or
step, so numbers are exact and aggregate exactly. Writing them as decimal strings one row
at a time in Python costs about a microsecond a field, far too slow for benchmark tapes of
ten million candles; this module renders whole chunks of rows with numpy instead: each
column becomes a matrix of ASCII digits, leading zeros are masked out, and the kept bytes,
read row-major, are exactly the CSV (or JSONL) text.

It also holds the two other pieces the generator streams through: ``Sink`` (a plain or
gzip file whose bytes depend on the data only, never on the clock) and ``Rollup`` (candles
aggregated into a coarser timeframe chunk by chunk, carrying the open interval).
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, BinaryIO

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
_ZERO = ord("0")


@dataclass(frozen=True, slots=True)
class Num:
    """An integer column written as a decimal with ``decimals`` fraction digits
    (``Num(4200010, 2)`` renders ``42000.10``); negative values get a leading ``-``."""

    values: IntArray
    decimals: int = 0


@dataclass(frozen=True, slots=True)
class Choice:
    """A column of short byte strings picked by index (``side``: buy/sell)."""

    codes: npt.NDArray[np.integer]
    options: tuple[bytes, ...]


Part = bytes | Num | Choice


def render(parts: Sequence[Part], n: int) -> bytes:
    """The bytes of ``n`` rows, each row the concatenation of ``parts`` (literals repeat on
    every row). Rows are written in order; the caller supplies the separators and newline."""
    if n == 0:
        return b""
    blocks: list[npt.NDArray[np.uint8]] = []
    keeps: list[npt.NDArray[np.bool_]] = []
    for part in parts:
        if isinstance(part, bytes):
            blocks.append(np.broadcast_to(np.frombuffer(part, dtype=np.uint8), (n, len(part))))
            keeps.append(np.ones((n, len(part)), dtype=np.bool_))
        elif isinstance(part, Num):
            _num_blocks(part, n, blocks, keeps)
        else:
            _choice_block(part, n, blocks, keeps)
    matrix = np.concatenate(blocks, axis=1)
    keep = np.concatenate(keeps, axis=1)
    return bytes(matrix[keep].tobytes())


def _num_blocks(
    part: Num,
    n: int,
    blocks: list[npt.NDArray[np.uint8]],
    keeps: list[npt.NDArray[np.bool_]],
) -> None:
    values = np.asarray(part.values, dtype=np.int64)
    if values.shape != (n,):
        raise ValueError(f"column has {values.shape} values, want ({n},)")
    negative = values < 0
    magnitude = np.abs(values)
    scale = 10**part.decimals
    integer = magnitude // scale
    int_width = len(str(int(integer.max())))
    width = int_width + part.decimals
    digits = np.empty((n, width), dtype=np.uint8)
    rest = magnitude.copy()
    for j in range(width - 1, -1, -1):
        rest, digit = np.divmod(rest, 10)
        digits[:, j] = digit
    digits += _ZERO
    int_digits = np.ones(n, dtype=np.int64)
    power = 10
    for _ in range(1, int_width):
        int_digits += integer >= power
        power *= 10
    if negative.any():
        blocks.append(np.full((n, 1), ord("-"), dtype=np.uint8))
        keeps.append(negative[:, None])
    blocks.append(digits[:, :int_width])
    keeps.append(np.arange(int_width)[None, :] >= (int_width - int_digits)[:, None])
    if part.decimals:
        blocks.append(np.full((n, 1), ord("."), dtype=np.uint8))
        blocks.append(digits[:, int_width:])
        keeps.append(np.ones((n, 1 + part.decimals), dtype=np.bool_))


def _choice_block(
    part: Choice,
    n: int,
    blocks: list[npt.NDArray[np.uint8]],
    keeps: list[npt.NDArray[np.bool_]],
) -> None:
    width = max(len(o) for o in part.options)
    table = np.zeros((len(part.options), width), dtype=np.uint8)
    lengths = np.array([len(o) for o in part.options], dtype=np.int64)
    for i, option in enumerate(part.options):
        table[i, : len(option)] = np.frombuffer(option, dtype=np.uint8)
    codes = np.asarray(part.codes, dtype=np.int64)
    blocks.append(table[codes])
    keeps.append(np.arange(width)[None, :] < lengths[codes][:, None])


def decimal_text(value: int, decimals: int) -> str:
    """One integer count rendered like ``Num`` (for the odd scalar, e.g. in tests)."""
    return render([Num(np.array([value], dtype=np.int64), decimals)], 1).decode()


class Sink:
    """An output file, ``.gz`` when ``compress``. Gzip headers normally embed the current
    time and file name; both are blanked so that the same data gives the same bytes.
    Level 1 compresses 10M candles about 3x faster than level 6 for a file ~15% larger,
    which keeps compressed benchmark tapes quick to make."""

    def __init__(self, path: Path, compress: bool) -> None:
        self._raw: IO[bytes] | None = None
        self._fh: gzip.GzipFile | BinaryIO
        if compress:
            self._raw = path.with_name(path.name + ".gz").open("wb")
            self._fh = gzip.GzipFile(
                filename="", mode="wb", fileobj=self._raw, mtime=0, compresslevel=1
            )
        else:
            self._fh = path.open("wb", buffering=1 << 20)
        self.rows = 0

    def write(self, data: bytes, rows: int = 0) -> None:
        self._fh.write(data)
        self.rows += rows

    def close(self) -> None:
        self._fh.close()
        if self._raw is not None:
            self._raw.close()

    def __enter__(self) -> Sink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


CandleArrays = tuple[IntArray, IntArray, IntArray, IntArray, IntArray, IntArray]


def candle_parts(candles: CandleArrays, price_decimals: int, amount_decimals: int) -> list[Part]:
    """The parts of an ``ohlcv_<tf>.csv`` row for (ts, open, high, low, close, volume)."""
    ts, o, h, lo, c, v = candles
    return [
        Num(ts),
        b",",
        Num(o, price_decimals),
        b",",
        Num(h, price_decimals),
        b",",
        Num(lo, price_decimals),
        b",",
        Num(c, price_decimals),
        b",",
        Num(v, amount_decimals),
        b"\n",
    ]


class Rollup:
    """Aggregates finer candles into one coarser timeframe as chunks stream past.

    Intervals are aligned to the epoch (weekly ones to Monday, ``offset``); an interval with
    no finer candle produces nothing, so a coarse candle is missing exactly when the whole
    interval is empty. The last interval of each chunk may continue in the next one, so it
    is held back (as one pseudo-candle at the interval's open time) until a later chunk or
    ``flush`` shows it is complete."""

    def __init__(self, timeframe_ms: int, offset_ms: int = 0) -> None:
        self.step = timeframe_ms
        self.offset = offset_ms
        self._pending: CandleArrays | None = None

    def push(self, candles: CandleArrays) -> CandleArrays:
        """Candles of the intervals completed by ``candles`` (ts ascending)."""
        if self._pending is not None:
            candles = _concat(self._pending, candles)
        ts, o, h, lo, c, v = candles
        if len(ts) == 0:
            self._pending = None
            return candles
        group = (ts - self.offset) // self.step
        starts = np.flatnonzero(np.concatenate(([True], group[1:] != group[:-1])))
        ends = np.concatenate((starts[1:], [len(ts)])) - 1
        rolled: CandleArrays = (
            group[starts] * self.step + self.offset,
            o[starts],
            np.maximum.reduceat(h, starts),
            np.minimum.reduceat(lo, starts),
            c[ends],
            np.add.reduceat(v, starts),
        )
        self._pending = _slice(rolled, len(starts) - 1, len(starts))
        return _slice(rolled, 0, len(starts) - 1)

    def flush(self) -> CandleArrays:
        """The held-back last interval (empty arrays when there is none)."""
        pending, self._pending = self._pending, None
        if pending is None:
            empty = np.empty(0, dtype=np.int64)
            return (empty, empty, empty, empty, empty, empty)
        return pending


def _concat(a: CandleArrays, b: CandleArrays) -> CandleArrays:
    ts, o, h, lo, c, v = (np.concatenate((x, y)) for x, y in zip(a, b, strict=True))
    return (ts, o, h, lo, c, v)


def _slice(a: CandleArrays, i0: int, i1: int) -> CandleArrays:
    ts, o, h, lo, c, v = (x[i0:i1] for x in a)
    return (ts, o, h, lo, c, v)
