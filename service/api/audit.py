"""Audit trail queries (admin scope)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AfterValidator, BeforeValidator

from service.api.deps import AdminCaller, StateDep, problem_responses
from service.api.schemas import AuditPage, AuditRecordPublic

router = APIRouter(prefix="/v1/audit", tags=["audit"])

# The largest offset both stores accept (a signed 64-bit integer in SQLite and PostgreSQL).
MAX_OFFSET = 2**63 - 1


# Identifiers are matched as stored: no control characters (PostgreSQL refuses NUL in text).
def _identifier(description: str) -> Any:
    return Query(max_length=256, pattern=r"^[^\x00-\x1f\x7f]*$", description=description)


def _not_a_number(value: Any) -> Any:
    # NOTE: pydantic reads a number as seconds since 1970; a query time must be written as one.
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
    raise ValueError("must be an ISO 8601 date-time, e.g. 2026-01-31T08:00:00Z")


def _in_utc(value: datetime) -> datetime:
    """Naive times are UTC; aware ones are converted (the store compares UTC wall times)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is outside the years 1 to 9999 once converted to UTC") from None


QueryTime = Annotated[datetime, BeforeValidator(_not_a_number), AfterValidator(_in_utc)]


@router.get(
    "",
    operation_id="read_audit",
    responses=problem_responses(401, 403, 422, 503),
)
def read_audit(
    state: StateDep,
    _caller: AdminCaller,
    model: Annotated[str | None, _identifier("Model name.")] = None,
    version: Annotated[str | None, _identifier("Model version.")] = None,
    since: Annotated[
        QueryTime | None, Query(description="Records at or after this time (ISO 8601).")
    ] = None,
    until: Annotated[
        QueryTime | None, Query(description="Records before this time (ISO 8601).")
    ] = None,
    patient_pseudonym: Annotated[
        str | None, _identifier("Keyed pseudonym of a patient id, as stored.")
    ] = None,
    patient_id: Annotated[
        str | None, _identifier("A patient id; pseudonymised with the service key first.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Records per page.")] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Records to skip.")] = 0,
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
