"""A validated, memory-mapped tape CSV file with a timestamp index.

The replay exchange must serve tapes far larger than memory (10 million candles in well under
1 GB), so a file is never loaded as Python objects. It is memory-mapped, and only two numpy
arrays are kept: each row's ``ts`` and each line's byte offset. Serving a request slices the
mapped bytes of the rows it needs and splits them, so resident memory follows what is served.

Validation happens once at load, chunk by chunk with pandas' C parser; any chunk that fails the
fast typed parse is re-read as text to name the exact line and problem.
"""

from __future__ import annotations

import csv
import gzip
import mmap
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from crypto_pipelines.replay.tape.errors import TapeError

_CHUNK_ROWS = 250_000
_SCAN_BYTES = 16 << 20
# Number shapes a float parser accepts but a JSON number (and the tape format) does not.
_BAD_NUMBER = re.compile(rb"(?:^|,)[+.]|\.(?:,|\r?$)|[ \t]", re.M)

Int64Array = npt.NDArray[np.int64]
ChunkCheck = Callable[[pd.DataFrame, int], None]


class CsvFile:
    """One tape CSV: ``header`` columns, first column ``ts`` (int ms), sorted ascending.

    ``unknown_ok`` columns may hold the literal ``nan`` for a value the source did not record
    (the real tapes' mark-price candles have no volume); it is served as the venue's "no value".
    ``empty_ok`` numeric columns may be left empty (open interest: a venue that reports only
    the contracts or only their value); they are parsed as text so that an empty cell can be
    told apart from a literal ``nan``, which stays refused there.
    """

    def __init__(
        self,
        path: Path,
        header: Sequence[str],
        *,
        numeric: Sequence[str],
        text: Sequence[str] = (),
        unknown_ok: Sequence[str] = (),
        empty_ok: Sequence[str] = (),
        unique_ts: bool = True,
        check_chunk: ChunkCheck | None = None,
    ) -> None:
        self.path = path
        self.header = tuple(header)
        self._numeric = tuple(numeric)
        self._text = tuple(text)
        self._unknown_ok = frozenset(unknown_ok)
        self._empty_ok = frozenset(empty_ok)
        self._unique_ts = unique_ts
        self._check_chunk = check_chunk
        self._file: IO[bytes] = _open_plain(path)
        try:
            self._mm = _map(self._file, path)
            self._crlf = False
            self.ts, self._starts = self._index()
        except BaseException:
            self.close()
            raise

    # -- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def lines(self, i0: int, i1: int) -> list[str]:
        """Raw text lines ``i0 <= i < i1`` (no newline)."""
        if i1 <= i0:
            return []
        start = int(self._starts[i0])
        end = int(self._starts[i1]) - 1
        text = self._mm[start:end].decode("utf-8")
        if self._crlf:
            text = text.replace("\r", "")
        return text.split("\n")

    def fields(self, i0: int, i1: int) -> list[list[str]]:
        """Rows ``i0 <= i < i1`` split into their string fields, ``ts`` first."""
        return [line.split(",") for line in self.lines(i0, i1)]

    def search(self, ts: int, side: str = "left") -> int:
        """Index of the first row with ``ts >= ts`` (``side='left'``) or ``ts > ts``."""
        return int(np.searchsorted(self.ts, ts, side=side))  # type: ignore[call-overload]

    def close(self) -> None:
        mm = getattr(self, "_mm", None)
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # a slice is still referenced; the OS frees it with the file
                pass
        self._file.close()

    # -- loading ---------------------------------------------------------------------------
    def _index(self) -> tuple[Int64Array, Int64Array]:
        size = len(self._mm)
        first_nl = self._mm.find(b"\n", 0, 1 << 16)
        header_line = self._mm[: first_nl if first_nl >= 0 else min(size, 1 << 16)]
        if header_line.endswith(b"\r"):
            self._crlf = True
            header_line = header_line[:-1]
        expected = ",".join(self.header)
        got = header_line.decode("utf-8", "replace")
        if got != expected:
            raise TapeError(self.path, f"header must be {expected!r}, found {got!r}", 1)
        data_start = size if first_nl < 0 else first_nl + 1
        starts = self._starts = self._scan(data_start, size)
        ts = np.empty(len(starts) - 1, dtype=np.int64)
        self._parse(ts)
        if self._empty_ok:
            self._check_field_counts(starts)
        self._check_order(ts)
        return ts, starts

    def _scan(self, data_start: int, size: int) -> Int64Array:
        """Line offsets plus a shape check of every number, in one streaming pass of plain
        reads: a memory-mapped scan would leave the whole file resident."""
        parts: list[Int64Array] = [np.array([data_start], dtype=np.int64)]
        carry = b""
        pos = data_start
        self._file.seek(data_start)
        while True:
            block = self._file.read(_SCAN_BYTES)
            buf = carry + block
            last_nl = buf.rfind(b"\n")
            if not block:
                complete, carry = buf, b""
            elif last_nl < 0:
                carry = buf
                pos += len(block)
                continue
            else:
                complete, carry = buf[: last_nl + 1], buf[last_nl + 1 :]
            base = pos - (len(buf) - len(block))
            newlines = np.flatnonzero(np.frombuffer(complete, dtype=np.uint8) == 10)
            parts.append(newlines.astype(np.int64) + base + 1)
            bad = _BAD_NUMBER.search(complete)
            if bad is not None:
                line_start = complete.rfind(b"\n", 0, bad.start()) + 1
                line_end = complete.find(b"\n", bad.start())
                text = complete[line_start : line_end if line_end >= 0 else len(complete)]
                row = int(sum(len(p) for p in parts[1:-1])) + int(
                    np.searchsorted(newlines, bad.start())
                )
                raise TapeError(
                    self.path,
                    f"not a decimal number: {text.decode('utf-8', 'replace').rstrip()!r}",
                    row + 2,
                )
            if not block:
                break
            pos += len(block)
        starts = np.concatenate(parts)
        if starts[-1] < size:
            starts = np.append(starts, size + 1)  # the last line has no trailing newline
        return starts

    def _check_field_counts(self, starts: Int64Array) -> None:
        """pandas reads a short line's missing trailing cells as empty, which ``empty_ok``
        columns accept: count the separators so that a short line is still refused."""
        if len(starts) < 2:
            return
        data = np.frombuffer(self._mm, dtype=np.uint8)
        begin, end = int(starts[0]), min(len(data), int(starts[-1]))
        commas = np.flatnonzero(data[begin:end] == ord(",")) + begin
        per_line = np.diff(np.searchsorted(commas, starts))
        short = np.flatnonzero(per_line != len(self.header) - 1)
        del data
        if len(short):
            row = int(short[0])
            raise TapeError(
                self.path,
                f"expected {len(self.header)} fields: {self._line_text(starts, row)!r}",
                row + 2,
            )

    def _line_text(self, starts: Int64Array, row: int) -> str:
        return (
            self._mm[int(starts[row]) : int(starts[row + 1]) - 1]
            .decode("utf-8", "replace")
            .rstrip("\r")
        )

    def _reader(self, typed: bool, skip_rows: int = 0, n_rows: int | None = None) -> Any:
        self._file.seek(0)
        common: dict[str, Any] = {
            "skip_blank_lines": False,
            "quoting": csv.QUOTE_NONE,
            "engine": "c",
            "keep_default_na": False,
        }
        if skip_rows:
            common["skiprows"] = range(1, skip_rows + 1)
        if typed:
            dtype: dict[str, Any] = {"ts": np.int64}
            dtype.update({c: np.float64 for c in self._numeric})
            dtype.update({c: str for c in self._text})
            na_values: Any = ["nan"]
            if self._empty_ok:
                # Per column: only an empty cell is "no value" in these; "nan" stays text.
                dtype.update({c: str for c in self._empty_ok})
                na_values = {c: [""] if c in self._empty_ok else ["nan"] for c in self.header}
            return pd.read_csv(
                self._file, dtype=dtype, na_values=na_values, chunksize=_CHUNK_ROWS, **common
            )
        return pd.read_csv(self._file, dtype=str, na_filter=False, nrows=n_rows, **common)

    def _parse(self, ts: Int64Array) -> None:
        """Typed C parsing chunk by chunk (fast); a chunk that fails it is re-read as text to
        name the exact line and problem."""
        reader = self._reader(typed=True)
        row0 = 0
        while True:
            try:
                chunk = next(reader)
            except StopIteration:
                break
            except (pd.errors.ParserError, ValueError, OverflowError) as exc:
                self._explain(row0, exc)
            self._check_typed(chunk, row0)
            ts[row0 : row0 + len(chunk)] = chunk["ts"].to_numpy(dtype=np.int64)
            row0 += len(chunk)
        if row0 != len(ts):
            raise TapeError(self.path, f"found {row0} CSV rows but {len(ts)} lines")

    def _explain(self, row0: int, exc: Exception) -> None:
        """Find and report the first bad row at or after ``row0``; never returns."""
        try:
            text = self._reader(typed=False, skip_rows=row0, n_rows=_CHUNK_ROWS)
        except (pd.errors.ParserError, ValueError) as inner:
            # Most often a line with too many fields: name it with its own text.
            self._check_field_counts(self._starts)
            raise TapeError(self.path, f"unreadable CSV: {_parser_message(inner, row0)}") from exc
        self._check_frame(text, row0)
        raise TapeError(self.path, f"unreadable CSV near line {row0 + 2}: {exc}") from exc

    def _check_typed(self, chunk: pd.DataFrame, row0: int) -> None:
        if list(chunk.columns) != list(self.header):
            raise TapeError(self.path, f"columns must be {list(self.header)}", 1)
        if (chunk["ts"].to_numpy() < 0).any():
            self._fail(
                chunk, row0, chunk["ts"] < 0, "ts must be a non-negative integer of milliseconds"
            )
        for column in self._numeric:
            if column in self._empty_ok:
                present = chunk[column].notna().to_numpy()
                numbers = pd.to_numeric(chunk[column], errors="coerce")
                values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
                bad = present & ~np.isfinite(values)
            else:
                values = chunk[column].to_numpy(dtype=np.float64)
                bad = ~np.isfinite(values)
            if column in self._unknown_ok:
                bad &= ~np.isnan(values)
            if bad.any():
                self._fail(
                    chunk, row0, pd.Series(bad), f"column {column!r} is not a decimal number"
                )
        for column in self._text:
            empty = chunk[column].isna() | (chunk[column] == "")
            if empty.any():
                self._fail(chunk, row0, empty, f"missing value in column {column!r}")
        if self._check_chunk is not None:
            self._check_chunk(chunk, row0)

    def _check_frame(self, chunk: pd.DataFrame, row0: int) -> None:
        chunk = chunk.fillna("")
        if list(chunk.columns) != list(self.header):
            raise TapeError(self.path, f"columns must be {list(self.header)}", 1)
        for column in ("ts", *self._numeric):
            raw = chunk[column]
            empty = raw == ""
            if empty.any() and column not in self._empty_ok:
                self._fail(chunk, row0, empty, f"missing value in column {column!r}")
            if column == "ts":
                bad = ~raw.str.fullmatch(r"\d{1,18}")
                if bad.any():
                    self._fail(chunk, row0, bad, "ts must be an integer of milliseconds")
                continue
            values = pd.to_numeric(raw, errors="coerce")
            bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=np.float64, na_value=np.nan))
            if column in self._unknown_ok:
                bad &= raw != "nan"
            if column in self._empty_ok:
                bad &= ~empty
            if bad.any():
                self._fail(chunk, row0, bad, f"column {column!r} is not a decimal number")
        for column in self._text:
            empty = chunk[column] == ""
            if empty.any():
                self._fail(chunk, row0, empty, f"missing value in column {column!r}")
        if self._check_chunk is not None:
            self._check_chunk(chunk, row0)

    def _fail(self, chunk: pd.DataFrame, row0: int, mask: pd.Series, problem: str) -> None:
        pos = int(np.flatnonzero(mask.to_numpy())[0])
        raise self.fail_row(row0 + pos, problem)  # the file's own text, not the parsed cells

    def fail_row(self, row: int, problem: str) -> TapeError:
        """A TapeError for 0-based data ``row``, quoting the line."""
        return TapeError(self.path, f"{problem}: {self._line_text(self._starts, row)!r}", row + 2)

    def _check_order(self, ts: Int64Array) -> None:
        if len(ts) < 2:
            return
        step = np.diff(ts)
        bad = np.flatnonzero(step <= 0) if self._unique_ts else np.flatnonzero(step < 0)
        if len(bad):
            row = int(bad[0]) + 1
            problem = "duplicate ts" if step[bad[0]] == 0 else "ts not sorted ascending"
            raise self.fail_row(row, problem)


def _open_plain(path: Path) -> IO[bytes]:
    """Open a tape file; a ``.gz`` one is inflated once into an anonymous temporary file so
    that it can be memory-mapped like the rest (the OS reclaims it when closed)."""
    if path.suffix != ".gz":
        return path.open("rb")
    tmp = tempfile.TemporaryFile(prefix="tape-")
    try:
        with gzip.open(path, "rb") as src:
            shutil.copyfileobj(src, tmp, 1 << 20)
    except (OSError, EOFError) as exc:
        tmp.close()
        raise TapeError(path, f"not a readable gzip file: {exc}") from exc
    tmp.seek(0)
    return tmp


def _map(file: IO[bytes], path: Path) -> mmap.mmap:
    file.seek(0, 2)
    if file.tell() == 0:
        raise TapeError(path, "empty file: a header line is required", 1)
    return mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)


def _parser_message(exc: Exception, row0: int) -> str:
    """pandas names lines relative to what it read; shift them back to the file's lines."""
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return re.sub(r"line (\d+)", lambda m: f"line {int(m.group(1)) + row0}", text)
