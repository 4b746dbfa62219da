"""Emitting one check result per partition of a run, and rendering rows for the UI.

How Dagster 1.13 runs checks on partitioned assets (``partitions_def`` on an asset check is a
preview feature; the asset checks here use it so that results are kept per partition):

- A run of a single partition: an ``AssetCheckResult`` is recorded for that partition, against
  its latest materialization. This is the fully supported case and the one used then.
- A run of a partition *range* (every backfill here: ``BackfillPolicy.single_run``): the step
  has no single partition, an ``AssetCheckResult`` cannot name one, and Dagster would record
  one unpartitioned evaluation while every planned partition stays "planned" (shown as
  skipped). So the check yields one public ``AssetCheckEvaluation`` per partition of the run,
  with its ``partition``, then the op's empty output. Each partition gets its own result and
  history, and ``blocking=True`` on a failed ERROR evaluation still fails the step (Dagster
  enforces it for yielded evaluations). The one limit: an evaluation cannot name the
  materialization it checked (that type is not public), so Dagster's per-partition status view
  counts these results as not current; the run's events and the check's history show them.
"""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dagster as dg


@dataclass(frozen=True)
class Verdict:
    """A check's outcome for one partition (or for an unpartitioned asset)."""

    passed: bool
    metadata: Mapping[str, Any] = field(default_factory=dict)
    description: str | None = None
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR


def run_partition_keys(context: dg.AssetCheckExecutionContext) -> list[str]:
    """The partitions a partitioned check covers in this run (one, or a range's keys)."""
    op = context.op_execution_context
    if op.has_partition_key:
        return [op.partition_key]
    return list(op.partition_keys)


def emit(
    context: dg.AssetCheckExecutionContext,
    asset_key: dg.AssetKey,
    check_name: str,
    verdicts: Iterable[tuple[str, Verdict]],
    *,
    blocking: bool,
) -> Iterator[Any]:
    """Yield the events of a partitioned check: an ``AssetCheckResult`` when the run has one
    partition, else one ``AssetCheckEvaluation`` per partition and the op's output."""
    if context.op_execution_context.has_partition_key:
        for _key, verdict in verdicts:
            yield result(verdict)
        return
    for key, verdict in verdicts:
        yield evaluation(asset_key, check_name, key, verdict, blocking=blocking)
    yield dg.Output(None)


def evaluation(
    asset_key: dg.AssetKey, check_name: str, partition: str, verdict: Verdict, *, blocking: bool
) -> dg.AssetCheckEvaluation:
    """``verdict`` as the public event of one partition's check result, which any op may log
    (how the stream reports the checks of the partitions it fills)."""
    return dg.AssetCheckEvaluation(
        asset_key=asset_key,
        check_name=check_name,
        passed=verdict.passed,
        metadata=dict(verdict.metadata),
        severity=verdict.severity,
        description=verdict.description,
        blocking=blocking,
        partition=partition,
    )


def result(verdict: Verdict) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=verdict.passed,
        metadata=dict(verdict.metadata),
        severity=verdict.severity,
        description=verdict.description,
    )


def iso(ts_ms: object) -> str:
    """An epoch-ms ``ts`` as ISO 8601 UTC for people; the raw value when it is not one."""
    try:
        return datetime.fromtimestamp(int(ts_ms) / 1000, tz=UTC).isoformat(timespec="milliseconds")  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError, OSError):
        return str(ts_ms)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows as a Markdown table (the UI renders it); cells are escaped for ``|``."""
    if not rows:
        return "_none_"

    def cell(value: Any) -> str:
        if isinstance(value, list | tuple):
            value = ", ".join(str(v) for v in value)
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
