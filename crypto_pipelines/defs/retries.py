"""Step retries for transient exchange failures: the step runs again and resumes.

The loader already retries each request (``exchanges.calls.RetryPolicy``: six attempts with
backoff, honouring ``Retry-After``). When a request's attempts run out on a failure that can
pass (``RetriesExhausted``, or a ccxt ``NetworkError`` outside the loader: a timeout, a 429,
a 5xx, an unreachable host), the step asks Dagster to run it again after a wait
(``dg.RetryRequested``). Nothing is lost meanwhile: every chunk committed before the failure is
covered, so the next attempt fetches only what coverage lacks. Anything else (a
contract-breaking answer, a bad configuration, a database error) fails at once: retrying
would not change it.

How many times: an attempt that committed rows before failing has moved the range forward,
so it is retried (after ``RETRY_BASE_S``) up to ``STEP_RETRIES_MAX`` attempts in all; attempts
that commit nothing are retried ``STEP_RETRIES`` times in a row, with growing waits, and the
next one gives up. Dagster keeps no state of ours across a step's attempts, so the streak is
read back from the step's own retry warnings in the run's log (each says whether its attempt
committed rows). A fixed count alone made long ranges hopeless on a flaky venue: under 30%
5xx and 20% 429 one request in ~60 exhausts its six attempts, so a four-day OKX trades range
(hundreds of requests) met its fourth such request before the end and failed, every time,
however much each attempt had stored.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

import ccxt
import dagster as dg

from crypto_pipelines.exchanges.errors import RetriesExhausted

STEP_RETRIES: Final = 3
"""Retries of a step whose failing attempt committed nothing."""
STEP_RETRIES_MAX: Final = 30
"""Retries in all while attempts keep committing rows: a venue that fails this often for this
long is not one to keep asking without a person."""
RETRY_BASE_S: Final = 5.0
RETRY_MAX_S: Final = 120.0
TRANSIENT: Final = (RetriesExhausted, ccxt.NetworkError)


def retry_wait_s(retry_number: int) -> float:
    """Seconds before retry ``retry_number + 1``: 5, 10, 20 ... capped at two minutes."""
    return min(RETRY_MAX_S, RETRY_BASE_S * 2**retry_number)


@contextmanager
def retry_transient(
    context: dg.AssetExecutionContext, progress: Callable[[], int] | None = None
) -> Iterator[None]:
    """Turn a transient exchange failure inside the block into a step retry. ``progress``:
    rows this attempt committed so far (see the module docstring)."""
    try:
        yield
    except TRANSIENT as exc:
        attempt = context.retry_number
        committed = progress() if progress is not None else 0
        marker = _marker(context, committed > 0)
        if committed > 0:
            allowed, wait = attempt < STEP_RETRIES_MAX, RETRY_BASE_S
        else:
            streak = _streak_without_progress(context) if attempt else 0
            allowed = streak < STEP_RETRIES and attempt < STEP_RETRIES_MAX
            wait = retry_wait_s(streak)
        if not allowed:
            raise
        context.log.warning(
            f"transient exchange failure ({type(exc).__name__}: {exc}) after {committed} rows "
            f"committed by this attempt; the step runs again in {wait:g} s (retry {attempt + 1})"
            f" and resumes from coverage {marker}"
        )
        raise dg.RetryRequested(max_retries=attempt + 1, seconds_to_wait=wait) from exc


def _marker(context: dg.AssetExecutionContext, progressed: bool) -> str:
    what = "progress" if progressed else "no-progress"
    return f"[retry:{context.asset_key.to_user_string()}:{what}]"


def _streak_without_progress(context: dg.AssetExecutionContext) -> int:
    """How many of this step's attempts in a row, up to the last one, committed nothing."""
    key = context.asset_key.to_user_string()
    streak = 0
    for entry in context.instance.all_logs(context.run_id):
        message = entry.user_message or ""
        if f"[retry:{key}:progress]" in message:
            streak = 0
        elif f"[retry:{key}:no-progress]" in message:
            streak += 1
    return streak
