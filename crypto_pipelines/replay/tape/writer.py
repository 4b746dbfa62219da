"""Writing tapes: used by the synthetic generator, the recorder and tests.

Writers take rows as the tape keeps them (ints for ts, decimal strings for numbers) and
sort nothing: callers hand rows in ts order, as the format requires, and ``Tape.load``
checks the result like any other tape.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

from crypto_pipelines.domain.symbols import symbol_to_dir
from crypto_pipelines.replay.tape.markets import MarketSpec
from crypto_pipelines.replay.tape.series import (
    FUNDING_HEADER,
    OHLCV_HEADER,
    OPEN_INTEREST_HEADER,
    TRADES_HEADER,
    BookSnapshot,
)


def symbol_dir(root: Path, exchange: str, symbol: str) -> Path:
    path = Path(root) / exchange / symbol_to_dir(symbol)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _open(path: Path, compress: bool) -> IO[str]:
    if compress:
        # mtime=0: the same rows give the same bytes (the header keeps only the file's name).
        raw = gzip.GzipFile(path.with_name(path.name + ".gz"), mode="wb", mtime=0)
        return io.TextIOWrapper(raw, encoding="utf-8", newline="")
    return path.open("w", encoding="utf-8", newline="")


def _write_csv(
    path: Path, header: Sequence[str], rows: Iterable[Sequence[object]], compress: bool
) -> int:
    count = 0
    with _open(path, compress) as fh:
        fh.write(",".join(header) + "\n")
        for row in rows:
            fh.write(",".join(str(v) for v in row) + "\n")
            count += 1
    return count


def write_ohlcv(
    root: Path,
    exchange: str,
    symbol: str,
    timeframe: str,
    rows: Iterable[Sequence[object]],
    *,
    compress: bool = False,
) -> int:
    """Rows of (ts, open, high, low, close, volume); returns the number written."""
    return _write_csv(
        symbol_dir(root, exchange, symbol) / f"ohlcv_{timeframe}.csv", OHLCV_HEADER, rows, compress
    )


def write_trades(
    root: Path,
    exchange: str,
    symbol: str,
    rows: Iterable[Sequence[object]],
    *,
    compress: bool = False,
) -> int:
    """Rows of (ts, id, side, price, amount)."""
    return _write_csv(
        symbol_dir(root, exchange, symbol) / "trades.csv", TRADES_HEADER, rows, compress
    )


def write_funding(
    root: Path,
    exchange: str,
    symbol: str,
    rows: Iterable[Sequence[object]],
    *,
    compress: bool = False,
) -> int:
    """Rows of (ts, rate)."""
    return _write_csv(
        symbol_dir(root, exchange, symbol) / "funding.csv", FUNDING_HEADER, rows, compress
    )


def write_open_interest(
    root: Path,
    exchange: str,
    symbol: str,
    rows: Iterable[Sequence[object]],
    *,
    compress: bool = False,
) -> int:
    """Rows of (ts, open_interest, open_interest_value) for a perpetual swap; ``None`` (or
    ``""``) writes an empty cell, the format's "this venue does not report it"."""
    cells = (tuple("" if v is None else v for v in row) for row in rows)
    return _write_csv(
        symbol_dir(root, exchange, symbol) / "open_interest.csv",
        OPEN_INTEREST_HEADER,
        cells,
        compress,
    )


def write_book(
    root: Path,
    exchange: str,
    symbol: str,
    snapshots: Iterable[BookSnapshot],
    *,
    compress: bool = False,
) -> int:
    """Full L2 snapshots, best price first; prices and amounts are written as JSON numbers
    from their decimal text (so they read back exactly)."""
    count = 0
    with _open(symbol_dir(root, exchange, symbol) / "book.jsonl", compress) as fh:
        for snap in snapshots:
            bids = ",".join(f"[{p},{a}]" for p, a in snap.bids)
            asks = ",".join(f"[{p},{a}]" for p, a in snap.asks)
            fh.write(f'{{"ts": {snap.ts}, "bids": [{bids}], "asks": [{asks}]}}\n')
            count += 1
    return count


def write_markets(root: Path, exchange: str, markets: Iterable[MarketSpec]) -> None:
    entries = []
    for m in markets:
        entry: dict[str, object] = {
            "symbol": m.symbol,
            "type": m.type,
            "price_tick": m.price_tick,
            "amount_step": m.amount_step,
            "min_amount": m.min_amount,
        }
        if m.contract_size is not None:
            entry["contract_size"] = m.contract_size
        if m.listed_ms is not None:
            entry["listed_ms"] = m.listed_ms
        entries.append(entry)
    folder = Path(root) / exchange
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "markets.json").write_text(json.dumps(entries, indent=1) + "\n", encoding="utf-8")
