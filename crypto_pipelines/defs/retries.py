"""Step retries for transient exchange failures: the step runs again and resumes.

The loader already retries each request (``exchanges.calls.RetryPolicy``: six attempts with
backoff, honouring ``Retry-After``). When a request's attempts run out on a failure that can
pass (``RetriesExhausted``, or a ccxt ``NetworkError`` outside the loader: a timeout, a 429,
a 5xx, an unreachable host), the step asks Dagster to run it again after a wait
(``dg.RetryRequested``), up to ``STEP_RETRIES`` times. Nothing is lost meanwhile: every chunk
committed before the failure is covered, so the next attempt fetches only what coverage
lacks. Anything else (a contract-breaking answer, a bad configuration, a database error)
fails at once: retrying would not change it.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import ccxt
import dagster as dg

from crypto_pipelines.exchanges.errors import RetriesExhausted

STEP_RETRIES: Final = 3
RETRY_BASE_S: Final = 5.0
RETRY_MAX_S: Final = 120.0
TRANSIENT: Final = (RetriesExhausted, ccxt.NetworkError)


def retry_wait_s(retry_number: int) -> float:
    """Seconds before retry ``retry_number + 1``: 5, 10, 20 ... capped at two minutes."""
    return min(RETRY_MAX_S, RETRY_BASE_S * 2**retry_number)


@contextmanager
def retry_transient(context: dg.AssetExecutionContext) -> Iterator[None]:
    """Turn a transient exchange failure inside the block into a step retry."""
    try:
        yield
    except TRANSIENT as exc:
        attempt = context.retry_number
        if attempt >= STEP_RETRIES:
            raise
        wait = retry_wait_s(attempt)
        context.log.warning(
            f"transient exchange failure ({type(exc).__name__}: {exc}); the step runs again "
            f"in {wait:g} s (retry {attempt + 1} of {STEP_RETRIES}) and resumes from coverage"
        )
        raise dg.RetryRequested(max_retries=STEP_RETRIES, seconds_to_wait=wait) from exc
