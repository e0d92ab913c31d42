"""How the HTTP API fails: RFC 9457 problem details
(``application/problem+json``: type, title, status, detail) for every
error, whatever raised it."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.types import ExceptionHandlersMap
from redis.exceptions import RedisError

from adapters.api_models import Problem
from adapters.api_queries import InvalidInput, NotFound
from adapters.history_db import HistoryUnavailable
from processor.redis_io import describe

log = logging.getLogger("api")

PROBLEM_JSON = "application/problem+json"


# --- problem details ---------------------------------------------------------


def problem(
    status: int, detail: str, title: str, headers: dict[str, str] | None = None
) -> Response[Problem]:
    return Response(
        Problem(title=title, status=status, detail=detail),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _validation_detail(exc: ValidationException) -> str:
    """Litestar's "Validation failed for ..." with what exactly failed."""
    extra = exc.extra if isinstance(exc.extra, list) else [exc.extra] if exc.extra else []
    parts = []
    for item in extra:
        if not isinstance(item, dict):
            continue
        source = str(getattr(item.get("source"), "value", item.get("source") or ""))
        key = item.get("key")
        kind = "field" if source == "body" else "parameter"
        where = f"{source} {kind} {key!r}" if key else source
        parts.append(f"{where}: {item.get('message', 'invalid')}" if where else item["message"])
    return "; ".join(parts) or exc.detail


def _on_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    if isinstance(exc, ValidationException):
        return problem(exc.status_code, _validation_detail(exc), "Invalid request")
    title = "Invalid request" if exc.status_code == 400 else _TITLES.get(exc.status_code, "Error")
    detail = exc.detail if exc.detail and exc.detail != title else f"{title}: {request.url.path}"
    return problem(exc.status_code, detail, title, exc.headers)


def _on_not_found(request: Request[Any, Any, Any], exc: NotFound) -> Response[Problem]:
    return problem(404, str(exc), "Not Found")


def _on_invalid(request: Request[Any, Any, Any], exc: InvalidInput) -> Response[Problem]:
    return problem(400, str(exc), "Invalid request")


def _on_redis_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    log.warning("redis unavailable for %s %s: %s", request.method, request.url.path, describe(exc))
    return problem(503, "Redis is unavailable; try again", "Service Unavailable")


def _on_history_unavailable(
    request: Request[Any, Any, Any], exc: HistoryUnavailable
) -> Response[Problem]:
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return problem(503, str(exc), "Service Unavailable")


def _on_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    log.exception("%s %s failed", request.method, request.url.path)
    return problem(500, "the server failed to handle the request", "Internal Server Error")


_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 413: "Content Too Large",
           415: "Unsupported Media Type", 429: "Too Many Requests",
           500: "Internal Server Error",
           503: "Service Unavailable"}  # fmt: skip


def problem_spec(description: str) -> ResponseSpec:
    return ResponseSpec(Problem, description=description, media_type=PROBLEM_JSON)


# Every /v1 route may answer 401 and 429, when a token is configured.
UNAUTHORIZED = {
    401: problem_spec("no valid bearer token (when OCPP_API_TOKEN is set)"),
    429: problem_spec("too many refused logins from this address: try again after Retry-After"),
}
INVALID = {400: problem_spec("invalid input: bad path or query parameter or body")}
NOT_FOUND = {404: problem_spec("no such resource"), **UNAUTHORIZED}
INVALID_OR_NOT_FOUND = {**INVALID, **NOT_FOUND}
UNAVAILABLE = {503: problem_spec("history unavailable: DATABASE_URL not set, or PostgreSQL down")}


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    HTTPException: _on_http_exception,
    NotFound: _on_not_found,
    InvalidInput: _on_invalid,
    HistoryUnavailable: _on_history_unavailable,
    RedisError: _on_redis_error,
    Exception: _on_error,
}
