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
from typing import IO

import numpy as np
import numpy.typing as npt
import pandas as pd

from crypto_pipelines.replay.tape.errors import TapeError

_CHUNK_ROWS = 250_000
_NEWLINE_SCAN_BYTES = 64 << 20
# Number shapes a float parser accepts but a JSON number (and the tape format) does not.
_BAD_NUMBER = re.compile(rb"(?:^|,)[+.]|\.(?:,|\r?$)|[ \t]", re.M)

Int64Array = npt.NDArray[np.int64]
ChunkCheck = Callable[[pd.DataFrame, int], None]


class CsvFile:
    """One tape CSV: ``header`` columns, first column ``ts`` (int ms), sorted ascending.

    ``unknown_ok`` columns may hold the literal ``nan`` for a value the source did not record
    (the real tapes' mark-price candles have no volume); it is served as the venue's "no value".
    """

    def __init__(
        self,
        path: Path,
        header: Sequence[str],
        *,
        numeric: Sequence[str],
        text: Sequence[str] = (),
        unknown_ok: Sequence[str] = (),
        unique_ts: bool = True,
        check_chunk: ChunkCheck | None = None,
    ) -> None:
        self.path = path
        self.header = tuple(header)
        self._numeric = tuple(numeric)
        self._text = tuple(text)
        self._unknown_ok = frozenset(unknown_ok)
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
        mm = self._mm
        size = len(mm)
        first_nl = mm.find(b"\n")
        header_line = mm[: first_nl if first_nl >= 0 else size]
        if header_line.endswith(b"\r"):
            self._crlf = True
            header_line = header_line[:-1]
        expected = ",".join(self.header)
        got = header_line.decode("utf-8", "replace")
        if got != expected:
            raise TapeError(self.path, f"header must be {expected!r}, found {got!r}", 1)
        data_start = size if first_nl < 0 else first_nl + 1
        starts = _line_starts(mm, data_start, size)
        n_rows = len(starts) - 1
        bad = _BAD_NUMBER.search(mm, data_start) if n_rows else None
        if bad is not None:
            row = int(np.searchsorted(starts, bad.start() + 1, side="right")) - 1
            raise TapeError(self.path, f"not a decimal number: {self._line_text(starts, row)!r}", row + 2)
        ts = np.empty(n_rows, dtype=np.int64)
        self._parse(ts, starts)
        self._check_order(ts)
        # Validation touched every page; let them go so resident memory follows what is served.
        if hasattr(mmap, "MADV_DONTNEED"):
            mm.madvise(mmap.MADV_DONTNEED)
        return ts, starts

    def _line_text(self, starts: Int64Array, row: int) -> str:
        return self._mm[int(starts[row]) : int(starts[row + 1]) - 1].decode("utf-8", "replace").rstrip("\r")

    def _parse(self, ts: Int64Array, starts: Int64Array) -> None:
        self._file.seek(0)
        reader = pd.read_csv(
            self._file,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,
            quoting=csv.QUOTE_NONE,
            chunksize=_CHUNK_ROWS,
            engine="c",
        )
        row0 = 0
        while True:
            try:
                chunk = next(reader)
            except StopIteration:
                break
            except (pd.errors.ParserError, ValueError) as exc:
                raise TapeError(self.path, f"unreadable CSV: {_parser_message(exc)}") from exc
            self._check_frame(chunk.fillna(""), row0)
            ts[row0 : row0 + len(chunk)] = chunk["ts"].to_numpy(dtype=np.int64)
            row0 += len(chunk)
        if row0 != len(ts):
            raise TapeError(self.path, f"found {row0} CSV rows but {len(ts)} lines")

    def _check_frame(self, chunk: pd.DataFrame, row0: int) -> None:
        if list(chunk.columns) != list(self.header):
            raise TapeError(self.path, f"columns must be {list(self.header)}", 1)
        for column in ("ts", *self._numeric):
            raw = chunk[column]
            empty = raw == ""
            if empty.any():
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
        line = ",".join(str(v) for v in chunk.iloc[pos].tolist())
        raise TapeError(self.path, f"{problem}: {line!r}", row0 + pos + 2)

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


def _line_starts(mm: mmap.mmap, data_start: int, size: int) -> Int64Array:
    """Byte offset of each data line, plus a sentinel one past the last line's newline."""
    parts: list[Int64Array] = [np.array([data_start], dtype=np.int64)]
    buf = np.frombuffer(mm, dtype=np.uint8)
    for lo in range(data_start, size, _NEWLINE_SCAN_BYTES):
        hi = min(size, lo + _NEWLINE_SCAN_BYTES)
        parts.append(np.flatnonzero(buf[lo:hi] == 10).astype(np.int64) + lo + 1)
    del buf
    starts = np.concatenate(parts)
    if starts[-1] < size:
        starts = np.append(starts, size + 1)  # the last line has no trailing newline
    return starts


def _parser_message(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    match = re.search(r"line (\d+)", text)
    return f"line {match.group(1)}: {text}" if match else text
