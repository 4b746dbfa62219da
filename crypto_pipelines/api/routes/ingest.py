"""Routes: validated bulk ingestion (``POST /v1/ohlcv``, ``/v1/trades``, ``/v1/funding-rates``).

Per request, all or nothing: the body is read within the size limit (413), parsed by its
content type (JSON, NDJSON or CSV; 415 otherwise), the series checked against the universe
(file plus API changes; 422 ``not_in_universe``), every row checked (422 with each bad row's
``index``, ``field`` and ``rule``), then handed to the group committer, which validates with
the dataset's Pandera model and writes through the sink. 201 is answered only after the
commit; the committed span is queued for lineage (coalesced materializations).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Query, Request, status

from crypto_pipelines.api.auth import require_key
from crypto_pipelines.api.bodies import (
    MAX_ERRORS,
    Batch,
    BodyError,
    parse_csv,
    parse_json,
    parse_ndjson,
    row_columns,
)
from crypto_pipelines.api.committer import RowsRejected
from crypto_pipelines.api.errors import ApiError, RowError, refusals
from crypto_pipelines.api.models import IngestResult, body_model
from crypto_pipelines.api.services import ApiServices, IngestedSpan
from crypto_pipelines.api.settings import ApiKey, ApiSettings
from crypto_pipelines.domain.datasets import (
    FUNDING_RATES,
    OHLCV,
    TRADES,
    MarketDataset,
    get_market_dataset,
)

router = APIRouter(prefix="/v1", tags=["ingest"])

THREAD_BYTES: Final = 64 * 1024
"""JSON bodies larger than this are parsed in a worker thread, not on the event loop."""

ERRORS: Final = refusals(
    _413="body larger than the size or row limit",
    _415="unsupported content type",
    _422="bad rows (each named) or series not in the universe",
)


async def read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(
            413, f"body of {length} bytes exceeds the limit of {limit}", reason="too_large"
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"body exceeds the limit of {limit} bytes", reason="too_large")
    return bytes(body)


def _series_fields(spec: MarketDataset, batch: Batch) -> dict[str, str]:
    errors = []
    fields = {}
    for name in spec.series_columns:
        value = batch.series.get(name)
        if not isinstance(value, str) or not value.strip():
            errors.append(
                RowError(field=name, rule="missing", message=f"{name} (a string) is required")
            )
        else:
            fields[name] = value.strip()
    extra = [k for k in batch.series if k not in spec.series_columns]
    errors.extend(RowError(field=k, rule="extra_forbidden", message="unknown field") for k in extra)
    if errors:
        raise ApiError(422, "invalid request", reason="invalid", errors=errors)
    return fields


def check_in_universe(services: ApiServices, spec: MarketDataset, fields: dict[str, str]) -> None:
    """422 ``not_in_universe`` unless the exchange, symbol (and timeframe) are collected:
    in the universe file, added through the API or selected by the file's filters, and the
    dataset enabled there."""
    universe = services.current_universe()
    exchange, symbol = fields["exchange"], fields["symbol"]
    config = universe.exchanges.get(exchange)
    problem = None
    if config is None:
        problem = f"exchange {exchange!r} is not in the universe (configured: {', '.join(universe.exchanges)})"
    elif symbol not in config.symbols and symbol not in services.filter_selected(exchange):
        problem = f"symbol {symbol!r} is not in {exchange}'s universe (add it: POST /v1/universe/{exchange}/symbols)"
    elif not spec.has_market(symbol):
        kinds = " or ".join(sorted(spec.market_types))
        problem = f"{spec.name} exist for {kinds} markets only, not {symbol!r}"
    elif not config.enables(spec.universe_flag):
        problem = f"{spec.name} is not enabled for {exchange} in the universe ({spec.universe_flag}: false)"
    elif spec.per_timeframe and fields["timeframe"] not in config.timeframes:
        problem = f"timeframe {fields['timeframe']!r} is not collected on {exchange} (configured: {', '.join(config.timeframes)})"
    if problem is not None:
        raise ApiError(
            422,
            problem,
            reason="not_in_universe",
            errors=[RowError(rule="not_in_universe", message=problem)],
        )


async def ingest(
    request: Request,
    key: ApiKey,
    dataset: str,
    query: dict[str, str | None],
) -> IngestResult:
    spec = get_market_dataset(dataset)
    settings: ApiSettings = request.app.state.settings
    services: ApiServices = request.app.state.services
    body = await read_body(request, settings.max_body_bytes)
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    given = {k: v for k, v in query.items() if v is not None}
    try:
        if kind in ("application/json", ""):
            # orjson takes ~1 ms per 1,000 candles: a large body is parsed off the event loop
            big = len(body) > THREAD_BYTES
            batch = await asyncio.to_thread(parse_json, body) if big else parse_json(body)
        elif kind in ("application/x-ndjson", "application/ndjson", "application/jsonl"):
            batch = await asyncio.to_thread(parse_ndjson, body, given)
        elif kind in ("text/csv", "application/csv"):
            batch = await asyncio.to_thread(parse_csv, body, given, row_columns(spec))
        else:
            raise ApiError(
                415,
                f"content type {kind!r}: send application/json, application/x-ndjson or text/csv",
                reason="unsupported_media_type",
            )
    except BodyError as exc:
        raise ApiError(422, exc.detail, reason="invalid", errors=exc.errors) from None
    fields = _series_fields(spec, batch)
    if len(batch.rows) > settings.max_rows:
        raise ApiError(
            413,
            f"{len(batch.rows)} rows exceed the limit of {settings.max_rows} per request",
            reason="too_large",
        )
    check_in_universe(services, spec, fields)
    if not batch.rows:
        return IngestResult(inserted=0, updated=0, unchanged=0)
    try:
        done = await request.app.state.committer.submit(dataset, batch.rows, fields, key.source)
    except RowsRejected as exc:
        raise _rows_rejected(exc.errors, len(batch.rows)) from None
    result = IngestResult(inserted=done.inserted, updated=done.updated, unchanged=done.unchanged)
    request.app.state.metrics.ingested(dataset, result.inserted, result.updated, result.unchanged)
    lineage = request.app.state.lineage
    if lineage is not None:
        series = spec.series(fields["exchange"], fields["symbol"], fields.get("timeframe"))
        for change in done.periods:
            lineage.add(
                IngestedSpan(
                    series, change.period, change.first_ts, change.last_ts, change.rows, key.source
                )
            )
    return result


def _rows_rejected(errors: list[RowError], total: int) -> ApiError:
    bad = len({e.index for e in errors})
    return ApiError(
        422,
        f"{bad} of {total} rows are invalid; nothing was stored",
        reason="invalid_rows",
        errors=errors[:MAX_ERRORS],
    )


def _route(dataset: str, path: str, summary: str) -> None:
    spec = get_market_dataset(dataset)
    model = body_model(spec)
    schema = model.model_json_schema()
    csv_header = ",".join(row_columns(spec))
    openapi_extra = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema},
                "application/x-ndjson": {
                    "schema": {
                        "type": "string",
                        "description": "one row per line (array or object); series in the query",
                    }
                },
                "text/csv": {
                    "schema": {
                        "type": "string",
                        "description": f"header `{csv_header}`; series in the query",
                    }
                },
            },
        }
    }

    async def endpoint(
        request: Request,
        key: Annotated[ApiKey, Depends(require_key)],
        exchange: Annotated[str | None, Query(description="NDJSON/CSV: the rows' exchange")] = None,
        symbol: Annotated[str | None, Query(description="NDJSON/CSV: the rows' symbol")] = None,
        timeframe: Annotated[
            str | None, Query(description="NDJSON/CSV candles: the timeframe")
        ] = None,
    ) -> IngestResult:
        query = {"exchange": exchange, "symbol": symbol}
        if spec.per_timeframe:
            query["timeframe"] = timeframe
        return await ingest(request, key, dataset, query)

    endpoint.__name__ = f"post_{dataset}"
    router.add_api_route(
        path,
        endpoint,
        methods=["POST"],
        status_code=status.HTTP_201_CREATED,
        response_model=IngestResult,
        responses=ERRORS,
        summary=summary,
        description=(
            f"{summary}. A row is `{list(row_columns(spec))}`. All or nothing per request; "
            "re-sending is safe (upsert by key). Answered after the commit."
        ),
        openapi_extra=openapi_extra,
    )


_route(OHLCV, "/ohlcv", "Ingest candles")
_route(TRADES, "/trades", "Ingest trades")
_route(FUNDING_RATES, "/funding-rates", "Ingest funding rates")
