"""Asset metadata derived from the cores: column schemas from the Pandera models, and
materialization metadata from load reports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg

from crypto_pipelines.domain.schemas import get_dataset
from crypto_pipelines.ingest import BatchReport, LoadReport


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


def load_metadata(reports: Sequence[LoadReport], source: str) -> dict[str, Any]:
    """One materialization's metadata over the ranges it loaded."""
    firsts = [r.first_ts for r in reports if r.first_ts is not None]
    lasts = [r.last_ts for r in reports if r.last_ts is not None]
    expected = [r.expected for r in reports if r.expected is not None]
    batches = BatchReport()
    for report in reports:
        batches.add(report.batches)
    meta: dict[str, Any] = {
        "source": source,
        "rows_written": batches.written,
        "rows_fetched": batches.fetched,
        "rows_unchanged": batches.unchanged,
        "rows_rejected": batches.rejected,
        "rows_present": sum(r.present for r in reports),
        "first_ts": dg.MetadataValue.int(min(firsts)) if firsts else None,
        "last_ts": dg.MetadataValue.int(max(lasts)) if lasts else None,
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
        meta["rejections_resolved"] = batches.resolved
    if batches.rejected:
        meta["rejected_by_rule"] = dg.MetadataValue.json(batches.rejected_by_rule())
        meta["rejected_rows"] = dg.MetadataValue.json(
            [
                {"symbol": r.series.symbol, "key": r.key, "ts": r.ts, "rules": list(r.rules)}
                for r in batches.rejections
            ]
        )
    if expected:
        unit = reports[0].series.spec.unit
        meta[f"{unit}_expected"] = sum(expected)
        meta[f"{unit}_present"] = meta["rows_present"]
        meta[f"{unit}_missing"] = sum(expected) - meta["rows_present"]
    notes = sorted({n for r in reports for n in r.notes})
    if notes:
        meta["notes"] = dg.MetadataValue.md("\n".join(f"- {n}" for n in notes))
    return {k: v for k, v in meta.items() if v is not None}
