"""Recording observed outcomes of predictions (issue 13 part 1): ``outcomes`` scope."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError

from service.api.body import read_json_body
from service.api.deps import StateDep, json_request_body, problem_responses, require
from service.auth import ApiKey
from service.errors import AuditUnavailable, InvalidFeatures
from service.outcomes import FIELDS, OutcomeStore, Summary

router = APIRouter(prefix="/v1/outcomes", tags=["outcomes"])
OutcomesCaller = Annotated[ApiKey, require("outcomes")]
MAX_ROWS = 10_000
"""Most outcome rows in one call (a file of any size goes through ``clinrisk outcomes record``)."""


class OutcomeRejection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    row: int = Field(description="1-based position of the row in 'outcomes'.")
    field: str
    message: str
    allowed: str


class OutcomeSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: int
    recorded: int = Field(description="Predictions that had no outcome and now have one.")
    corrected: int = Field(description="Predictions whose outcome changed (history kept).")
    unchanged: int = Field(description="Rows that repeated the outcome already recorded.")
    rejected: list[OutcomeRejection]


_ROW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["outcome"],
    "properties": {
        "prediction_id": {"type": "string", "description": "As returned by a prediction."},
        "patient_id": {
            "type": "string",
            "description": "Instead of prediction_id, with model and observed_at: every "
            "prediction of that model for the patient within the model's horizon before "
            "observed_at. Pseudonymised like the audit trail; never stored.",
        },
        "model": {"type": "string"},
        "observed_at": {"type": "string", "format": "date-time"},
        "outcome": {"type": "integer", "enum": [0, 1]},
    },
}


@router.post(
    "",
    operation_id="record_outcomes",
    response_model=OutcomeSummary,
    responses=problem_responses(401, 403, 413, 422, 503),
    openapi_extra=json_request_body(
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["outcomes"],
            "properties": {
                "outcomes": {
                    "type": "array",
                    "maxItems": MAX_ROWS,
                    "items": _ROW_SCHEMA,
                }
            },
        }
    ),
)
async def record_outcomes(request: Request, caller: OutcomesCaller, state: StateDep) -> Response:
    """Record observed outcomes, by prediction id or by patient + model + time. Idempotent;
    a different outcome for the same prediction is a correction (audited). Bad rows are listed
    with their reasons; the others are recorded. 422 when no row could be recorded."""
    body = await read_json_body(request, state.settings.max_body_bytes)
    rows = body.get("outcomes") if isinstance(body, dict) else None
    extra = sorted(k for k in body if k != "outcomes") if isinstance(body, dict) else []
    if not isinstance(rows, list) or extra or len(rows) > MAX_ROWS:
        raise InvalidFeatures(
            "The request does not match the API.",
            errors=[
                {
                    "field": "outcomes" if not extra else str(extra[0])[:64],
                    "message": "must be the only field: an array of outcome rows",
                    "value": None,
                    "allowed": f"an array of at most {MAX_ROWS} rows with fields: "
                    + ", ".join(FIELDS),
                }
            ],
        )
    names = [n for n in state.registry.names() if caller.allows_model(n)]
    store = OutcomeStore(state.audit.engine)
    try:
        summary: Summary = await run_in_threadpool(
            store.record,
            rows,
            who=caller.key_id,
            source="api",
            pseudonymize=state.pseudonymize,
            models=names,
        )
    except SQLAlchemyError:
        raise AuditUnavailable("The outcome store could not be written; try again.") from None
    result = summary.as_dict()
    if rows and len(summary.rejected) == len(rows):
        raise InvalidFeatures(
            "No outcome row could be recorded.",
            errors=[
                {
                    "field": f"outcomes[{r['row'] - 1}].{r['field']}",
                    "message": r["message"],
                    "value": None,  # NOTE: never echoed: rows carry identifiers
                    "allowed": r["allowed"],
                }
                for r in result["rejected"]
            ],
        )
    return Response(
        OutcomeSummary.model_validate(result).model_dump_json(), media_type="application/json"
    )
