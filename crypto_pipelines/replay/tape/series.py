"""Typed views of one symbol's tape files: candles, trades, funding rates, open interest, book
snapshots.

Every query answers the question an exchange endpoint asks ("rows in [start, end], at most
``limit``, the oldest or the newest of them") and returns rows oldest first; a venue reverses
them where the exchange answers newest first. Values stay the tape's decimal strings.
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np
import pandas as pd

from crypto_pipelines.domain.timeframes import TimeframeError, grid_offset_ms, timeframe_ms
from crypto_pipelines.replay.tape.csvfile import CsvFile
from crypto_pipelines.replay.tape.errors import TapeError

OHLCV_HEADER = ("ts", "open", "high", "low", "close", "volume")
TRADES_HEADER = ("ts", "id", "side", "price", "amount")
FUNDING_HEADER = ("ts", "rate")
OPEN_INTEREST_HEADER = ("ts", "open_interest", "open_interest_value")


class Candle(NamedTuple):
    ts: int
    open: str
    high: str
    low: str
    close: str
    volume: str


class Trade(NamedTuple):
    ts: int
    id: str
    side: str
    price: str
    amount: str


class FundingRate(NamedTuple):
    ts: int
    rate: str


class OpenInterest(NamedTuple):
    """Contracts outstanding and their value in the quote currency; ``""`` where the source
    did not report one. ``ts`` is the snapshot's time, or the period's time in ``buckets``."""

    ts: int
    open_interest: str
    open_interest_value: str


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    ts: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]


class _Series:
    """Range queries over a CsvFile indexed by ts."""

    def __init__(self, file: CsvFile) -> None:
        self.file = file

    def __len__(self) -> int:
        return len(self.file)

    @property
    def first_ts(self) -> int | None:
        return int(self.file.ts[0]) if len(self.file) else None

    @property
    def last_ts(self) -> int | None:
        return int(self.file.ts[-1]) if len(self.file) else None

    def span(
        self, start: int | None, end: int | None, limit: int, *, newest: bool = False
    ) -> tuple[int, int]:
        """Row index range of rows with ``start <= ts <= end`` (either bound optional), cut to
        ``limit`` rows taken from the oldest end, or from the newest when ``newest``."""
        i0 = 0 if start is None else self.file.search(start, "left")
        i1 = len(self.file) if end is None else self.file.search(end, "right")
        if i1 <= i0 or limit <= 0:
            return i0, i0
        if newest:
            return max(i0, i1 - limit), i1
        return i0, min(i1, i0 + limit)

    def close(self) -> None:
        self.file.close()


class CandleSeries(_Series):
    def __init__(self, path: Path, timeframe: str) -> None:
        try:
            self.timeframe_ms = timeframe_ms(timeframe)
        except TimeframeError as exc:
            raise TapeError(path, str(exc)) from exc
        self.timeframe = timeframe
        super().__init__(
            CsvFile(path, OHLCV_HEADER, numeric=OHLCV_HEADER[1:], unknown_ok=("volume",))
        )
        offset = grid_offset_ms(timeframe)
        misaligned = np.flatnonzero((self.file.ts - offset) % self.timeframe_ms)
        if len(misaligned):
            raise self.file.fail_row(int(misaligned[0]), f"ts not aligned to {timeframe}")

    def rows(self, i0: int, i1: int) -> list[Candle]:
        ts = self.file.ts[i0:i1].tolist()
        return [
            Candle(t, f[1], f[2], f[3], f[4], f[5])
            for t, f in zip(ts, self.file.fields(i0, i1), strict=True)
        ]

    def between(
        self, start: int | None, end: int | None, limit: int, *, newest: bool = False
    ) -> list[Candle]:
        return self.rows(*self.span(start, end, limit, newest=newest))


def _check_trades(path: Path) -> object:
    def check(chunk: pd.DataFrame, row0: int) -> None:
        bad = ~chunk["side"].isin(("buy", "sell"))
        if bad.any():
            pos = int(np.flatnonzero(bad.to_numpy())[0])
            raise TapeError(
                path, f"side must be buy or sell: {chunk['side'].iloc[pos]!r}", row0 + pos + 2
            )

    return check


class TradeSeries(_Series):
    """Trades sorted by ts; ids unique. When every id is an integer and ids increase with
    the rows (Binance aggTrades, OKX, Bybit, Coinbase), id paging uses binary search."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            CsvFile(
                path,
                TRADES_HEADER,
                numeric=("price", "amount"),
                text=("id", "side"),
                unique_ts=False,
                check_chunk=_check_trades(path),  # type: ignore[arg-type]
            )
        )
        self.numeric_ids = self._index_ids()

    def _index_ids(self) -> np.ndarray | None:
        ids = [f[1] for f in self.file.fields(0, len(self.file))] if len(self.file) else []
        seen: set[str] = set()
        for row, trade_id in enumerate(ids):
            if trade_id in seen:
                raise self.file.fail_row(row, f"duplicate trade id {trade_id!r}")
            seen.add(trade_id)
        del seen
        if not all(i.isdigit() for i in ids):
            return None
        arr = np.array([int(i) for i in ids], dtype=np.int64)
        return arr if len(arr) < 2 or bool(np.all(np.diff(arr) > 0)) else None

    def rows(self, i0: int, i1: int) -> list[Trade]:
        ts = self.file.ts[i0:i1].tolist()
        return [
            Trade(t, f[1], f[2], f[3], f[4])
            for t, f in zip(ts, self.file.fields(i0, i1), strict=True)
        ]

    def between(
        self, start: int | None, end: int | None, limit: int, *, newest: bool = False
    ) -> list[Trade]:
        return self.rows(*self.span(start, end, limit, newest=newest))

    def id_position(self, trade_id: int) -> int:
        """Index of the first trade whose id is >= ``trade_id`` (numeric ids only)."""
        if self.numeric_ids is None:
            raise ValueError("this tape's trade ids are not increasing integers")
        return int(np.searchsorted(self.numeric_ids, trade_id, side="left"))


class FundingSeries(_Series):
    def __init__(self, path: Path) -> None:
        super().__init__(CsvFile(path, FUNDING_HEADER, numeric=("rate",)))

    def rows(self, i0: int, i1: int) -> list[FundingRate]:
        ts = self.file.ts[i0:i1].tolist()
        return [FundingRate(t, f[1]) for t, f in zip(ts, self.file.fields(i0, i1), strict=True)]

    def between(
        self, start: int | None, end: int | None, limit: int, *, newest: bool = False
    ) -> list[FundingRate]:
        return self.rows(*self.span(start, end, limit, newest=newest))


def _check_open_interest(path: Path) -> object:
    """Each snapshot needs at least one of its two numbers (the typed and the text pass both
    come here; empty cells are NaN or ""). Values are served as recorded, negative ones too:
    judging them is the pipeline's job (its model quarantines them), as for candles."""

    def check(chunk: pd.DataFrame, row0: int) -> None:
        empty = np.ones(len(chunk), dtype=bool)
        for column in OPEN_INTEREST_HEADER[1:]:
            raw = chunk[column]
            blank = (raw.isna() | (raw == "")).to_numpy()
            empty &= blank
        if empty.any():
            pos = int(np.flatnonzero(empty)[0])
            raise TapeError(
                path, "a snapshot needs open_interest, open_interest_value or both", row0 + pos + 2
            )

    return check


class OpenInterestSeries(_Series):
    """Open-interest snapshots at the tape's own period. Exchanges publish open interest per
    period (5m, 1h, 1d...), so venues ask ``buckets``: the value at each period's time is the
    latest snapshot at or before it, taken only from within that period, so that a gap in the
    recording leaves periods out instead of repeating a stale number."""

    def __init__(self, path: Path) -> None:
        columns = OPEN_INTEREST_HEADER[1:]
        super().__init__(
            CsvFile(
                path,
                OPEN_INTEREST_HEADER,
                numeric=columns,
                empty_ok=columns,
                check_chunk=_check_open_interest(path),  # type: ignore[arg-type]
            )
        )

    def rows(self, i0: int, i1: int) -> list[OpenInterest]:
        ts = self.file.ts[i0:i1].tolist()
        return [
            OpenInterest(t, f[1], f[2]) for t, f in zip(ts, self.file.fields(i0, i1), strict=True)
        ]

    def between(
        self, start: int | None, end: int | None, limit: int, *, newest: bool = False
    ) -> list[OpenInterest]:
        return self.rows(*self.span(start, end, limit, newest=newest))

    def buckets(
        self,
        period_ms: int,
        start: int | None,
        end: int | None,
        limit: int,
        *,
        newest: bool = False,
        offset_ms: int = 0,
    ) -> list[OpenInterest]:
        """Values at the period times ``t`` (``t % period_ms == offset_ms``) with
        ``start <= t <= end``, oldest first, at most ``limit`` of them: the oldest, or the
        newest when ``newest``. A period without a snapshot in ``(t - period_ms, t]`` is
        omitted."""
        ts = self.file.ts
        if not len(ts) or limit <= 0:
            return []
        lo = int(ts[0]) if start is None else max(start, int(ts[0]))
        hi = int(ts[-1]) + period_ms - 1 if end is None else min(end, int(ts[-1]) + period_ms - 1)
        first = lo + (offset_ms - lo) % period_ms
        last = hi - (hi - offset_ms) % period_ms
        times: list[int] = []
        rows: list[int] = []
        block = max(limit, 512)
        cursor = last if newest else first
        while len(times) < limit and first <= cursor <= last:
            if newest:
                t = cursor - period_ms * np.arange(min(block, (cursor - first) // period_ms + 1))
                cursor = int(t[-1]) - period_ms
            else:
                t = cursor + period_ms * np.arange(min(block, (last - cursor) // period_ms + 1))
                cursor = int(t[-1]) + period_ms
            index = np.searchsorted(ts, t, side="right") - 1
            ok = np.flatnonzero((index >= 0) & (ts[np.maximum(index, 0)] > t - period_ms))
            times.extend(t[ok].tolist())
            rows.extend(index[ok].tolist())
        times, rows = times[:limit], rows[:limit]
        if newest:
            times.reverse()
            rows.reverse()
        out = []
        for at, row in zip(times, rows, strict=True):
            fields = self.file.fields(row, row + 1)[0]
            out.append(OpenInterest(at, fields[1], fields[2]))
        return out


class BookSeries:
    """Full L2 snapshots from ``book.jsonl``; validated at load, parsed again on demand so
    that only the ts index stays in memory. Prices keep their exact decimal text."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offsets: list[tuple[int, int]] = []
        ts: list[int] = []
        with _open_binary(path) as fh:
            lines = fh.read().split(b"\n")
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                if number == len(lines):
                    continue
                raise TapeError(path, "empty line", number)
            snapshot = _parse_snapshot(path, number, raw)
            if ts and snapshot.ts < ts[-1]:
                raise TapeError(path, "ts not sorted ascending", number)
            ts.append(snapshot.ts)
        self._raw = [raw for raw in lines if raw.strip()]
        self.ts = np.array(ts, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._raw)

    def at(self, ts: int | None) -> BookSnapshot | None:
        """The latest snapshot at or before ``ts`` (the last one when ``ts`` is None)."""
        i = len(self._raw) if ts is None else int(np.searchsorted(self.ts, ts, side="right"))
        if i == 0:
            return None
        return _parse_snapshot(self.path, i, self._raw[i - 1])

    def snapshot(self, i: int) -> BookSnapshot:
        return _parse_snapshot(self.path, i + 1, self._raw[i])

    def close(self) -> None:
        self._raw = []


def _open_binary(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _parse_snapshot(path: Path, line: int, raw: bytes) -> BookSnapshot:
    text = raw.decode("utf-8", "replace").strip()
    shown = repr(text if len(text) <= 160 else text[:157] + "...")

    def refuse(problem: str) -> TapeError:
        return TapeError(path, f"{problem}: {shown}", line)

    try:
        # parse_float=str keeps each level's decimal text exactly as recorded.
        obj = json.loads(raw, parse_float=str)
    except ValueError as exc:
        raise refuse(f"not a JSON object ({exc})") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("ts"), int):
        raise refuse('each line must be {"ts": int, "bids": [...], "asks": [...]}')
    sides: list[list[tuple[str, str]]] = []
    for key in ("bids", "asks"):
        levels = obj.get(key)
        if not isinstance(levels, list):
            raise refuse(f"{key!r} must be a list of [price, amount]")
        out: list[tuple[str, str]] = []
        for level in levels:
            if (
                not isinstance(level, list)
                or len(level) != 2
                or not all(_is_number(v) for v in level)
            ):
                raise refuse(f"{key!r} level must be [price, amount] numbers, not {level!r}")
            out.append((str(level[0]), str(level[1])))
        sides.append(out)
    bids, asks = sides
    if any(float(b[0]) <= float(a[0]) for a, b in zip(bids[1:], bids, strict=False)):
        raise refuse("bids must be sorted best (highest) price first")
    if any(float(a[0]) >= float(b[0]) for a, b in zip(asks, asks[1:], strict=False)):
        raise refuse("asks must be sorted best (lowest) price first")
    return BookSnapshot(obj["ts"], bids, asks)


def _is_number(value: object) -> bool:
    """A book level's price or amount: a JSON number (kept as its decimal text)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return False
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False
