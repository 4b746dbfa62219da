"""Pointing stock ccxt clients at the replay exchange.

The URL rule: ``https://HOST/PATH`` of exchange E becomes ``http://ADDR/E/HOST/PATH`` and
``wss://HOST/PATH`` becomes ``ws://ADDR/E/HOST/PATH``, HOST kept as it stands (port included),
so one server can speak for every venue and every host of a venue.

It lives beside the client (``exchanges.client`` applies it to every client it makes), not in
the replay package: importing anything under ``crypto_pipelines.replay`` runs that package's
``__init__``, which loads the replay server (uvicorn, starlette), a cost every run worker
would pay for a few string rewrites. ``crypto_pipelines.replay.routing`` re-exports it.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar
from urllib.parse import urlsplit

REPLAY_URL_ENV = "CRYPTO_PIPELINES_REPLAY_URL"

T = TypeVar("T")


def replay_url_from_env() -> str | None:
    """The replay server every exchange client should use, if ``CRYPTO_PIPELINES_REPLAY_URL``
    is set."""
    value = os.environ.get(REPLAY_URL_ENV, "").strip()
    return value or None


def rewrite_url(url: str, exchange_id: str, base_url: str, hostname: str | None = None) -> str:
    """One URL under the rule; URLs that are not http(s)/ws(s) are returned unchanged."""
    if hostname is not None:
        url = url.replace("{hostname}", hostname)
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http", "wss", "ws") or not parts.netloc:
        return url
    base = urlsplit(base_url.rstrip("/"))
    scheme = "ws" if parts.scheme in ("wss", "ws") else "http"
    if base.scheme == "https":
        scheme = "wss" if scheme == "ws" else "https"
    rest = url.split(parts.netloc, 1)[1]
    return f"{scheme}://{base.netloc}{base.path}/{exchange_id}/{parts.netloc}{rest}"


def _rewrite(value: Any, exchange_id: str, base_url: str, hostname: str | None) -> Any:
    if isinstance(value, str):
        return rewrite_url(value, exchange_id, base_url, hostname)
    if isinstance(value, dict):
        return {k: _rewrite(v, exchange_id, base_url, hostname) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, exchange_id, base_url, hostname) for v in value]
    return value


def point_ccxt_at(exchange: T, base_url: str) -> T:
    """Rewrite every URL of a ccxt exchange instance (sync, async or pro) to the replay server
    at ``base_url``; returns the same instance. ``{hostname}`` placeholders are resolved with
    the instance's ``hostname`` first. Only ``api`` (and ``test``) URLs are used for requests,
    but all are rewritten so nothing leaves the machine."""
    ex: Any = exchange
    exchange_id: str = ex.id
    hostname = getattr(ex, "hostname", None)
    ex.urls = _rewrite(ex.urls, exchange_id, base_url, hostname)
    return exchange
