"""Creating the ccxt client every exchange call in the project goes through.

One place decides the settings that matter for a long-running loader: ccxt's own rate
limiter on (and, on request, the exchange's budget shared across processes,
``exchanges.budget``), a bounded timeout, only the spot and swap markets loaded (each venue's
``ccxt_options``), credentials only from the environment and never sent to the replay
exchange, and every URL routed to the replay exchange when one is configured
(``replay_url`` or ``CRYPTO_PIPELINES_REPLAY_URL``), so that tests and local runs never reach
a real exchange by accident.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, overload

import ccxt

from crypto_pipelines.exchanges.book_checks import with_book_checks
from crypto_pipelines.exchanges.budget import SharedBudget, attach
from crypto_pipelines.exchanges.routing import point_ccxt_at, replay_url_from_env
from crypto_pipelines.exchanges.venues import get_venue

if TYPE_CHECKING:  # the async flavour is imported when asked for: it costs every process 0.2 s
    import ccxt.async_support as ccxt_async

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_MS = 10_000
ENV_PREFIX = "CRYPTO_PIPELINES"

#: environment suffix -> ccxt credential attribute (OKX and Coinbase also need a passphrase)
_CREDENTIALS = {"API_KEY": "apiKey", "SECRET": "secret", "PASSWORD": "password"}


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Nested merge of option dicts; ``extra`` wins."""
    out: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in base.items()}
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def credentials_from_env(exchange_id: str, prefix: str | None = None) -> dict[str, str]:
    """``{PREFIX}_API_KEY``, ``_SECRET`` and ``_PASSWORD`` where set; the default prefix is
    ``CRYPTO_PIPELINES_<EXCHANGE>`` (e.g. ``CRYPTO_PIPELINES_BINANCE_API_KEY``)."""
    prefix = prefix or f"{ENV_PREFIX}_{exchange_id.upper()}"
    found: dict[str, str] = {}
    for suffix, attribute in _CREDENTIALS.items():
        value = os.environ.get(f"{prefix}_{suffix}", "").strip()
        if value:
            found[attribute] = value
    return found


@overload
def make_client(
    exchange_id: str,
    *,
    asynchronous: Literal[False] = False,
    options: Mapping[str, Any] | None = None,
    api_key_env_prefix: str | None = None,
    replay_url: str | None = None,
    enable_rate_limit: bool = True,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    rate_budget: SharedBudget | bool = False,
) -> ccxt.Exchange: ...


@overload
def make_client(
    exchange_id: str,
    *,
    asynchronous: Literal[True],
    options: Mapping[str, Any] | None = None,
    api_key_env_prefix: str | None = None,
    replay_url: str | None = None,
    enable_rate_limit: bool = True,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    rate_budget: SharedBudget | bool = False,
) -> ccxt_async.Exchange: ...


def make_client(
    exchange_id: str,
    *,
    asynchronous: bool = False,
    options: Mapping[str, Any] | None = None,
    api_key_env_prefix: str | None = None,
    replay_url: str | None = None,
    enable_rate_limit: bool = True,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    rate_budget: SharedBudget | bool = False,
) -> Any:
    """A stock ccxt client (``ccxt.Exchange``, or the ``ccxt.async_support`` one) for one of
    the supported venues.

    ``options`` are merged over the venue's own ccxt options. Credentials are read from the
    environment when present (see ``credentials_from_env``) and ignored when the client is
    routed to the replay exchange, which serves public data only. ``enable_rate_limit=False``
    is for benchmarks against the replay exchange, or for use with a shared budget; real
    exchanges ban clients that skip both.

    ``rate_budget``: ``True`` makes every loader request of this client first take its cost
    from the exchange's budget shared by all processes on the machine
    (``SharedBudget.for_venue``, for the live exchange or the replay exchange it is routed
    to); a ``SharedBudget`` uses that one. Synchronous clients only: the loader is.
    """
    spec = get_venue(exchange_id)
    if asynchronous and rate_budget is not False:
        raise ValueError("a shared rate budget paces the synchronous loader; asynchronous=False")
    module: Any = importlib.import_module("ccxt.async_support") if asynchronous else ccxt
    config: dict[str, Any] = {
        "enableRateLimit": enable_rate_limit,
        "timeout": timeout_ms,
        "options": _merge(spec.ccxt_options, options or {}),
    }
    target = replay_url or replay_url_from_env()
    credentials = credentials_from_env(exchange_id, api_key_env_prefix)
    if credentials and target is None:
        config.update(credentials)
    elif credentials:
        log.info(
            "%s: credentials in the environment are not sent to the replay exchange", exchange_id
        )
    client = getattr(module, exchange_id)(config)
    if target is not None:
        point_ccxt_at(client, target)
        log.debug("%s client routed to the replay exchange at %s", exchange_id, target)
    if rate_budget is True:
        rate_budget = SharedBudget.for_venue(spec, replay_url=target)
    if isinstance(rate_budget, SharedBudget):
        attach(client, rate_budget)
    return client


REPLAY_PLACEHOLDER_KEYS: dict[str, str] = {
    "apiKey": "replay",
    "secret": "cmVwbGF5",  # base64, as Coinbase's secrets are
    "password": "replay",
}
"""What a stream client routed to the replay exchange signs with when a channel needs a
signature: the replay checks none, and real keys never leave for it."""


def make_stream_client(
    exchange_id: str,
    *,
    options: Mapping[str, Any] | None = None,
    replay_url: str | None = None,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    signed: bool = False,
) -> Any:
    """A stock ccxt.pro client (WebSockets) for one of the supported venues, with the venue's
    ``ccxt_options`` and ``ws_options`` (which streams match what the REST loader stores) and
    every URL routed to the replay exchange when one is configured, as ``make_client`` does.
    Public data only, unless ``signed``: for public channels a venue serves only to signed
    subscriptions (Coinbase Exchange's ``level2`` book), the venue's keys from the
    environment, or placeholders when routed to the replay exchange. The class is the stock
    one but for the book checks ccxt.pro leaves out (``exchanges.book_checks``: OKX's
    checksum). ccxt.pro is imported when asked for (it pulls in the async flavour and
    aiohttp)."""
    spec = get_venue(exchange_id)
    module: Any = importlib.import_module("ccxt.pro")
    merged = _merge(_merge(spec.ccxt_options, spec.ws_options), options or {})
    config: dict[str, Any] = {"enableRateLimit": True, "timeout": timeout_ms, "options": merged}
    target = replay_url or replay_url_from_env()
    if signed:
        config.update(REPLAY_PLACEHOLDER_KEYS if target else credentials_from_env(exchange_id))
    client = with_book_checks(exchange_id, getattr(module, exchange_id))(config)
    if target is not None:
        point_ccxt_at(client, target)
        log.debug("%s stream client routed to the replay exchange at %s", exchange_id, target)
    return client
