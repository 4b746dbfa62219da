"""What the recorder needs besides paging: numbers back to decimal text, checks on what an
exchange answered, atomic files and a spool for pages that arrive newest first.

Kept apart from ``record.py`` so that the paging logic reads as paging; everything here is
plain data in, plain data out (no ccxt calls), which is also what makes it testable alone.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

from crypto_pipelines.replay.tape.series import BookSnapshot, Candle, FundingRate, Trade

# ccxt's precision modes (ccxt.DECIMAL_PLACES, ccxt.TICK_SIZE); copied so that this module
# does not import ccxt.
DECIMAL_PLACES = 2
TICK_SIZE = 4


class RecordError(Exception):
    """A recording that cannot go on; the message names the exchange, symbol and series."""


class BadAnswer(ValueError):
    """An exchange answer the recorder refuses to write; the recorder turns it into a
    RecordError naming the exchange, symbol and series."""


def decimal_text(value: object) -> str:
    """The shortest decimal text of a number ccxt handed back, without exponent notation.

    ccxt parses the exchange's decimal strings into floats; ``repr`` of a float is the shortest
    text that parses back to the same float, which for any decimal of up to 15 significant
    digits is that decimal itself. So a tape written in canonical form (no trailing zeros, no
    exponent) and served by the replay exchange is recorded back to the same text.
    """
    if value is None or isinstance(value, bool):
        raise BadAnswer(f"missing number: {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadAnswer(f"not a finite number: {value!r}")
        text = repr(value)
    elif isinstance(value, str | Decimal):
        text = str(value)
    else:
        raise BadAnswer(f"not a number: {value!r}")
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise BadAnswer(f"not a number: {value!r}") from None
    if not number.is_finite():
        raise BadAnswer(f"not a finite number: {value!r}")
    out = format(number, "f")
    if "." in out:
        out = out.rstrip("0").rstrip(".")
    return "0" if out in ("-0", "") else out


def precision_text(value: object, mode: int) -> str | None:
    """A ccxt market precision as a decimal step: TICK_SIZE values are the step itself,
    DECIMAL_PLACES values a count of decimals. None when ccxt does not know it."""
    if value is None:
        return None
    if mode == TICK_SIZE:
        return decimal_text(value)
    if mode == DECIMAL_PLACES:
        return format(Decimal(1).scaleb(-int(float(str(value)))), "f")
    raise BadAnswer(f"precision mode {mode} (significant digits) has no tick size")


def _ts(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadAnswer(f"{what} without an integer timestamp: {value!r}")
    return value


def candle_rows(
    raw: Sequence[Sequence[Any]], lo: int, hi: int, step: int, offset: int, after: int | None
) -> list[Candle]:
    """Validated candles of one request for the window ``[lo, hi)``, given the last candle
    already recorded (``after``). Unknown volume (None or NaN) is the tape's ``nan``."""
    out: list[Candle] = []
    prev = after
    for row in raw:
        if len(row) < 6:
            raise BadAnswer(f"candle row with {len(row)} fields: {row!r}")
        ts = _ts(row[0], "candle")
        if (ts - offset) % step:
            raise BadAnswer(f"candle {ts} is not aligned to the timeframe")
        if not lo <= ts < hi:
            raise BadAnswer(f"candle {ts} outside the requested window [{lo}, {hi})")
        if prev is not None and ts <= prev:
            problem = "returned twice" if ts == prev else "out of order"
            raise BadAnswer(f"candle {ts} {problem}")
        volume = row[5]
        unknown = volume is None or (isinstance(volume, float) and math.isnan(volume))
        out.append(
            Candle(
                ts,
                decimal_text(row[1]),
                decimal_text(row[2]),
                decimal_text(row[3]),
                decimal_text(row[4]),
                "nan" if unknown else decimal_text(volume),
            )
        )
        prev = ts
    return out


def numeric_ids(trades: Sequence[Trade]) -> bool:
    return all(t.id.isdigit() for t in trades)


def trade_rows(raw: Iterable[Mapping[str, Any]]) -> list[Trade]:
    """Validated trades of one page, oldest first; ties on ts ordered by numeric id (ccxt
    orders them by id *text*, which puts "1000" before "999")."""
    out: list[Trade] = []
    seen: set[str] = set()
    for trade in raw:
        ts = _ts(trade.get("timestamp"), "trade")
        trade_id = trade.get("id")
        if trade_id is None or str(trade_id) == "":
            raise BadAnswer(f"trade at {ts} without an id")
        trade_id = str(trade_id)
        if any(c in trade_id for c in ",\r\n"):
            raise BadAnswer(f"trade id {trade_id!r} cannot be written to CSV")
        if trade_id in seen:
            raise BadAnswer(f"trade id {trade_id} returned twice in one page")
        seen.add(trade_id)
        side = trade.get("side")
        if side not in ("buy", "sell"):
            raise BadAnswer(f"trade {trade_id} has side {side!r} (want buy or sell)")
        out.append(
            Trade(
                ts,
                trade_id,
                side,
                decimal_text(trade.get("price")),
                decimal_text(trade.get("amount")),
            )
        )
    if numeric_ids(out):
        out.sort(key=lambda t: (t.ts, int(t.id)))
    else:
        out.sort(key=lambda t: t.ts)
    return out


def funding_rows(raw: Iterable[Mapping[str, Any]]) -> list[FundingRate]:
    """Validated funding rates of one page, oldest first, times unique."""
    out = sorted(
        (
            FundingRate(_ts(r.get("timestamp"), "funding rate"), decimal_text(r.get("fundingRate")))
            for r in raw
        ),
        key=lambda r: r.ts,
    )
    for a, b in zip(out, out[1:], strict=False):
        if a.ts == b.ts:
            raise BadAnswer(f"funding time {a.ts} returned twice")
    return out


def book_snapshot(ts: int, book: Mapping[str, Any]) -> BookSnapshot:
    """A validated L2 snapshot: best price first, strictly, on each side."""
    sides: list[list[tuple[str, str]]] = []
    for key, descending in (("bids", True), ("asks", False)):
        levels = [(decimal_text(lv[0]), decimal_text(lv[1])) for lv in book.get(key) or []]
        prices = [Decimal(p) for p, _ in levels]
        for a, b in zip(prices, prices[1:], strict=False):
            if (a <= b) if descending else (a >= b):
                raise BadAnswer(f"order book {key} not sorted best price first at {a} / {b}")
        sides.append(levels)
    return BookSnapshot(ts, sides[0], sides[1])


class Staging:
    """Tape files are written under a hidden folder inside the output folder and moved into
    place with ``os.replace`` once complete, so a failed record never leaves a half-written
    file (``Tape.load`` skips dot-folders, and ``close`` removes it)."""

    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = out_dir
        self.root = Path(tempfile.mkdtemp(prefix=".recording-", dir=out_dir))

    def commit(self, relative: Path) -> Path:
        final = self.out_dir / relative
        final.parent.mkdir(parents=True, exist_ok=True)
        other = _other_variant(final)
        if other.exists():  # a .csv and a .csv.gz of the same series would not load
            other.unlink()
        os.replace(self.root / relative, final)
        return final

    def discard(self, relative: Path) -> None:
        (self.root / relative).unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _other_variant(path: Path) -> Path:
    if path.name.endswith(".gz"):
        return path.with_name(path.name[:-3])
    return path.with_name(path.name + ".gz")


class ReverseSpool:
    """Pages that arrive newest first (backward paging), handed out oldest first.

    Up to ``max_rows`` rows stay in memory; older runs are spilled to temporary files so that a
    long backward recording does not hold every trade in memory. Rows are tuples of text
    without commas (checked where trades are validated)."""

    def __init__(self, max_rows: int = 200_000) -> None:
        self.max_rows = max_rows
        self._pages: list[list[tuple[object, ...]]] = []
        self._rows = 0
        self._spilled: list[IO[str]] = []  # newest run first

    def push(self, page: Sequence[tuple[object, ...]]) -> None:
        """Add a page (oldest first within the page) older than every page before it."""
        if page:
            self._pages.append(list(page))
            self._rows += len(page)
        if self._rows >= self.max_rows:
            self._spill()

    def _spill(self) -> None:
        fh = tempfile.TemporaryFile("w+", encoding="utf-8", prefix="record-spool-")
        for page in reversed(self._pages):
            for row in page:
                fh.write(",".join(str(v) for v in row) + "\n")
        self._spilled.append(fh)
        self._pages, self._rows = [], 0

    def ascending(self, parse: Callable[..., Any]) -> Iterator[Any]:
        """Every row, oldest first, rebuilt with ``parse`` (a NamedTuple whose first field is
        the integer ts) for rows that went through a file."""
        try:
            for page in reversed(self._pages):
                yield from page
            for fh in reversed(self._spilled):
                fh.seek(0)
                for line in fh:
                    fields = line.rstrip("\n").split(",")
                    yield parse(int(fields[0]), *fields[1:])
        finally:
            self.close()

    def close(self) -> None:
        for fh in self._spilled:
            fh.close()
        self._spilled = []
        self._pages = []
