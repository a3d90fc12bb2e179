"""Prediction endpoints: HTTP only. Parse, call the model's facade, audit, render.

The body is read once (bounded, after authentication) and parsed with orjson; the request
envelope is checked here, the features by the model's own rules in the facade
(:class:`models.predictor.Predictor`). Responses are serialised once with orjson.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import orjson
from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import Counter, Histogram

from models.applicability import parse_context
from models.predictor import Prediction, Predictor, Scored
from models.validation import FieldError, InvalidFeatures
from service import drift
from service.api.body import read_json_body
from service.api.deps import (
    BatchCaller,
    PredictCaller,
    ScoringModelDep,
    StateDep,
    declare_version,
    problem_responses,
)
from service.api.schemas import BatchPredictResponse, PredictResponse
from service.audit import AuditRecord
from service.auth import ApiKey
from service.errors import InvalidFeatures as InvalidRequest
from service.histograms import observe_many
from service.lifecycle import policy_for

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
ITEM_FIELDS = ("patient_id", "features", "top_k", "context", "research_use")
BATCH_FIELDS = ("items", "top_k")
RESEARCH_SCOPES = frozenset({"admin", "research"})
SHADOW = "shadow"
NOT_APPLICABLE = Counter(
    "clinrisk_not_applicable_total",
    "Answers withheld because the patient is outside the model's intended population.",
    ["model", "version"],
)


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _invalid(model: Predictor, errors: list[FieldError], where: str) -> InvalidRequest:
    for error in errors:
        # NOTE: only the model's own feature names become label values: an unknown key is the
        # caller's text (privacy, and unbounded metric cardinality).
        field = error.field.rsplit(".", 1)[-1]
        VALIDATION_FAILURES.labels(
            model.name, field if field in model.feature_names else "other"
        ).inc()
    return InvalidRequest(
        f"The {where} does not match model '{model.name}' {model.version}.",
        errors=[dataclasses.asdict(e) for e in errors],
    )


def _positive_int(value: Any) -> int | None:
    """An integer >= 1, also when JSON wrote it as an integral float (``5.0``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value) if value >= 1 else None


def _envelope(body: Any, allowed: tuple[str, ...], prefix: str = "") -> list[FieldError]:
    """The request's own fields (not the features): an object with known keys and types."""
    if not isinstance(body, dict):
        return [FieldError(prefix or "body", "must be a JSON object", None, "an object", "type")]
    errors = [
        FieldError(prefix + key, "unknown field", key, "one of: " + ", ".join(allowed), "unknown")
        for key in body
        if key not in allowed
    ]
    patient_id = body.get("patient_id")
    if patient_id is not None and (not isinstance(patient_id, str) or len(patient_id) > 256):
        errors.append(
            FieldError(
                prefix + "patient_id", "must be a string", patient_id, "up to 256 chars", "type"
            )
        )
    top_k = body.get("top_k")
    if top_k is not None and _positive_int(top_k) is None:
        errors.append(
            FieldError(prefix + "top_k", "must be a positive integer", top_k, ">= 1", "type")
        )
    if "features" in allowed and not isinstance(body.get("features"), dict):
        errors.append(
            FieldError(prefix + "features", "required object is missing", None, "an object", "type")
        )
    research = body.get("research_use")
    if research is not None and not isinstance(research, bool):
        errors.append(
            FieldError(prefix + "research_use", "must be true or false", research, "a boolean")
        )
    return errors


PLAIN_FIELDS = frozenset({"patient_id", "features"})


def _plain(item: Any) -> bool:
    """An item with features and at most a short patient id: nothing in it for
    :func:`_envelope` or :class:`Envelope` to refuse or state (most batch items; checking each
    the long way was a twentieth of a batch call)."""
    if type(item) is not dict or not item.keys() <= PLAIN_FIELDS:
        return False
    patient_id = item.get("patient_id")
    return type(item.get("features")) is dict and (
        patient_id is None or (type(patient_id) is str and len(patient_id) <= 256)
    )


class Envelope:
    """An item's context and research opt-in, checked against the model and the caller."""

    def __init__(self, model: Predictor, body: dict[str, Any], caller: ApiKey, prefix: str = ""):
        self.context, problems = parse_context(
            body.get("context"), model.population.contexts, prefix
        )
        self.errors = [FieldError(f, m, v, a, "context") for f, m, v, a in problems]
        self.research_use = body.get("research_use") is True
        if self.research_use and not caller.scopes & RESEARCH_SCOPES:
            self.errors.append(
                FieldError(
                    prefix + "research_use",
                    "research use needs an API key with the 'research' or 'admin' scope",
                    True,
                    "false for this key",
                    "forbidden",
                )
            )


def observe(model: Predictor, results: Iterable[Prediction]) -> None:
    """The score histogram and the not-applicable counter, for one result or a batch."""
    probabilities = [result["probability"] for result in results]
    scored = [p for p in probabilities if p is not None]
    observe_many(SCORES.labels(model.name, model.version), scored)
    withheld = len(probabilities) - len(scored)
    if withheld:
        NOT_APPLICABLE.labels(model.name, model.version).inc(withheld)


def _records(
    state: StateDep,
    model: Predictor,
    scored: Sequence[tuple[Scored, str | None]],
    caller: str,
    channel: str,
    created_at: datetime,
) -> list[AuditRecord]:
    """The audit records of scored answers and their patient ids. The batch path's per-row
    loop: positional fields and local names (keywords and attribute lookups per row cost a
    sixth of a batch call's time, measured); the keyed hashes a batch at a time."""
    pseudonyms = state.pseudonymize.many([patient_id for _, patient_id in scored])
    hashes = state.pseudonymize.input_hashes([item.values for item, _ in scored])
    name, version, sha256 = model.name, model.version, model.sha256
    research = channel + "+research"
    records = []
    for (item, _), pseudonym, input_hash in zip(scored, pseudonyms, hashes, strict=True):
        result = item.result
        tier = result["tier"]
        applicability = result["applicability"]
        records.append(
            AuditRecord(
                result["prediction_id"],
                created_at,
                caller,
                name,
                version,
                sha256,
                pseudonym,
                input_hash,
                result["probability"],
                tier["name"] if tier is not None else None,
                result["elapsed_ms"],
                # A research-use score outside the intended population says so.
                research
                if applicability["research_use"]
                and not applicability["applicable"]
                and result["status"] == "scored"
                else channel,
                result["status"],
                item.subgroups,
            )
        )
    return records


async def predict_one(
    state: StateDep, model: Predictor, body: Any, caller: ApiKey, channel: str = "single"
) -> Scored:
    """Check the envelope, predict, audit: what every single-patient door does. The result is
    returned only once its audit record is committed (a "not_applicable" answer too)."""
    errors = _envelope(body, ITEM_FIELDS)
    if errors:
        raise _invalid(model, errors, "request")
    envelope = Envelope(model, body, caller)
    if envelope.errors:
        raise _invalid(model, envelope.errors, "request")
    try:
        scored = model.predict(
            body["features"],
            top_k=_positive_int(body.get("top_k")),
            context=envelope.context,
            research_use=envelope.research_use,
        )
    except InvalidFeatures as exc:
        raise _invalid(model, exc.errors, "features object") from None
    observe(model, [scored.result])
    drift.observe(state.audit.engine, model, [scored])
    now = datetime.now(UTC)
    patient_id = body.get("patient_id")
    records = _records(state, model, [(scored, patient_id)], caller.key_id, channel, now)
    for shadow in shadows_of(state, model):
        try:
            beside = shadow.predict(
                body["features"],
                top_k=1,
                context=envelope.context,
                research_use=envelope.research_use,
            )
        except InvalidFeatures:
            continue  # the shadow version's own rules refuse this input: nothing to compare
        records += _records(state, shadow, [(beside, patient_id)], caller.key_id, SHADOW, now)
    await state.audit.write_together(records)
    return scored


def shadows_of(state: StateDep, model: Predictor) -> list[Predictor]:
    """The versions of ``model`` in shadow (issue 13): each scores the same input beside the
    served version and is audited (channel "shadow", so live validation has its figures
    before an approval); its answers are never returned."""
    names = policy_for(state.audit.engine).shadows(model.name)
    if not names:
        return []
    loaded = state.registry.versions(model.name)
    return [state.registry.get(model.name, v) for v in names if v != model.version and v in loaded]


async def predict(
    request: Request, caller: PredictCaller, model: ScoringModelDep, state: StateDep
) -> Response:
    """Score one patient, with an exact explanation (default or pinned model version)."""
    # NOTE: scoring one patient takes well under a millisecond, less than a hop to the
    # threadpool would cost, so it runs on the event loop.
    body = await read_json_body(request, state.settings.max_body_bytes)
    return _json((await predict_one(state, model, body, caller)).result)


async def predict_batch(
    request: Request, caller: BatchCaller, model: ScoringModelDep, state: StateDep
) -> Response:
    """Score up to the configured number of patients; one bad item never fails the others."""
    started = time.perf_counter()
    body = await read_json_body(request, state.settings.max_body_bytes)
    # A batch takes milliseconds: score it off the event loop, one batch at a time.
    return await anyio.to_thread.run_sync(
        _score_batch, state, model, body, caller, started, limiter=state.batches
    )


def _score_batch(
    state: StateDep, model: Predictor, body: Any, caller: ApiKey, started: float
) -> Response:
    errors = _envelope(body, BATCH_FIELDS)
    items = body.get("items") if isinstance(body, dict) else None
    limit = state.settings.max_batch_size
    if not isinstance(items, list):
        errors.append(FieldError("items", "required array is missing", None, "an array", "type"))
    elif len(items) > limit:
        errors.append(
            FieldError(
                "items", "too many patients in one call", len(items), f"at most {limit}", "size"
            )
        )
    if errors:
        raise _invalid(model, errors, "batch request")
    assert isinstance(items, list)
    default_top_k = _positive_int(body.get("top_k"))
    results: list[dict[str, Any]] = [
        {"index": i, "result": None, "error": None} for i in range(len(items))
    ]
    good: list[int] = []
    envelopes: list[Envelope] = []
    plain = Envelope(model, {}, caller)
    for index, item in enumerate(items):
        if _plain(item):
            good.append(index)
            envelopes.append(plain)
            continue
        prefix = f"items[{index}]."
        item_errors = _envelope(item, ITEM_FIELDS, prefix=prefix)
        if not item_errors:
            envelope = Envelope(model, item, caller, prefix)
            item_errors = envelope.errors
        if item_errors:
            results[index]["error"] = _invalid(model, item_errors, "request").problem()
        else:
            good.append(index)
            envelopes.append(envelope)
    outcomes = model.predict_many(
        [items[i]["features"] for i in good],
        top_k=[
            _positive_int(items[i]["top_k"]) if "top_k" in items[i] else default_top_k for i in good
        ],
        contexts=[e.context for e in envelopes],
        research_use=[e.research_use for e in envelopes],
    )
    now = datetime.now(UTC)
    scored: list[tuple[Scored, str | None]] = []
    for index, outcome in zip(good, outcomes, strict=True):
        if isinstance(outcome, Scored):
            scored.append((outcome, items[index].get("patient_id")))
            results[index]["result"] = outcome.result
        else:
            prefix = f"items[{index}]."
            prefixed = [dataclasses.replace(e, field=prefix + e.field) for e in outcome]
            results[index]["error"] = _invalid(model, prefixed, "features object").problem()
    observe(model, [item.result for item, _ in scored])
    records = _records(state, model, scored, caller.key_id, "batch", now)
    for shadow in shadows_of(state, model):
        beside = shadow.predict_many(
            [items[i]["features"] for i in good],
            top_k=[1] * len(good),
            contexts=[e.context for e in envelopes],
            research_use=[e.research_use for e in envelopes],
        )
        compared = [
            (outcome, items[index].get("patient_id"))
            for index, outcome in zip(good, beside, strict=True)
            if isinstance(outcome, Scored)
        ]
        records += _records(state, shadow, compared, caller.key_id, SHADOW, now)
    state.audit.write(records)
    drift.observe(state.audit.engine, model, [item for item, _ in scored])
    return _json(
        {
            "model": model.ref,
            "results": results,
            "succeeded": len(scored),
            "failed": len(items) - len(scored),
            "elapsed_ms": (time.perf_counter() - started) * 1000.0,
        }
    )


# One endpoint per operation, mounted on the unversioned and the versioned path.
for _suffix, _endpoint, _response, _doc in (
    ("predict", predict, PredictResponse, "predict"),
    ("predict/batch", predict_batch, BatchPredictResponse, "predict_batch"),
):
    for _versioned in (False, True):
        router.add_api_route(
            f"/{{name}}/versions/{{version}}/{_suffix}" if _versioned else f"/{{name}}/{_suffix}",
            _endpoint,
            methods=["POST"],
            operation_id=f"{_doc}_version" if _versioned else _doc,
            response_model=_response,
            # 503: the audit record could not be written, so no score is returned.
            responses=problem_responses(401, 403, 404, 410, 413, 422, 503),
            dependencies=[Depends(declare_version)] if _versioned else [],
        )
