"""Ingestion for symbols the universe file's filters select: accepted as the file's own
symbols are. Which ones: the orchestrator's ``<exchange>_symbols`` partitions when it can say
(the universe sensor keeps them equal to the filters' selection, volume ranking included),
else the stored markets passing the filters' quote, type and exclude rules. Real HTTP, real
store (SQLite and PostgreSQL), a real Dagster instance."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import dagster as dg
import pytest

from crypto_pipelines.api import ApiServices, ApiSettings
from crypto_pipelines.defs.api_services import DagsterLineage
from crypto_pipelines.domain.instruments import CryptoPair
from crypto_pipelines.domain.universe import ExchangeUniverse, Universe
from crypto_pipelines.domain.universe_options import ListingFilters
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.api.conftest import DESK, RecordingLineage, serve_api

T0 = 1_704_067_200_000
LISTED = ("SOL/USDT", "ADA/USDT", "DOGE/BTC")


def universe(filters: ListingFilters) -> Universe:
    return Universe(
        source="replay",
        exchanges={
            "binance": ExchangeUniverse(
                symbols=("BTC/USDT",), timeframes=("1m",), start=date(2024, 1, 1), filters=filters
            )
        },
    )


def body(symbol: str) -> dict[str, Any]:
    row = [T0, 100.0, 101.0, 99.0, 100.5, 2.0]
    return {"exchange": "binance", "symbol": symbol, "timeframe": "1m", "rows": [row]}


@pytest.fixture
def store(db_url: str) -> Iterator[MarketStore]:
    with MarketStore.open(db_url) as opened:
        pairs = [
            CryptoPair(exchange="binance", symbol=s, base=s.split("/")[0], quote=s.split("/")[1])
            for s in LISTED
        ]
        opened.upsert_instruments(pairs=pairs)
        yield opened


def statuses(services: ApiServices, symbols: list[str]) -> dict[str, int]:
    with serve_api(ApiSettings(keys=(DESK,)), services) as api, api.client() as client:
        return {s: client.post("/v1/ohlcv", json=body(s)).status_code for s in symbols}


def test_stored_markets_the_filters_select_are_ingestible(store: MarketStore) -> None:
    """No orchestrator to ask: the stored markets with a USDT quote are in."""
    services = ApiServices(
        store=store,
        universe=universe(ListingFilters(quote=("USDT",))),
        lineage=RecordingLineage(),
    )
    got = statuses(services, ["BTC/USDT", "SOL/USDT", "ADA/USDT", "DOGE/BTC", "XRP/USDT"])
    assert got == {
        "BTC/USDT": 201,  # the file's
        "SOL/USDT": 201,
        "ADA/USDT": 201,
        "DOGE/BTC": 422,  # stored, but another quote
        "XRP/USDT": 422,  # not a stored market
    }
    assert set(store.read("ohlcv")["symbol"]) == {"BTC/USDT", "SOL/USDT", "ADA/USDT"}


def test_the_orchestrators_partitions_decide_when_it_can_say(store: MarketStore) -> None:
    """With a volume ranking only the orchestrator knows (top 1), its partitions decide."""
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("binance_symbols", ["BTC/USDT", "SOL/USDT"])
        filters = ListingFilters(quote=("USDT",), top_n_by_volume=1)
        lineage = DagsterLineage(universe(filters), instance=lambda: instance)
        services = ApiServices(store=store, universe=universe(filters), lineage=lineage)
        got = statuses(services, ["SOL/USDT", "ADA/USDT"])
    assert got == {"SOL/USDT": 201, "ADA/USDT": 422}
