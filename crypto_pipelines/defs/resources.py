"""Typed resources: ccxt exchange clients and the market store."""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from crypto_pipelines.domain.universe import Source
from crypto_pipelines.exchanges.budget import DEFAULT_MARGIN, SharedBudget
from crypto_pipelines.exchanges.client import make_client
from crypto_pipelines.exchanges.markets_cache import MarketsCache
from crypto_pipelines.exchanges.routing import REPLAY_URL_ENV
from crypto_pipelines.storage.engine import (
    DB_URL_ENV,
    OPEN_ERRORS,
    default_db_url,
    unusable_message,
)
from crypto_pipelines.storage.store import MarketStore


class ExchangesResource(dg.ConfigurableResource):
    """Stock ccxt clients, one per exchange id, paced by each exchange's request budget
    shared with every other process on the machine (``exchanges.budget``: runs, sensors,
    notebooks), so concurrent runs stay inside it together. ccxt's own throttler is off
    while the shared budget is on (it paces one process only, at prices of its own: a lone
    USDⓈ-M loader got half the budget in ``benchmarks.soak``); without the shared budget it
    is always on.

    ``source`` says where data comes from. ``replay`` routes every client to the replay
    exchange at ``replay_url`` (default ``$CRYPTO_PIPELINES_REPLAY_URL``); ``live`` refuses to
    run while a replay URL is set, so replayed data can never be stored as live data. API keys
    (optional, public data needs none) come from ``CRYPTO_PIPELINES_<EXCHANGE>_API_KEY``,
    ``_SECRET`` and ``_PASSWORD``."""

    source: str = Field(default="live", description="live | replay")
    replay_url: str | None = Field(
        default=None, description=f"replay exchange base URL (default ${REPLAY_URL_ENV})"
    )
    timeout_ms: int = Field(default=10_000, description="ccxt request timeout")
    rate_budget: bool = Field(
        default=True, description="share each exchange's request budget across processes"
    )
    rate_budget_margin: float = Field(
        default=DEFAULT_MARGIN, description="share of each budget this machine spends"
    )
    ccxt_rate_limit: bool = Field(
        default=False,
        description="ccxt's in-process throttler as well (always on without rate_budget)",
    )

    _clients: dict[str, Any] = PrivateAttr(default_factory=dict)

    def effective_replay_url(self) -> str | None:
        return self.replay_url or os.environ.get(REPLAY_URL_ENV) or None

    def client(self, exchange_id: str) -> Any:
        if exchange_id not in self._clients:
            url = self.effective_replay_url()
            if self.source == "replay" and not url:
                raise dg.Failure(
                    f"source is 'replay' but no replay exchange is configured: set {REPLAY_URL_ENV}"
                )
            if self.source == "live" and url:
                raise dg.Failure(
                    f"{REPLAY_URL_ENV} is set but the universe's source is 'live': set CRYPTO_PIPELINES_SOURCE=replay "
                    "so replayed data is stored apart from live data"
                )
            budget = (
                SharedBudget.for_venue(exchange_id, replay_url=url, margin=self.rate_budget_margin)
                if self.rate_budget
                else False
            )
            client = make_client(
                exchange_id,
                replay_url=url,
                timeout_ms=self.timeout_ms,
                enable_rate_limit=self.ccxt_rate_limit or not self.rate_budget,
                rate_budget=budget,
            )
            if self.source == "live":  # a live exchange's markets are kept between runs
                MarketsCache(exchange_id).attach(client)
            self._clients[exchange_id] = client
        return self._clients[exchange_id]


class MarketStoreResource(dg.ConfigurableResource):
    """The SQL database of market data. ``db_url`` defaults to ``$CRYPTO_PIPELINES_DB_URL``,
    else a SQLite file under ``DAGSTER_HOME``: ``market.db`` for live data and
    ``market-replay.db`` for replayed data.

    The default is resolved when a run (or sensor, or schedule) first uses the store, in the
    process using it, not when the code location loads: the definitions carry no database
    URL, so changing ``CRYPTO_PIPELINES_DB_URL`` takes effect for the next run and a URL (and
    its password) is never baked into the definitions Dagster serialises."""

    db_url: str | None = Field(default=None, description="SQLAlchemy URL of the market database")
    source: str = Field(default="live", description="live | replay (chooses the default database)")

    _store: MarketStore | None = PrivateAttr(default=None)

    def store(self) -> MarketStore:
        """The store, opened and migrated on first use. A database that cannot be opened
        (unreachable, refused, not a URL, a SQLite folder that cannot be made) fails the run with ``dg.Failure`` naming
        ``CRYPTO_PIPELINES_DB_URL`` and the URL, password hidden: the driver's own error
        says what failed but not which setting to fix."""
        if self._store is None:
            source: Source = "replay" if self.source == "replay" else "live"
            url = self.db_url or default_db_url(source)
            try:
                self._store = MarketStore.open(url, source=source)
            except OPEN_ERRORS as exc:
                raise dg.Failure(description=self._unusable(url, exc)) from exc
        return self._store

    def _unusable(self, url: str, exc: Exception) -> str:
        origin = (
            f"the market_store resource's db_url (it overrides ${DB_URL_ENV})"
            if self.db_url
            else None
        )
        return unusable_message(url, exc, origin=origin)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
