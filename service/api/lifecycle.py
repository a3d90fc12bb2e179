"""Governed model versions (issue 13 part 4), admin scope: read a model's lifecycle, change a
version's state with a reason; the service attaches the evidence and audits every change."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import SQLAlchemyError

from models.predictor import Predictor
from service import lifecycle
from service.api.body import read_json_body
from service.api.deps import (
    AdminCaller,
    ModelDep,
    StateDep,
    declare_version,
    default_version,
    json_request_body,
    problem_responses,
)
from service.api.monitoring import drift_thresholds
from service.errors import AuditUnavailable, InvalidFeatures, ModelNotFound, ServiceError

router = APIRouter(prefix="/v1/models", tags=["governance"])
MAX_REASON = 2000


class TransitionConflict(ServiceError):
    status = 409
    title = "Lifecycle change not allowed"


@router.get(
    "/{name}/lifecycle",
    operation_id="read_lifecycle",
    responses=problem_responses(401, 403, 404, 503),
)
def read_lifecycle(name: str, _caller: AdminCaller, state: StateDep) -> dict[str, Any]:
    """Each version's lifecycle state (since, by whom, why), the approved version beside the
    one served by default, and every change with its evidence."""
    if name not in state.registry.names():
        raise ModelNotFound(f"No model '{name}'. Available: {', '.join(state.registry.names())}.")
    versions = state.registry.versions(name)
    try:
        with state.audit.engine.connect() as connection:
            summary = lifecycle.summary(connection, name, versions)
            approved = lifecycle.approved_version(connection, name)
            history = [e.as_dict() for e in lifecycle.history(connection, name)]
    except SQLAlchemyError:
        raise AuditUnavailable("The audit store could not be read; try again.") from None
    return {
        "model": name,
        "served_default": default_version(state, name),
        "approved": approved,
        "versions": summary,
        "history": history,
    }


def _invalid(field: str, message: str, value: Any, allowed: str) -> InvalidFeatures:
    return InvalidFeatures(
        "The lifecycle change is not valid.",
        errors=[{"field": field, "message": message, "value": value, "allowed": allowed}],
    )


@router.post(
    "/{name}/versions/{version}/lifecycle",
    operation_id="change_lifecycle",
    responses=problem_responses(401, 403, 404, 409, 413, 422, 503),
    dependencies=[Depends(declare_version)],
    # The body is read by hand (one bounded read, problems naming the field); documented here.
    openapi_extra=json_request_body(
        {
            "type": "object",
            "required": ["state", "reason"],
            "additionalProperties": False,
            "properties": {
                "state": {"enum": list(lifecycle.STATES)},
                "reason": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_REASON,
                    "pattern": "\\S",
                },
                "note": {"type": ["string", "null"], "maxLength": MAX_REASON},
            },
        }
    ),
)
async def change_lifecycle(
    request: Request, caller: AdminCaller, model: ModelDep, state: StateDep
) -> dict[str, Any]:
    """Move a version to ``shadow``, ``approved`` (it becomes the model's approved version; the
    previous one is retired), ``retired`` or back to ``candidate``, with a reason. The evidence
    (validation figures, local live validation and drift now) is attached by the service."""
    body = await read_json_body(request, state.settings.max_body_bytes)
    if not isinstance(body, dict):
        raise _invalid("body", "must be a JSON object", None, "an object")
    unknown = sorted(set(body) - {"state", "reason", "note"})
    if unknown:
        raise _invalid(unknown[0], "unknown field", unknown[0], "state, reason, note")
    wanted, reason, note = body.get("state"), body.get("reason"), body.get("note")
    if wanted not in lifecycle.STATES:
        raise _invalid("state", "not a lifecycle state", wanted, ", ".join(lifecycle.STATES))
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise _invalid(
            "reason", "a reason is required", reason, f"text of 1 to {MAX_REASON} characters"
        )
    if note is not None and (not isinstance(note, str) or len(note) > MAX_REASON):
        raise _invalid("note", "must be text", note, f"up to {MAX_REASON} characters")
    who = f"{caller.name} ({caller.key_id})"
    return await _record(state, model, who, str(wanted), reason.strip(), note)


async def _record(
    state: StateDep, model: Predictor, who: str, wanted: str, reason: str, note: str | None
) -> dict[str, Any]:
    try:
        events = await run_in_threadpool(
            lifecycle.decide,
            state.audit.engine,
            model.manifest,
            wanted,
            who=who,
            reason=reason,
            note=note,
            min_group=state.settings.monitoring_min_group,
            days=state.settings.drift_window_days,
            thresholds=drift_thresholds(state.settings),
        )
    except lifecycle.TransitionRefused as exc:
        raise TransitionConflict(
            str(exc),
            errors=[
                {
                    "field": "state",
                    "message": f"not allowed from {exc.current}",
                    "value": exc.wanted,
                    "allowed": ", ".join(exc.allowed) or "none (retired)",
                }
            ],
        ) from None
    except SQLAlchemyError:
        raise AuditUnavailable("The decision could not be recorded; nothing changed.") from None
    return {"events": [e.as_dict() for e in events]}
