"""Prediction endpoints: HTTP in, one call into the scoring core, audit, HTTP out.

The body is parsed once with orjson and validated once by the model's own feature rules (the
OpenAPI document still describes it, per model); responses are serialised once with orjson.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import Counter, Histogram

from models import validation
from models.predictor import LoadedModel
from service.api.deps import BatchCaller, PredictCaller, StateDep, resolve_model
from service.api.schemas import BatchPredictResponse, PredictResponse, Problem
from service.audit import AuditRecord, input_hash
from service.errors import InvalidFeatures, PayloadTooLarge, ServiceError

router = APIRouter(prefix="/v1/models", tags=["predictions"])

SCORES = Histogram(
    "clinrisk_score_probability",
    "Predicted probabilities by model and version.",
    ["model", "version"],
    buckets=(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0),
)
VALIDATION_FAILURES = Counter(
    "clinrisk_validation_failures_total",
    "Rejected patient payloads by model and field.",
    ["model", "field"],
)
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {"application/problem+json": {}}}
    for status in (401, 403, 404, 413, 422, 503)
}


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _problem_errors(errors: list[validation.FieldError]) -> list[dict[str, Any]]:
    return [
        {"field": e.field, "message": e.message, "value": e.value, "allowed": e.allowed}
        for e in errors
    ]


def _invalid(
    model: LoadedModel, errors: list[validation.FieldError], where: str
) -> InvalidFeatures:
    for error in errors:
        VALIDATION_FAILURES.labels(model.core.name, error.field.rsplit(".", 1)[-1]).inc()
    return InvalidFeatures(
        f"The {where} does not match model '{model.core.name}' {model.core.version}.",
        errors=_problem_errors(errors),
    )


async def _body(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body is larger than {limit} bytes.")
    raw = await request.body()
    if len(raw) > limit:
        raise PayloadTooLarge(f"Request body is larger than {limit} bytes.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidFeatures(
            "The body is not valid JSON.",
            errors=[{"field": "body", "message": str(exc), "value": None, "allowed": "JSON"}],
        ) from None


def _check_envelope(body: Any, allowed: dict[str, str]) -> list[validation.FieldError]:
    if not isinstance(body, dict):
        return [validation.FieldError("body", "must be a JSON object", None, "an object")]
    errors = [
        validation.FieldError(key, "unknown field", key, "one of: " + ", ".join(allowed))
        for key in body
        if key not in allowed
    ]
    patient_id = body.get("patient_id")
    if patient_id is not None and (not isinstance(patient_id, str) or len(patient_id) > 256):
        errors.append(
            validation.FieldError("patient_id", "must be a string", patient_id, "up to 256 chars")
        )
    top_k = body.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        errors.append(validation.FieldError("top_k", "must be a positive integer", top_k, ">= 1"))
    if "features" in allowed and not isinstance(body.get("features"), dict):
        errors.append(
            validation.FieldError("features", "required object is missing", None, "an object")
        )
    return errors


ITEM_FIELDS = {"patient_id": "string", "features": "object", "top_k": "integer"}


def _audit_record(
    state: StateDep,
    model: LoadedModel,
    result: dict[str, Any],
    values: dict[str, Any],
    patient_id: str | None,
    caller: str,
    channel: str,
    created_at: datetime | None = None,
) -> AuditRecord:
    return AuditRecord(
        prediction_id=result["prediction_id"],
        created_at=created_at or datetime.now(UTC),
        caller=caller,
        model_name=model.core.name,
        model_version=model.core.version,
        model_sha256=model.core.sha256,
        patient_pseudonym=state.pseudonymize(patient_id),
        input_sha256=input_hash(values),
        probability=result["probability"],
        tier=result["tier"]["name"],
        latency_ms=result["elapsed_ms"],
        channel=channel,
    )


def _validated(model: LoadedModel, body: Any, prefix: str = "") -> validation.ValidatedRow:
    errors = _check_envelope(body, ITEM_FIELDS)
    if errors:
        raise _invalid(model, [_prefixed(e, prefix) for e in errors], "request")
    try:
        return model.validator.validate(body["features"], prefix=f"{prefix}features")
    except validation.InvalidFeatures as exc:
        raise _invalid(model, exc.errors, "features object") from None


def _predict_one(
    state: StateDep, model: LoadedModel, body: Any, caller: str
) -> tuple[dict[str, Any], AuditRecord]:
    started = time.perf_counter()
    row = _validated(model, body)
    probability, contributions, tier = model.core.score_one(row.columns)
    result = model.result(
        row, probability, contributions, tier, top_k=body.get("top_k"), started=started
    )
    SCORES.labels(model.core.name, model.core.version).observe(probability)
    record = _audit_record(
        state, model, result, row.values, body.get("patient_id"), caller, "single"
    )
    return result, record


def _prefixed(error: validation.FieldError, prefix: str) -> validation.FieldError:
    if not prefix:
        return error
    return validation.FieldError(prefix + error.field, error.message, error.value, error.allowed)


async def _single(
    request: Request, state: StateDep, name: str, version: str | None, caller: str
) -> Response:
    # NOTE: scoring one patient takes well under a millisecond, less than a hop to the
    # threadpool would cost, so it runs on the event loop.
    model = resolve_model(state, name, version)
    body = await _body(request, state.settings.max_body_bytes)
    result, record = _predict_one(state, model, body, caller)
    state.audit.write([record])
    return _json(result)


async def _batch(
    request: Request, state: StateDep, name: str, version: str | None, caller: str
) -> Response:
    started = time.perf_counter()
    model = resolve_model(state, name, version)
    body = await _body(request, state.settings.max_body_bytes)
    # A batch takes tens of milliseconds: score it off the event loop.
    return await run_in_threadpool(_score_batch, state, model, body, caller, started)


def _score_batch(
    state: StateDep, model: LoadedModel, body: Any, caller: str, started: float
) -> Response:
    errors = _check_envelope(body, {"items": "array", "top_k": "integer"})
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list):
        errors.append(validation.FieldError("items", "required array is missing", None, "an array"))
    elif len(items) > state.settings.max_batch_size:
        errors.append(
            validation.FieldError(
                "items",
                "too many patients in one call",
                len(items),
                f"at most {state.settings.max_batch_size}",
            )
        )
    if errors:
        raise _invalid(model, errors, "batch request")
    assert isinstance(items, list)
    top_k = body.get("top_k")
    results: list[dict[str, Any]] = [
        {"index": i, "result": None, "error": None} for i in range(len(items))
    ]
    valid: list[tuple[int, validation.ValidatedRow]] = []
    for index, item in enumerate(items):
        try:
            valid.append((index, _validated(model, item, prefix=f"items[{index}].")))
        except ServiceError as exc:
            results[index]["error"] = exc.problem()
    records: list[AuditRecord] = []
    if valid:
        # One vectorised call into the scoring core for every valid patient of the batch.
        scores = model.core.score_matrix(np.array([row.columns for _, row in valid]))
        histogram = SCORES.labels(model.core.name, model.core.version)
        now = datetime.now(UTC)
        for position, (index, row) in enumerate(valid):
            item = items[index]
            probability = float(scores.probability[position])
            result = model.result(
                row,
                probability,
                scores.contributions[position],
                int(scores.tier_index[position]),
                top_k=item.get("top_k", top_k),
                started=started,
            )
            histogram.observe(probability)
            records.append(
                _audit_record(
                    state,
                    model,
                    result,
                    row.values,
                    item.get("patient_id"),
                    caller,
                    "batch",
                    created_at=now,
                )
            )
            results[index]["result"] = result
    state.audit.write(records)
    succeeded = len(records)
    return _json(
        {
            "model": model.ref,
            "results": results,
            "succeeded": succeeded,
            "failed": len(items) - succeeded,
            "elapsed_ms": (time.perf_counter() - started) * 1000.0,
        }
    )


@router.post(
    "/{name}/predict",
    operation_id="predict",
    response_model=PredictResponse,
    responses=PROBLEM_RESPONSES,
)
async def predict(request: Request, name: str, state: StateDep, caller: PredictCaller) -> Response:
    """Score one patient with the model's default version, with an exact explanation."""
    return await _single(request, state, name, None, caller.key_id)


@router.post(
    "/{name}/versions/{version}/predict",
    operation_id="predict_version",
    response_model=PredictResponse,
    responses=PROBLEM_RESPONSES,
)
async def predict_version(
    request: Request, name: str, version: str, state: StateDep, caller: PredictCaller
) -> Response:
    """Score one patient with a pinned model version."""
    return await _single(request, state, name, version, caller.key_id)


@router.post(
    "/{name}/predict/batch",
    operation_id="predict_batch",
    response_model=BatchPredictResponse,
    responses=PROBLEM_RESPONSES,
)
async def predict_batch(
    request: Request, name: str, state: StateDep, caller: BatchCaller
) -> Response:
    """Score up to the configured number of patients; one bad item never fails the others."""
    return await _batch(request, state, name, None, caller.key_id)


@router.post(
    "/{name}/versions/{version}/predict/batch",
    operation_id="predict_batch_version",
    response_model=BatchPredictResponse,
    responses=PROBLEM_RESPONSES,
)
async def predict_batch_version(
    request: Request, name: str, version: str, state: StateDep, caller: BatchCaller
) -> Response:
    """Batch scoring with a pinned model version."""
    return await _batch(request, state, name, version, caller.key_id)
