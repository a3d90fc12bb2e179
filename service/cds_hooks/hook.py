"""What a CDS Hooks call must hold: the envelope, the prefetch, the feedback (no HTTP here).

Each check raises a problem naming every bad field: ``InvalidHookRequest`` (400) for a malformed
call, ``PrefetchMissing`` (412) for prefetch the EHR did not send.
"""

from __future__ import annotations

from typing import Any

from service.cds_hooks import fhir
from service.errors import InvalidHookRequest, PrefetchMissing

HOOK = "patient-view"
PREFETCH = {
    "patient": "Patient/{{context.patientId}}",
    "observations": "Observation?patient={{context.patientId}}&code="
    + ",".join(f"{fhir.LOINC}|{code}" for code in fhir.CVD_OBSERVATION_CODES),
    "conditions": "Condition?patient={{context.patientId}}&clinical-status=active",
}
FEEDBACK_OUTCOMES = ("accepted", "overridden")
MAX_FEEDBACK_ITEMS = 100


def _error(
    field: str, message: str, value: Any = None, allowed: str | None = None
) -> dict[str, Any]:
    shown = value if isinstance(value, str | int | float | bool) or value is None else None
    return {"field": field, "message": message, "value": shown, "allowed": allowed}


def hook_call(body: Any) -> tuple[str, dict[str, Any]]:
    """Check the request envelope; return the patient id and the prefetch object."""
    if not isinstance(body, dict):
        raise InvalidHookRequest(
            "The hook request must be a JSON object.", errors=[_error("body", "not an object")]
        )
    errors = []
    if body.get("hook") != HOOK:
        errors.append(_error("hook", "this service answers one hook", body.get("hook"), HOOK))
    instance = body.get("hookInstance")
    if not isinstance(instance, str) or not instance:
        errors.append(_error("hookInstance", "required string is missing", instance, "a UUID"))
    context = body.get("context")
    patient_id = context.get("patientId") if isinstance(context, dict) else None
    if not isinstance(patient_id, str) or not 0 < len(patient_id) <= 256:
        errors.append(
            _error("context.patientId", "required string is missing", patient_id, "a FHIR id")
        )
    prefetch = body.get("prefetch")
    if prefetch is not None and not isinstance(prefetch, dict):
        errors.append(_error("prefetch", "must be an object", None, "an object"))
    if errors:
        raise InvalidHookRequest(
            "The hook request is not a valid patient-view call.", errors=errors
        )
    assert isinstance(patient_id, str)
    return patient_id, prefetch or {}


def check_prefetch(prefetch: dict[str, Any]) -> None:
    errors = []
    for key, template in PREFETCH.items():
        if key not in prefetch:
            errors.append(_error(f"prefetch.{key}", "prefetch key is missing", None, template))
        elif isinstance(prefetch[key], dict) and prefetch[key].get("resourceType") == (
            "OperationOutcome"
        ):
            errors.append(
                _error(f"prefetch.{key}", "the client could not fetch it", None, template)
            )
    if errors:
        missing = ", ".join(e["field"].removeprefix("prefetch.") for e in errors)
        raise PrefetchMissing(
            f"Prefetch keys missing: {missing}. This service does not query the FHIR server; "
            "configure the EHR to send every prefetch template of the discovery document.",
            errors=errors,
        )


def patient(value: Any, patient_id: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("resourceType") != "Patient":
        raise InvalidHookRequest(
            "prefetch.patient must be a Patient resource.",
            errors=[_error("prefetch.patient", "not a Patient resource", None, "a Patient")],
        )
    if "id" in value and value["id"] != patient_id:
        raise InvalidHookRequest(
            "prefetch.patient is not the patient of context.patientId.",
            errors=[_error("prefetch.patient.id", "does not match context.patientId")],
        )
    return value


def resources(
    prefetch: dict[str, Any], key: str, resource_type: str, patient_id: str
) -> tuple[list[Any], int]:
    try:
        return fhir.bundle_resources(prefetch[key], resource_type, patient_id)
    except ValueError as exc:
        raise InvalidHookRequest(
            f"prefetch.{key} is not a {resource_type} search result.",
            errors=[_error(f"prefetch.{key}", str(exc), None, "a searchset Bundle")],
        ) from None


def feedback_outcomes(body: Any) -> list[str]:
    items = body.get("feedback") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items or len(items) > MAX_FEEDBACK_ITEMS:
        raise InvalidHookRequest(
            "The feedback body must hold a non-empty 'feedback' array.",
            errors=[_error("feedback", "required array", None, f"1-{MAX_FEEDBACK_ITEMS} items")],
        )
    errors = []
    outcomes = []
    for i, item in enumerate(items):
        where = f"feedback[{i}]"
        if not isinstance(item, dict):
            errors.append(_error(where, "must be an object"))
            continue
        card = item.get("card")
        if not isinstance(card, str) or not card:
            errors.append(_error(f"{where}.card", "required card uuid is missing"))
        outcome = item.get("outcome")
        if outcome not in FEEDBACK_OUTCOMES:
            errors.append(
                _error(
                    f"{where}.outcome", "unknown outcome", outcome, " or ".join(FEEDBACK_OUTCOMES)
                )
            )
        if fhir.parse_datetime(item.get("outcomeTimestamp")) is None:
            errors.append(_error(f"{where}.outcomeTimestamp", "required instant is missing"))
        accepted = item.get("acceptedSuggestions")
        if accepted is not None and not (
            isinstance(accepted, list)
            and all(isinstance(a, dict) and isinstance(a.get("id"), str) for a in accepted)
        ):
            errors.append(_error(f"{where}.acceptedSuggestions", "must be [{'id': ...}]"))
        override = item.get("overrideReason")
        if override is not None:
            reason = override.get("reason") if isinstance(override, dict) else None
            comment = override.get("userComment") if isinstance(override, dict) else None
            if (
                not isinstance(override, dict)
                or (reason is not None and not isinstance(reason, dict))
                or (comment is not None and not isinstance(comment, str))
            ):
                errors.append(_error(f"{where}.overrideReason", "must be {reason, userComment}"))
        if isinstance(outcome, str):
            outcomes.append(outcome)
    if errors:
        raise InvalidHookRequest("The feedback is not valid CDS Hooks feedback.", errors=errors)
    return outcomes
