"""The ``schema`` asset check: each dataset's Pandera model, run lazily on the rows as stored.

Every dataset asset has one: ``<exchange>/ohlcv_<tf>``, ``<exchange>/trades`` and
``<exchange>/funding_rates`` per partition (the rows of the partition's symbol and date
window, read back from the market store), ``<exchange>/markets`` on that exchange's rows of
``crypto_pairs`` and ``crypto_perps``, and ``crypto_pairs``, ``crypto_perps`` and
``crypto_assets`` on their whole tables. The rules are the model's named checks plus the audit
rules of ``crypto_pipelines.domain.audit`` (value types as stored, ``inside_partition``,
``unique_trade_id``); a failure's metadata counts failing rows per rule and lists the first
failing rows with their ``ts`` and rules (JSON, and a Markdown table for people).

The store validates every batch before writing it, so what this check finds was written by
something else: direct SQL, another tool, an older version. It only reads; it never repairs.

All of them are blocking. ``<exchange>/markets`` feeds the catalog assets, which must not be
rebuilt from bad instruments. The others have no downstream asset yet; blocking costs them no
extra work (the check runs in the materializing run either way) and only changes the outcome
when rows are bad: the run then fails, which is how corrupted stored data should surface, and
any asset added downstream later is protected without anyone remembering to flip the flag.
How results are kept per partition: ``crypto_pipelines.defs.checks.results``.
"""

import dataclasses
import time
from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from crypto_pipelines.defs.checks.results import (
    Verdict,
    emit,
    iso,
    markdown_table,
    result,
    run_partition_keys,
)
from crypto_pipelines.defs.partitions import (
    SymbolRange,
    market_partitions,
    partition_window,
    symbol_ranges,
)
from crypto_pipelines.defs.resources import MarketStoreResource
from crypto_pipelines.domain.audit import Audit, audit_frame, open_bound, summarize
from crypto_pipelines.domain.datasets import get_market_dataset
from crypto_pipelines.domain.schemas import get_dataset
from crypto_pipelines.domain.universe import ExchangeUniverse, Universe
from crypto_pipelines.storage.rejections import Rejection, rejections
from crypto_pipelines.storage.screen import screen_windows
from crypto_pipelines.storage.store import MarketStore

SCHEMA_CHECK = "schema"
CATALOG_TABLES = ("crypto_pairs", "crypto_perps", "crypto_assets")
MARKETS_TABLES = ("crypto_pairs", "crypto_perps")
MAX_LISTED_REJECTIONS = 200


def schema_checks(universe: Universe) -> list[dg.AssetChecksDefinition]:
    """A ``schema`` check on every dataset asset ``build_assets`` makes from ``universe``."""
    checks = []
    for exchange, config in universe.exchanges.items():
        checks.append(_markets_check(exchange))
        checks.extend(
            _market_data_check(exchange, config, spec.name, tf)
            for spec, tf in config.series_datasets()
        )
    checks.extend(_catalog_check(table) for table in CATALOG_TABLES)
    return checks


def with_rejections(found: Verdict, rejected: Sequence[Rejection]) -> Verdict:
    """A partition's verdict with its quarantined rows: each one fails the check at ERROR,
    named by its ``ts`` (or key) and the rules it broke, until a valid row replaces it."""
    if not rejected:
        return dataclasses.replace(found, metadata={**found.metadata, "rows_rejected": 0})
    by_rule: dict[str, int] = {}
    for rejection in rejected:
        for rule in rejection.rules:
            by_rule[f"rejected:{rule}"] = by_rule.get(f"rejected:{rule}", 0) + 1
    listed = [
        {"ts": r.ts, "time": iso(r.ts), "key": r.key, "rules": list(r.rules), "source": r.source}
        for r in rejected[:MAX_LISTED_REJECTIONS]
    ]
    metadata = {
        **found.metadata,
        "rows_rejected": len(rejected),
        "rejected_by_rule": dg.MetadataValue.json(dict(sorted(by_rule.items()))),
        "rejected_rows": dg.MetadataValue.json(listed),
        "rejected_rows_table": dg.MetadataValue.md(
            markdown_table(listed, ["time", "ts", "key", "rules", "source"])
        ),
    }
    names = ", ".join(
        f"{r.ts if r.ts is not None else r.key} ({', '.join(r.rules)})" for r in rejected[:5]
    )
    more = f" and {len(rejected) - 5} more" if len(rejected) > 5 else ""
    text = f"{len(rejected)} row(s) from the exchange quarantined in rejected_rows: {names}{more}"
    if found.description and not found.passed:
        text = f"{found.description}; {text}"
    return Verdict(False, metadata, text, dg.AssetCheckSeverity.ERROR)


def audit_partition(
    store: MarketStore,
    dataset: str,
    exchange: str,
    partition_key: str,
    *,
    monthly: bool,
    now_ms: int,
    timeframe: str | None = None,
) -> Audit:
    """Audit one partition's stored rows: its symbol's rows with ``ts`` in the partition's
    window, ``inside_partition`` capped at what was complete at ``now_ms``."""
    span = symbol_ranges([partition_key], monthly=monthly)[0]
    raw = store.read(
        dataset,
        exchange=exchange,
        symbol=span.symbol,
        timeframe=timeframe,
        start_ts=span.start_ms,
        end_ts=span.end_ms,
        typed=False,
    )
    end = min(span.end_ms, open_bound(dataset, now_ms, timeframe))
    return audit_frame(dataset, raw, label=partition_key, window=(span.start_ms, end))


def audit_span(
    store: MarketStore,
    dataset: str,
    exchange: str,
    span: SymbolRange,
    *,
    monthly: bool,
    now_ms: int,
    timeframe: str | None = None,
) -> Iterator[tuple[str, Verdict]]:
    """Verdicts for a contiguous run of one symbol's partitions (a backfill's range).

    The database is asked first, per partition, how many rows it holds and whether any could
    break a rule (``storage.screen``: one scan of the span). A clean partition's verdict is
    its row count; only partitions with suspicious rows are read back and audited row by row
    in pandas, for the exact per-rule failures. (Reading a year of candles into pandas and
    running the model over it cost most of the check's time.)"""
    screened = screen_windows(
        store.engine,
        dataset,
        exchange=exchange,
        symbol=span.symbol,
        timeframe=timeframe,
        windows=[partition_window(key, monthly=monthly) for key in span.partition_keys],
        open_bound=open_bound(dataset, now_ms, timeframe),
    )
    if screened is None:  # a dataset or timeframe the screen has no SQL for
        yield from _audit_span_in_pandas(
            store, dataset, exchange, span, monthly=monthly, now_ms=now_ms, timeframe=timeframe
        )
        return
    empty = pd.DataFrame(columns=[*get_dataset(dataset).columns, "rules"])
    for key, window in zip(span.partition_keys, screened, strict=True):
        if window.clean:
            clean = Audit(key, dataset, window.rows, {}, 0, empty)
            yield key, verdict([clean])
        else:
            audit = audit_partition(
                store, dataset, exchange, key, monthly=monthly, now_ms=now_ms, timeframe=timeframe
            )
            yield key, verdict([audit])


def _audit_span_in_pandas(
    store: MarketStore,
    dataset: str,
    exchange: str,
    span: SymbolRange,
    *,
    monthly: bool,
    now_ms: int,
    timeframe: str | None = None,
) -> Iterator[tuple[str, Verdict]]:
    """``audit_span`` without the screen: the whole span read and validated once (a row
    inside the span is inside exactly one of its partitions, so a clean span means every
    partition is clean); partition by partition only when it fails."""
    if len(span.partition_keys) == 1:
        key = span.partition_keys[0]
        audit = audit_partition(
            store, dataset, exchange, key, monthly=monthly, now_ms=now_ms, timeframe=timeframe
        )
        yield key, verdict([audit])
        return
    raw = store.read(
        dataset,
        exchange=exchange,
        symbol=span.symbol,
        timeframe=timeframe,
        start_ts=span.start_ms,
        end_ts=span.end_ms,
        typed=False,
    )
    end = min(span.end_ms, open_bound(dataset, now_ms, timeframe))
    whole = audit_frame(dataset, raw, label=span.symbol, window=(span.start_ms, end))
    if not whole.passed:
        for key in span.partition_keys:
            audit = audit_partition(
                store, dataset, exchange, key, monthly=monthly, now_ms=now_ms, timeframe=timeframe
            )
            yield key, verdict([audit])
        return
    starts = np.array(
        [w.start_ms for w in (symbol_ranges([k], monthly=monthly)[0] for k in span.partition_keys)],
        dtype=np.int64,
    )
    ts = (
        pd.to_numeric(raw["ts"], errors="coerce").to_numpy(dtype=np.int64)
        if len(raw)
        else np.empty(0, dtype=np.int64)
    )
    counts = np.bincount(np.searchsorted(starts, ts, side="right") - 1, minlength=len(starts))
    for key, count in zip(span.partition_keys, counts.tolist(), strict=True):
        clean = Audit(key, whole.dataset, int(count), {}, 0, whole.failing.iloc[0:0])
        yield key, verdict([clean])


def verdict(audits: Sequence[Audit], **extra: Any) -> Verdict:
    """The check's outcome over ``audits`` (one per partition, or one per table)."""
    summary = summarize(audits)
    rules = summary["failures_by_rule"]
    metadata: dict[str, Any] = {
        "rows_checked": summary["rows_checked"],
        "rows_failed": summary["rows_failed"],
        "failures_by_rule": dg.MetadataValue.json(rules),
        **extra,
    }
    if len(audits) > 1:
        metadata["failures_by_table"] = dg.MetadataValue.json(summary["failures_by_partition"])
    datasets = sorted({audit.dataset for audit in audits})
    if not rules:
        models = ", ".join(get_dataset(d).model.__name__ for d in datasets)
        return Verdict(
            True, metadata, f"{summary['rows_checked']} stored rows pass every rule of {models}"
        )
    sample = summary["sample"]
    metadata["failing_rows"] = dg.MetadataValue.json(sample)
    metadata["failing_rows_table"] = dg.MetadataValue.md(_table(sample, datasets, len(audits) > 1))
    listed = ", ".join(f"{rule} ({count})" for rule, count in rules.items())
    return Verdict(
        False,
        metadata,
        f"{summary['rows_failed']} of {summary['rows_checked']} stored rows break "
        f"{len(rules)} rule(s): {listed}",
    )


def _table(sample: list[dict[str, Any]], datasets: list[str], by_table: bool) -> str:
    columns = [c for d in datasets for c in get_dataset(d).columns]
    columns = list(dict.fromkeys(columns))
    rows = sample
    leading = ["table"] if by_table else []
    if "ts" in columns:
        rows = [{**row, "time": iso(row.get("ts"))} for row in sample]
        leading.append("time")
    renamed = [{**row, "table": row.get("partition")} for row in rows]
    return markdown_table(renamed, [*leading, "rules", *columns])


def _market_data_check(
    exchange: str, config: ExchangeUniverse, dataset: str, timeframe: str | None = None
) -> dg.AssetChecksDefinition:
    spec = get_market_dataset(dataset)
    asset_key = dg.AssetKey([exchange, spec.asset_name(timeframe)])
    model = get_dataset(dataset).model.__name__

    @dg.asset_check(  # type: ignore[arg-type]  # stub types only the returning form
        asset=asset_key,
        name=SCHEMA_CHECK,
        description=f"The partition's stored rows validated against the {model} model (types, "
        "nulls, value rules, unique keys, ts inside the partition), and no row of the partition "
        "quarantined in rejected_rows. Metadata: rows_checked, failures_by_rule, failing_rows, "
        "rows_rejected, rejected_rows.",
        partitions_def=market_partitions(exchange, config.start.isoformat(), spec, timeframe),
        blocking=True,
    )
    def _check(
        context: dg.AssetCheckExecutionContext, market_store: MarketStoreResource
    ) -> Iterator[Any]:
        verdicts = market_data_verdicts(
            market_store.store(),
            exchange,
            dataset,
            timeframe,
            run_partition_keys(context),
            now_ms=int(time.time() * 1000),
        )
        yield from emit(context, asset_key, SCHEMA_CHECK, verdicts, blocking=True)

    return _check


def market_data_verdicts(
    store: MarketStore,
    exchange: str,
    dataset: str,
    timeframe: str | None,
    keys: Sequence[str],
    *,
    now_ms: int,
) -> Iterator[tuple[str, Verdict]]:
    """The ``schema`` check's verdict on each of ``keys`` (partitions of ``dataset`` on
    ``exchange``): the stored rows audited, and the partition's quarantined rows. Also what the
    stream reports for the stream-fed assets, which no run of their own checks."""
    spec = get_market_dataset(dataset)
    monthly = spec.is_monthly(timeframe)
    for span in symbol_ranges(list(keys), monthly=monthly):
        quarantined = rejections(
            store.engine,
            series=spec.series(exchange, span.symbol, timeframe),
            start_ts=span.start_ms,
            end_ts=span.end_ms,
        )
        for key, found in audit_span(
            store, dataset, exchange, span, monthly=monthly, now_ms=now_ms, timeframe=timeframe
        ):
            window = symbol_ranges([key], monthly=monthly)[0]
            inside = [
                r
                for r in quarantined
                if r.ts is not None and window.start_ms <= r.ts < window.end_ms
            ]
            yield key, with_rejections(found, inside)


def _markets_check(exchange: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=dg.AssetKey([exchange, "markets"]),
        name=SCHEMA_CHECK,
        description=f"{exchange}'s rows of crypto_pairs and crypto_perps validated against their "
        "models. Blocking: the catalog assets are built from them.",
        blocking=True,
    )
    def _check(market_store: MarketStoreResource) -> dg.AssetCheckResult:
        store = market_store.store()
        audits = [
            audit_frame(table, store.read(table, exchange=exchange, typed=False), label=table)
            for table in MARKETS_TABLES
        ]
        return result(verdict(audits))

    return _check


def _catalog_check(table: str) -> dg.AssetChecksDefinition:
    model = get_dataset(table).model.__name__

    @dg.asset_check(
        asset=dg.AssetKey([table]),
        name=SCHEMA_CHECK,
        description=f"Every row of `{table}` validated against the {model} model.",
        blocking=True,
    )
    def _check(market_store: MarketStoreResource) -> dg.AssetCheckResult:
        raw = market_store.store().read(table, typed=False)
        return result(verdict([audit_frame(table, raw, label=table)]))

    return _check
