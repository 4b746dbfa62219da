"""Monitoring on the real server: ``/health`` without a key (ok, or 503 naming a part that
really fails: a database nobody listens on, a Dagster instance whose storage cannot be
opened), ``/v1/stats`` and ``/metrics`` with a key, counting what the requests before them
really did, requests counted by route template."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from crypto_pipelines.api import ApiServices, ApiSettings
from crypto_pipelines.defs.api_services import DagsterLineage
from crypto_pipelines.storage.engine import make_engine
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.api.conftest import (
    RecordingLineage,
    RunningApi,
    api_universe,
    free_port,
    serve_api,
)

T0 = 1_704_067_200_000
CANDLES = {
    "exchange": "binance",
    "symbol": "BTC/USDT",
    "timeframe": "1m",
    "rows": [
        [T0, 42000.0, 42010.0, 41990.0, 42005.0, 1.5],
        [T0 + 60_000, 42005.0, 42020.0, 42000.0, 42015.0, 2.0],
    ],
}


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples called ``name`` in a Prometheus text page, by their sorted labels."""
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def labels(**given: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(given.items()))


@pytest.fixture
def store_path(tmp_path: Path) -> Iterator[MarketStore]:
    with MarketStore.open(f"sqlite:///{tmp_path / 'market.db'}") as store:
        yield store


def test_health_needs_no_key_and_checks_every_part(api: RunningApi) -> None:
    with api.client(None) as client:
        answer = client.get("/health")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "status": "ok",
        "checks": {"process": "ok", "database": "ok", "dagster": "ok"},
        "failing": [],
    }


def test_health_says_when_dagster_is_not_configured(store_path: MarketStore) -> None:
    services = ApiServices(store=store_path, universe=api_universe())
    with serve_api(ApiSettings(insecure_dev=True), services) as api, api.client(None) as client:
        answer = client.get("/health")
    assert answer.status_code == 200
    assert answer.json()["checks"]["dagster"] == "not configured"


def test_health_is_degraded_naming_an_unreachable_database(tmp_path: Path) -> None:
    # a PostgreSQL URL on a port nobody listens on: every connection is refused
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere")
    store = MarketStore(engine, migrate=False)
    services = ApiServices(store=store, universe=api_universe(), lineage=RecordingLineage())
    try:
        with serve_api(ApiSettings(insecure_dev=True), services) as api, api.client(None) as c:
            answer = c.get("/health")
    finally:
        engine.dispose()
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "degraded" and body["failing"] == ["database"]
    assert body["checks"]["dagster"] == "ok" and body["checks"]["process"] == "ok"
    assert "OperationalError" in body["checks"]["database"]


def test_health_uses_the_real_dagster_instance(store_path: MarketStore, tmp_path: Path) -> None:
    """Healthy with a usable instance; degraded, naming Dagster, when its storage folder is
    a file (the instance cannot be opened)."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "dagster.yaml").write_text(
        f"storage:\n  sqlite:\n    base_dir: {blocked / 'storage'}\n"
    )
    with dg.instance_for_test() as instance:
        good = DagsterLineage(api_universe(), instance=lambda: instance)
        bad = DagsterLineage(
            api_universe(),
            instance=lambda: dg.DagsterInstance.from_config(str(tmp_path / "home")),
        )
        answers = []
        for lineage in (good, bad):
            services = ApiServices(store=store_path, universe=api_universe(), lineage=lineage)
            with serve_api(ApiSettings(insecure_dev=True), services) as api:
                answers.append(httpx.get(f"{api.url}/health", timeout=30))
    assert answers[0].status_code == 200 and answers[0].json()["checks"]["dagster"] == "ok"
    assert answers[1].status_code == 503
    assert answers[1].json()["failing"] == ["dagster"]
    assert "Dagster instance unusable" in answers[1].json()["checks"]["dagster"]


class SilentDatabase:
    """A TCP server that accepts connections and never answers, as a hung PostgreSQL does
    (the client's connect waits for its reply); counts the connections; ``release`` closes
    them all and every later one at once."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.released = threading.Event()
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.accepted += 1
            if self.released.is_set():
                connection.close()
            else:
                self.held.append(connection)

    def release(self) -> None:
        self.released.set()
        for connection in self.held:
            connection.close()

    def close(self) -> None:
        self.release()
        self.listener.close()


def test_a_hung_check_is_waited_on_not_started_again() -> None:
    silent = SilentDatabase()
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{silent.port}/hung")
    services = ApiServices(store=MarketStore(engine, migrate=False), universe=api_universe())
    try:
        with serve_api(ApiSettings(insecure_dev=True), services) as api, api.client(None) as c:
            api.app.state.health_checks.timeout_s = 0.3  # type: ignore[attr-defined]
            first, second = c.get("/health"), c.get("/health")
            hung = silent.accepted
            silent.release()  # the hung connect fails now, its thread ends
            time.sleep(0.2)
            third = c.get("/health")
    finally:
        silent.close()
        engine.dispose()
    for answer in (first, second):
        assert answer.status_code == 503
        assert answer.json()["checks"]["database"] == "no answer within 0.3 s"
    assert hung == 1  # the second probe waited on the first one's connection
    assert third.status_code == 503
    assert third.json()["checks"]["database"].startswith("OperationalError")
    assert silent.accepted == 2


def test_stats_and_metrics_need_a_key(api: RunningApi) -> None:
    with api.client(None) as anonymous:
        for path in ("/v1/stats", "/metrics"):
            answer = anonymous.get(path)
            assert answer.status_code == 401, path
            assert answer.headers["www-authenticate"] == "Bearer"


def test_stats_count_what_the_requests_did(api: RunningApi, lineage: RecordingLineage) -> None:
    with api.client() as client:
        assert client.post("/v1/ohlcv", json=CANDLES).status_code == 201
        assert client.post("/v1/ohlcv", json=CANDLES).status_code == 201  # unchanged now
        changed = {**CANDLES, "rows": [[T0, 42000.0, 42010.0, 41990.0, 42006.0, 1.5]]}
        assert client.post("/v1/ohlcv", json=changed).status_code == 201
        outside = {**CANDLES, "symbol": "DOGE/USDT"}
        assert client.post("/v1/ohlcv", json=outside).status_code == 422
        # the lineage coalescer reports every 0.2 s (api_settings)
        deadline = time.monotonic() + 10
        while not lineage.spans and time.monotonic() < deadline:
            time.sleep(0.05)
        first = client.get("/v1/stats")
        time.sleep(0.05)
        second = client.get("/v1/stats")
    assert first.status_code == 200, first.text
    stats = first.json()
    assert stats["rows"] == {"ohlcv": {"inserted": 2, "unchanged": 2, "updated": 1}}
    assert stats["rejections"] == {"not_in_universe": 1}
    assert stats["group_commit"]["jobs"] == 3
    assert 1 <= stats["group_commit"]["groups"] <= 3
    assert stats["lineage"] == {"configured": True, "reported_events": len(lineage.spans)}
    assert len(lineage.spans) >= 1
    assert stats["requests"] == 4  # answered before this one
    assert 0 < stats["uptime_s"] < second.json()["uptime_s"]


def test_metrics_count_requests_by_route_template(api: RunningApi) -> None:
    with api.client() as client:
        assert client.post("/v1/ohlcv", json=CANDLES).status_code == 201
        assert client.get("/v1/no/such/route").status_code == 404
        assert client.delete("/health").status_code == 405
        with api.client(None) as anonymous:
            assert anonymous.get("/health").status_code == 200
            assert anonymous.get("/metrics").status_code == 401
        page = client.get("/metrics")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain")
    text = page.text
    requests = samples(text, "crypto_pipelines_api_requests_total")
    assert requests == {
        labels(route="/v1/ohlcv", method="POST", status="201"): 1,
        labels(route="<unmatched>", method="GET", status="404"): 1,
        labels(route="/health", method="DELETE", status="405"): 1,
        labels(route="/health", method="GET", status="200"): 1,
        labels(route="/metrics", method="GET", status="401"): 1,
    }
    latency = samples(text, "crypto_pipelines_api_request_seconds_count")
    assert latency[labels(route="/v1/ohlcv")] == 1 and latency[labels(route="/health")] == 2
    rows = samples(text, "crypto_pipelines_api_rows_total")
    assert rows == {labels(dataset="ohlcv", outcome="inserted"): 2}


def test_the_openapi_documents_the_monitoring_answers(api: RunningApi) -> None:
    with api.client(None) as client:
        paths = client.get("/openapi.json").json()["paths"]
    health = paths["/health"]["get"]["responses"]
    assert set(health) >= {"200", "503"} and "401" not in health
    for path in ("/v1/stats", "/metrics"):
        assert set(paths[path]["get"]["responses"]) >= {"200", "401", "429"}, path
    assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]
