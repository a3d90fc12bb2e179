"""Monitoring of a model version (issue 13), admin scope: live validation on its recorded outcomes
(part 2) and drift of its inputs, risks and tiers before outcomes arrive (part 3)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy.exc import SQLAlchemyError

from service import drift, lifecycle
from service.api.audit import QueryTime
from service.api.deps import (
    AdminCaller,
    AnyCaller,
    ModelDep,
    StateDep,
    declare_version,
    problem_responses,
)
from service.errors import AuditUnavailable, InvalidFeatures
from service.monitoring import Window, export, report
from service.settings import Settings
from service.transparency import source_attributes

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


def monitoring_process(settings: Settings) -> dict[str, Any]:
    """How this service monitors validity and fairness (the HTI-1 maintenance attributes)."""
    return {
        "live_validation": (
            "Continuous, on outcomes recorded through POST /v1/outcomes or `clinrisk outcomes "
            "record`: per model version, time window and manifest subgroup, AUROC with DeLong "
            "CI, calibration slope and intercept, observed/expected, Brier, sensitivity and PPV "
            "per tier, each judged against the validation value (worse when the 95% CI excludes "
            f"it); groups under {settings.monitoring_min_group} known outcomes are suppressed."
        ),
        "drift": (
            "Daily counts of scored inputs, predicted risks and tiers, compared over the last "
            f"{settings.drift_window_days} days with the training distribution and validation "
            f"(PSI; warning {settings.drift_psi_warning}, alert {settings.drift_psi_alert}, from "
            f"{settings.drift_min_rows} rows), and the AUROC expected from the risks alone "
            f"(alert {settings.drift_expected_auroc_drop} below validation)."
        ),
        "alerting": (
            "Prometheus gauges refreshed every "
            f"{settings.drift_flush_seconds:g} s; alert rules in "
            "deploy/prometheus/clinrisk-alerts.yml; the monitoring page /ui/monitoring."
        ),
    }


@router.get(
    "/{name}/versions/{version}/transparency",
    operation_id="read_source_attributes",
    responses=problem_responses(401, 403, 404, 422),
    dependencies=[Depends(declare_version)],
)
def read_source_attributes(_caller: AnyCaller, model: ModelDep, state: StateDep) -> dict[str, Any]:
    """The ONC HTI-1 source attributes of this model version (45 CFR 170.315(b)(11)(iv)(B)),
    from its manifest and live validation; a value the artifact does not state is shown as
    missing, with the reason. Any valid key: users are meant to read these."""
    live: dict[str, Any] | None = None
    decisions: list[dict[str, Any]] | None = None
    try:
        with state.audit.engine.connect() as connection:
            live = report(connection, model.manifest, min_group=state.settings.monitoring_min_group)
            decisions = [
                e.as_dict() for e in lifecycle.history(connection, model.name, model.version)
            ]
    except SQLAlchemyError:
        pass  # shown as missing with the reason, never as a 503 for the whole sheet
    return source_attributes(model.manifest, live, monitoring_process(state.settings), decisions)
