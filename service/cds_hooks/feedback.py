"""CDS Hooks card feedback in the audit database, and the admins' view of it.

- :class:`FeedbackStore`: one row per card uuid (table ``cds_feedback``, migration 0006), written
  with ``INSERT ... ON CONFLICT DO NOTHING`` so a repeated post (an EHR retrying) neither fails
  nor counts twice, on SQLite and PostgreSQL alike. The clinician's comment is kept here (it is
  clinical feedback an admin reviews) and nowhere else: never in a log line or a metric.
- ``GET /v1/cds-feedback`` (scope ``admin``): the feedback, newest first, filterable by service,
  outcome and time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

import orjson
import sqlalchemy as sa
import structlog
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from service.api.audit import QueryTime
from service.api.deps import AdminCaller, StateDep, problem_responses
from service.cds_hooks.hook import FeedbackItem
from service.errors import AuditUnavailable

log = structlog.get_logger("clinrisk")

# The table as migration 0006 made it: typed columns, so datetimes read back the same on SQLite
# and PostgreSQL.
TABLE = sa.Table(
    "cds_feedback",
    sa.MetaData(),
    sa.Column("card_uuid", sa.String(128), primary_key=True),
    sa.Column("service_id", sa.String(64)),
    sa.Column("outcome", sa.String(16)),
    sa.Column("reason_system", sa.String(256)),
    sa.Column("reason_code", sa.String(128)),
    sa.Column("reason_display", sa.String(256)),
    sa.Column("comment", sa.Text),
    sa.Column("accepted_suggestions", sa.Text),
    sa.Column("outcome_at", sa.DateTime(timezone=True)),
    sa.Column("received_at", sa.DateTime(timezone=True)),
    sa.Column("caller", sa.String(64)),
)


class FeedbackStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, service_id: str, items: list[FeedbackItem], caller: str) -> set[str]:
        """Store each item once per card uuid; the card uuids newly stored. Blocking."""
        now = datetime.now(UTC)
        rows = [
            {
                "card_uuid": item.card,
                "service_id": service_id,
                "outcome": item.outcome,
                "reason_system": item.reason_system,
                "reason_code": item.reason_code,
                "reason_display": item.reason_display,
                "comment": item.comment,
                "accepted_suggestions": orjson.dumps(item.accepted_suggestions).decode(),
                "outcome_at": item.outcome_timestamp,
                "received_at": now,
                "caller": caller[:64],
            }
            for item in items
        ]
        upsert = (
            postgresql.insert(TABLE)
            if self._engine.dialect.name == "postgresql"
            else sqlite.insert(TABLE)
        ).on_conflict_do_nothing(index_elements=["card_uuid"])
        # RETURNING names the rows really inserted (a repeat returns none); psycopg reports no
        # rowcount for ON CONFLICT DO NOTHING through SQLAlchemy.
        insert = upsert.returning(TABLE.c.card_uuid)
        try:
            stored: set[str] = set()
            with self._engine.begin() as connection:
                for row in rows:  # one by one: what returns tells a new card from a repeat
                    stored.update(r[0] for r in connection.execute(insert, row).all())
            return stored
        except SQLAlchemyError as exc:
            log.warning("cds_feedback_store_failed", error=type(exc).__name__)
            raise AuditUnavailable("The audit store is unavailable; feedback not stored.") from None

    def query(
        self,
        *,
        service_id: str | None,
        outcome: str | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
        offset: int,
    ) -> list[dict[str, object]]:
        table = TABLE
        statement = sa.select(table)
        if service_id is not None:
            statement = statement.where(table.c.service_id == service_id)
        if outcome is not None:
            statement = statement.where(table.c.outcome == outcome)
        if since is not None:
            statement = statement.where(table.c.received_at >= since)
        if until is not None:
            statement = statement.where(table.c.received_at < until)
        statement = (
            statement.order_by(table.c.received_at.desc(), table.c.card_uuid)
            .limit(limit)
            .offset(offset)
        )
        try:
            with self._engine.connect() as connection:
                return [dict(row._mapping) for row in connection.execute(statement)]
        except SQLAlchemyError as exc:
            log.warning("cds_feedback_query_failed", error=type(exc).__name__)
            raise AuditUnavailable("The audit store is unavailable.") from None


class OverrideReason(BaseModel):
    system: str | None
    code: str | None
    display: str | None


class CdsFeedback(BaseModel):
    card: str = Field(description="The card's uuid (a risk card's uuid is its prediction id).")
    service: str
    outcome: Literal["accepted", "overridden"]
    override_reason: OverrideReason | None
    comment: str | None = Field(description="The clinician's comment, as sent by the EHR.")
    accepted_suggestions: list[str]
    outcome_at: datetime = Field(description="When the EHR says the clinician acted.")
    received_at: datetime
    caller: str = Field(description="The EHR (issuer's caller name) or API key that sent it.")


class CdsFeedbackPage(BaseModel):
    feedback: list[CdsFeedback]
    limit: int
    offset: int


def _utc(value: object) -> datetime:
    assert isinstance(value, datetime)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _public(row: dict[str, object]) -> CdsFeedback:
    reason = (
        OverrideReason(
            system=row["reason_system"],
            code=row["reason_code"],
            display=row["reason_display"],
        )
        if row["reason_code"] or row["reason_display"]
        else None
    )
    return CdsFeedback(
        card=str(row["card_uuid"]),
        service=str(row["service_id"]),
        outcome=row["outcome"],
        override_reason=reason,
        comment=row["comment"],
        accepted_suggestions=orjson.loads(str(row["accepted_suggestions"])),
        outcome_at=_utc(row["outcome_at"]),
        received_at=_utc(row["received_at"]),
        caller=str(row["caller"]),
    )


def store(state: StateDep) -> FeedbackStore:
    return FeedbackStore(state.audit.engine)


admin_router = APIRouter(prefix="/v1/cds-feedback", tags=["audit"])


@admin_router.get(
    "", operation_id="read_cds_feedback", responses=problem_responses(401, 403, 422, 503)
)
async def read_cds_feedback(
    state: StateDep,
    _caller: AdminCaller,
    service: Annotated[str | None, Query(max_length=64, description="A CDS service id.")] = None,
    outcome: Annotated[
        Literal["accepted", "overridden"] | None, Query(description="Only this outcome.")
    ] = None,
    since: Annotated[
        QueryTime | None, Query(description="Received at or after this time (ISO 8601).")
    ] = None,
    until: Annotated[
        QueryTime | None, Query(description="Received before this time (ISO 8601).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Items per page.")] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="Items to skip.")] = 0,
) -> CdsFeedbackPage:
    """What clinicians did with CDS Hooks cards: accepted or overridden, with their reasons."""
    rows = await run_in_threadpool(
        store(state).query,
        service_id=service,
        outcome=outcome,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )
    return CdsFeedbackPage(feedback=[_public(r) for r in rows], limit=limit, offset=offset)
