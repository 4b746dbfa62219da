"""The stream routes on the real server, with a ``StreamControl`` written here standing in for
Dagster (an external service; ``crypto_pipelines_tests/defs/test_api_stream_control.py``
drives the real one through a real webserver): keys, validation against the universe,
409 and 503 mapped from the control's refusals, the answers' shape."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crypto_pipelines.api import ApiServices, ApiSettings
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.api.conftest import (
    DESK,
    STATS,
    OneRunStream,
    RunningApi,
    api_universe,
    serve_api,
)


@pytest.fixture
def stream(tmp_path: Path) -> Iterator[tuple[RunningApi, OneRunStream]]:
    control = OneRunStream()
    with MarketStore.open(f"sqlite:///{tmp_path / 'market.db'}") as store:
        services = ApiServices(store=store, universe=api_universe(), stream=control)
        with serve_api(ApiSettings(keys=(DESK,)), services) as api:
            yield api, control


def test_every_stream_route_needs_a_key(stream: tuple[RunningApi, OneRunStream]) -> None:
    api, control = stream
    with api.client(None) as client:
        for method, path in (("POST", "start"), ("POST", "stop"), ("GET", "status")):
            assert client.request(method, f"/v1/stream/{path}").status_code == 401
    assert control.runs == 0


def test_start_status_stop_and_the_conflicts(stream: tuple[RunningApi, OneRunStream]) -> None:
    api, control = stream
    with api.client() as client:
        assert client.get("/v1/stream/status").json() == {
            "running": False,
            "job": "market_stream",
            "run_id": None,
            "status": None,
            "started_at": None,
            "run_url": None,
            "statistics": None,
            "statistics_at": None,
        }
        assert client.post("/v1/stream/stop").status_code == 409
        started = client.post(
            "/v1/stream/start", json={"exchanges": ["okx"], "report_every_s": 5, "books": True}
        )
        assert started.status_code == 202, started.text
        assert started.json()["run_id"] == "run-1" and started.json()["running"] is True
        again = client.post("/v1/stream/start")
        assert again.status_code == 409
        assert again.json()["detail"] == "market_stream run run-1 is STARTED: stop it first"
        status = client.get("/v1/stream/status").json()
        assert status["statistics"] == STATS and status["status"] == "STARTED"
        stopped = client.post("/v1/stream/stop")
        assert stopped.status_code == 200 and stopped.json()["running"] is False
        conflict = client.post("/v1/stream/stop")
        assert conflict.status_code == 409
        assert conflict.json()["detail"] == "no market_stream run is active"
        assert client.post("/v1/stream/start", json={}).status_code == 202
        stats = client.get("/v1/stats").json()
    # only the fields given are passed on; no body and an empty one are "the job's defaults"
    assert control.configs == [{"exchanges": ["okx"], "report_every_s": 5.0, "books": True}, None]
    assert stats["rejections"]["stream_conflict"] == 3


def test_bad_overrides_are_refused_before_dagster_is_asked(
    stream: tuple[RunningApi, OneRunStream],
) -> None:
    api, control = stream
    with api.client() as client:
        unknown = client.post("/v1/stream/start", json={"exchanges": ["okx", "kraken"]})
        extra = client.post("/v1/stream/start", json={"symbols": ["BTC/USDT"]})
        timeframe = client.post("/v1/stream/start", json={"timeframes": ["1 minute"]})
        negative = client.post("/v1/stream/start", json={"report_every_s": -1})
    assert unknown.status_code == 422
    assert unknown.json()["detail"].startswith("exchanges not in the universe: kraken (")
    assert unknown.json()["errors"][0]["rule"] == "not_in_universe"
    for answer, field_name in (
        (extra, "symbols"),
        (timeframe, "timeframes.0"),
        (negative, "report_every_s"),
    ):
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"][0]["field"] == field_name
    assert control.runs == 0


def test_an_unreachable_dagster_answers_503_with_the_reason(
    stream: tuple[RunningApi, OneRunStream],
) -> None:
    api, control = stream
    control.down = True
    with api.client() as client:
        answers = [
            client.post("/v1/stream/start"),
            client.post("/v1/stream/stop"),
            client.get("/v1/stream/status"),
        ]
    for answer in answers:
        assert answer.status_code == 503
        assert answer.json()["detail"] == "Dagster at http://dagster: query failed: refused"


def test_without_stream_control_the_routes_answer_503(api: RunningApi) -> None:
    assert api.services.stream is None
    with api.client() as client:
        answer = client.get("/v1/stream/status")
    assert answer.status_code == 503
    assert "stream control is not configured" in answer.json()["detail"]


def test_the_openapi_documents_the_stream_answers(stream: tuple[RunningApi, OneRunStream]) -> None:
    api, _control = stream
    with api.client(None) as client:
        paths = client.get("/openapi.json").json()["paths"]
    start = paths["/v1/stream/start"]["post"]
    assert set(start["responses"]) >= {"202", "401", "409", "422", "429", "503"}
    assert start["requestBody"].get("required", False) is False
    assert set(paths["/v1/stream/stop"]["post"]["responses"]) >= {"200", "401", "409", "503"}
    assert set(paths["/v1/stream/status"]["get"]["responses"]) >= {"200", "401", "503"}
