"""The project's instance settings put the library's warnings (a request retried, say) in
each run's log, timestamped, and leave its INFO lines out (each captured line is a Dagster
event)."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("instance_file", ["dagster.yaml", "dagster.postgres.yaml"])
def test_library_warnings_reach_the_runs_log(instance_file: str) -> None:
    settings = yaml.safe_load((ROOT / instance_file).read_text())

    @dg.asset
    def retried() -> None:
        log = logging.getLogger("crypto_pipelines.exchanges.calls")
        log.warning("okx BTC/USDT trades: RateLimitExceeded; retry 1/5 in 0.4s")
        log.info("okx BTC/USDT trades: chunk of 100 rows written")
        logging.getLogger("somebody.else").warning("not ours")

    with dg.instance_for_test(overrides={"python_logs": settings["python_logs"]}) as instance:
        result = dg.materialize([retried], instance=instance)
        messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("retry 1/5 in 0.4s" in m for m in messages), messages
    assert not any("chunk of 100 rows" in m for m in messages)
    assert not any("not ours" in m for m in messages)
