"""Routes: monitoring (``GET /health``, ``GET /v1/stats``, ``GET /metrics``) and the request
metrics every route is counted in.

``/health`` is the one route without a key: a load balancer or orchestrator probes it and
has none. It answers 503 ``degraded`` naming the failing part, so a probe can take the
instance out of rotation while the process still serves the reason. ``/metrics`` is
Prometheus' text format of the app's own registry; ``/v1/stats`` the same counters as JSON
plus what only the app knows (group commits, lineage events, uptime), for people and scripts.

Requests are counted by route TEMPLATE (``/v1/universe/{exchange}/symbols``), never the raw
path: raw paths would give every probed URL a time series of its own, an unbounded label set.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crypto_pipelines.api.auth import require_key
from crypto_pipelines.api.errors import refusals
from crypto_pipelines.api.metrics import ApiMetrics
from crypto_pipelines.api.services import ApiServices

router = APIRouter(tags=["monitoring"])

CHECK_TIMEOUT_S: Final = 5.0
"""A health check slower than this counts as failed: a probe must get an answer in time."""
UNMATCHED: Final = "<unmatched>"
"""The route label of requests no route matched (404s): one series for all of them."""
OK: Final = "ok"
NOT_CONFIGURED: Final = "not configured"
KEYED_ERRORS: Final = refusals()
METRICS_EXAMPLE: Final = """\
# HELP crypto_pipelines_api_requests_total HTTP requests answered, by route template, method and status code.
# TYPE crypto_pipelines_api_requests_total counter
crypto_pipelines_api_requests_total{method="POST",route="/v1/ohlcv",status="201"} 3.0
# HELP crypto_pipelines_api_rows_total Rows accepted by ingestion, by dataset and outcome (inserted, updated, unchanged).
# TYPE crypto_pipelines_api_rows_total counter
crypto_pipelines_api_rows_total{dataset="ohlcv",outcome="inserted"} 1498.0
crypto_pipelines_api_rows_total{dataset="ohlcv",outcome="updated"} 2.0
# HELP crypto_pipelines_api_rejections_total Requests refused, by reason (unauthorized, rate_limited, too_large, invalid, not_in_universe, ...).
# TYPE crypto_pipelines_api_rejections_total counter
crypto_pipelines_api_rejections_total{reason="invalid_rows"} 1.0
"""
"""An excerpt of ``/metrics`` (the request latency histogram and ``_created`` samples left
out), for the OpenAPI page."""


class Health(BaseModel):
    """``ok`` when every part works; else ``degraded`` and ``failing`` names the parts."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ok",
                    "checks": {"process": "ok", "database": "ok", "dagster": "not configured"},
                    "failing": [],
                },
                {
                    "status": "degraded",
                    "checks": {
                        "process": "ok",
                        "database": "no answer within 5 s",
                        "dagster": "ok",
                    },
                    "failing": ["database"],
                },
            ]
        }
    )

    status: Literal["ok", "degraded"]
    checks: dict[str, str] = Field(
        description="per part (process, database, dagster): 'ok', 'not configured' or the "
        "reason it failed"
    )
    failing: list[str] = Field(default_factory=list)


class GroupCommits(BaseModel):
    groups: int = Field(description="transactions committed by the group committer")
    jobs: int = Field(description="ingestion requests they carried")


class LineageStats(BaseModel):
    configured: bool
    reported_events: int = Field(description="materializations reported to Dagster")


class Stats(BaseModel):
    """What this worker process did since it started (each worker counts its own)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "uptime_s": 3600.125,
                    "rows": {
                        "ohlcv": {"inserted": 1498, "updated": 2},
                        "trades": {"inserted": 52311, "unchanged": 120},
                    },
                    "rejections": {"invalid_rows": 1, "unauthorized": 3},
                    "requests": 412,
                    "group_commit": {"groups": 118, "jobs": 160},
                    "lineage": {"configured": True, "reported_events": 24},
                }
            ]
        }
    )

    uptime_s: float
    rows: dict[str, dict[str, int]] = Field(
        description="rows ingested by dataset, then outcome (inserted, updated, unchanged)"
    )
    rejections: dict[str, int] = Field(description="requests refused, by reason")
    requests: int = Field(description="HTTP requests answered")
    group_commit: GroupCommits
    lineage: LineageStats


def route_template(scope: Scope) -> str:
    """The path template of the route the router handed ``scope`` to (it records it in the
    scope, also for a 405), else ``UNMATCHED``."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED


class RequestMetrics:
    """Pure ASGI middleware (no ``BaseHTTPMiddleware``: it would buffer streamed bodies and
    cost a task per request) counting each answered request and timing it."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response started is answered with 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = route_template(scope)
            self.metrics.requests.labels(
                route=route, method=scope["method"], status=str(status)
            ).inc()
            self.metrics.latency.labels(route=route).observe(time.perf_counter() - started)


@dataclass
class HealthChecks:
    """The app's health checks in flight. A check that outlives its timeout keeps its
    thread (a thread cannot be cancelled): the next probe waits on the same one instead of
    starting another, so probes every few seconds against a hung database cannot fill the
    thread pool that ingestion commits in."""

    timeout_s: float = CHECK_TIMEOUT_S
    running: dict[str, asyncio.Future[str | None]] = field(default_factory=dict)

    async def run(self, part: str, work: Callable[[], str | None]) -> str:
        """``work`` in a thread: ``ok``, or the reason it returned or raised, or that it
        took longer than ``timeout_s``."""
        future = self.running.get(part)
        if future is None or future.done():
            if future is not None and not future.cancelled():
                future.exception()  # retrieved: a late failure is not logged as unhandled
            future = self.running[part] = asyncio.ensure_future(asyncio.to_thread(work))
        try:
            reason = await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
        except TimeoutError:
            return f"no answer within {self.timeout_s:g} s"
        except Exception as exc:  # the failure is the answer
            return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        return OK if reason is None else reason


def install(app: FastAPI) -> None:
    """Middleware that counts requests and latencies into ``app.state.metrics``; the clock
    of ``uptime_s`` starts here, and the app's health checks are kept here."""
    app.state.started = time.monotonic()
    app.state.health_checks = HealthChecks()
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)


def _database(services: ApiServices) -> Callable[[], str | None]:
    def select_one() -> None:
        with services.store.engine.connect() as connection:
            connection.execute(text("SELECT 1")).scalar_one()

    return select_one


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "a part is failing (named in 'failing')"}},
    summary="Liveness and readiness (no key needed)",
)
async def health(request: Request) -> Any:
    """Whether this instance works: the process, the database (``SELECT 1``) and, when
    lineage is configured, Dagster. 200 ``ok`` when every part is ``ok`` or ``not
    configured``; 503 ``degraded`` naming the failing parts in ``failing`` and why in
    ``checks`` (a check slower than 5 s counts as failed). Needs no key."""
    services: ApiServices = request.app.state.services
    checks = {"process": OK}
    lineage = services.lineage
    runner: HealthChecks = request.app.state.health_checks
    database, dagster = await asyncio.gather(
        runner.run("database", _database(services)),
        runner.run("dagster", lineage.check) if lineage is not None else _not_configured(),
    )
    checks["database"] = database
    checks["dagster"] = dagster
    failing = [part for part, result in checks.items() if result not in (OK, NOT_CONFIGURED)]
    body = Health(status="degraded" if failing else "ok", checks=checks, failing=failing)
    return JSONResponse(body.model_dump(), status_code=503 if failing else 200)


async def _not_configured() -> str:
    return NOT_CONFIGURED


def _totals(metric: MetricWrapperBase) -> list[tuple[dict[str, str], float]]:
    """Each labelled child's running total (the ``_total`` samples, not ``_created``)."""
    return [
        (sample.labels, sample.value)
        for family in metric.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    ]


@router.get(
    "/v1/stats",
    response_model=Stats,
    responses=KEYED_ERRORS,
    summary="This worker's counters as JSON",
    dependencies=[Depends(require_key)],
)
async def stats(request: Request) -> Stats:
    """What this worker process did since it started, as JSON: rows ingested by dataset and
    outcome, refusals by reason, requests answered, group commits and lineage events (each
    worker counts its own). Refused only without a valid key (401) or when its request budget
    is spent (429)."""
    state = request.app.state
    metrics: ApiMetrics = state.metrics
    rows: dict[str, dict[str, int]] = {}
    for labels, value in _totals(metrics.rows):
        rows.setdefault(labels["dataset"], {})[labels["outcome"]] = int(value)
    rejections = {labels["reason"]: int(value) for labels, value in _totals(metrics.rejections)}
    requests = int(sum(value for _, value in _totals(metrics.requests)))
    lineage = state.lineage
    return Stats(
        uptime_s=round(time.monotonic() - state.started, 3),
        rows=rows,
        rejections=rejections,
        requests=requests,
        group_commit=GroupCommits(groups=state.committer.groups, jobs=state.committer.jobs),
        lineage=LineageStats(
            configured=lineage is not None,
            reported_events=lineage.reported_events if lineage is not None else 0,
        ),
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}, "example": METRICS_EXAMPLE}},
            "description": "Prometheus text exposition format",
        },
        **KEYED_ERRORS,
    },
    summary="Prometheus metrics of this worker",
    dependencies=[Depends(require_key)],
)
async def metrics(request: Request) -> Response:
    """This worker's Prometheus metrics in the text exposition format: requests by route
    template, method and status, their latencies, rows ingested and refusals by reason.
    Refused only without a valid key (401) or when its request budget is spent (429)."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
