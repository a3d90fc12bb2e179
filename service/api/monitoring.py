"""Monitoring of a model version (issue 13), admin scope: live validation on its recorded outcomes
(part 2) and drift of its inputs, risks and tiers before outcomes arrive (part 3)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy.exc import SQLAlchemyError

from service import drift
from service.api.audit import QueryTime
from service.api.deps import AdminCaller, ModelDep, StateDep, declare_version, problem_responses
from service.errors import AuditUnavailable, InvalidFeatures
from service.monitoring import Window, export, report
from service.settings import Settings

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


def drift_thresholds(settings: Settings) -> drift.Thresholds:
    return drift.Thresholds(
        psi_warn=settings.drift_psi_warning,
        psi_alert=settings.drift_psi_alert,
        min_rows=settings.drift_min_rows,
        expected_auroc_drop=settings.drift_expected_auroc_drop,
        live_min_group=settings.monitoring_min_group,
    )


@router.get(
    "/{name}/versions/{version}/drift",
    operation_id="read_drift",
    responses=problem_responses(401, 403, 404, 422, 503),
    dependencies=[Depends(declare_version)],
)
def read_drift(
    _caller: AdminCaller,
    model: ModelDep,
    state: StateDep,
    days: Annotated[
        int | None,
        Query(ge=1, le=366, description="Days in the window (default: the configured window)."),
    ] = None,
    until: Annotated[
        date | None, Query(description="Last UTC day of the window (default: today).")
    ] = None,
) -> dict[str, Any]:
    """Drift of scored inputs per feature (PSI against the training distribution), of predicted
    risks (against the validation deciles) and of tier shares (patients flagged per day), the
    performance expected from the risks alone, and the checks past their thresholds."""
    window = days or state.settings.drift_window_days
    try:
        # This worker's counts so far join the database's first (other workers flush on
        # their own schedule).
        drift.flush(state.audit.engine)
        with state.audit.engine.connect() as connection:
            result = drift.report(
                connection,
                model.manifest,
                days=window,
                until=until,
                thresholds=drift_thresholds(state.settings),
            )
    except SQLAlchemyError:
        raise AuditUnavailable("The audit store could not be read; try again.") from None
    if until is None and days is None:
        drift.export(result)  # the gauges carry the configured window up to today
    return result
