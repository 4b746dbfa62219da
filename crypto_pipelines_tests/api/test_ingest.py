"""Ingestion over real HTTP: candles, trades and funding rates in JSON, NDJSON and CSV;
all or nothing per request with every bad row named; upserts counted; the universe enforced;
limits; provenance; group commit under concurrency. On SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa

from crypto_pipelines.api import ApiServices, ApiSettings
from crypto_pipelines.storage.schema import table_for
from crypto_pipelines_tests.api.conftest import DESK, OTHER, RunningApi, api_universe, serve_api

T0 = 1_704_067_200_000
M = 60_000


def candle_rows(n: int, start: int = T0, price: float = 100.0) -> list[list[Any]]:
    return [[start + i * M, price, price + 1, price - 1, price + 0.5, 2.0] for i in range(n)]


def candles(rows: list[list[Any]], **series: str) -> dict[str, Any]:
    return {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m", **series, "rows": rows}


def stored(api: RunningApi, dataset: str = "ohlcv") -> int:
    return api.store.count(dataset)


def test_candles_are_stored_counted_and_resent_safely(api: RunningApi) -> None:
    with api.client() as client:
        first = client.post("/v1/ohlcv", json=candles(candle_rows(3)))
        again = client.post("/v1/ohlcv", json=candles(candle_rows(3)))
        changed = candle_rows(4)
        changed[1][4] = 100.75
        mixed = client.post("/v1/ohlcv", json=candles(changed))
    assert first.status_code == 201, first.text
    assert first.json() == {"inserted": 3, "updated": 0, "unchanged": 0}
    assert again.json() == {"inserted": 0, "updated": 0, "unchanged": 3}
    assert mixed.json() == {"inserted": 1, "updated": 1, "unchanged": 2}
    frame = api.store.read("ohlcv", exchange="binance", symbol="BTC/USDT", timeframe="1m")
    assert frame["ts"].tolist() == [T0 + i * M for i in range(4)]
    assert frame["close"].tolist() == [100.5, 100.75, 100.5, 100.5]


def test_rows_record_the_key_that_sent_them(api: RunningApi) -> None:
    with api.client() as desk, api.client(OTHER) as other:
        assert desk.post("/v1/ohlcv", json=candles(candle_rows(2))).status_code == 201
        assert other.post("/v1/ohlcv", json=candles(candle_rows(3))).status_code == 201
    table = table_for("ohlcv")
    with api.store.engine.connect() as connection:
        rows = connection.execute(sa.select(table.c.ts, table.c.source).order_by(table.c.ts))
        sources = [source for _, source in rows]
    # unchanged rows keep the key that wrote them; the new one is the other key's
    assert sources == ["api:desk", "api:desk", "api:other"]


def test_one_bad_row_among_thousands_stores_nothing_and_is_named(api: RunningApi) -> None:
    rows = candle_rows(5_000)
    rows[4_321][2] = 50.0  # high below open and close
    with api.client() as client:
        answer = client.post("/v1/ohlcv", json=candles(rows))
    assert answer.status_code == 422
    body = answer.json()
    assert body["errors"] == [
        {
            "index": 4321,
            "field": None,
            "rule": "high_ge_open_close",
            "message": "row breaks high_ge_open_close",
        }
    ]
    assert "1 of 5000 rows are invalid; nothing was stored" == body["detail"]
    assert stored(api) == 0


def test_every_kind_of_bad_cell_is_named_by_index_field_and_rule(api: RunningApi) -> None:
    rows: list[Any] = candle_rows(8)
    rows[1][1] = "abc"  # not a number
    rows[2][0] = T0 + 0.5  # not an integer timestamp
    rows[3] = rows[3][:4]  # too short
    rows[4][1] = None  # open is required
    rows[5] = "row"  # not an array or object
    rows[6][5] = -1.0  # model rule on one column
    rows[7][1] = True  # a boolean is not a price
    with api.client() as client:
        answer = client.post("/v1/ohlcv", json=candles(rows))
    assert answer.status_code == 422
    found = {(e["index"], e["field"], e["rule"]) for e in answer.json()["errors"]}
    assert found >= {
        (1, "open", "number_type"),
        (2, "ts", "int_type"),
        (3, None, "row_length"),
        (4, "open", "required"),
        (5, None, "row_type"),
        (7, "open", "number_type"),
    }
    # the model's rules run once the cells are sound: alone, row 6 is refused by its rule
    with api.client() as client:
        answer = client.post("/v1/ohlcv", json=candles([candle_rows(1)[0][:5] + [-1.0]]))
    assert [(e["index"], e["field"], e["rule"]) for e in answer.json()["errors"]] == [
        (0, "volume", "volume_non_negative")
    ]
    assert stored(api) == 0


def test_a_repeated_key_in_one_request_is_refused(api: RunningApi) -> None:
    rows = candle_rows(3)
    rows[2][0] = rows[0][0]
    with api.client() as client:
        answer = client.post("/v1/ohlcv", json=candles(rows))
    assert answer.status_code == 422
    [error] = answer.json()["errors"]
    assert (error["index"], error["rule"], error["message"]) == (
        2,
        "unique_key",
        "same key as row 0",
    )


def test_trades_as_ndjson_and_csv_and_funding_rates_as_objects(api: RunningApi) -> None:
    ndjson = b'["1",1704067200000,"buy",42000.5,0.1]\n{"trade_id":2,"ts":1704067200001,"side":"sell","price":42000.0,"amount":0.2}\n'
    csv = b"ts,trade_id,side,price,amount\n1704067200002,3,buy,42001,0.3\n"
    query = {"exchange": "binance", "symbol": "BTC/USDT"}
    with api.client() as client:
        first = client.post(
            "/v1/trades",
            params=query,
            content=ndjson,
            headers={"content-type": "application/x-ndjson"},
        )
        second = client.post(
            "/v1/trades", params=query, content=csv, headers={"content-type": "text/csv"}
        )
        funding = client.post(
            "/v1/funding-rates",
            json={
                "exchange": "binance",
                "symbol": "BTC/USDT:USDT",
                "rows": [{"ts": T0, "rate": 0.0001}, {"ts": T0 + 8 * 3_600_000, "rate": -0.0002}],
            },
        )
    assert (first.status_code, second.status_code, funding.status_code) == (201, 201, 201)
    trades = api.store.read("trades", exchange="binance", symbol="BTC/USDT")
    assert trades["trade_id"].tolist() == ["1", "2", "3"]
    assert trades["side"].tolist() == ["buy", "sell", "buy"]
    assert api.store.read("funding_rates")["rate"].tolist() == [0.0001, -0.0002]


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        (
            "/v1/ohlcv",
            candles(candle_rows(1), exchange="kraken"),
            "exchange 'kraken' is not in the universe",
        ),
        (
            "/v1/ohlcv",
            candles(candle_rows(1), symbol="DOGE/USDT"),
            "symbol 'DOGE/USDT' is not in binance's universe",
        ),
        (
            "/v1/ohlcv",
            candles(candle_rows(1), timeframe="5m"),
            "timeframe '5m' is not collected on binance",
        ),
        (
            "/v1/funding-rates",
            {"exchange": "binance", "symbol": "BTC/USDT", "rows": [[T0, 0.0001]]},
            "funding_rates exist for swap markets only",
        ),
        (
            "/v1/trades",
            {"exchange": "okx", "symbol": "BTC/USDT", "rows": []},
            "trades is not enabled for okx",
        ),
    ],
)
def test_series_outside_the_universe_are_refused(
    api: RunningApi, path: str, body: dict[str, Any], says: str
) -> None:
    with api.client() as client:
        answer = client.post(path, json=body)
    assert answer.status_code == 422
    assert says in answer.json()["detail"]
    assert answer.json()["errors"][0]["rule"] == "not_in_universe"


def test_malformed_bodies_are_refused_with_a_reason(api: RunningApi) -> None:
    with api.client() as client:
        not_json = client.post(
            "/v1/ohlcv", content=b"{nope", headers={"content-type": "application/json"}
        )
        no_rows = client.post("/v1/ohlcv", json={"exchange": "binance"})
        missing = client.post("/v1/ohlcv", json={"exchange": "binance", "rows": []})
        xml = client.post("/v1/ohlcv", content=b"<a/>", headers={"content-type": "application/xml"})
        bad_csv = client.post(
            "/v1/trades",
            params={"exchange": "binance", "symbol": "BTC/USDT"},
            content=b"ts,colour\n1,red\n",
            headers={"content-type": "text/csv"},
        )
    assert not_json.status_code == 422 and "not valid JSON" in not_json.json()["detail"]
    assert no_rows.status_code == 422 and no_rows.json()["errors"][0]["field"] == "rows"
    assert missing.status_code == 422
    assert {e["field"] for e in missing.json()["errors"]} == {"symbol", "timeframe"}
    assert xml.status_code == 415
    assert bad_csv.status_code == 422 and "unknown column(s) ['colour']" in bad_csv.json()["detail"]


def test_bodies_over_the_size_or_row_limit_get_413(db_url: str) -> None:
    from crypto_pipelines.storage.store import MarketStore

    settings = ApiSettings(keys=(DESK,), max_body_bytes=20_000, max_rows=50)
    with MarketStore.open(db_url) as store:
        services = ApiServices(store=store, universe=api_universe())
        with serve_api(settings, services) as api, api.client() as client:
            many = client.post("/v1/ohlcv", json=candles(candle_rows(51)))
            large = client.post("/v1/ohlcv", json=candles(candle_rows(50), symbol="X" * 30_000))
            ok = client.post("/v1/ohlcv", json=candles(candle_rows(50)))
    assert (many.status_code, large.status_code, ok.status_code) == (413, 413, 201)
    assert "51 rows exceed the limit of 50" in many.json()["detail"]


def test_concurrent_requests_share_commits_and_all_land(api: RunningApi) -> None:
    def post(i: int) -> int:
        with api.client() as client:
            answer = client.post("/v1/ohlcv", json=candles(candle_rows(1, start=T0 + i * M)))
            return answer.status_code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(post, range(200)))
    assert codes == [201] * 200
    assert stored(api) == 200
    committer = api.app.state.committer  # type: ignore[attr-defined]
    assert committer.jobs == 200 and committer.groups < 200


def test_committed_spans_are_coalesced_for_lineage(api: RunningApi, lineage: Any) -> None:
    with api.client() as client:
        for i in range(5):
            client.post("/v1/ohlcv", json=candles(candle_rows(2, start=T0 + i * 2 * M)))
        client.post("/v1/ohlcv", json=candles(candle_rows(2)))  # unchanged: nothing to report
    api.app.state.lineage.flush()  # type: ignore[attr-defined]
    spans = lineage.spans  # one per flush interval (0.2 s here) at most, not one per request
    assert 1 <= len(spans) < 5
    assert sum(s.rows for s in spans) == 10
    assert (min(s.first_ts for s in spans), max(s.last_ts for s in spans)) == (T0, T0 + 9 * M)
    assert {(str(s.series), s.period, s.source) for s in spans} == {
        ("binance BTC/USDT ohlcv 1m", "2024-01-01", "api:desk")
    }


def test_cells_that_are_lists_or_objects_are_named_not_crashed_on(api: RunningApi) -> None:
    rows: list[Any] = candle_rows(3)
    rows[0][1] = [1, 2]
    rows[1][1] = [3, 4]
    rows[2][1] = {"price": 5}
    with api.client() as client:
        answer = client.post("/v1/ohlcv", json=candles(rows))
    assert answer.status_code == 422
    assert [(e["index"], e["field"], e["rule"]) for e in answer.json()["errors"]] == [
        (0, "open", "number_type"),
        (1, "open", "number_type"),
        (2, "open", "number_type"),
    ]


def test_trades_resent_are_counted_by_their_ids(api: RunningApi) -> None:
    rows = [[str(100 + i), T0 + i, "buy", 42000.0 + i, 0.1] for i in range(600)]  # > one IN chunk
    body = {"exchange": "binance", "symbol": "BTC/USDT", "rows": rows}
    with api.client() as client:
        first = client.post("/v1/trades", json=body)
        rows[599][3] = 1.0
        again = client.post("/v1/trades", json=body)
    assert first.json() == {"inserted": 600, "updated": 0, "unchanged": 0}
    assert again.json() == {"inserted": 0, "updated": 1, "unchanged": 599}
