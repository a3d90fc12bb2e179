"""CDS Hooks 2.0 service: the 10-year CHD risk (model ``cvd``) as a card when a chart is opened.

- ``GET  /cds-services``: discovery, one service on ``patient-view``.
- ``POST /cds-services/clinrisk-cvd-risk``: the hook call.
- ``POST /cds-services/clinrisk-cvd-risk/feedback``: card feedback, counted by outcome only.

Authentication (every route, discovery included): the EHR's signed JWT as CDS Hooks 2.0 requires,
checked by ``security`` (issuer allowlist, JWKS, exact ``aud``, lifetime, ``jti`` replay); a
clinrisk API key with the ``predict`` scope only where ``CLINRISK_CDS_ALLOW_API_KEYS`` allows it
(by default when no EHR issuer is configured). Any refusal is a bare 401.

Data: only the prefetch is read; the service never calls ``fhirServer`` (no network at runtime).
- A prefetch key that is absent, or replaced by an OperationOutcome (the client failed to fetch
  it), is a ``412 Precondition Failed`` problem+json naming each missing key and its template:
  the spec's status for "unable to retrieve the necessary FHIR data".
- A key whose value is ``null`` means "the client has no such data" (spec): no observations /
  no conditions. A malformed request is a 400 problem+json.
- Missing or implausible clinical inputs (no blood pressure, no birth date, unknown smoking
  status, age under 20, ...) are a 200 with one ``info`` card saying the risk could not be
  computed and why; nothing is scored or audited then.

Scoring goes through ``service.api.predict.predict_one``, i.e. the same validator, scoring core,
score histogram and audit record as ``POST /v1/models/cvd/predict``; the record is written with
channel ``cds-hooks`` and the keyed pseudonym of ``context.patientId``. The routes only do HTTP:
the request checks are ``hook``, the feature extraction ``fhir`` and the card ``cards``.

These routes are left out of the OpenAPI document: CDS Hooks has its own discovery endpoint.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Request, Response
from prometheus_client import Counter

from service.api.body import read_json_body
from service.api.deps import StateDep, problem_responses, resolve_model
from service.api.predict import predict_one
from service.auth import ApiKey
from service.cds_hooks import fhir, hook
from service.cds_hooks.cards import Cards
from service.cds_hooks.security import cds_caller, discovery_caller
from service.errors import InvalidFeatures, InvalidHookRequest, PrefetchMissing

SERVICE_ID = "clinrisk-cvd-risk"
MODEL_NAME = "cvd"
CHANNEL = "cds-hooks"

HOOK_RESULTS = Counter(
    "clinrisk_cds_hook_results_total",
    "CDS Hooks service calls by service and result (scored, not_computed, missing_prefetch).",
    ["service", "result"],
)
FEEDBACK = Counter(
    "clinrisk_cds_feedback_total",
    "CDS Hooks card feedback by service and outcome (free text is never stored).",
    ["service", "outcome"],
)

router = APIRouter(prefix="/cds-services", tags=["cds-hooks"])

# An EHR's JWT, or (where allowed) an API key, which a restriction to models must let use this
# service's model (403 otherwise).
CvdCaller = Annotated[ApiKey, cds_caller(model=MODEL_NAME)]
DiscoveryCaller = Annotated[ApiKey, discovery_caller]


def _json(body: Any) -> Response:
    # Cards describe a patient: no shared cache may keep them.
    return Response(
        orjson.dumps(body), media_type="application/json", headers={"Cache-Control": "no-store"}
    )


async def _read(request: Request, limit: int) -> Any:
    try:
        return await read_json_body(request, limit)
    except InvalidFeatures as exc:  # not JSON: a malformed request in CDS Hooks terms
        raise InvalidHookRequest(exc.detail, errors=exc.errors) from None


# --- discovery ------------------------------------------------------------------------------


@router.get("", operation_id="cds_discovery")
async def cds_discovery(_caller: DiscoveryCaller) -> Response:
    """CDS Hooks discovery: the services this server offers."""
    return _json(
        {
            "services": [
                {
                    "hook": hook.HOOK,
                    "id": SERVICE_ID,
                    "title": "10-year coronary heart disease risk (clinrisk)",
                    "description": (
                        "Shows the 10-year CHD risk (clinrisk model 'cvd', Framingham-derived, "
                        "ACC/AHA tiers) with its main drivers and data-quality warnings when a "
                        "patient's chart is opened."
                    ),
                    "prefetch": hook.PREFETCH,
                    "usageRequirements": (
                        "Sign each call with a JWT as CDS Hooks 2.0 requires (ES384 or RS384; "
                        "issuer and JWKS registered with clinrisk). All prefetch keys are "
                        "required: the service never queries the FHIR server."
                    ),
                }
            ]
        }
    )


# --- the hook -------------------------------------------------------------------------------

# The request as CDS Hooks 2.0 defines it, with what this service needs on top: every prefetch
# template of the discovery document (it never queries the FHIR server). hook.py checks the
# same rules itself, so a malformed call is a 400 naming the field.
HOOK_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["hook", "hookInstance", "context", "prefetch"],
    "properties": {
        "hook": {"type": "string", "enum": [hook.HOOK]},
        "hookInstance": {"type": "string", "minLength": 1},
        "fhirServer": {"type": "string"},
        "fhirAuthorization": {"type": "object"},
        "context": {
            "type": "object",
            "required": ["patientId"],
            "properties": {
                "userId": {"type": "string"},
                "patientId": {"type": "string", "minLength": 1, "maxLength": 256},
            },
        },
        "prefetch": {
            "type": "object",
            "required": list(hook.PREFETCH),
            "properties": {key: {"type": "object"} for key in hook.PREFETCH},
        },
    },
}
FEEDBACK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["feedback"],
    "properties": {
        "feedback": {
            "type": "array",
            "minItems": 1,
            "maxItems": hook.MAX_FEEDBACK_ITEMS,
            "items": {
                "type": "object",
                "required": ["card", "outcome", "outcomeTimestamp"],
                "properties": {
                    "card": {"type": "string", "minLength": 1},
                    "outcome": {"type": "string", "enum": list(hook.FEEDBACK_OUTCOMES)},
                    "outcomeTimestamp": {"type": "string", "format": "date-time"},
                },
            },
        }
    },
}


def _body_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


@router.post(
    f"/{SERVICE_ID}",
    operation_id="cds_cvd_risk",
    responses=problem_responses(400, 401, 403, 412, 413, 503),
    openapi_extra=_body_schema(HOOK_REQUEST_SCHEMA),
)
async def cds_cvd_risk(request: Request, state: StateDep, caller: CvdCaller) -> Response:
    """The patient-view hook: one card with the 10-year CHD risk, or why it is not computed."""
    body = await _read(request, state.settings.max_body_bytes)
    patient_id, prefetch = hook.hook_call(body)
    try:
        hook.check_prefetch(prefetch)
    except PrefetchMissing:
        HOOK_RESULTS.labels(SERVICE_ID, "missing_prefetch").inc()
        raise
    patient = hook.patient(prefetch["patient"], patient_id)
    observations, foreign_obs = hook.resources(prefetch, "observations", "Observation", patient_id)
    conditions, foreign_cond = hook.resources(prefetch, "conditions", "Condition", patient_id)
    model = resolve_model(state, MODEL_NAME, None)
    extraction = fhir.extract_features(
        model.specs, patient, observations, conditions, today=date.today()
    )
    if foreign_obs or foreign_cond:
        extraction.warnings.append(
            f"{foreign_obs + foreign_cond} prefetched resources were about another patient "
            "and were ignored."
        )
    page = f"{request.base_url}ui#model/{model.core.name}"
    cards = Cards(model, extraction, page)
    if extraction.missing_required:
        HOOK_RESULTS.labels(SERVICE_ID, "not_computed").inc()
        return _json({"cards": [cards.not_computed(missing=extraction.missing_required)]})
    # Applicability facts the chart states (issue 14); what it does not state stays unstated,
    # and the result then warns that it was assumed (e.g. no established ASCVD).
    context: dict[str, bool] = {}
    if extraction.deceased and "deceased" in model.population.contexts:
        context["deceased"] = True
    ascvd = fhir.established_ascvd(conditions)
    if ascvd is not None and "established_ascvd" in model.population.contexts:
        context["established_ascvd"] = True
        extraction.warnings.append(f"Established ASCVD recorded in the chart ({ascvd}).")
    try:
        scored = await predict_one(
            state,
            model,
            {"patient_id": patient_id, "features": extraction.features, "context": context},
            caller,
            channel=CHANNEL,
        )
    except InvalidFeatures as exc:
        HOOK_RESULTS.labels(SERVICE_ID, "not_computed").inc()
        return _json({"cards": [cards.not_computed(invalid=exc.errors)]})
    if scored.result["status"] == "not_applicable":
        HOOK_RESULTS.labels(SERVICE_ID, "not_applicable").inc()
        return _json({"cards": [cards.not_applicable(dict(scored.result))]})
    HOOK_RESULTS.labels(SERVICE_ID, "scored").inc()
    return _json({"cards": [cards.risk(dict(scored.result))]})


# --- feedback -------------------------------------------------------------------------------


@router.post(
    f"/{SERVICE_ID}/feedback",
    operation_id="cds_cvd_risk_feedback",
    responses=problem_responses(400, 401, 403, 413),
    openapi_extra=_body_schema(FEEDBACK_SCHEMA),
)
async def cds_cvd_risk_feedback(request: Request, state: StateDep, _caller: CvdCaller) -> Response:
    """Card feedback: validated and counted by outcome; comments and reasons are not kept."""
    body = await _read(request, state.settings.max_body_bytes)
    outcomes = hook.feedback_outcomes(body)
    for outcome in outcomes:
        FEEDBACK.labels(SERVICE_ID, outcome).inc()
    return _json({"received": len(outcomes)})
