"""Pages into the DataFrames the loader yields: about ``chunk_rows`` rows each, or what
``chunk_seconds`` of fetching brought, whichever comes first; columns in a fixed order, and
no page allowed to overlap the one before it."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any, Final

import pandas as pd

from crypto_pipelines.exchanges.calls import FetchStats, iso
from crypto_pipelines.exchanges.parse import Block, Where

CHUNK_SECONDS: Final = 2.0
"""A chunk is yielded (and committed by the loader) at least this often while pages arrive:
a slow venue (a rate budget, retries) loses at most this much fetching to a failure, not a
whole chunk's worth of rows."""


def frames(
    blocks: Iterator[Block],
    constants: Mapping[str, str],
    columns: tuple[str, ...],
    chunk_rows: int,
    stats: FetchStats,
    chunk_seconds: float = CHUNK_SECONDS,
) -> Iterator[pd.DataFrame]:
    """DataFrames of ``constants`` (exchange, symbol...), ``ts`` and the blocks' columns.
    Gathering pages keeps chunks large enough for efficient storage (validation and upserts
    have a fixed cost per call) while memory still follows one chunk, and ``chunk_seconds``
    keeps commits frequent when pages come slowly."""
    pending: list[Block] = []
    count = 0
    since = time.monotonic()

    def frame() -> pd.DataFrame:
        block = Block.concat(pending)
        data: dict[str, Any] = dict(constants)
        data["ts"] = block.ts
        data.update(block.cols)
        out = pd.DataFrame(data, columns=list(columns))
        stats.rows += len(out)
        stats.chunks += 1
        return out

    for block in blocks:
        if not len(block):
            continue
        pending.append(block)
        count += len(block)
        if count >= chunk_rows or time.monotonic() - since >= chunk_seconds:
            yield frame()
            pending, count, since = [], 0, time.monotonic()
    if pending:
        yield frame()


def strictly_after(blocks: Iterator[Block], where: Where, span: tuple[int, int]) -> Iterator[Block]:
    """Refuse a page that repeats or precedes rows of the page before (unique ``ts``)."""
    last: int | None = None
    for block in blocks:
        if len(block):
            if last is not None and int(block.ts[0]) <= last:
                raise where.fail(
                    span, f"page starting at {iso(int(block.ts[0]))} repeats rows up to {iso(last)}"
                )
            last = int(block.ts[-1])
        yield block


def trades_after(blocks: Iterator[Block], where: Where, span: tuple[int, int]) -> Iterator[Block]:
    """Trade pages must follow each other in time (equal ms allowed) and never repeat an id
    at their common millisecond."""
    last_ts: int | None = None
    last_ids: set[Any] = set()
    for block in blocks:
        if not len(block):
            continue
        ids = block.cols["trade_id"]
        if last_ts is not None:
            first = int(block.ts[0])
            if first < last_ts or set(ids[block.ts == last_ts].tolist()) & last_ids:
                raise where.fail(
                    span, f"page starting at {iso(first)} repeats or precedes earlier trades"
                )
        last_ts = int(block.ts[-1])
        last_ids = set(ids[block.ts == last_ts].tolist())
        yield block
