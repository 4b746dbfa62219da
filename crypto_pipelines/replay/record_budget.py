"""The recorder pays the exchange's shared request budget for every request it sends.

The pipelines' loader calls ccxt's implicit API methods itself and pays each one's price
from the exchange's budget shared by every process on the machine (``exchanges.budget``,
through ``exchanges.calls.Caller``). The recorder calls ccxt's unified methods
(``load_markets``, ``fetch_ohlcv``, ``fetch_trades`` ...), which pick the endpoint themselves
(by market type, by paging parameter), so the price is only known where ccxt sends the
request: ``Exchange.fetch2``, which every REST request of a ccxt client goes through with
the endpoint's path, API and HTTP method. ``paying`` wraps it on one client for the time of
a recording and names the endpoint as the budgets price it (the implicit method name,
``publicGetKlines``), so a recording beside running pipelines stays inside each exchange's
per-machine budget together with them. Retries are requests too, and pay again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from typing import Any

from ccxt.base.types import Entry

from crypto_pipelines.exchanges.budget import SharedBudget

log = logging.getLogger(__name__)

#: (path, api, HTTP method): how ``fetch2`` sees an endpoint
Endpoint = tuple[str, tuple[str, ...], str]


def _endpoint(path: str, api: Any, method: Any) -> Endpoint:
    apis = tuple(str(a) for a in api) if isinstance(api, list | tuple) else (str(api),)
    return (path, apis, str(method).upper())


@cache
def implicit_names(exchange_class: type) -> Mapping[Endpoint, str]:
    """Every REST endpoint of a ccxt exchange class by its implicit method's camelCase name
    (ccxt declares each endpoint once, under a snake_case and a camelCase name; the venues'
    budgets price the camelCase one)."""
    names: dict[int, list[str]] = {}
    entries: dict[int, Entry[Any]] = {}
    for klass in reversed(exchange_class.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, Entry):
                entries[id(value)] = value
                names.setdefault(id(value), []).append(name)
    found: dict[Endpoint, str] = {}
    for key, entry in entries.items():
        camel = next((n for n in names[key] if "_" not in n), names[key][-1])
        found[_endpoint(entry.path, entry.api, entry.method)] = camel
    return found


@contextmanager
def paying(client: Any, budget: SharedBudget | None) -> Iterator[None]:
    """Inside the block, every REST request ``client`` sends first takes its price from
    ``budget`` (waiting for room there); nothing changes without a budget. A request the
    venue's budgets do not price draws nothing, as in ``SharedBudget.acquire``."""
    if budget is None:
        yield
        return
    exchange_class: type = type(client)
    names = implicit_names(exchange_class)
    own = "fetch2" in vars(client)
    send = client.fetch2

    def fetch2(
        path: str,
        api: Any = ("public",),
        method: str = "GET",
        params: Any = None,
        *rest: Any,
        **kw: Any,
    ) -> Any:
        name = names.get(_endpoint(path, api, method))
        if name is None:
            log.debug("%s %s %s: not a declared endpoint, not priced", client.id, method, path)
        else:
            budget.acquire(name, params if isinstance(params, Mapping) else None)
        return send(path, api, method, {} if params is None else params, *rest, **kw)

    client.fetch2 = fetch2
    try:
        yield
    finally:
        if own:
            client.fetch2 = send
        else:
            del client.fetch2
