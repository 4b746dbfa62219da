"""An exchange's request budget shared by every process on this machine (or, in Redis, by
every machine behind one IP).

ccxt's throttler paces one client in one process: several Dagster runs, a sensor and a
user's notebook each have their own, so together they overrun the exchange's budget, and
ccxt does not even know some of the exchange's prices (Binance aggTrades weighs 4, ccxt
spends 2). Here every ``RateBudget`` of a venue (``VenueSpec.rate_budgets``: capacity per
window, cost per ccxt method) is one bucket in a small SQLite file that all processes open;
before each request the loader takes the request's cost from the buckets it draws on
(``SharedBudget.acquire``), sleeping until they have room.

The buckets are pyrate-limiter's ``SQLiteBucket`` (a sliding-window log, one row per cost
unit, WAL) under a cross-process file lock: a maintained library rather than a hand-written
limiter. A sliding window keeps *every* interval of ``window_ms`` at or below
``capacity x margin``, so also each of the exchange's own fixed windows whatever their
alignment and whatever the clock offset between us and the exchange; the margin (default
95 %) absorbs the jitter between a grant and the request's arrival. Steady throughput is
``margin`` x the exchange's ceiling.

Where the file lives: ``$CRYPTO_PIPELINES_RATE_BUDGET_DIR`` if set; else, for a live
exchange, ``$DAGSTER_HOME/rate_budgets`` (``~/.crypto_pipelines`` without ``DAGSTER_HOME``),
the machine's one budget per exchange; for the replay exchange, the temporary directory,
one file per exchange and server address (a replay server's budget is its own, and dies
with it).

An exchange counts per IP, and several machines can share one: with
``CRYPTO_PIPELINES_REDIS_URL`` set, ``SharedBudget.for_venue`` keeps the buckets in Redis
instead, per exchange and egress identity (``exchanges.budget_redis``), with the same
interface and margin. The grant logic here is the same for both: a ``BudgetStore`` only
checks and records one grant atomically.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from filelock import FileLock
from pyrate_limiter import Rate, RateItem, SlidingWindowLog, SQLiteBucket, SQLiteQueries

from crypto_pipelines.domain.redis_url import redis_url_from_env
from crypto_pipelines.exchanges.budget_redis import (
    RedisStore,
    budget_scope,
    budget_slug,
    egress_id_from_env,
)
from crypto_pipelines.exchanges.venues import RateBudget, VenueSpec, get_venue

RATE_BUDGET_DIR_ENV = "CRYPTO_PIPELINES_RATE_BUDGET_DIR"
DEFAULT_MARGIN = 0.95
#: how often a process waiting for the file lock looks again: the lock is held for about
#: 0.1 ms, so filelock's default of 50 ms would stall a waiting process for nothing
_LOCK_POLL_S = 0.001
_ATTRIBUTE = "_crypto_pipelines_rate_budget"


def budget_dir(replay_url: str | None = None) -> Path:
    """The folder of the budget files (see the module doc)."""
    configured = os.environ.get(RATE_BUDGET_DIR_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    if replay_url:
        return Path(tempfile.gettempdir()) / "crypto_pipelines_rate_budgets"
    home = os.environ.get("DAGSTER_HOME", "").strip()
    return (Path(home) if home else Path.home() / ".crypto_pipelines").expanduser() / (
        "rate_budgets"
    )


def budget_path(
    exchange_id: str, replay_url: str | None = None, directory: Path | str | None = None
) -> Path:
    """The budget file of one exchange: ``binance.sqlite`` for the live exchange,
    ``binance-replay-127_0_0_1_8765.sqlite`` for a replay exchange at that address."""
    folder = Path(directory) if directory is not None else budget_dir(replay_url)
    name = exchange_id
    if replay_url:
        where = urlsplit(replay_url).netloc or replay_url
        name = f"{exchange_id}-replay-{re.sub(r'[^A-Za-z0-9]+', '_', where).strip('_')}"
    return folder / f"{name}.sqlite"


@dataclass(frozen=True)
class Grant:
    """What one ``acquire`` cost: seconds spent waiting for room, the units drawn, and the
    time of the grant in epoch ms as the shared log recorded it (None when the method draws
    on no budget)."""

    waited_s: float
    cost: int
    at_ms: int | None


class _FileMutex:
    """The cross-process lock around each check-and-record (filelock, polled every ms;
    reentrant within a thread, as ``SQLiteBucket.put`` takes it again)."""

    def __init__(self, path: Path) -> None:
        self._lock = FileLock(str(path))

    def __enter__(self) -> _FileMutex:
        self._lock.acquire(poll_interval=_LOCK_POLL_S)
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class BudgetStore(Protocol):
    """Where the buckets live (a SQLite file, or Redis: ``budget_redis.RedisStore``)."""

    def take(self, budget: RateBudget, limit: int, cost: int) -> tuple[int, int | None]:
        """Record ``cost`` units of ``budget`` now if every interval of ``window_ms`` then
        holds at most ``limit``, atomically across processes: ``(grant time in epoch ms,
        None)``; else ``(now, ms to wait before asking again)``."""
        ...

    def close(self) -> None: ...


def _table(budget: RateBudget) -> str:
    return f"budget_{budget_slug(budget)}_{budget.window_ms}"


class SQLiteStore:
    """The buckets in one SQLite file per exchange, a table per budget, under a file lock.
    Not thread-safe on its own (``SharedBudget`` serialises its threads); a forked child
    reopens the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._mutex = _FileMutex(path.with_name(path.name + ".lock"))
        self._buckets: dict[str, SQLiteBucket] = {}
        self._leaked_at: dict[str, int] = {}

    def take(self, budget: RateBudget, limit: int, cost: int) -> tuple[int, int | None]:
        store = self._bucket(budget, limit)
        # The clock is read under the file lock (put takes it again, reentrantly): stamps
        # then grow in the order they are recorded, which the sliding window and the leak
        # of expired rows both assume.
        with self._mutex:
            item = RateItem(budget.name, store.now(), weight=cost)
            if store.put(item) is True:  # SQLiteBucket is synchronous: a bool
                if item.timestamp - self._leaked_at.get(budget.name, 0) >= budget.window_ms:
                    store.leak(item.timestamp)  # rows no window can count any more
                    self._leaked_at[budget.name] = item.timestamp
                return item.timestamp, None
            wait = store.waiting(item)
        return item.timestamp, wait if isinstance(wait, int) else budget.window_ms

    def _bucket(self, budget: RateBudget, limit: int) -> SQLiteBucket:
        if self._conn is None or self._pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                str(self.path), timeout=30, isolation_level="DEFERRED", check_same_thread=False
            )
            with self._mutex:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
            self._pid, self._buckets, self._leaked_at = os.getpid(), {}, {}
        store = self._buckets.get(budget.name)
        if store is None:
            table = _table(budget)
            with self._mutex:
                self._conn.execute(SQLiteQueries.CREATE_BUCKET_TABLE.format(table=table))
                self._conn.execute(
                    SQLiteQueries.CREATE_INDEX_ON_TIMESTAMP.format(
                        index_name=f"idx_{table}_ts", table_name=table
                    )
                )
                self._conn.commit()
            store = SQLiteBucket(
                [Rate(limit, budget.window_ms)],
                self._conn,
                table,
                lock=self._mutex,
                algorithm=SlidingWindowLog(),
            )
            self._buckets[budget.name] = store
        return store

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn, self._buckets = None, {}

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class _Bucket:
    budget: RateBudget
    limit: int


class SharedBudget:
    """The request budgets of one exchange, shared through the SQLite file at ``path`` or
    another ``store`` (give one of the two; ``path`` is None for a store).

    ``margin`` is the share of each budget this machine spends (0 < margin <= 1); a cost
    larger than ``capacity x margin`` is refused at construction, since it could never be
    granted. ``sleep`` is injectable for tests. Thread-safe; a forked child reopens the file
    (or its Redis connection).
    """

    def __init__(
        self,
        budgets: Iterable[RateBudget],
        path: Path | str | None = None,
        *,
        store: BudgetStore | None = None,
        margin: float = DEFAULT_MARGIN,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 0 < margin <= 1:
            raise ValueError(f"margin must be in (0, 1], got {margin}")
        self.path = Path(path) if path is not None else None
        if self.path is not None and store is None:
            store = SQLiteStore(self.path)
        elif (self.path is None) == (store is None):
            raise ValueError("a SharedBudget needs either a path or a store")
        assert store is not None
        self.store: BudgetStore = store
        self.margin = margin
        self._sleep = sleep
        self._buckets: list[_Bucket] = []
        for budget in budgets:
            limit = math.floor(budget.capacity * margin)
            dearest = max(
                [*budget.costs.values(), *(c for s in budget.limit_costs.values() for _, c in s)],
                default=0,
            )
            if limit < max(1, dearest):
                raise ValueError(
                    f"budget {budget.name!r}: {margin:.0%} of {budget.capacity} per "
                    f"{budget.window_ms} ms is {limit}, less than its dearest request ({dearest})"
                )
            self._buckets.append(_Bucket(budget, limit))
        self._spent: dict[str, int] = {b.budget.name: 0 for b in self._buckets}
        self._thread_lock = threading.Lock()

    @classmethod
    def for_venue(
        cls,
        spec: VenueSpec | str,
        *,
        replay_url: str | None = None,
        directory: Path | str | None = None,
        margin: float = DEFAULT_MARGIN,
        redis_url: str | None = None,
        egress_id: str | None = None,
    ) -> SharedBudget:
        """The shared budget of an exchange (live, or a replay exchange's address).

        In Redis at ``redis_url`` (default ``$CRYPTO_PIPELINES_REDIS_URL``), shared by every
        process with the same egress id (default ``$CRYPTO_PIPELINES_EGRESS_ID``, else the
        host name); else, or when ``directory`` is given, in this machine's SQLite file."""
        venue = get_venue(spec) if isinstance(spec, str) else spec
        if redis_url is not None and directory is not None:
            raise ValueError("a budget lives in a directory or in Redis, not both")
        url = redis_url or (redis_url_from_env() if directory is None else None)
        if url:
            scope = budget_scope(venue.id, replay_url, egress_id or egress_id_from_env())
            return cls(venue.rate_budgets, store=RedisStore(url, scope), margin=margin)
        return cls(venue.rate_budgets, budget_path(venue.id, replay_url, directory), margin=margin)

    # -- spending -------------------------------------------------------------------------
    def limits(self) -> dict[str, tuple[int, int]]:
        """Per budget name: (units this machine may spend, per window_ms)."""
        return {b.budget.name: (b.limit, b.budget.window_ms) for b in self._buckets}

    def costs(self, method: str, params: Mapping[str, Any] | None = None) -> dict[str, int]:
        """Per budget name, what one request of ``method`` draws (only budgets it draws on)."""
        return {
            b.budget.name: cost
            for b in self._buckets
            if (cost := b.budget.cost(method, params)) > 0
        }

    def acquire(self, method: str, params: Mapping[str, Any] | None = None) -> Grant:
        """Block until one request of ``method`` (with ``params``, for venues that price by
        ``limit``) fits every budget it draws on, and record it there."""
        waited, total, at = 0.0, 0, None
        for bucket in self._buckets:
            cost = bucket.budget.cost(method, params)
            if cost > 0:
                spent_s, at = self._take(bucket, cost)
                waited += spent_s
                total += cost
        return Grant(waited, total, at)

    @property
    def spent(self) -> dict[str, int]:
        """Units this object has drawn per budget name (this process's share)."""
        with self._thread_lock:
            return dict(self._spent)

    def _take(self, bucket: _Bucket, cost: int) -> tuple[float, int]:
        waited = 0.0
        window = bucket.budget.window_ms
        while True:
            with self._thread_lock:
                at, wait_ms = self.store.take(bucket.budget, bucket.limit, cost)
                if wait_ms is None:
                    self._spent[bucket.budget.name] += cost
                    return waited, at
            seconds = min(max(wait_ms, 1), window) / 1000
            self._sleep(seconds)
            waited += seconds

    def close(self) -> None:
        with self._thread_lock:
            self.store.close()

    def __enter__(self) -> SharedBudget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SharedBudget({self.store}, margin={self.margin})"


def attach(client: Any, budget: SharedBudget | None) -> Any:
    """Let every ``Caller`` of this ccxt client spend from ``budget`` (``make_client`` does
    this); returns the client."""
    setattr(client, _ATTRIBUTE, budget)
    return client


def attached(client: Any) -> SharedBudget | None:
    """The shared budget a client's requests are paced by, if any."""
    budget = getattr(client, _ATTRIBUTE, None)
    return budget if isinstance(budget, SharedBudget) else None


def grants_within(stamps: Sequence[tuple[int, int]], window_ms: int) -> int:
    """The largest total cost of grants ``(at_ms, cost)`` inside any closed interval of
    ``window_ms`` (what a sliding window of that length sees at its worst)."""
    ordered = sorted(stamps)
    best, total, lo = 0, 0, 0
    for at, cost in ordered:
        total += cost
        while ordered[lo][0] < at - window_ms:
            total -= ordered[lo][1]
            lo += 1
        best = max(best, total)
    return best
