"""FHIR out: a score as a FHIR R4 ``RiskAssessment`` (HTTP only).

``POST /v1/models/{name}/risk-assessment`` takes the body of ``POST /v1/models/{name}/predict``
(``patient_id`` required: it is the ``subject``) plus optional ``basis`` (references of the
resources the inputs were read from) and ``encounter``; it scores through the same facade
(``predict_one``: validation, applicability, audit record) and answers
``application/fhir+json``. The resource is built by ``service.cds_hooks.riskassessment`` (the
same one a CDS card offers to write back); ``prediction[0].probabilityDecimal`` is on the 0-1
scale. A patient outside the model's population gets no RiskAssessment: 422 problem+json naming
the rules not met.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from service.api.body import read_json_body
from service.api.deps import (
    PredictCaller,
    ScoringModelDep,
    StateDep,
    json_request_body,
    problem_responses,
)
from service.api.predict import predict_one
from service.cds_hooks.riskassessment import risk_assessment
from service.errors import InvalidFeatures

FHIR_JSON = "application/fhir+json"
FHIR_ID = re.compile(r"^[A-Za-z0-9.\-]{1,64}$")
REFERENCE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9.\-]{1,64}$")
MAX_BASIS = 100

router = APIRouter(prefix="/v1/models", tags=["predictions"])


def _error(field: str, message: str, allowed: str) -> dict[str, Any]:
    return {"field": field, "message": message, "value": None, "allowed": allowed}


def _fhir_fields(body: Any) -> tuple[dict[str, Any], list[str], str | None]:
    """Split the FHIR-only fields off the predict body; check them."""
    if not isinstance(body, dict):
        raise InvalidFeatures(
            "The body must be a JSON object.", errors=[_error("body", "not an object", "object")]
        )
    rest = {k: v for k, v in body.items() if k not in ("basis", "encounter")}
    errors = []
    patient_id = body.get("patient_id")
    if not isinstance(patient_id, str) or not FHIR_ID.match(patient_id):
        errors.append(_error("patient_id", "required: the FHIR Patient id", "[A-Za-z0-9.-]{1,64}"))
    basis = body.get("basis", [])
    if not (
        isinstance(basis, list)
        and len(basis) <= MAX_BASIS
        and all(isinstance(b, str) and REFERENCE.match(b) for b in basis)
    ):
        errors.append(
            _error("basis", "must be a list of references", f"up to {MAX_BASIS} 'Type/id'")
        )
        basis = []
    encounter = body.get("encounter")
    if encounter is not None and not (isinstance(encounter, str) and FHIR_ID.match(encounter)):
        errors.append(_error("encounter", "must be an Encounter id", "[A-Za-z0-9.-]{1,64}"))
    if errors:
        raise InvalidFeatures("The request is not valid for a RiskAssessment.", errors=errors)
    return rest, basis, encounter


@router.post(
    "/{name}/risk-assessment",
    operation_id="risk_assessment",
    responses={
        200: {
            "description": "A FHIR R4 RiskAssessment (probabilityDecimal on the 0-1 scale).",
            "content": {FHIR_JSON: {"schema": {"type": "object"}}},
        },
        **problem_responses(401, 403, 404, 410, 413, 422, 503),
    },
    openapi_extra=json_request_body(
        {
            "type": "object",
            "required": ["patient_id", "features"],
            "properties": {
                "patient_id": {
                    "type": "string",
                    "pattern": FHIR_ID.pattern,
                    "description": "FHIR Patient id (the subject)",
                },
                "features": {"type": "object"},
                "top_k": {"type": "integer", "minimum": 1},
                "context": {"type": "object"},
                "basis": {
                    "type": "array",
                    "maxItems": MAX_BASIS,
                    "items": {"type": "string", "pattern": REFERENCE.pattern},
                    "description": "References the inputs were read from.",
                },
                "encounter": {
                    "type": "string",
                    "pattern": FHIR_ID.pattern,
                    "description": "Encounter id",
                },
            },
        }
    ),
)
async def risk_assessment_route(
    request: Request, caller: PredictCaller, model: ScoringModelDep, state: StateDep
) -> Response:
    """Score one patient and answer the result as a FHIR R4 RiskAssessment."""
    body = await read_json_body(request, state.settings.max_body_bytes)
    rest, basis, encounter = _fhir_fields(body)
    scored = await predict_one(state, model, rest, caller)
    result = scored.result
    if result["status"] != "scored":
        failed = result["applicability"]["failed"]
        raise InvalidFeatures(
            "The patient is outside the model's intended population: no RiskAssessment.",
            errors=[
                {
                    "field": "features",
                    "message": f"{f['description']}: {f['detail']}",
                    "value": None,
                    "allowed": f["id"],
                }
                for f in failed
            ],
        )
    resource = risk_assessment(
        result,
        model,
        subject=f"Patient/{rest['patient_id']}",
        occurrence=datetime.now(UTC),
        basis=basis,
        encounter=f"Encounter/{encounter}" if encounter else None,
    )
    return Response(
        orjson.dumps(resource), media_type=FHIR_JSON, headers={"Cache-Control": "no-store"}
    )
