"""Routes: stream control (``POST /v1/stream/start``, ``POST /v1/stream/stop``,
``GET /v1/stream/status``) through ``services.stream``.

The stream is a Dagster job run (``crypto_pipelines.defs.stream``), so starting it here is the
same as launching it from Dagster's UI: its run, logs and materializations are in Dagster. The
API only validates the request, checks the exchanges against the universe (the job would
silently skip an unknown one), and maps the control's refusals to statuses: 409 when a run is
already active on start or none is on stop, 503 when no control is configured or Dagster
cannot be reached. The control's calls block (HTTP to Dagster): they run in a worker thread.

``StreamUnavailable`` and ``StreamConflict`` belong to the ``StreamControl`` contract: an
implementation raises them, this module answers them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final

from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from crypto_pipelines.api.auth import require_key
from crypto_pipelines.api.errors import ApiError, ErrorBody, RowError, refusals
from crypto_pipelines.api.services import (
    ApiServices,
    StreamConflict,
    StreamControl,
    StreamUnavailable,
)

router = APIRouter(prefix="/v1/stream", tags=["stream"], dependencies=[Depends(require_key)])


ERRORS: Final = refusals(_503="stream control not configured, or Dagster unreachable")
TIMEFRAME: Final = r"^[1-9][0-9]{0,2}[smhdwM]$"

_RUN_ID: Final = "5f0c7a52-9d3e-4b8a-a1f6-0e2d9c4b7a31"
STATE_EXAMPLE: Final[dict[str, Any]] = {
    "running": True,
    "job": "market_stream",
    "run_id": _RUN_ID,
    "status": "STARTED",
    "started_at": 1704067200.512,
    "run_url": f"http://localhost:3000/runs/{_RUN_ID}",
    "statistics": {
        "uptime_s": 60.0,
        "messages": {"binance:trades": 1843, "binance:ohlcv_1m": 61},
        "rows_received": {"binance:trades": 2417, "binance:ohlcv_1m": 61},
        "rows_written": 2473,
        "rows_rejected": 0,
        "flushes": 120,
        "lag_ms_p50": 41.5,
        "lag_ms_p99": 212.8,
        "reconnects": {},
        "buffer_depth": 5,
        "errors": {},
    },
    "statistics_at": 1704067260.61,
}


class StreamStart(BaseModel):
    """Overrides of the stream job's run config (``StreamConfig`` of the op
    ``run_market_stream``); a field left out keeps the job's default."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"exchanges": ["binance"], "timeframes": ["1m"]}]},
    )

    exchanges: list[str] | None = Field(
        default=None, description="exchanges of the universe to stream (default: all)"
    )
    timeframes: list[Annotated[str, Field(pattern=TIMEFRAME)]] | None = Field(
        default=None, min_length=1, description="candle timeframes streamed (default: 1m)"
    )
    report_every_s: float | None = Field(
        default=None, ge=1, le=86_400, description="statistics and materializations this often"
    )
    stop_after_s: float | None = Field(
        default=None, ge=0, le=31_536_000, description="0: until stopped"
    )
    flush_ms: int | None = Field(default=None, ge=1, le=60_000)
    watchdog_s: float | None = Field(default=None, ge=1, le=3_600)
    books: bool | None = Field(default=None, description="order book snapshots too")
    book_depth: int | None = Field(default=None, ge=1, le=1_000)
    book_every_s: float | None = Field(default=None, ge=0.01, le=3_600)
    funding: bool | None = Field(
        default=None, description="perpetuals' funding channel, settlements stored as they pass"
    )


class StreamState(BaseModel):
    """The stream's run (the active one, else the latest) and its latest statistics."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [STATE_EXAMPLE, {"running": False, "job": "market_stream"}]}
    )

    running: bool = Field(description="a run is queued, starting, started or canceling")
    job: str = Field(description="the Dagster job of the stream")
    run_id: str | None = None
    status: str | None = Field(default=None, description="Dagster run status, e.g. STARTED")
    started_at: float | None = Field(default=None, description="epoch seconds")
    run_url: str | None = Field(default=None, description="the run in Dagster's UI")
    statistics: dict[str, Any] | None = Field(
        default=None, description="the stream's latest statistics (StreamStats.as_json)"
    )
    statistics_at: float | None = Field(default=None, description="epoch seconds")


def _control(request: Request) -> StreamControl:
    services: ApiServices = request.app.state.services
    if services.stream is None:
        raise ApiError(
            503,
            "stream control is not configured: this API has no Dagster to start the stream in",
            reason="stream_unavailable",
        )
    return services.stream


async def _call(work: Callable[[], Mapping[str, Any]]) -> StreamState:
    try:
        answer = await asyncio.to_thread(work)
    except StreamUnavailable as exc:
        raise ApiError(503, str(exc), reason="stream_unavailable") from None
    except StreamConflict as exc:
        raise ApiError(409, str(exc), reason="stream_conflict") from None
    return StreamState.model_validate(dict(answer))


def _check_exchanges(services: ApiServices, exchanges: list[str]) -> None:
    known = services.current_universe().exchanges
    unknown = [name for name in exchanges if name not in known]
    if unknown:
        detail = (
            f"exchanges not in the universe: {', '.join(unknown)} (configured: {', '.join(known)})"
        )
        raise ApiError(
            422,
            detail,
            reason="not_in_universe",
            errors=[RowError(field="exchanges", rule="not_in_universe", message=detail)],
        )


@router.post(
    "/start",
    response_model=StreamState,
    status_code=202,
    responses={
        **ERRORS,
        400: {"model": ErrorBody, "description": "the body is not JSON"},
        409: {"model": ErrorBody, "description": "a stream run is already active"},
        422: {"model": ErrorBody, "description": "invalid overrides or unknown exchange"},
    },
    summary="Start the stream (a run of its Dagster job)",
)
async def start(
    request: Request, body: Annotated[StreamStart | None, Body()] = None
) -> StreamState:
    """Launch a run of the stream's Dagster job (as Dagster's UI would), with the body's
    overrides of its run config (none: the job's defaults); 202 with the new run's state.

    Refused with 409 when a stream run is already active, 422 for invalid overrides or an
    exchange not in the universe (``not_in_universe``), 503 when this API has no stream
    control or Dagster cannot be reached."""
    control = _control(request)
    overrides = body.model_dump(exclude_none=True) if body is not None else {}
    if "exchanges" in overrides:
        _check_exchanges(request.app.state.services, overrides["exchanges"])
    return await _call(lambda: control.start(overrides or None))


@router.post(
    "/stop",
    response_model=StreamState,
    responses={**ERRORS, 409: {"model": ErrorBody, "description": "no stream run is active"}},
    summary="Stop the stream (terminate its run; it flushes what it received)",
)
async def stop(request: Request) -> StreamState:
    """Terminate the active stream run; the stream flushes what it received before it ends.
    The run's state as Dagster reports it after the request (typically ``CANCELING``).

    Refused with 409 when no stream run is active (or the active one is already stopping),
    503 when this API has no stream control or Dagster cannot be reached."""
    control = _control(request)
    return await _call(control.stop)


@router.get(
    "/status",
    response_model=StreamState,
    responses=ERRORS,
    summary="The stream's run state and latest statistics",
)
async def status(request: Request) -> StreamState:
    """The active stream run, else the latest one (``running`` false, no run id when it has
    never run), with the statistics its op logged last (``statistics_at``).

    Refused with 503 when this API has no stream control or Dagster cannot be reached."""
    control = _control(request)
    return await _call(control.status)
