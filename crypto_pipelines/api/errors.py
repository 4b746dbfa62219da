"""One error body for every refusal: ``{"detail": "...", "errors": [...]}``.

``errors`` (on 422) lists what was wrong, each ``{"index", "field", "rule", "message"}``:
``index`` the 0-based position of the bad row in the request's ``rows`` (None for a problem
of the request itself), ``field`` the column or body field, ``rule`` the model rule or
pydantic error type it broke. FastAPI's own request validation errors are turned into the
same shape, so a client parses one format.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException


class RowError(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "index": 3,
                    "field": None,
                    "rule": "high_ge_open_close",
                    "message": "row breaks high_ge_open_close",
                }
            ]
        }
    )

    index: int | None = None
    field: str | None = None
    rule: str
    message: str = ""


class ErrorBody(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": "1 of 500 rows are invalid; nothing was stored",
                    "errors": [
                        {
                            "index": 3,
                            "field": None,
                            "rule": "high_ge_open_close",
                            "message": "row breaks high_ge_open_close",
                        }
                    ],
                }
            ]
        }
    )

    detail: str
    errors: list[RowError] = []


Responses = dict[int | str, dict[str, Any]]
"""A route's documented answers besides its success (FastAPI's ``responses=``)."""


def refusals(**described: str) -> Responses:
    """The documented refusals of a keyed route: 401 and 429 (every such route), plus the
    given ones (``refusals(_422="bad rows")``: status codes as ``_NNN`` names)."""
    out: Responses = {
        401: {"model": ErrorBody, "description": "missing or unknown key"},
        429: {"model": ErrorBody, "description": "the key's request budget is spent (Retry-After)"},
    }
    for name, description in described.items():
        out[int(name.lstrip("_"))] = {"model": ErrorBody, "description": description}
    return dict(sorted(out.items(), key=lambda item: str(item[0])))


class ApiError(Exception):
    """A refusal with its status, reason (for the rejection metric) and errors."""

    def __init__(
        self,
        status_code: int,
        detail: str,
        *,
        reason: str,
        errors: list[RowError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.reason = reason
        self.errors = errors or []
        self.headers = headers


def error_response(
    status_code: int,
    detail: str,
    errors: list[RowError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail, "errors": [e.model_dump() for e in errors or []]}
    return JSONResponse(body, status_code=status_code, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        request.app.state.metrics.rejected(exc.reason)
        return error_response(exc.status_code, exc.detail, exc.errors, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == status.HTTP_400_BAD_REQUEST:  # FastAPI could not parse the body
            request.app.state.metrics.rejected("invalid")
            error = RowError(field="body", rule="json_invalid", message=str(exc.detail))
            return error_response(
                status.HTTP_422_UNPROCESSABLE_CONTENT, "body is not valid JSON", [error]
            )
        return error_response(exc.status_code, str(exc.detail), None, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        request.app.state.metrics.rejected("invalid")
        errors = []
        for err in exc.errors():
            loc = [str(part) for part in err.get("loc", ()) if part not in ("body", "query")]
            errors.append(
                RowError(field=".".join(loc) or None, rule=str(err.get("type")), message=err["msg"])
            )
        return error_response(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid request", errors)
