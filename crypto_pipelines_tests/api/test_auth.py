"""Keys: every route but /health refuses a request without a key or with a wrong one; each
key's budget answers 429 with Retry-After; the service refuses to start without keys."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from crypto_pipelines.api import ApiConfigError, ApiServices, ApiSettings
from crypto_pipelines.api.auth import RequestBudget, match_key
from crypto_pipelines.api.settings import KEYS_ENV, KEYS_FILE_ENV, load_keys, parse_key
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.api.conftest import DESK, OTHER, RunningApi, api_universe, serve_api

OPEN_PATHS = {"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


def _routes(api: RunningApi) -> list[tuple[str, str]]:
    """Every documented route (method, path with each parameter as ``x``) but the open ones."""
    routes = []
    for path, operations in api.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        if path not in OPEN_PATHS:
            routes.extend(
                (method.upper(), re.sub(r"\{[^}]+\}", "x", path)) for method in operations
            )
    return routes


def test_every_route_but_health_needs_a_valid_key(api: RunningApi) -> None:
    routes = _routes(api)
    assert ("POST", "/v1/ohlcv") in routes and len(routes) >= 3
    with api.client(None) as anonymous, api.client(None) as wrong:
        wrong.headers["Authorization"] = "Bearer " + "not-a-key-0123456789"
        for method, path in routes:
            for client in (anonymous, wrong):
                answer = client.request(method, path)
                assert answer.status_code == 401, (method, path, answer.text)
                assert answer.headers["www-authenticate"] == "Bearer"


def test_a_spent_budget_answers_429_with_retry_after(db_url: str) -> None:
    settings = ApiSettings(keys=(DESK, OTHER), rate_per_s=0.5, burst=2)
    with MarketStore.open(db_url) as store:
        services = ApiServices(store=store, universe=api_universe())
        with serve_api(settings, services) as api, api.client() as desk, api.client(OTHER) as other:
            body = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m", "rows": []}
            codes = [desk.post("/v1/ohlcv", json=body).status_code for _ in range(3)]
            refused = desk.post("/v1/ohlcv", json=body)
            other_key = other.post("/v1/ohlcv", json=body)
    assert codes == [201, 201, 429]
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert other_key.status_code == 201  # budgets are per key


def test_the_budget_refills_at_its_rate() -> None:
    budget = RequestBudget(rate=10, burst=1)
    assert budget.take("k", now=0.0) == 0
    assert budget.take("k", now=0.05) == pytest.approx(0.05)
    assert budget.take("k", now=0.1) == 0


def test_keys_are_matched_whole_and_named() -> None:
    keys = (parse_key("desk:" + "a" * 20, "test"), parse_key("b" * 20, "test"))
    assert match_key(keys, "a" * 20) == keys[0]
    assert match_key(keys, "a" * 19) is None and match_key(keys, "") is None
    assert keys[1].name.startswith("key-") and "b" * 20 not in keys[1].name
    assert keys[0].source == "api:desk"


def test_bad_key_configuration_is_named(tmp_path: Path) -> None:
    with pytest.raises(ApiConfigError, match="no API key configured"):
        ApiSettings.from_env({})
    with pytest.raises(
        ApiConfigError, match=rf"{KEYS_ENV} \(key 1\): the secret of key 'x' is shorter"
    ):
        load_keys({KEYS_ENV: "x:short"})
    keys_file = tmp_path / "keys"
    keys_file.write_text("# desk keys\ndesk:" + "s" * 16 + "\nbad name:" + "t" * 16 + "\n")
    with pytest.raises(
        ApiConfigError, match=rf"{re.escape(str(keys_file))}:3: key name 'bad name'"
    ):
        load_keys({KEYS_FILE_ENV: str(keys_file)})
    with pytest.raises(ApiConfigError, match="used more than once: desk"):
        load_keys({KEYS_ENV: f"desk:{'s' * 16},desk:{'t' * 16}"})
    assert ApiSettings.from_env({}, insecure_dev=True).keys == ()


def test_the_server_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in (KEYS_ENV, KEYS_FILE_ENV)}
    done = _start_server(env, tmp_path)
    assert done.returncode == 2
    assert "no API key configured" in done.stderr and "--insecure-dev" in done.stderr


def test_the_server_names_an_unusable_database(tmp_path: Path) -> None:
    env = {
        **os.environ,
        KEYS_ENV: "desk:" + "s" * 20,
        "CRYPTO_PIPELINES_DB_URL": "postgresql+psycopg://bob:hunter2@127.0.0.1:1/nowhere",
    }
    done = _start_server(env, tmp_path)
    assert done.returncode == 2
    assert "cannot open the market database" in done.stderr
    assert "$CRYPTO_PIPELINES_DB_URL" in done.stderr and "hunter2" not in done.stderr


def _start_server(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``crypto-pipelines api`` as a user starts it (it must refuse: port 1 is never bound)."""
    return subprocess.run(
        [sys.executable, "-m", "crypto_pipelines.cli", "api", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )
