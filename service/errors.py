"""The service's errors, each with its HTTP status, rendered as RFC 9457 problem+json.

ServiceError
├── ModelNotFound        404
├── InvalidFeatures      422  (one entry per bad field: field, value, allowed)
├── PayloadTooLarge      413
├── NotAuthenticated     401
├── Forbidden            403
├── AuditUnavailable     503  (a prediction whose audit record was not written fails)
├── InvalidHookRequest   400  (a CDS Hooks call that breaks the specification)
└── PrefetchMissing      412  (CDS Hooks prefetch the service needs was not sent)
"""

from __future__ import annotations

from typing import Any

PROBLEM_JSON = "application/problem+json"


class ServiceError(Exception):
    status = 500
    title = "Internal error"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://clinrisk.dev/problems/{self.title.lower().replace(' ', '-')}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
        return body


class ModelNotFound(ServiceError):
    status = 404
    title = "Model not found"


class InvalidFeatures(ServiceError):
    status = 422
    title = "Invalid input"


class PayloadTooLarge(ServiceError):
    status = 413
    title = "Payload too large"


class NotAuthenticated(ServiceError):
    status = 401
    title = "Not authenticated"


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
