"""Calling the exchange: retries with backoff, ``Retry-After``, counting, clear errors.

Every request the loader makes goes through ``Caller``: first it takes the request's cost
from the exchange's budget shared across processes (``exchanges.budget``) when the client has
one, then it sends it. Failures ccxt classes as
transient (``NetworkError`` and its subclasses: ``RequestTimeout``, ``ExchangeNotAvailable``,
``DDoSProtection``, ``RateLimitExceeded``, ``OnMaintenance``) are retried with exponential
backoff and full jitter, never sooner than the exchange's ``Retry-After``, a bounded number of
times; anything else (``BadSymbol``, ``BadRequest``, ...) is the caller's mistake or a
permanent refusal and is raised at once, its ccxt class kept and the exchange, data set and
range named in the message.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import ccxt

from crypto_pipelines.exchanges.budget import SharedBudget, attached
from crypto_pipelines.exchanges.errors import RetriesExhausted, UnsupportedRequest
from crypto_pipelines.exchanges.markets_cache import cache_of
from crypto_pipelines.exchanges.venues import MarketKind, VenueSpec

log = logging.getLogger(__name__)

T = TypeVar("T")


def iso(ts_ms: int) -> str:
    """A ms timestamp as readable UTC for messages."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def describe_range(start_ms: int, end_ms: int) -> str:
    return f"[{iso(start_ms)}, {iso(end_ms)})"


@dataclass
class FetchStats:
    """What one load cost: exchange calls (``load_markets`` counts as one), retries among
    them, rows and chunks yielded, and the time spent inside the loader (not in the consumer
    of its chunks). ``notes`` records what could not be fetched and why (e.g. a venue without
    trade history). ``budget_wait_s`` is the time spent waiting for the shared budget."""

    requests: int = 0
    retries: int = 0
    budget_wait_s: float = 0.0
    rows: int = 0
    chunks: int = 0
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.duration_s if self.duration_s > 0 else 0.0


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: ``max_attempts`` calls in all, waits of ``base_delay_s * 2**n`` (full
    jitter, capped at ``max_delay_s``) or the exchange's ``Retry-After`` if longer. A
    ``Retry-After`` beyond ``max_retry_after_s`` (a Binance 418 ban lasts minutes to days) ends
    the load at once instead of blocking a worker. ``sleep`` is injectable so that tests can
    record the waits instead of spending them."""

    max_attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_retry_after_s: float = 120.0
    seed: int | None = None
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")


_RATE_LIMITED = (ccxt.DDoSProtection, ccxt.RateLimitExceeded)


def _header(client: Any, name: str) -> float | None:
    headers = getattr(client, "last_response_headers", None) or {}
    for key in (name, name.lower()):
        value = headers.get(key) if hasattr(headers, "get") else None
        if value is not None:
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None


def retry_after_s(client: Any, reset_header: str | None = None) -> float | None:
    """How long the exchange's last answer asked us to wait, in seconds: ``Retry-After``
    (HTTP-date values are rare on these APIs and ignored) or, where the venue has one, a
    header holding the epoch ms when its window resets (Bybit)."""
    waits = []
    seconds = _header(client, "Retry-After")
    if seconds is not None:
        waits.append(max(0.0, seconds))
    if reset_header is not None:
        reset_ms = _header(client, reset_header)
        if reset_ms is not None:
            waits.append(max(0.0, (reset_ms - float(client.milliseconds())) / 1000))
    return max(waits) if waits else None


#: the implicit requests one attempt sends: (ccxt method, parameters)
Draws = Sequence[tuple[str, Mapping[str, Any] | None]]


class Caller:
    """Requests for one exchange and one data set, with retries and counting. ``what`` names
    the data set in messages (``"BTC/USDT 1m candles"``). ``budget`` is the shared budget
    every attempt is paid from; by default the one ``make_client`` attached to the client
    (none: ccxt's own throttler alone paces the requests)."""

    def __init__(
        self,
        client: Any,
        spec: VenueSpec,
        stats: FetchStats,
        what: str,
        policy: RetryPolicy | None = None,
        budget: SharedBudget | None = None,
    ) -> None:
        self.client = client
        self.spec = spec
        self.stats = stats
        self.what = what
        self.policy = policy or RetryPolicy()
        self.budget = budget if budget is not None else attached(client)
        self._rng = random.Random(self.policy.seed)

    def context(self, span: tuple[int, int] | None) -> str:
        where = f"{self.spec.id} {self.what}"
        return f"{where} {describe_range(*span)}" if span else where

    def call(self, method: str, params: dict[str, Any], span: tuple[int, int] | None = None) -> Any:
        """One implicit-API request (``client.<method>(params)``) with retries."""
        bound = getattr(self.client, method)
        # A fresh dict per attempt: a retry must send exactly what the first attempt sent.
        return self.retrying(
            lambda: bound(dict(params)), span, f"{method} {params}", ((method, params),)
        )

    def retrying(
        self,
        fn: Callable[[], T],
        span: tuple[int, int] | None,
        request: str,
        draws: Draws = (),
    ) -> T:
        """``fn()`` with retries; each attempt first pays ``draws`` from the shared budget."""
        policy = self.policy
        for attempt in range(1, policy.max_attempts + 1):
            self.stats.requests += 1
            if self.budget is not None:
                for method, params in draws:
                    self.stats.budget_wait_s += self.budget.acquire(method, params).waited_s
            try:
                return fn()
            except ccxt.NetworkError as exc:
                wait = self._wait(exc, attempt, span, request)
                self.stats.retries += 1
                log.warning(
                    "%s: %s (%s); retry %d/%d in %.2fs",
                    self.context(span),
                    type(exc).__name__,
                    exc,
                    attempt,
                    policy.max_attempts - 1,
                    wait,
                )
                policy.sleep(wait)
            except ccxt.BaseError as exc:
                raise type(exc)(f"{self.context(span)}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(
        self, exc: Exception, attempt: int, span: tuple[int, int] | None, request: str
    ) -> float:
        """Seconds to wait before the next attempt, or raise when there is none."""
        policy = self.policy
        asked = (
            retry_after_s(self.client, self.spec.rate_limit_reset_header)
            if isinstance(exc, _RATE_LIMITED)
            else None
        )
        if attempt >= policy.max_attempts:
            raise RetriesExhausted(
                f"{self.context(span)}: gave up after {attempt} attempts; last error "
                f"{type(exc).__name__}: {exc} (request {request})"
            ) from exc
        if asked is not None and asked > policy.max_retry_after_s:
            raise RetriesExhausted(
                f"{self.context(span)}: the exchange asks to wait {asked:.0f}s "
                f"(Retry-After), more than the {policy.max_retry_after_s:.0f}s allowed; "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        backoff = min(policy.max_delay_s, policy.base_delay_s * 2 ** (attempt - 1))
        jittered = self._rng.uniform(0.0, backoff)
        return max(jittered, asked or 0.0)

    # -- markets ----------------------------------------------------------------------------
    def load_markets(self, *, reload: bool = False) -> dict[str, Any]:
        """ccxt's markets, loaded once per client (retried like any request), or taken from
        the markets cache attached to the client when fresh (``exchanges.markets_cache``);
        ``reload`` asks the exchange whatever the client holds. A load is saved to the cache."""
        if getattr(self.client, "markets", None) and not reload:
            return dict(self.client.markets)
        if reload:
            self.client.markets = None  # ccxt's load_markets returns what it holds otherwise
        draws = [(method, None) for method in self.spec.markets_requests]
        loaded = dict(self.retrying(self._load_markets_each_retried, None, "load_markets", draws))
        cache = cache_of(self.client)
        if cache is not None:
            try:
                cache.save(self.client)
            except (OSError, TypeError, ValueError) as exc:  # a cache: never fail a run over it
                log.warning("markets cache %s not written: %s", cache.path, exc)
        return loaded

    def _load_markets_each_retried(self) -> Any:
        """ccxt's ``load_markets`` sends several requests (Binance: spot, USDⓈ-M and COIN-M;
        Bybit: three categories) and fails whole at the first failed one, so a retry sends
        them all again: at a 50% error rate a whole attempt almost never succeeds. Here each
        of its requests is retried on its own (ccxt's ``fetch``, the one HTTP call every
        request goes through, wrapped for the duration), each retry paying the dearest
        markets request from the shared budget."""
        client, policy = self.client, self.policy
        fetch = client.fetch
        dearest = max(
            ((m, None) for m in self.spec.markets_requests),
            key=lambda draw: sum(self.budget.costs(*draw).values()) if self.budget else 0,
            default=None,
        )

        def each_retried(*args: Any, **kwargs: Any) -> Any:
            for attempt in range(1, policy.max_attempts + 1):
                try:
                    return fetch(*args, **kwargs)
                except ccxt.NetworkError as exc:
                    if attempt >= policy.max_attempts:
                        raise  # the whole load_markets attempt fails; retrying() decides
                    wait = self._wait(exc, attempt, None, "load_markets")
                    self.stats.retries += 1
                    policy.sleep(wait)
                    if self.budget is not None and dearest is not None:
                        self.stats.budget_wait_s += self.budget.acquire(*dearest).waited_s
            raise AssertionError("unreachable")  # pragma: no cover

        client.fetch = each_retried
        try:
            return client.load_markets()
        finally:
            del client.fetch  # the class's own method again

    def fetch_time(self) -> int:
        """The exchange's clock in epoch ms (retried like any request)."""
        method = self.spec.time_request
        draws = [(method, None)] if method else []
        return int(self.retrying(self.client.fetch_time, None, "fetch_time", draws))

    def market(self, symbol: str) -> dict[str, Any]:
        """ccxt's market for a unified symbol; ``BadSymbol`` (with context) when unknown.
        Markets from the cache that lack the symbol (listed since) are asked for again once."""
        self.load_markets()
        if cache_of(self.client) is not None and symbol not in (self.client.markets or {}):
            if not getattr(self.client, "_crypto_pipelines_markets_reloaded", False):
                self.client._crypto_pipelines_markets_reloaded = True
                self.load_markets(reload=True)
        try:
            return dict(self.client.market(symbol))
        except ccxt.BaseError as exc:
            raise type(exc)(f"{self.context(None)}: {exc}") from exc


def market_kind(spec: VenueSpec, market: dict[str, Any]) -> MarketKind:
    """Spot, linear or inverse perpetual; other instruments are refused by name."""
    market_type = market.get("type")
    if market_type not in spec.market_types:
        raise UnsupportedRequest(
            f"{spec.id} {market.get('symbol')}: {market_type} markets are not loaded "
            f"(supported: {', '.join(sorted(spec.market_types))})"
        )
    if market_type == "spot":
        return "spot"
    return "linear" if market.get("linear") else "inverse"


def timed(items: Iterator[T], stats: FetchStats) -> Iterator[T]:
    """Add the time spent producing each item (not consuming it) to ``stats.duration_s``."""
    while True:
        t0 = time.perf_counter()
        try:
            item = next(items)
        except StopIteration:
            return
        finally:
            stats.duration_s += time.perf_counter() - t0
        yield item
