"""A schemathesis run against the app's own OpenAPI schema, over real HTTP with a real key:
for every documented operation, generated requests (bounded examples, valid and invalid per
the schema) never get a 5xx, and every answer matches the status codes, content types,
headers and body schemas the schema declares."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from crypto_pipelines.api import ApiServices, ApiSettings
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.api.conftest import (
    DESK,
    OneRunStream,
    RecordingLineage,
    RunningApi,
    api_universe,
    serve_api,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = 10


@pytest.fixture
def full_api(db_url: str) -> Iterator[RunningApi]:
    """The API with every service present (a stream control double stands in for Dagster,
    which answers 503 when absent: a 5xx by design, documented, not a fault)."""
    with MarketStore.open(db_url) as store:
        services = ApiServices(
            store=store, universe=api_universe(), lineage=RecordingLineage(), stream=OneRunStream()
        )
        with serve_api(ApiSettings(keys=(DESK,)), services) as running:
            yield running


def test_generated_requests_get_no_5xx_and_documented_answers(full_api: RunningApi) -> None:
    api = full_api
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    headers = {"Authorization": f"Bearer {DESK.secret}"}
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in schemathesis.GenerationMode:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case: schemathesis.Case) -> None:
                case.call_and_validate(headers=headers, checks=CHECKS)

            try:
                run()
            except Unsatisfiable:
                # nothing invalid to send (an operation without parameters or body)
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
        tested.append(operation.label)
    assert "POST /v1/ohlcv" in tested


def _resolve(spec: dict[str, Any], node: Any, seen: frozenset[str] = frozenset()) -> Any:
    """``node`` with every ``$ref`` into the components replaced by its target."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref not in seen:
            target = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]
            return _resolve(spec, target, seen | {ref})
        return {k: _resolve(spec, v, seen) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(spec, v, seen) for v in node]
    return node


def test_every_route_is_described_with_an_example(api: RunningApi) -> None:
    """The OpenAPI page documents each operation: a description, and an example of its
    request body (when it takes one) and of its success answer."""
    spec = api.app.openapi()  # type: ignore[attr-defined]
    missing = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            label = f"{method.upper()} {path}"
            if not operation.get("description"):
                missing.append(f"{label}: description")
            body = operation.get("requestBody")
            if body is not None and '"example' not in json.dumps(_resolve(spec, body)):
                missing.append(f"{label}: request example")
            success = {c: r for c, r in operation["responses"].items() if c.startswith("2")}
            answer = json.dumps(_resolve(spec, success))
            if '"example' not in answer and "text/plain" not in answer:
                missing.append(f"{label}: answer example")
    assert missing == [], "\n".join(missing)
