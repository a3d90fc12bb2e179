"""Live validation of a model version on its recorded outcomes (issue 13 part 2), admin scope."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy.exc import SQLAlchemyError

from service.api.audit import QueryTime
from service.api.deps import AdminCaller, ModelDep, StateDep, declare_version, problem_responses
from service.errors import AuditUnavailable, InvalidFeatures
from service.monitoring import Window, export, report

router = APIRouter(prefix="/v1/models", tags=["monitoring"])


@router.get(
    "/{name}/versions/{version}/monitoring",
    operation_id="read_live_validation",
    responses=problem_responses(401, 403, 404, 422, 503),
    dependencies=[Depends(declare_version)],
)
def read_live_validation(
    _caller: AdminCaller,
    model: ModelDep,
    state: StateDep,
    since: Annotated[
        QueryTime | None, Query(description="Predictions at or after this time (ISO 8601).")
    ] = None,
    until: Annotated[
        QueryTime | None, Query(description="Predictions before this time (ISO 8601).")
    ] = None,
) -> dict[str, Any]:
    """Live figures (predictions, outcomes known, AUROC, calibration, O/E, Brier, tiers) overall
    and per manifest subgroup, beside the validation figures, with a judgement per figure.
    Groups with fewer known outcomes than the configured minimum are suppressed."""
    if since is not None and until is not None and until <= since:
        raise InvalidFeatures(
            "The time window is empty.",
            errors=[
                {
                    "field": "until",
                    "message": "must be after since",
                    "value": until.isoformat(),
                    "allowed": f"a time after {since.isoformat()}",
                }
            ],
        )
    try:
        with state.audit.engine.connect() as connection:
            result = report(
                connection,
                model.manifest,
                Window(since, until),
                min_group=state.settings.monitoring_min_group,
            )
    except SQLAlchemyError:
        raise AuditUnavailable("The audit store could not be read; try again.") from None
    if since is None and until is None:
        export(result)  # the gauges carry the all-time figures
    return result
