"""Audit trail queries (admin scope)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from service.api.deps import AdminCaller, StateDep
from service.api.predict import PROBLEM_RESPONSES
from service.api.schemas import AuditPage, AuditRecordPublic

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=PROBLEM_RESPONSES)


@router.get("", operation_id="read_audit")
def read_audit(
    state: StateDep,
    _caller: AdminCaller,
    model: Annotated[str | None, Query(description="Model name.")] = None,
    version: Annotated[str | None, Query(description="Model version.")] = None,
    since: Annotated[datetime | None, Query(description="Records at or after (ISO 8601).")] = None,
    until: Annotated[datetime | None, Query(description="Records before (ISO 8601).")] = None,
    patient_pseudonym: Annotated[
        str | None, Query(description="Keyed pseudonym of a patient id, as stored.")
    ] = None,
    patient_id: Annotated[
        str | None, Query(description="A patient id; pseudonymised with the service key first.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> AuditPage:
    """Audit records, filterable by model, version, time range and pseudonymous patient id."""
    pseudonym = patient_pseudonym or state.pseudonymize(patient_id)
    rows = state.audit.query(
        model_name=model,
        model_version=version,
        since=since,
        until=until,
        patient_pseudonym=pseudonym,
        limit=limit,
        offset=offset,
    )
    return AuditPage(
        records=[AuditRecordPublic.model_validate(r, from_attributes=False) for r in rows],
        limit=limit,
        offset=offset,
    )
