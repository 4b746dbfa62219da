"""An exchange's request budgets kept in Redis, shared by every machine behind one IP.

The SQLite file of ``exchanges.budget`` is shared by the processes of one machine, but an
exchange counts per IP: several machines behind one NAT gateway (a Dagster cluster, a
notebook on a second host) would each believe they had the whole budget and together
overrun it. With ``CRYPTO_PIPELINES_REDIS_URL`` set, each budget is instead one
pyrate-limiter ``RedisBucket`` (a sliding-window log in a sorted set, checked and recorded
by one Lua script) at ``crypto_pipelines:budget:<egress>:<exchange>[:replay:<addr>]:<budget>:
<window ms>``. ``<egress>`` names the IP the requests leave from:
``CRYPTO_PIPELINES_EGRESS_ID``, by default the host name; processes that set the same
egress id share one budget, whichever machine they run on.

Things the library leaves to us, for correctness across machines:

* the clock. ``RedisBucket`` stamps grants with the local clock; a machine whose clock runs
  ahead records grants that the others' windows do not count yet (they lie in their future).
  Grants are stamped with the Redis server's ``TIME`` instead, one clock for everyone.
* the order. Reading the clock and recording the grant are two round trips; between them
  another process could record a later stamp that the first one's check does not see. As
  the SQLite budget holds its file lock around both, a redis-py ``Lock`` per exchange holds
  them together here, so stamps grow in the order they are recorded (four round trips a
  grant, well under a millisecond on a LAN against requests that take tens).

A third, a boundary: pyrate-limiter's ``RedisBucket.leak`` removes one millisecond more than
its own window check has finished counting; the leak is asked one millisecond earlier.

A Redis that cannot be reached is an error naming ``CRYPTO_PIPELINES_REDIS_URL`` (password
hidden), never a silent fallback to the per-machine file: that would let every machine
spend the whole budget again. Idle keys expire two windows after their last grant.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pyrate_limiter import Rate, RateItem, RedisBucket, SlidingWindowLog

from crypto_pipelines.domain.redis_url import REDIS_URL_ENV
from crypto_pipelines.exchanges.venues import RateBudget

if TYPE_CHECKING:  # redis costs every process 0.1 s to import: only when a budget uses it
    import redis
    from redis.lock import Lock

log = logging.getLogger(__name__)

EGRESS_ID_ENV: Final = "CRYPTO_PIPELINES_EGRESS_ID"
KEY_PREFIX: Final = "crypto_pipelines:budget"
#: a lock holder that stalls longer than this (a paused VM) loses the lock rather than
#: blocking every machine; it is held for about a millisecond
_LOCK_TTL_S = 2.0
#: how often a process waiting for the lock looks again (redis-py's default is 100 ms)
_LOCK_POLL_S = 0.001
#: how long a process waits for the lock before it reports the budget unusable
_LOCK_WAIT_S = 30.0
_TIMEOUT_S = 5.0


class RateBudgetUnavailable(RuntimeError):
    """The shared budget's Redis cannot be reached or used: no request is sent unpaced."""


def egress_id_from_env() -> str:
    """This process's egress identity: ``$CRYPTO_PIPELINES_EGRESS_ID``, else the host name."""
    return os.environ.get(EGRESS_ID_ENV, "").strip() or socket.gethostname()


def budget_slug(budget: RateBudget) -> str:
    """The budget's name as a key or table name: ``USDⓈ-M request weight`` ->
    ``usd_m_request_weight``."""
    return re.sub(r"[^a-z0-9]+", "_", budget.name.lower()).strip("_") or "budget"


def budget_scope(exchange_id: str, replay_url: str | None, egress_id: str) -> str:
    """The part of the keys naming whose budget it is: ``host-1:binance``, or
    ``host-1:binance:replay:127.0.0.1:8765`` for a replay exchange (a budget of its own)."""
    scope = f"{egress_id}:{exchange_id}"
    if replay_url:
        scope += f":replay:{urlsplit(replay_url).netloc or replay_url}"
    return scope


def shown(url: str) -> str:
    """``url`` for messages: a password, in the user part or a ``password=`` query
    parameter, is ``***``."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
        query = urlencode(
            [
                (k, "***" if k.lower() == "password" else v)
                for k, v in parse_qsl(parts.query, keep_blank_values=True)
            ],
            safe="*",
        )
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return "<a URL that cannot be parsed>"


@dataclass
class _Open:
    """One process's connection and buckets (a forked child opens its own)."""

    client: redis.Redis
    lock: Lock
    pid: int
    buckets: dict[str, RedisBucket] = field(default_factory=dict)
    leaked_at: dict[str, int] = field(default_factory=dict)


class RedisStore:
    """Where a ``SharedBudget`` keeps its buckets when they live in Redis: the budgets of
    one exchange and egress (``scope``, see ``budget_scope``) at ``url``. Opened on first
    use; not thread-safe on its own (``SharedBudget`` serialises its threads)."""

    def __init__(self, url: str, scope: str, *, prefix: str = KEY_PREFIX) -> None:
        self.url = url
        self.scope = scope
        self.prefix = prefix
        self._open: _Open | None = None

    def key(self, budget: RateBudget) -> str:
        return f"{self.prefix}:{self.scope}:{budget_slug(budget)}:{budget.window_ms}"

    @property
    def lock_key(self) -> str:
        return f"{self.prefix}:{self.scope}:lock"

    def take(self, budget: RateBudget, limit: int, cost: int) -> tuple[int, int | None]:
        """Record ``cost`` units of ``budget`` now if the last ``window_ms`` holds no more
        than ``limit`` with them: ``(grant time in epoch ms, None)``; else ``(now, ms to wait
        before asking again)``."""
        from redis.exceptions import NoScriptError, RedisError

        try:
            try:
                return self._take(budget, limit, cost)
            except NoScriptError:  # a restarted Redis forgot the bucket's script: load it again
                self.close()
                return self._take(budget, limit, cost)
        except RedisError as exc:
            raise RateBudgetUnavailable(self._unusable(exc)) from exc

    def _take(self, budget: RateBudget, limit: int, cost: int) -> tuple[int, int | None]:
        from redis.exceptions import LockNotOwnedError

        opened = self._connection()
        bucket = opened.buckets.get(budget.name)
        if bucket is None:
            bucket = RedisBucket.init(
                [Rate(limit, budget.window_ms)],
                opened.client,
                self.key(budget),
                algorithm=SlidingWindowLog(),
            )
            opened.buckets[budget.name] = bucket
        lock = opened.lock
        if not lock.acquire():
            raise RateBudgetUnavailable(
                f"the rate budget lock {self.lock_key} in Redis at {shown(self.url)} "
                f"(${REDIS_URL_ENV}) was not free within {_LOCK_WAIT_S:.0f} s"
            )
        try:
            seconds, micros = opened.client.time()
            now = int(seconds) * 1000 + int(micros) // 1000
            item = RateItem(budget.name, now, weight=cost)
            if bucket.put(item) is True:  # a synchronous client: a bool
                if now - opened.leaked_at.get(budget.name, 0) >= budget.window_ms:
                    # Entries no window can count any more: those before ``now - window``.
                    # ``RedisBucket.leak(t)`` removes scores up to ``t - window`` *inclusive*
                    # while its check counts ``[t - window, t]``, so leaking at ``now`` dropped
                    # grants stamped exactly ``now - window`` that the next check at ``now``
                    # must still count (seen: 10 units granted in a window of 8).
                    bucket.leak(now - 1)
                    opened.client.pexpire(self.key(budget), 2 * budget.window_ms)
                    opened.leaked_at[budget.name] = now
                return now, None
            wait = bucket.waiting(item)
        finally:
            try:
                lock.release()
            except LockNotOwnedError:  # it expired under a stall; the grant stands anyway
                log.warning("%s: held the rate budget lock past its %.0f s", self, _LOCK_TTL_S)
        return now, wait if isinstance(wait, int) else budget.window_ms

    def _connection(self) -> _Open:
        if self._open is not None and self._open.pid == os.getpid():
            return self._open
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        try:
            client: Any = redis.Redis.from_url(
                self.url,
                socket_timeout=_TIMEOUT_S,
                socket_connect_timeout=_TIMEOUT_S,
                # a few quick retries ride out a blip; an outage fails within a second or two
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
            )
        except ValueError as exc:  # not a Redis URL
            raise RateBudgetUnavailable(self._unusable(exc)) from exc
        client.ping()  # fails here, with the URL named, rather than at the first grant's lock
        lock = client.lock(
            self.lock_key, timeout=_LOCK_TTL_S, sleep=_LOCK_POLL_S, blocking_timeout=_LOCK_WAIT_S
        )
        self._open = _Open(client, lock, os.getpid())
        return self._open

    def _unusable(self, exc: Exception) -> str:
        return (
            f"the shared rate budget cannot use Redis at {shown(self.url)} (${REDIS_URL_ENV}): "
            f"{type(exc).__name__}: {str(exc).rstrip('. ')}. No request is sent unpaced: start that Redis or "
            f"correct ${REDIS_URL_ENV}; unset it to share budgets only among this machine's "
            "processes (a file per exchange)"
        )

    def close(self) -> None:
        opened, self._open = self._open, None
        if opened is not None and opened.pid == os.getpid():
            opened.client.close()

    def __str__(self) -> str:
        return f"{shown(self.url)} {self.prefix}:{self.scope}"
