"""Bearer-key authentication and each key's request budget.

Keys are compared with ``hmac.compare_digest`` against every configured key, without
stopping at the first match, so neither the position of a key nor a partial match shows in
the response time. The budget is a token bucket per key name (``ApiSettings.rate_per_s``,
``burst``) in each worker process; an empty bucket answers 429 with ``Retry-After``.
"""

from __future__ import annotations

import hmac
import math
import threading
import time
from dataclasses import dataclass

from fastapi import HTTPException, Request, status

from crypto_pipelines.api.settings import ApiKey, ApiSettings

DEV_KEY = ApiKey("insecure-dev", "-" * 16)
"""The identity of every request when the service runs with ``--insecure-dev``."""


def match_key(keys: tuple[ApiKey, ...], presented: str) -> ApiKey | None:
    """The key whose secret is ``presented``, compared in constant time with each key."""
    found = None
    given = presented.encode()
    for key in keys:
        if hmac.compare_digest(key.secret.encode(), given):
            found = key
    return found


@dataclass
class _Bucket:
    tokens: float
    at: float


class RequestBudget:
    """Token buckets per key name: ``rate`` tokens per second up to ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, name: str, now: float | None = None) -> float:
        """Spend one token of ``name``; 0 when allowed, else the seconds until one is back."""
        now = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.get(name)
            if bucket is None:
                bucket = self._buckets[name] = _Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate


def _unauthorized(request: Request, detail: str) -> HTTPException:
    request.app.state.metrics.rejected("unauthorized")
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


async def require_key(request: Request) -> ApiKey:
    """FastAPI dependency of every route but ``/health``: the caller's key, or 401; then
    the key's budget, or 429 with ``Retry-After`` (whole seconds, at least 1). ``async``
    although it never awaits: FastAPI runs a plain ``def`` dependency in its thread pool, a
    thread hop per request that cost a tenth of a small request's time."""
    settings: ApiSettings = request.app.state.settings
    if settings.insecure_dev and not settings.keys:
        key = DEV_KEY
    else:
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise _unauthorized(request, "missing 'Authorization: Bearer <key>' header")
        found = match_key(settings.keys, presented.strip())
        if found is None:
            raise _unauthorized(request, "unknown API key")
        key = found
    wait = request.app.state.budget.take(key.name)
    if wait > 0:
        request.app.state.metrics.rejected("rate_limited")
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"request budget of key {key.name!r} spent ({settings.rate_per_s:g}/s)",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    request.state.api_key = key
    return key
