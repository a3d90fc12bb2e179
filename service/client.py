"""A typed Python client for the clinrisk HTTP API, sync and async, on httpx.

    with ClinriskClient("https://clinrisk.example", api_key=key) as client:
        result = client.predict("diabetes", {"age_years": 57, ...})
        result.probability, result.tier.name, result.explanation.contributions

It takes and returns the service's own schemas (``service.api.schemas``, pydantic only: importing
this module loads no numpy, pandas or web framework). A non-2xx reply raises a
:class:`ClinriskError` carrying the RFC 9457 problem details::

    ClinriskError                 status, title, detail, errors (field, message, value, allowed)
    ├── AuthenticationError       401
    ├── PermissionDeniedError     403
    ├── ModelNotFoundError        404
    ├── PayloadTooLargeError      413
    ├── InvalidInputError         422
    ├── ServiceUnavailableError   503 (after retries)
    └── ClinriskConnectionError   the service could not be reached (after retries)

Only failures that cannot have scored anything are retried, with exponential backoff: connection
errors (no request was sent) and 503 (the service refused before scoring). A 4xx is never
retried, and neither is a read timeout: the request may have been scored and audited already.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import httpx
import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from service.api.schemas import (
    BatchPredictResponse,
    ModelDetail,
    ModelSummary,
    PredictRequest,
    PredictResponse,
    Problem,
    ProblemError,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "AsyncClinriskClient",
    "AuthenticationError",
    "ClinriskClient",
    "ClinriskConnectionError",
    "ClinriskError",
    "InvalidInputError",
    "ModelNotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "ServiceUnavailableError",
]

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
"""Connect within 5 s; a batch of a thousand patients comes back well within 30 s."""
RETRY_STATUSES = frozenset({503})
RETRY_EXCEPTIONS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

T = TypeVar("T", bound=BaseModel)
HttpClient = TypeVar("HttpClient", httpx.Client, httpx.AsyncClient)
_SUMMARIES = TypeAdapter(list[ModelSummary])


class ClinriskError(Exception):
    """A request failed; the attributes are the service's problem details."""

    def __init__(
        self,
        status: int | None,
        title: str,
        detail: str,
        *,
        errors: Sequence[ProblemError] = (),
        type_: str | None = None,
        instance: str | None = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = list(errors)
        self.type = type_
        self.instance = instance
        where = f"{status} " if status is not None else ""
        super().__init__(f"{where}{title}: {detail}")


class AuthenticationError(ClinriskError):
    """401: no API key, or one the service does not know."""


class PermissionDeniedError(ClinriskError):
    """403: the key lacks the scope the endpoint needs."""


class ModelNotFoundError(ClinriskError):
    """404: no such model or version."""


class PayloadTooLargeError(ClinriskError):
    """413: the body is larger than the service accepts."""


class InvalidInputError(ClinriskError):
    """422: the request or the patient's features do not match the model; see ``errors``."""


class ServiceUnavailableError(ClinriskError):
    """503: the model or the audit store is not ready (after retries)."""


class ClinriskConnectionError(ClinriskError):
    """The service could not be reached (after retries)."""


_BY_STATUS: dict[int, type[ClinriskError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: ModelNotFoundError,
    413: PayloadTooLargeError,
    422: InvalidInputError,
    503: ServiceUnavailableError,
}


def error_from_response(response: httpx.Response) -> ClinriskError:
    """The typed exception for a non-2xx reply, with its problem details when it sent some."""
    cls = _BY_STATUS.get(response.status_code, ClinriskError)
    try:
        problem = Problem.model_validate_json(response.content)
    except ValidationError:
        text = response.text[:500] or response.reason_phrase
        return cls(response.status_code, response.reason_phrase or "HTTP error", text)
    return cls(
        problem.status,
        problem.title,
        problem.detail,
        errors=problem.errors,
        type_=problem.type,
        instance=problem.instance,
    )


def _parse(model: type[T], response: httpx.Response) -> T:
    if response.is_success:
        return model.model_validate_json(response.content)
    raise error_from_response(response)


def _item(item: PredictRequest | Mapping[str, Any]) -> Any:
    if isinstance(item, PredictRequest):
        return item.model_dump(exclude_none=True)
    return item


def _path(name: str, version: str | None, suffix: str = "") -> str:
    base = f"/v1/models/{name}" if version is None else f"/v1/models/{name}/versions/{version}"
    return base + suffix


def _predict_body(
    features: Mapping[str, Any], patient_id: str | None, top_k: int | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"features": dict(features)}
    if patient_id is not None:
        body["patient_id"] = patient_id
    if top_k is not None:
        body["top_k"] = top_k
    return body


def _batch_body(
    items: Sequence[PredictRequest | Mapping[str, Any]], top_k: int | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"items": [_item(i) for i in items]}
    if top_k is not None:
        body["top_k"] = top_k
    return body


class _Retry:
    """Exponential backoff with jitter: base * 2**attempt, capped, at most ``retries`` times."""

    def __init__(self, retries: int, backoff: float, max_backoff: float) -> None:
        if retries < 0 or backoff < 0:
            raise ValueError("retries and backoff must not be negative")
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after is not None and retry_after.isdigit():
            return min(float(retry_after), self.max_backoff)
        ceiling: float = min(self.max_backoff, self.backoff * 2.0**attempt)
        return ceiling * random.uniform(0.5, 1.0)

    def should_retry(self, attempt: int, response: httpx.Response | None) -> bool:
        if attempt >= self.retries:
            return False
        return response is None or response.status_code in RETRY_STATUSES


def _connection_error(exc: httpx.TransportError, url: str) -> ClinriskConnectionError:
    return ClinriskConnectionError(None, "Connection failed", f"{url}: {exc!r}")


class _BaseClient(Generic[HttpClient]):
    """What the sync and async clients share: configuration, request building, the retry
    policy; each subclass only sends (``_request``) and awaits or not."""

    def __init__(
        self,
        base_url: str | None,
        *,
        api_key: str | None,
        client: HttpClient | None,
        owned: HttpClient | None,
        retries: int,
        backoff: float,
        max_backoff: float,
    ) -> None:
        self._owns_client = client is None
        http = client if client is not None else owned
        assert http is not None
        self._client: HttpClient = http
        self._base = base_url.rstrip("/") if base_url is not None else ""
        self._headers = {"accept": "application/json", "user-agent": "clinrisk-client/1"}
        if api_key is not None:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._retry = _Retry(retries, backoff, max_backoff)

    def _build(self, path: str, body: Any) -> tuple[str, bytes | None, dict[str, str]]:
        """(url, content, headers) of one call: the body as JSON, the key as a bearer token."""
        content = orjson.dumps(body) if body is not None else None
        headers = dict(self._headers)
        if content is not None:
            headers["content-type"] = "application/json"
        return self._base + path, content, headers


def _check_base(base_url: str | None, client: object | None, kind: str) -> None:
    if client is None and base_url is None:
        raise ValueError(f"pass base_url, or an {kind} with a base_url")


class ClinriskClient(_BaseClient[httpx.Client]):
    """Synchronous client. Owns an ``httpx.Client`` unless one is injected (then never closes it).

    ``base_url`` is required unless the injected client already has one. Use as a context manager
    (or call :meth:`close`) so an owned connection pool is released.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        client: httpx.Client | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        retries: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
    ) -> None:
        _check_base(base_url, client, "httpx.Client")
        super().__init__(
            base_url,
            api_key=api_key,
            client=client,
            owned=httpx.Client(base_url=base_url or "", timeout=timeout)
            if client is None
            else None,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
        )
        self._sleep = time.sleep

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def _request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        url, content, headers = self._build(path, body)
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = self._client.request(method, url, content=content, headers=headers)
            except RETRY_EXCEPTIONS as exc:
                if not self._retry.should_retry(attempt, None):
                    raise _connection_error(exc, url) from exc
            else:
                if not self._retry.should_retry(attempt, response):
                    return response
            self._sleep(self._retry.delay(attempt, response))
            attempt += 1

    def list_models(self) -> list[ModelSummary]:
        """Every model with its versions and default version."""
        response = self._request("GET", "/v1/models")
        if not response.is_success:
            raise error_from_response(response)
        return _SUMMARIES.validate_json(response.content)

    def get_model(self, name: str, version: str | None = None) -> ModelDetail:
        """A model's public manifest (default version unless ``version`` is given)."""
        return _parse(ModelDetail, self._request("GET", _path(name, version)))

    def predict(
        self,
        name: str,
        features: Mapping[str, Any],
        *,
        patient_id: str | None = None,
        top_k: int | None = None,
        version: str | None = None,
    ) -> PredictResponse:
        """Score one patient; raises :class:`InvalidInputError` naming each bad feature."""
        body = _predict_body(features, patient_id, top_k)
        return _parse(
            PredictResponse, self._request("POST", _path(name, version, "/predict"), body)
        )

    def predict_batch(
        self,
        name: str,
        items: Sequence[PredictRequest | Mapping[str, Any]],
        *,
        top_k: int | None = None,
        version: str | None = None,
    ) -> BatchPredictResponse:
        """Score several patients; each item gets its own result or its own problem."""
        path = _path(name, version, "/predict/batch")
        return _parse(BatchPredictResponse, self._request("POST", path, _batch_body(items, top_k)))


class AsyncClinriskClient(_BaseClient[httpx.AsyncClient]):
    """The asynchronous twin of :class:`ClinriskClient` (``httpx.AsyncClient``)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        client: httpx.AsyncClient | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        retries: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
    ) -> None:
        _check_base(base_url, client, "httpx.AsyncClient")
        owned = (
            httpx.AsyncClient(base_url=base_url or "", timeout=timeout) if client is None else None
        )
        super().__init__(
            base_url,
            api_key=api_key,
            client=client,
            owned=owned,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
        )
        import asyncio  # here: a sync caller does not pay ~40 ms of asyncio imports

        self._sleep = asyncio.sleep

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        url, content, headers = self._build(path, body)
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = await self._client.request(method, url, content=content, headers=headers)
            except RETRY_EXCEPTIONS as exc:
                if not self._retry.should_retry(attempt, None):
                    raise _connection_error(exc, url) from exc
            else:
                if not self._retry.should_retry(attempt, response):
                    return response
            await self._sleep(self._retry.delay(attempt, response))
            attempt += 1

    async def list_models(self) -> list[ModelSummary]:
        """Every model with its versions and default version."""
        response = await self._request("GET", "/v1/models")
        if not response.is_success:
            raise error_from_response(response)
        return _SUMMARIES.validate_json(response.content)

    async def get_model(self, name: str, version: str | None = None) -> ModelDetail:
        """A model's public manifest (default version unless ``version`` is given)."""
        return _parse(ModelDetail, await self._request("GET", _path(name, version)))

    async def predict(
        self,
        name: str,
        features: Mapping[str, Any],
        *,
        patient_id: str | None = None,
        top_k: int | None = None,
        version: str | None = None,
    ) -> PredictResponse:
        """Score one patient; raises :class:`InvalidInputError` naming each bad feature."""
        body = _predict_body(features, patient_id, top_k)
        response = await self._request("POST", _path(name, version, "/predict"), body)
        return _parse(PredictResponse, response)

    async def predict_batch(
        self,
        name: str,
        items: Sequence[PredictRequest | Mapping[str, Any]],
        *,
        top_k: int | None = None,
        version: str | None = None,
    ) -> BatchPredictResponse:
        """Score several patients; each item gets its own result or its own problem."""
        path = _path(name, version, "/predict/batch")
        response = await self._request("POST", path, _batch_body(items, top_k))
        return _parse(BatchPredictResponse, response)
