"""What a CDS Hooks call must hold: the envelope, the prefetch, the feedback (no HTTP here).

Each check raises a problem naming every bad field: ``InvalidHookRequest`` (400) for a malformed
call, ``PrefetchMissing`` (412) for data the service could not obtain (a prefetch key the EHR did
not fill, with no ``fhirServer`` to fetch it from, or a fetch that failed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.cds_hooks import fhir
from service.cds_hooks.services import ENCOUNTER_DISCHARGE, HookService
from service.errors import InvalidHookRequest, PrefetchMissing

FEEDBACK_OUTCOMES = ("accepted", "overridden")
MAX_FEEDBACK_ITEMS = 100


def _error(
    field: str, message: str, value: Any = None, allowed: str | None = None
) -> dict[str, Any]:
    shown = value if isinstance(value, str | int | float | bool) or value is None else None
    return {"field": field, "message": message, "value": shown, "allowed": allowed}


def hook_call(body: Any, service: HookService) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check the request envelope; return its context and its prefetch object."""
    if not isinstance(body, dict):
        raise InvalidHookRequest(
            "The hook request must be a JSON object.", errors=[_error("body", "not an object")]
        )
    errors = []
    if body.get("hook") != service.hook:
        errors.append(
            _error("hook", "this service answers one hook", body.get("hook"), service.hook)
        )
    instance = body.get("hookInstance")
    if not isinstance(instance, str) or not instance:
        errors.append(_error("hookInstance", "required string is missing", instance, "a UUID"))
    context = body.get("context")
    context = context if isinstance(context, dict) else {}
    patient_id = context.get("patientId")
    if not isinstance(patient_id, str) or not 0 < len(patient_id) <= 256:
        errors.append(
            _error("context.patientId", "required string is missing", patient_id, "a FHIR id")
        )
    if service.hook == ENCOUNTER_DISCHARGE:
        encounter_id = context.get("encounterId")
        if not isinstance(encounter_id, str) or not 0 < len(encounter_id) <= 256:
            errors.append(
                _error(
                    "context.encounterId",
                    "required string is missing",
                    encounter_id,
                    "a FHIR id",
                )
            )
    prefetch = body.get("prefetch")
    if prefetch is not None and not isinstance(prefetch, dict):
        errors.append(_error("prefetch", "must be an object", None, "an object"))
    server = body.get("fhirServer")
    if "fhirServer" in body and not isinstance(server, str):
        errors.append(_error("fhirServer", "must be a URL", None, "an https URL"))
    authorization = body.get("fhirAuthorization")
    if "fhirAuthorization" in body and not (
        isinstance(authorization, dict) and isinstance(authorization.get("access_token"), str)
    ):
        errors.append(_error("fhirAuthorization", "must hold an access_token", None, "an object"))
    if errors:
        raise InvalidHookRequest(
            f"The hook request is not a valid {service.hook} call.", errors=errors
        )
    return context, prefetch or {}


def missing_keys(prefetch: dict[str, Any], service: HookService) -> list[str]:
    """The keys the EHR did not fill: absent, or an OperationOutcome in place of the data."""
    missing = []
    for key in service.prefetch:
        value = prefetch.get(key, ...)
        if value is ... or (
            isinstance(value, dict) and value.get("resourceType") == "OperationOutcome"
        ):
            missing.append(key)
    return missing


def prefetch_missing(
    service: HookService, keys: list[str], why: str, reasons: dict[str, str] | None = None
) -> PrefetchMissing:
    """The 412 of CDS Hooks 2.0: the data needed could not be obtained."""
    reasons = reasons or {}
    errors = [
        _error(
            f"prefetch.{key}",
            reasons.get(key, "prefetch key is missing"),
            None,
            service.prefetch[key].template,
        )
        for key in keys
    ]
    return PrefetchMissing(f"Prefetch keys missing: {', '.join(keys)}. {why}", errors=errors)


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


@dataclass(frozen=True)
class FeedbackItem:
    """One validated feedback entry (CDS Hooks 2.0 "Feedback")."""

    card: str
    outcome: str
    outcome_timestamp: datetime
    accepted_suggestions: list[str]
    reason_system: str | None
    reason_code: str | None
    reason_display: str | None
    comment: str | None


MAX_CARD_ID = 128
MAX_COMMENT = 2000


def _text(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    return isinstance(value, list) and any(_has_nul(v) for v in value)


def feedback_items(body: Any) -> list[FeedbackItem]:
    items = body.get("feedback") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items or len(items) > MAX_FEEDBACK_ITEMS:
        raise InvalidHookRequest(
            "The feedback body must hold a non-empty 'feedback' array.",
            errors=[_error("feedback", "required array", None, f"1-{MAX_FEEDBACK_ITEMS} items")],
        )
    errors = []
    out = []
    for i, item in enumerate(items):
        where = f"feedback[{i}]"
        if not isinstance(item, dict):
            errors.append(_error(where, "must be an object"))
            continue
        card = item.get("card")
        if not isinstance(card, str) or not 0 < len(card) <= MAX_CARD_ID:
            errors.append(
                _error(f"{where}.card", "required card uuid is missing", None, "a card uuid")
            )
        outcome = item.get("outcome")
        if outcome not in FEEDBACK_OUTCOMES:
            errors.append(
                _error(
                    f"{where}.outcome", "unknown outcome", outcome, " or ".join(FEEDBACK_OUTCOMES)
                )
            )
        timestamp = fhir.parse_datetime(item.get("outcomeTimestamp"))
        if timestamp is None:
            errors.append(
                _error(f"{where}.outcomeTimestamp", "required instant is missing", None, "ISO 8601")
            )
        # Present means of the right type: null is not an absent field (a schema violation).
        accepted = item.get("acceptedSuggestions", [])
        if not (
            isinstance(accepted, list)
            and all(isinstance(a, dict) and isinstance(a.get("id"), str) for a in accepted)
        ):
            errors.append(_error(f"{where}.acceptedSuggestions", "must be [{'id': ...}]"))
            accepted = []
        override = item.get("overrideReason", {})
        reason: dict[str, Any] = {}
        comment = None
        if not (
            isinstance(override, dict)
            and isinstance(override.get("reason", {}), dict)
            and isinstance(override.get("userComment", ""), str)
        ):
            errors.append(_error(f"{where}.overrideReason", "must be {reason, userComment}"))
        elif outcome == "overridden":  # a reason belongs to an override only
            reason = override.get("reason", {})
            comment = override.get("userComment")
        # NUL is no character of any text a clinician or an EHR writes, and PostgreSQL cannot
        # store it: refused, naming the field, instead of failing at the store.
        texts = {
            f"{where}.card": card,
            f"{where}.acceptedSuggestions": [a["id"] for a in accepted],
            f"{where}.overrideReason": [reason.get(k) for k in ("system", "code", "display")]
            + [comment],
        }
        with_nul = [field for field, value in texts.items() if _has_nul(value)]
        errors.extend(_error(f, "must not contain NUL characters") for f in with_nul)
        if (
            isinstance(card, str)
            and outcome in FEEDBACK_OUTCOMES
            and timestamp is not None
            and not with_nul
        ):
            out.append(
                FeedbackItem(
                    card=card[:MAX_CARD_ID],
                    outcome=str(outcome),
                    outcome_timestamp=timestamp,
                    accepted_suggestions=[a["id"][:MAX_CARD_ID] for a in accepted],
                    reason_system=_text(reason.get("system"), 256),
                    reason_code=_text(reason.get("code"), 128),
                    reason_display=_text(reason.get("display"), 256),
                    comment=_text(comment, MAX_COMMENT),
                )
            )
    if errors:
        raise InvalidHookRequest("The feedback is not valid CDS Hooks feedback.", errors=errors)
    return out
