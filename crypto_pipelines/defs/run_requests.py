"""Run requests for the partitioned market-data assets, as few runs as partitions allow.

A multi-partition key range (``dagster/asset_partition_range_start`` / ``_end`` run tags)
covers the product of its dimensions' ranges: dates from first to last, times symbols from
first to last *in the dynamic partition set's order*. So symbols that need the same dates and
sit next to each other in that order share one run (the assets' ``BackfillPolicy.single_run``
streams each symbol's range once); others get runs of their own. One run per asset instead of
one per symbol keeps the daemon's process count, and the exchange pool's queue, small.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import dagster as dg

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def multi_key(date_key: str, symbol: str) -> str:
    """The ``date x symbol`` partition key (``2024-03-05|BTC/USDT``)."""
    return f"{date_key}|{symbol}"


def contiguous_blocks(symbols: Iterable[str], order: Sequence[str]) -> list[tuple[str, ...]]:
    """``symbols`` split into runs that are contiguous in ``order`` (symbols not in ``order``,
    i.e. no longer partitions, are dropped)."""
    index = {symbol: i for i, symbol in enumerate(order)}
    ranked = sorted({s for s in symbols if s in index}, key=index.__getitem__)
    blocks: list[list[str]] = []
    for symbol in ranked:
        if blocks and index[symbol] == index[blocks[-1][-1]] + 1:
            blocks[-1].append(symbol)
        else:
            blocks.append([symbol])
    return [tuple(block) for block in blocks]


def partitions_run_request(
    asset_key: dg.AssetKey,
    first_date: str,
    last_date: str,
    symbols: Sequence[str],
    *,
    run_key: str,
    tags: Mapping[str, str] | None = None,
) -> dg.RunRequest:
    """One run of ``asset_key`` over dates ``first_date..last_date`` x ``symbols`` (contiguous
    in the partition order): a plain partition key when that is one partition, else a range."""
    if first_date == last_date and len(symbols) == 1:
        return dg.RunRequest(
            run_key=run_key,
            asset_selection=[asset_key],
            partition_key=multi_key(first_date, symbols[0]),
            tags=dict(tags or {}),
        )
    return dg.RunRequest(
        run_key=run_key,
        asset_selection=[asset_key],
        tags={
            **(tags or {}),
            RANGE_START_TAG: multi_key(first_date, symbols[0]),
            RANGE_END_TAG: multi_key(last_date, symbols[-1]),
        },
    )
