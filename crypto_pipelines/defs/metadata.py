"""Asset metadata derived from the cores: column schemas from the Pandera models, and
materialization metadata: each partition's own figures (``defs.partition_figures``) and the
run's totals from its load reports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg

from crypto_pipelines.defs.partition_figures import PartitionFigures
from crypto_pipelines.domain.schemas import get_dataset
from crypto_pipelines.ingest import BatchReport, LoadReport
from crypto_pipelines.storage.rejections import Rejection


def column_schema(dataset: str) -> dg.TableSchema:
    """The dataset's columns as Dagster shows them, from its Pandera model (the one source of
    truth for columns)."""
    ds = get_dataset(dataset)
    columns = []
    for name, column in ds.schema.columns.items():
        description = column.description or ""
        if name in ds.key:
            description = f"{description} (key)".strip()
        columns.append(
            dg.TableColumn(
                name=name,
                type=str(column.dtype),
                description=description or None,
                constraints=dg.TableColumnConstraints(nullable=bool(column.nullable)),
            )
        )
    return dg.TableSchema(columns=columns)


def definition_metadata(dataset: str, **extra: Any) -> dict[str, Any]:
    return {"dagster/column_schema": column_schema(dataset), "dagster/table_name": dataset, **extra}


def _timestamp(ts_ms: int | None) -> dg.MetadataValue | None:
    """A ``ts`` (epoch ms) as timestamp metadata, which the UI shows as a date (seconds)."""
    return None if ts_ms is None else dg.MetadataValue.timestamp(ts_ms / 1000)


def _rejections_metadata(rejections: Sequence[Rejection]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for rejection in rejections:
        for rule in rejection.rules:
            counts[rule] = counts.get(rule, 0) + 1
    return {
        "rejected_by_rule": dg.MetadataValue.json(dict(sorted(counts.items()))),
        "rejected_rows": dg.MetadataValue.json(
            [
                {"symbol": r.series.symbol, "key": r.key, "ts": r.ts, "rules": list(r.rules)}
                for r in rejections
            ]
        ),
    }


def partition_metadata(figures: PartitionFigures, unit: str, source: str) -> dict[str, Any]:
    """One partition's own figures: rows fetched, written, unchanged and rejected by this
    run's batches (those a batch across partitions left unattributable are omitted, with a
    note), rows present, first and last stored ``ts``, and ``unit`` expected/present/missing
    on a grid."""
    meta: dict[str, Any] = {
        "source": source,
        "rows_fetched": figures.fetched,
        "rows_written": figures.written,
        "rows_unchanged": figures.unchanged,
        "rows_rejected": figures.rejected,
        "rows_present": figures.present,
        "first_ts": _timestamp(figures.first_ts),
        "last_ts": _timestamp(figures.last_ts),
    }
    if figures.resolved and "resolved" not in figures.unattributed:
        meta["rejections_resolved"] = figures.resolved
    for name in figures.unattributed:
        meta.pop(f"rows_{name}", None)
    if figures.rejections:
        meta.update(_rejections_metadata(figures.rejections))
    if figures.expected is not None:
        meta[f"{unit}_expected"] = figures.expected
        meta[f"{unit}_present"] = figures.present
        meta[f"{unit}_missing"] = figures.expected - figures.present
    notes = list(dict.fromkeys(figures.notes))
    if figures.unattributed:
        left_out = ", ".join(f"rows_{n}" for n in sorted(figures.unattributed))
        notes.append(
            f"{left_out}: not attributable to this partition (a batch across partitions mixed "
            "them); the run's totals are on its first partition (run_rows_*)"
        )
    if notes:
        meta["notes"] = dg.MetadataValue.md("\n".join(f"- {n}" for n in notes))
    return {k: v for k, v in meta.items() if v is not None}


def run_metadata(reports: Sequence[LoadReport], partitions: int) -> dict[str, Any]:
    """The run's totals, recorded once (on its first partition): rows over all its
    partitions, and what belongs to the run rather than to a partition (exchange requests,
    retries, duration, the ranges loaded and the uncovered spans actually fetched)."""
    batches = BatchReport()
    for report in reports:
        batches.add(report.batches)
    meta: dict[str, Any] = {
        "run_partitions": partitions,
        "run_rows_fetched": batches.fetched,
        "run_rows_written": batches.written,
        "run_rows_unchanged": batches.unchanged,
        "run_rows_rejected": batches.rejected,
        "exchange_requests": sum(r.requests for r in reports),
        "exchange_retries": sum(r.retries for r in reports),
        "duration_s": round(sum(r.duration_s for r in reports), 3),
        "ranges": dg.MetadataValue.json(
            [
                {
                    "symbol": r.symbol,
                    "start_ms": r.start_ms,
                    "end_ms": r.end_ms,
                    "fetched_spans": [list(span) for span in r.spans],
                    "rows": r.rows_fetched,
                    "rejected": r.rows_rejected,
                }
                for r in reports
            ]
        ),
    }
    if batches.resolved:
        meta["run_rejections_resolved"] = batches.resolved
    return meta


def run_summary(reports: Sequence[LoadReport], partitions: int) -> str:
    """The run's totals as one log line."""
    batches = BatchReport()
    for report in reports:
        batches.add(report.batches)
    spans = sum(len(r.spans) for r in reports)
    return (
        f"{partitions} partition(s) in {len(reports)} range(s): {spans} uncovered span(s) "
        f"fetched, {batches.fetched} rows fetched, {batches.written} written, "
        f"{batches.unchanged} unchanged, {batches.rejected} rejected; "
        f"{sum(r.requests for r in reports)} requests, {sum(r.retries for r in reports)} "
        f"retries, {sum(r.duration_s for r in reports):.3f} s"
    )
