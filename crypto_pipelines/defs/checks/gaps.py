"""The ``gaps`` asset check: every OHLCV asset (and the trades of venues that number trades
sequentially) checked partition by partition against its expected grid.

Partitioned checks: the check shares its asset's partitions (``partitions_def``, a preview
feature in Dagster 1.13) and runs in the same run as the materialization, since Dagster
includes an asset's checks whenever the asset is selected (UI, sensors, ``materialize``). A
single-partition run records an ``AssetCheckResult``; a partition *range* run (every backfill:
``BackfillPolicy.single_run``) records one ``AssetCheckEvaluation`` per partition
(``checks.results.emit`` explains why).

An evaluation fails with ERROR when a partition lacks candles that are ours to fetch, and
passes (WARN when there are any) when every missing candle is a *confirmed* gap, one the
exchange itself has not got. Findings are also written to the ``gaps`` table, which is how
the ``gap_repair_sensor`` sees failed evaluations (Dagster 1.13 has no public API to read
check evaluations back from the instance). A run tagged ``crypto_pipelines/refetch=true``
has just refetched its partitions whole, so what its check still finds missing is confirmed.
"""

import time
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg

from crypto_pipelines.defs.assets.market_data import is_refetch
from crypto_pipelines.defs.checks.results import (
    Verdict,
    emit,
    iso,
    markdown_table,
    run_partition_keys,
)
from crypto_pipelines.defs.partitions import market_partitions, symbol_ranges
from crypto_pipelines.defs.resources import MarketStoreResource
from crypto_pipelines.domain.datasets import OHLCV, TRADES, MarketDataset, get_market_dataset
from crypto_pipelines.domain.universe import ExchangeUniverse, Universe
from crypto_pipelines.exchanges.venues import get_venue
from crypto_pipelines.storage.gap_checks import GapCheck, check_candle_windows, check_trade_window
from crypto_pipelines.storage.gaps import GapStore
from crypto_pipelines.storage.store import MarketStore

GAPS_CHECK = "gaps"
MAX_LISTED_RANGES = 1000
"""Ranges listed in one evaluation's metadata; counts always cover all of them."""
MAX_TABLE_ROWS = 50

WindowsCheck = Callable[
    [MarketStore, GapStore, str, list[tuple[int, int]], int, bool], list[GapCheck]
]
"""Checks one symbol's windows (its partitions in this run) and records them in ``gaps``."""


def has_sequential_trade_ids(exchange: str) -> bool:
    return get_venue(exchange).trades.sequential_ids


def gap_checked_assets(universe: Universe) -> list[tuple[dg.AssetKey, bool]]:
    """The asset keys the ``gaps`` check covers, each with whether it is monthly."""
    ohlcv, trades = get_market_dataset(OHLCV), get_market_dataset(TRADES)
    keys: list[tuple[dg.AssetKey, bool]] = []
    for exchange, config in universe.exchanges.items():
        for timeframe in config.timeframes:
            keys.append(
                (dg.AssetKey([exchange, ohlcv.asset_name(timeframe)]), ohlcv.is_monthly(timeframe))
            )
        if config.enables(trades.universe_flag) and has_sequential_trade_ids(exchange):
            keys.append((dg.AssetKey([exchange, trades.asset_name()]), trades.is_monthly()))
    return keys


def gaps_checks(universe: Universe) -> list[dg.AssetChecksDefinition]:
    """One ``gaps`` check per OHLCV asset, and per trades asset with sequential ids."""
    checks = []
    for exchange, config in universe.exchanges.items():
        for timeframe in config.timeframes:
            checks.append(_ohlcv_check(exchange, config, timeframe))
        if config.trades and has_sequential_trade_ids(exchange):
            checks.append(_trades_check(exchange, config))
    return checks


def _ohlcv_check(
    exchange: str, config: ExchangeUniverse, timeframe: str
) -> dg.AssetChecksDefinition:
    def windows(
        store: MarketStore,
        gaps: GapStore,
        symbol: str,
        spans: list[tuple[int, int]],
        now: int,
        refetched: bool,
    ) -> list[GapCheck]:
        return check_candle_windows(
            store, gaps, exchange, symbol, timeframe, spans, now_ms=now, refetched=refetched
        )

    return _gaps_check(
        exchange,
        config,
        get_market_dataset(OHLCV),
        timeframe,
        windows,
        "candles",
        f"Every {timeframe} candle from the series' first stored candle to the end of what the "
        "exchange answered for the partition (its coverage) is stored, or is a confirmed gap (a "
        "refetch from the exchange returned nothing, or only invalid rows). Fails when the "
        "partition was never loaded. Metadata: missing_candles, missing_ranges ([first_ts, "
        "last_ts] in ms, inclusive), confirmed_gaps.",
    )


def _trades_check(exchange: str, config: ExchangeUniverse) -> dg.AssetChecksDefinition:
    def windows(
        store: MarketStore,
        gaps: GapStore,
        symbol: str,
        spans: list[tuple[int, int]],
        now: int,
        refetched: bool,
    ) -> list[GapCheck]:
        return [
            check_trade_window(
                store, gaps, exchange, symbol, start, end, now_ms=now, refetched=refetched
            )
            for start, end in spans
        ]

    return _gaps_check(
        exchange,
        config,
        get_market_dataset(TRADES),
        None,
        windows,
        "ids",
        f"{exchange} numbers trades sequentially: every id from the last trade before the "
        "partition to its last trade is stored, or is a confirmed gap. Metadata: missing_ids, "
        "missing_ranges ([first_id, last_id], inclusive), confirmed_gaps.",
    )


def _gaps_check(
    exchange: str,
    config: ExchangeUniverse,
    spec: MarketDataset,
    timeframe: str | None,
    windows: WindowsCheck,
    unit: str,
    description: str,
) -> dg.AssetChecksDefinition:
    asset_key = dg.AssetKey([exchange, spec.asset_name(timeframe)])
    monthly = spec.is_monthly(timeframe)

    # The decorator's annotation expects one AssetCheckResult; a generator of evaluations
    # (one per partition of a range run) plus the output is what its runtime accepts.
    @dg.asset_check(  # type: ignore[arg-type]
        asset=asset_key,
        name=GAPS_CHECK,
        description=description,
        partitions_def=market_partitions(exchange, config.start.isoformat(), spec, timeframe),
        blocking=False,
    )
    def _check(
        context: dg.AssetCheckExecutionContext, market_store: MarketStoreResource
    ) -> Iterator[Any]:
        refetched = is_refetch(context.op_execution_context.run.tags)
        store = market_store.store()
        gap_store = GapStore(store.engine)
        now = int(time.time() * 1000)

        def verdicts() -> Iterator[tuple[str, Verdict]]:
            by_symbol: dict[str, list[tuple[str, tuple[int, int]]]] = {}
            for partition_key in run_partition_keys(context):
                span = symbol_ranges([partition_key], monthly=monthly)[0]
                by_symbol.setdefault(span.symbol, []).append(
                    (partition_key, (span.start_ms, span.end_ms))
                )
            for symbol, keyed in by_symbol.items():
                found = windows(store, gap_store, symbol, [w for _k, w in keyed], now, refetched)
                for (partition_key, _window), result in zip(keyed, found, strict=True):
                    yield partition_key, gaps_verdict(result, unit)

        yield from emit(context, asset_key, GAPS_CHECK, verdicts(), blocking=False)

    return _check


def gaps_verdict(result: GapCheck, unit: str) -> Verdict:
    """One partition's verdict: ERROR on gaps that are ours, WARN listing confirmed ones."""
    verdict = result.verdict
    metadata: dict[str, Any] = {
        f"missing_{unit}": result.missing,
        "missing_ranges": dg.MetadataValue.json(_listed(result.missing_ranges)),
        "missing_runs": len(result.missing_ranges),
        f"expected_{unit}": result.gaps.expected,
        f"present_{unit}": result.gaps.present,
        f"unconfirmed_{unit}": result.unconfirmed_missing,
        f"confirmed_{unit}": result.confirmed_missing,
        "confirmed_gaps": dg.MetadataValue.json(_listed(verdict.confirmed)),
    }
    if len(result.missing_ranges) > MAX_LISTED_RANGES:
        metadata["ranges_truncated_to"] = MAX_LISTED_RANGES
    if verdict.newly_confirmed:
        metadata["newly_confirmed"] = len(verdict.newly_confirmed)
    if result.missing_ranges:
        metadata["gaps"] = dg.MetadataValue.md(_table(result, unit))
    if not result.loaded:
        metadata["loaded"] = False
        return Verdict(
            False,
            metadata,
            f"not loaded: the exchange was never asked for this partition's {unit} "
            "(no coverage); materialize it to load what is missing",
            dg.AssetCheckSeverity.ERROR,
        )
    if not result.passed:
        severity = dg.AssetCheckSeverity.ERROR
        text = (
            f"{result.unconfirmed_missing} {unit} missing in {len(verdict.unconfirmed)} "
            "unconfirmed gaps (gap repair refetches them)"
        )
    elif verdict.confirmed:
        severity = dg.AssetCheckSeverity.WARN
        text = (
            f"{result.confirmed_missing} {unit} missing in {len(verdict.confirmed)} confirmed "
            "gaps: the exchange has none there"
        )
    else:
        severity = dg.AssetCheckSeverity.ERROR  # shown only when failing
        text = f"no gaps in {result.gaps.expected} expected {unit}"
    return Verdict(result.passed, metadata, text, severity)


def _listed(ranges: Any) -> list[list[int]]:
    return [[int(first), int(last)] for first, last in list(ranges)[:MAX_LISTED_RANGES]]


def _table(result: GapCheck, unit: str) -> str:
    """The first gaps for people: times in UTC (ids as they are), size and status."""
    confirmed = set(result.verdict.confirmed)
    show = iso if unit == "candles" else str
    rows = [
        {
            "first": show(first),
            "last": show(last),
            unit: (last - first) // result.step + 1,
            "status": "confirmed" if (first, last) in confirmed else "open",
        }
        for first, last in sorted([*result.verdict.confirmed, *result.verdict.unconfirmed])[
            :MAX_TABLE_ROWS
        ]
    ]
    return markdown_table(rows, ["first", "last", unit, "status"])
