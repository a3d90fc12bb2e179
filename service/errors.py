"""The service's errors, each with its HTTP status, and the one renderer of RFC 9457 problems.

ServiceError
├── ModelNotFound        404
├── InvalidFeatures      422  (one entry per bad field: field, value, allowed)
├── PayloadTooLarge      413
├── RequestTimeout       408  (a client paused while sending its body; service.limits)
├── NotAuthenticated     401  (with ``WWW-Authenticate: Bearer``)
├── Forbidden            403
├── AuditUnavailable     503  (a prediction whose audit record was not written fails)
├── InvalidHookRequest   400  (a CDS Hooks call that breaks the specification)
└── PrefetchMissing      412  (CDS Hooks prefetch the service needs was not sent)

Every error answer, whether raised by the service, by request validation or by routing (404,
405), goes through :func:`problem_response`; ``EXCEPTION_HANDLERS`` is the table handed to the
app. The renderer never fails: a value JSON cannot carry (an integer past 64 bits, NaN) is
rendered as a string.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable, Coroutine, Mapping
from http import HTTPStatus
from typing import Any

import orjson
import structlog
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "https://clinrisk.dev/problems/"

log = structlog.get_logger("clinrisk")


class ServiceError(Exception):
    status = 500
    title = "Internal error"
    headers: Mapping[str, str] = {}
    """Response headers every answer of this kind carries (e.g. ``WWW-Authenticate``)."""

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        if headers is not None:
            self.headers = {**self.headers, **headers}

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        """The problem body (JSON-safe), e.g. for one failed item inside a batch answer."""
        return problem_body(
            self.status, self.title, self.detail, instance=instance, errors=self.errors
        )


class ModelNotFound(ServiceError):
    status = 404
    title = "Model not found"


class InvalidFeatures(ServiceError):
    status = 422
    title = "Invalid input"


class PayloadTooLarge(ServiceError):
    status = 413
    title = "Payload too large"


class RequestTimeout(ServiceError):
    status = 408
    title = "Request timeout"


class NotAuthenticated(ServiceError):
    status = 401
    title = "Not authenticated"
    # RFC 9110 §11.6.1: a 401 names the scheme the client should use.
    headers: Mapping[str, str] = {"WWW-Authenticate": 'Bearer realm="clinrisk"'}


class Forbidden(ServiceError):
    status = 403
    title = "Forbidden"


class AuditUnavailable(ServiceError):
    status = 503
    title = "Audit store unavailable"


class InvalidHookRequest(ServiceError):
    status = 400
    title = "Invalid hook request"


class PrefetchMissing(ServiceError):
    status = 412
    title = "Prefetch missing"


# --- the renderer ---------------------------------------------------------------------------

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson serialises
_MAX_DEPTH = 16


def json_safe(value: Any, _depth: int = 0) -> Any:
    """``value`` with whatever orjson (or strict JSON) cannot carry turned into strings."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if _INT_MIN <= value <= _INT_MAX else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if _depth >= _MAX_DEPTH:
        return "…"
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, _depth + 1) for v in value]
    return str(value)


def _slug(title: str) -> str:
    return title.lower().replace(" ", "-")


def problem_body(
    status: int,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An RFC 9457 problem: type, title, status, detail, instance, errors (JSON-safe)."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + _slug(title),
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = [_problem_error(e) for e in errors]
    return body


def _problem_error(error: Mapping[str, Any]) -> dict[str, Any]:
    allowed = error.get("allowed")
    rendered: dict[str, Any] = {
        "field": str(error.get("field", "")),
        "message": str(error.get("message", "")),
        "value": json_safe(error.get("value")),
        "allowed": None if allowed is None else str(allowed),
    }
    if error.get("code") is not None:
        rendered["code"] = str(error["code"])
    return rendered


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The one way an error leaves the service: ``application/problem+json``."""
    body = problem_body(status, title, detail, instance=instance, errors=errors)
    try:
        content = orjson.dumps(body)
    except (TypeError, ValueError):  # NOTE: json_safe should make this unreachable; never 500
        body.pop("errors", None)
        content = orjson.dumps(body)
    return Response(content, status_code=status, media_type=PROBLEM_JSON, headers=headers)


# --- exception handlers, one table ------------------------------------------------------------


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return problem_response(
        exc.status,
        exc.title,
        exc.detail,
        instance=request.url.path,
        errors=exc.errors,
        headers=exc.headers,
    )


_SCALARS = (str, int, float, bool, type(None))


async def _request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "field": ".".join(str(p) for p in e["loc"] if p != "body") or "body",
            "message": e["msg"],
            # NOTE: only scalars are echoed: an object or array input is the caller's whole body.
            "value": e.get("input") if isinstance(e.get("input"), _SCALARS) else None,
            "allowed": None,
        }
        for e in exc.errors()
    ]
    return problem_response(
        422,
        "Invalid input",
        "The request does not match the API.",
        instance=request.url.path,
        errors=errors,
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    try:
        title = HTTPStatus(exc.status_code).phrase
    except ValueError:
        title = "HTTP error"
    detail = str(exc.detail)
    if exc.status_code == 405 and exc.headers and "Allow" in exc.headers:
        detail = f"{request.method} is not allowed here; allowed: {exc.headers['Allow']}."
    return problem_response(
        exc.status_code, title, detail, instance=request.url.path, headers=exc.headers
    )


def unexpected_error_response(exc: BaseException) -> Response:
    """Log where an unhandled error happened (never its message: it may carry request values)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in frames[-5:]]
    log.error("unhandled error", error_type=type(exc).__name__, frames=where)
    return problem_response(
        500, "Internal error", "An unexpected error occurred; it has been logged."
    )


async def _unexpected(_request: Request, exc: Exception) -> Response:
    return unexpected_error_response(exc)


ExceptionHandler = Callable[[Request, Any], Coroutine[Any, Any, Response]]

EXCEPTION_HANDLERS: dict[int | type[Exception], ExceptionHandler] = {
    ServiceError: _service_error,
    RequestValidationError: _request_validation,
    StarletteHTTPException: _http_error,
    Exception: _unexpected,
}
