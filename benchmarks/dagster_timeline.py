"""Where a backfill's time went, read back from the Dagster instance after the fact.

Run as ``python -m benchmarks.dagster_timeline`` with ``DAGSTER_HOME`` (and, for PostgreSQL
storage, the ``DAGSTER_PG_*`` variables) of the instance to read; prints one JSON object per
run: when it was created, started and ended, when its first and last partitions were
materialized, each step's span, and its event counts. Public instance APIs only
(``get_run_records``, ``all_logs``).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

import dagster as dg


def timelines(instance: dg.DagsterInstance) -> list[dict[str, Any]]:
    out = []
    for record in instance.get_run_records():
        run = record.dagster_run
        materialized: list[float] = []
        steps: dict[str, dict[str, float]] = {}
        counts: Counter[str] = Counter()
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is None:
                continue
            kind = event.event_type_value
            counts[kind] += 1
            if kind == "ASSET_MATERIALIZATION":
                materialized.append(entry.timestamp)
            if entry.step_key and kind in ("ASSET_MATERIALIZATION", "ASSET_CHECK_EVALUATION"):
                step = steps.setdefault(entry.step_key, {})
                step.setdefault("first_event", entry.timestamp)
                step["last_event"] = entry.timestamp
            if entry.step_key and kind in ("STEP_START", "STEP_SUCCESS", "STEP_FAILURE"):
                steps.setdefault(entry.step_key, {})["start" if kind == "STEP_START" else "end"] = (
                    entry.timestamp
                )
        out.append(
            {
                "run_id": run.run_id,
                "status": run.status.value,
                "tags": {k: v for k, v in run.tags.items() if k.startswith("dagster/")},
                "created": record.create_timestamp.timestamp(),
                "started": record.start_time,
                "ended": record.end_time,
                "first_materialized": min(materialized, default=None),
                "last_materialized": max(materialized, default=None),
                "steps": steps,
                "events": dict(counts),
            }
        )
    return out


def main() -> int:
    with dg.DagsterInstance.get() as instance:
        json.dump(timelines(instance), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
