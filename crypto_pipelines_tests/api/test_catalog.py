"""The catalog and universe routes over real HTTP, on SQLite and PostgreSQL: records created
(201) and replaced (200) as stored, refusals naming field and rule with nothing stored, the
answer models held to the Pandera models' columns, and run-time universe changes seen at once
by ingestion, by other readers of the store, and never written to the file."""

from __future__ import annotations

import types
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any, Union, get_args, get_origin

import httpx
import pandera.dtypes as pa_dtypes
import pandera.pandas as pa
import pytest
from pandera.typing import Series
from pydantic import BaseModel

from crypto_pipelines.api import ApiServices
from crypto_pipelines.api.routes.catalog import (
    AssetRecord,
    PairBody,
    PairRecord,
    PerpBody,
    PerpRecord,
)
from crypto_pipelines.domain.schemas import CryptoPairs, get_dataset
from crypto_pipelines.domain.universe import ExchangeUniverse, Universe
from crypto_pipelines.storage.universe_changes import universe_changes
from crypto_pipelines_tests.api.conftest import OTHER, RunningApi, api_universe, serve_api

T0 = 1_704_067_200_000


# --- the models follow the Pandera models ------------------------------------------------


def _python_type(dtype: Any) -> type:
    if pa_dtypes.is_bool(dtype):
        return bool
    if pa_dtypes.is_int(dtype):
        return int
    if pa_dtypes.is_string(dtype):
        return str
    return float


def _annotation(annotation: Any) -> tuple[set[Any], bool]:
    """The non-None types of an annotation and whether it allows None."""
    if get_origin(annotation) in (Union, types.UnionType):
        parts = set(get_args(annotation))
        return parts - {type(None)}, type(None) in parts
    return {annotation}, False


def drift(schema: pa.DataFrameSchema, model: type[BaseModel], *, record: bool) -> list[str]:
    """How ``model`` differs from the Pandera schema: columns missing or extra, out of order
    (answers only), of another type, or nullable where the column is not (answers only: a
    body may omit what the path or the symbol gives)."""
    problems = []
    fields = model.model_fields
    columns = list(schema.columns)
    if set(fields) != set(columns):
        problems.append(f"fields {sorted(fields)} != columns {sorted(columns)}")
    if record and list(fields) != columns:
        problems.append(f"order {list(fields)} != {columns}")
    for name in set(fields) & set(columns):
        column = schema.columns[name]
        kinds, nullable = _annotation(fields[name].annotation)
        if {getattr(k, "__origin__", k) for k in kinds} != {_python_type(column.dtype)}:
            problems.append(f"{name}: {kinds} is not {column.dtype}")
        if record and nullable != column.nullable:
            problems.append(f"{name}: nullable {nullable} != {column.nullable}")
    return problems


@pytest.mark.parametrize(
    ("dataset", "model", "record"),
    [
        ("crypto_assets", AssetRecord, True),
        ("crypto_pairs", PairRecord, True),
        ("crypto_pairs", PairBody, False),
        ("crypto_perps", PerpRecord, True),
        ("crypto_perps", PerpBody, False),
    ],
)
def test_the_api_models_hold_the_pandera_columns(
    dataset: str, model: type[BaseModel], record: bool
) -> None:
    assert drift(get_dataset(dataset).schema, model, record=record) == []


def test_a_column_added_to_the_pandera_model_is_caught() -> None:
    class Grown(CryptoPairs):
        margin_ratio: Series[float] = pa.Field(nullable=True)

    problems = drift(Grown.to_schema(), PairRecord, record=True)
    assert any("margin_ratio" in p for p in problems), problems
    assert any("margin_ratio" in p for p in drift(Grown.to_schema(), PairBody, record=False))


# --- catalog ---------------------------------------------------------------------------

PAIR = "/v1/catalog/pairs/binance/BTC/USDT"
PERP = "/v1/catalog/perps/binance/BTC/USDT:USDT"
ADD = "/v1/universe/{}/symbols"
DROP = "/v1/universe/{}/symbols/{}"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/catalog/assets"),
        ("GET", "/v1/catalog/assets/BTC"),
        ("PUT", "/v1/catalog/assets/BTC"),
        ("GET", "/v1/catalog/pairs"),
        ("GET", PAIR),
        ("PUT", PAIR),
        ("GET", "/v1/catalog/perps"),
        ("GET", PERP),
        ("PUT", PERP),
        ("GET", "/v1/universe"),
        ("POST", "/v1/universe/binance/symbols"),
        ("DELETE", "/v1/universe/binance/symbols/ETH/USDT"),
    ],
)
def test_every_route_needs_a_key(api: RunningApi, method: str, path: str) -> None:
    with api.client(None) as client:
        answer = client.request(method, path, json={"symbol": "SOL/USDT"})
    assert answer.status_code == 401, answer.text
    assert api.store.count("crypto_assets") == 0
    assert universe_changes(api.store.engine) == []


def test_a_pair_is_created_read_replaced_and_listed(api: RunningApi) -> None:
    with api.client() as client:
        assert client.get(PAIR).status_code == 404
        created = client.put(PAIR, json={"price_tick": 0.01, "listed_ms": T0})
        replaced = client.put(PAIR, json={"price_tick": 0.1, "active": False})
        read = client.get(PAIR)
        client.put("/v1/catalog/pairs/okx/ETH/USDC", json={})
        everything = client.get("/v1/catalog/pairs").json()
        binance = client.get("/v1/catalog/pairs", params={"exchange": "binance"}).json()
        assets = client.get("/v1/catalog/assets").json()
        usdc = client.get("/v1/catalog/assets/USDC")
    assert created.status_code == 201, created.text
    assert created.json() == {
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "base": "BTC",
        "quote": "USDT",
        "price_tick": 0.01,
        "amount_step": None,
        "min_amount": None,
        "active": True,
        "listed_ms": T0,
        "delisted_ms": None,
    }
    assert replaced.status_code == 200, replaced.text
    # PUT replaces the record: what the body leaves out is unknown again
    assert replaced.json() == {
        **created.json(),
        "price_tick": 0.1,
        "active": False,
        "listed_ms": None,
    }
    assert read.json() == replaced.json()
    assert [(p["exchange"], p["symbol"]) for p in everything] == [
        ("binance", "BTC/USDT"),
        ("okx", "ETH/USDC"),
    ]
    assert binance == [read.json()]
    # the currencies the markets reference joined the assets
    assert assets == [{"code": c} for c in ("BTC", "ETH", "USDC", "USDT")]
    assert usdc.json() == {"code": "USDC"}


def test_a_perp_takes_settle_and_linear_from_its_symbol(api: RunningApi) -> None:
    inverse = "/v1/catalog/perps/bybit/BTC/USD:BTC"
    with api.client() as client:
        linear = client.put(PERP, json={"contract_size": 1, "funding_interval_ms": 28_800_000})
        coin = client.put(inverse, json={"contract_size": 100})
        again = client.put(inverse, json={"contract_size": 100, "linear": False, "settle": "BTC"})
        listed = client.get("/v1/catalog/perps", params={"exchange": "bybit"}).json()
        assert client.get("/v1/catalog/pairs/binance/BTC/USDT:USDT").status_code == 404
    assert linear.status_code == 201, linear.text
    assert (linear.json()["settle"], linear.json()["linear"]) == ("USDT", True)
    assert linear.json()["funding_interval_ms"] == 28_800_000
    assert coin.status_code == 201, coin.text
    assert (coin.json()["settle"], coin.json()["linear"]) == ("BTC", False)
    assert again.status_code == 200 and again.json() == coin.json()
    assert listed == [coin.json()]
    frame = api.store.read("crypto_perps", exchange="binance")
    assert frame["contract_size"].tolist() == [1.0]


def test_an_asset_is_created_once(api: RunningApi) -> None:
    with api.client() as client:
        assert client.get("/v1/catalog/assets/PEPE").status_code == 404
        first = client.put("/v1/catalog/assets/PEPE")
        second = client.put("/v1/catalog/assets/PEPE")
        bad = client.put("/v1/catalog/assets/PE PE")
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json() == second.json() == {"code": "PEPE"}
    assert bad.status_code == 422
    assert bad.json()["errors"][0] | {"message": ""} == {
        "index": None,
        "field": "code",
        "rule": "currency_code",
        "message": "",
    }
    assert api.store.read("crypto_assets")["code"].tolist() == ["PEPE"]


def test_concurrent_first_puts_of_a_record_create_it_once(api: RunningApi) -> None:
    """The 201 is decided in the write's transaction: of many first PUTs of one record sent
    at once (the routes run in a thread pool), exactly one is told it created it."""
    paths = [f"/v1/catalog/pairs/binance/C{i}/USDT" for i in range(4)] + [
        f"/v1/catalog/assets/RACE{i}" for i in range(4)
    ]

    def put(path: str) -> int:
        with api.client() as client:
            return client.put(path, json={} if "/pairs/" in path else None).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = {p: list(pool.map(put, [p] * 12)) for p in paths}
    for path, codes in statuses.items():
        assert sorted(codes) == [200] * 11 + [201], (path, codes)


@pytest.mark.parametrize(
    ("path", "body", "field", "rule"),
    [
        (PAIR, {"price_tick": -0.01}, "price_tick", "step_positive"),
        (PAIR, {"amount_step": 0}, "amount_step", "step_positive"),
        (PAIR, {"min_amount": -1}, "min_amount", "min_amount_non_negative"),
        (PAIR, {"base": "ETH"}, "base", "matches_symbol"),
        (PAIR, {"exchange": "okx"}, "exchange", "path_mismatch"),
        (PAIR, {"listed_ms": T0 // 1000}, "listed_ms", "greater_than_equal"),
        (PAIR, {"price_tick": "abc"}, "price_tick", "float_parsing"),
        (PAIR, {"price_tick": "inf"}, "price_tick", "finite_number"),
        (PAIR, {"listed_ms": 1.5}, "listed_ms", "int_from_float"),
        (PAIR, {"colour": "red"}, "colour", "extra_forbidden"),
        ("/v1/catalog/pairs/Binance/BTC/USDT", {}, "exchange", "exchange_id"),
        ("/v1/catalog/pairs/binance/BTCUSDT", {}, "symbol", "symbol_unified"),
        ("/v1/catalog/pairs/binance/BTC/USDT:USDT", {}, "symbol", "symbol_is_spot"),
        ("/v1/catalog/pairs/binance/B TC/USDT", {}, "symbol", "symbol_unified"),
        (PERP, {"contract_size": 0}, "contract_size", "contract_size_positive"),
        (PERP, {"funding_interval_ms": -1}, "funding_interval_ms", "funding_interval_positive"),
        (PERP, {"settle": "BTC"}, "settle", "matches_symbol"),
        ("/v1/catalog/perps/binance/BTC/USDT", {}, "symbol", "symbol_is_swap"),
    ],
)
def test_bad_records_are_refused_naming_field_and_rule(
    api: RunningApi, path: str, body: dict[str, Any], field: str, rule: str
) -> None:
    with api.client() as client:
        answer = client.put(path, json=body)
    assert answer.status_code == 422, answer.text
    errors = answer.json()["errors"]
    assert [(e["field"], e["rule"]) for e in errors] == [(field, rule)], errors
    assert all(e["message"] for e in errors)
    for dataset in ("crypto_assets", "crypto_pairs", "crypto_perps"):
        assert api.store.count(dataset) == 0


def test_a_refused_replacement_keeps_the_stored_record(api: RunningApi) -> None:
    with api.client() as client:
        assert client.put(PAIR, json={"price_tick": 0.01}).status_code == 201
        assert client.put(PAIR, json={"price_tick": 0, "min_amount": -2}).status_code == 422
        assert client.get(PAIR).json()["price_tick"] == 0.01


# --- universe --------------------------------------------------------------------------


def _candles(symbol: str) -> dict[str, Any]:
    row = [T0, 100.0, 101.0, 99.0, 100.5, 2.0]
    return {"exchange": "binance", "symbol": symbol, "timeframe": "1m", "rows": [row]}


def test_the_effective_universe_is_described(api: RunningApi) -> None:
    with api.client() as client:
        answer = client.get("/v1/universe")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["source"] == "replay"
    assert set(body["exchanges"]) == {"binance", "okx"}
    binance = body["exchanges"]["binance"]
    assert binance == {
        "file_symbols": ["BTC/USDT", "ETH/USDT", "BTC/USDT:USDT"],
        "added": [],
        "removed": [],
        "symbols": ["BTC/USDT", "ETH/USDT", "BTC/USDT:USDT"],
        "filtered": False,
        "timeframes": ["1m", "1h"],
        "datasets": ["ohlcv", "trades", "funding_rates"],
        "start": "2024-01-01",
        "changes": [],
    }
    # no perpetual swap on okx: nothing of perps only (funding rates) is collected there
    assert body["exchanges"]["okx"]["datasets"] == ["ohlcv"]


def test_an_added_symbol_is_ingestible_at_once_and_recorded(api: RunningApi) -> None:
    with api.client() as desk, api.client(OTHER) as other:
        before = desk.post("/v1/ohlcv", json=_candles("SOL/USDT"))
        added = other.post("/v1/universe/binance/symbols", json={"symbol": "SOL/USDT"})
        after = desk.post("/v1/ohlcv", json=_candles("SOL/USDT"))
        again = desk.post("/v1/universe/binance/symbols", json={"symbol": "SOL/USDT"})
        described = desk.get("/v1/universe").json()["exchanges"]["binance"]
    assert before.status_code == 422 and before.json()["errors"][0]["rule"] == "not_in_universe"
    assert added.status_code == 201, added.text
    result = added.json()
    assert (result["recorded"], result["changed_by"], result["action"]) == (True, "other", "add")
    assert result["symbols"] == ["BTC/USDT", "ETH/USDT", "BTC/USDT:USDT", "SOL/USDT"]
    assert after.status_code == 201, after.text  # without waiting for the universe cache
    assert again.status_code == 200
    assert again.json()["recorded"] is False and again.json()["changed_by"] == "other"
    assert described["added"] == ["SOL/USDT"]
    assert described["symbols"][-1] == "SOL/USDT"
    assert [(c["symbol"], c["action"], c["changed_by"]) for c in described["changes"]] == [
        ("SOL/USDT", "add", "other")
    ]
    # stored, not cached: a fresh reader of the same database sees it; the file is untouched
    fresh = ApiServices(store=api.store, universe=api_universe()).current_universe()
    assert "SOL/USDT" in fresh.exchanges["binance"].symbols
    assert "SOL/USDT" not in api.services.universe.exchanges["binance"].symbols


def test_a_file_symbol_is_hidden_and_brought_back(api: RunningApi) -> None:
    removal = "/v1/universe/binance/symbols/ETH/USDT"
    with api.client() as client:
        removed = client.delete(removal)
        refused = client.post("/v1/ohlcv", json=_candles("ETH/USDT"))
        described = client.get("/v1/universe").json()["exchanges"]["binance"]
        gone = client.delete(removal)
        back = client.post("/v1/universe/binance/symbols", json={"symbol": "ETH/USDT"})
        accepted = client.post("/v1/ohlcv", json=_candles("ETH/USDT"))
        restored = client.get("/v1/universe").json()["exchanges"]["binance"]
    assert removed.status_code == 200, removed.text
    assert removed.json()["symbols"] == ["BTC/USDT", "BTC/USDT:USDT"]
    assert refused.status_code == 422
    assert described["file_symbols"] == ["BTC/USDT", "ETH/USDT", "BTC/USDT:USDT"]
    assert (described["removed"], described["added"]) == (["ETH/USDT"], [])
    assert "ETH/USDT" not in described["symbols"]
    assert gone.status_code == 404 and gone.json()["errors"][0]["rule"] == "not_in_universe"
    assert back.status_code == 201, back.text
    assert accepted.status_code == 201, accepted.text
    assert restored["symbols"] == ["BTC/USDT", "ETH/USDT", "BTC/USDT:USDT"]
    assert (restored["removed"], restored["added"]) == ([], [])


def test_an_added_symbol_can_be_removed_again(api: RunningApi) -> None:
    with api.client() as client:
        assert client.post(ADD.format("okx"), json={"symbol": "ETH/USDT"}).status_code == 201
        removed = client.delete(DROP.format("okx", "ETH/USDT"))
    assert removed.status_code == 200, removed.text
    assert removed.json()["symbols"] == ["BTC/USDT"]
    assert api.services.current_universe().exchanges["okx"].symbols == ("BTC/USDT",)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field", "rule"),
    [
        ("POST", ADD.format("kraken"), {"symbol": "BTC/USD"}, 422, "exchange", "unknown_exchange"),
        ("POST", ADD.format("binance"), {"symbol": "BTCUSDT"}, 422, "symbol", "symbol_unified"),
        ("POST", ADD.format("binance"), {"symbol": "A/B", "x": 1}, 422, "x", "extra_forbidden"),
        ("POST", ADD.format("binance"), {}, 422, "symbol", "missing"),
        ("DELETE", DROP.format("kraken", "BTC/USD"), None, 404, "exchange", "unknown_exchange"),
        ("DELETE", DROP.format("binance", "SOL/USDT"), None, 404, "symbol", "not_in_universe"),
    ],
)
def test_universe_changes_are_refused_naming_why(
    api: RunningApi,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    status: int,
    field: str,
    rule: str,
) -> None:
    with api.client() as client:
        answer = client.request(method, path, json=body)
    assert answer.status_code == status, answer.text
    assert [(e["field"], e["rule"]) for e in answer.json()["errors"]] == [(field, rule)]
    assert universe_changes(api.store.engine) == []


def test_a_swap_is_refused_on_a_spot_only_venue(api: RunningApi) -> None:
    universe = Universe(
        exchanges={
            "coinbaseexchange": ExchangeUniverse(symbols=("BTC/USD",), start=date(2024, 1, 1))
        }
    )
    services = ApiServices(store=api.store, universe=universe)
    with serve_api(api.settings, services) as running, running.client() as client:
        swap = client.post("/v1/universe/coinbaseexchange/symbols", json={"symbol": "BTC/USD:USD"})
        spot = client.post("/v1/universe/coinbaseexchange/symbols", json={"symbol": "ETH/USD"})
    assert swap.status_code == 422
    assert [(e["field"], e["rule"]) for e in swap.json()["errors"]] == [("symbol", "market_type")]
    assert spot.status_code == 201, spot.text


def test_the_symbol_path_may_be_percent_encoded(api: RunningApi) -> None:
    with api.client() as client:
        assert client.put(PERP, json={}).status_code == 201
        encoded = client.get(httpx.URL("/v1/catalog/perps/binance/BTC%2FUSDT%3AUSDT"))
    assert encoded.status_code == 200, encoded.text
    assert encoded.json()["symbol"] == "BTC/USDT:USDT"
