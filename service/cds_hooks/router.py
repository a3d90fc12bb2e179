"""CDS Hooks 2.0 service: the 10-year CHD risk (model ``cvd``) as a card when a chart is opened.

- ``GET  /cds-services``: discovery, open (no key), one service on ``patient-view``.
- ``POST /cds-services/clinrisk-cvd-risk``: the hook call.
- ``POST /cds-services/clinrisk-cvd-risk/feedback``: card feedback, counted by outcome only.

Authentication: CDS Hooks clients normally sign a JWT; this service keeps clinrisk API keys. The
EHR is configured with a clinrisk key that has the ``predict`` scope and sends it as
``Authorization: Bearer <key>`` on the hook and feedback calls (401 without, 403 without scope).

Data: only the prefetch is read; the service never calls ``fhirServer`` (no network at runtime).
- A prefetch key that is absent, or replaced by an OperationOutcome (the client failed to fetch
  it), is a ``412 Precondition Failed`` problem+json naming each missing key and its template:
  the spec's status for "unable to retrieve the necessary FHIR data".
- A key whose value is ``null`` means "the client has no such data" (spec): no observations /
  no conditions. A malformed request is a 400 problem+json.
- Missing or implausible clinical inputs (no blood pressure, no birth date, unknown smoking
  status, age under 20, ...) are a 200 with one ``info`` card saying the risk could not be
  computed and why; nothing is scored or audited then.

Scoring goes through ``service.api.predict.predict_one``, i.e. the same validator, scoring core,
score histogram and audit record as ``POST /v1/models/cvd/predict``; the record is written with
channel ``cds-hooks`` and the keyed pseudonym of ``context.patientId``. Feature extraction is the
pure ``service.cds_hooks.fhir`` module.

These routes are left out of the OpenAPI document: CDS Hooks has its own discovery endpoint.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from prometheus_client import Counter

from models.manifest import FeatureType
from models.predictor import LoadedModel
from service.api.body import read_json_body
from service.api.deps import PredictCaller, StateDep, resolve_model
from service.api.predict import predict_one
from service.cds_hooks import fhir
from service.errors import InvalidFeatures, InvalidHookRequest, PrefetchMissing

SERVICE_ID = "clinrisk-cvd-risk"
MODEL_NAME = "cvd"
CHANNEL = "cds-hooks"
HOOK = "patient-view"
EXTENSION = "dev.clinrisk.prediction"
TOP_CONTRIBUTIONS = 5
PREFETCH = {
    "patient": "Patient/{{context.patientId}}",
    "observations": "Observation?patient={{context.patientId}}&code="
    + ",".join(f"{fhir.LOINC}|{code}" for code in fhir.CVD_OBSERVATION_CODES),
    "conditions": "Condition?patient={{context.patientId}}&clinical-status=active",
}
INDICATORS = {"low": "info", "borderline": "info", "intermediate": "warning", "high": "critical"}
FEEDBACK_OUTCOMES = ("accepted", "overridden")
MAX_FEEDBACK_ITEMS = 100

HOOK_RESULTS = Counter(
    "clinrisk_cds_hook_results_total",
    "CDS Hooks service calls by service and result (scored, not_computed, missing_prefetch).",
    ["service", "result"],
)
FEEDBACK = Counter(
    "clinrisk_cds_feedback_total",
    "CDS Hooks card feedback by service and outcome (free text is never stored).",
    ["service", "outcome"],
)

router = APIRouter(prefix="/cds-services", tags=["cds-hooks"])


def _error(
    field: str, message: str, value: Any = None, allowed: str | None = None
) -> dict[str, Any]:
    shown = value if isinstance(value, str | int | float | bool) or value is None else None
    return {"field": field, "message": message, "value": shown, "allowed": allowed}


def _json(body: Any) -> Response:
    # Cards describe a patient: no shared cache may keep them.
    return Response(
        orjson.dumps(body), media_type="application/json", headers={"Cache-Control": "no-store"}
    )


async def _read(request: Request, limit: int) -> Any:
    try:
        return await read_json_body(request, limit)
    except InvalidFeatures as exc:  # not JSON: a malformed request in CDS Hooks terms
        raise InvalidHookRequest(exc.detail, errors=exc.errors) from None


# --- discovery ------------------------------------------------------------------------------


@router.get("", operation_id="cds_discovery")
async def cds_discovery() -> Response:
    """CDS Hooks discovery: the services this server offers."""
    return _json(
        {
            "services": [
                {
                    "hook": HOOK,
                    "id": SERVICE_ID,
                    "title": "10-year coronary heart disease risk (clinrisk)",
                    "description": (
                        "Shows the 10-year CHD risk (clinrisk model 'cvd', Framingham-derived, "
                        "ACC/AHA tiers) with its main drivers and data-quality warnings when a "
                        "patient's chart is opened."
                    ),
                    "prefetch": PREFETCH,
                    "usageRequirements": (
                        "Send a clinrisk API key with the 'predict' scope as 'Authorization: "
                        "Bearer <key>' (CDS Hooks JWTs are not used). All prefetch keys are "
                        "required: the service never queries the FHIR server."
                    ),
                }
            ]
        }
    )


# --- the hook -------------------------------------------------------------------------------


def _hook_call(body: Any) -> tuple[str, dict[str, Any]]:
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


def _check_prefetch(prefetch: dict[str, Any]) -> None:
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
        HOOK_RESULTS.labels(SERVICE_ID, "missing_prefetch").inc()
        missing = ", ".join(e["field"].removeprefix("prefetch.") for e in errors)
        raise PrefetchMissing(
            f"Prefetch keys missing: {missing}. This service does not query the FHIR server; "
            "configure the EHR to send every prefetch template of the discovery document.",
            errors=errors,
        )


def _patient(value: Any, patient_id: str) -> dict[str, Any] | None:
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


def _resources(
    prefetch: dict[str, Any], key: str, resource_type: str, patient_id: str
) -> tuple[list[Any], int]:
    try:
        return fhir.bundle_resources(prefetch[key], resource_type, patient_id)
    except ValueError as exc:
        raise InvalidHookRequest(
            f"prefetch.{key} is not a {resource_type} search result.",
            errors=[_error(f"prefetch.{key}", str(exc), None, "a searchset Bundle")],
        ) from None


@router.post(f"/{SERVICE_ID}", operation_id="cds_cvd_risk")
async def cds_cvd_risk(request: Request, state: StateDep, caller: PredictCaller) -> Response:
    """The patient-view hook: one card with the 10-year CHD risk, or why it is not computed."""
    body = await _read(request, state.settings.max_body_bytes)
    patient_id, prefetch = _hook_call(body)
    _check_prefetch(prefetch)
    patient = _patient(prefetch["patient"], patient_id)
    observations, foreign_obs = _resources(prefetch, "observations", "Observation", patient_id)
    conditions, foreign_cond = _resources(prefetch, "conditions", "Condition", patient_id)
    model = resolve_model(state, MODEL_NAME, None)
    extraction = fhir.extract_features(
        model.specs, patient, observations, conditions, today=date.today()
    )
    if foreign_obs or foreign_cond:
        extraction.warnings.append(
            f"{foreign_obs + foreign_cond} prefetched resources were about another patient "
            "and were ignored."
        )
    page = f"{request.base_url}ui#model/{model.core.name}"
    cards = _Cards(model, extraction, page)
    if extraction.missing_required:
        HOOK_RESULTS.labels(SERVICE_ID, "not_computed").inc()
        return _json({"cards": [cards.not_computed(missing=extraction.missing_required)]})
    try:
        scored = predict_one(
            state,
            model,
            {"patient_id": patient_id, "features": extraction.features},
            caller.key_id,
            channel=CHANNEL,
        )
    except InvalidFeatures as exc:
        HOOK_RESULTS.labels(SERVICE_ID, "not_computed").inc()
        return _json({"cards": [cards.not_computed(invalid=exc.errors)]})
    HOOK_RESULTS.labels(SERVICE_ID, "scored").inc()
    return _json({"cards": [cards.risk(dict(scored.result))]})


# --- cards ----------------------------------------------------------------------------------


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


class _Cards:
    """Builds the one card of a response (Markdown detail, source, link, extension)."""

    def __init__(self, model: LoadedModel, extraction: fhir.Extraction, page: str) -> None:
        self.model = model
        self.extraction = extraction
        self.page = page
        self.specs = {spec.name: spec for spec in model.specs}
        self.source = {"label": f"clinrisk {model.core.name} {model.core.version}", "url": page}
        self.links = [
            {
                "label": f"clinrisk: model '{model.core.name}' card and validation",
                "url": page,
                "type": "absolute",
            }
        ]

    def _label(self, feature: str) -> str:
        spec = self.specs.get(feature)
        return spec.label if spec else feature

    def _value(self, feature: str, value: Any) -> str:
        spec = self.specs[feature]
        if value is None:
            return "missing"
        if spec.type is FeatureType.BINARY:
            return "yes" if value == 1 else "no"
        if isinstance(value, int | float):
            unit = f" {spec.unit}" if spec.unit and spec.unit != "count" else ""
            return f"{_number(value)}{unit}"
        return str(value)

    def _model_line(self, prediction_id: str | None) -> str:
        core = self.model.core
        title = self.model.manifest.title
        line = f"Model **{core.name} {core.version}** ({title}), sha256 `{core.sha256}`"
        if prediction_id:
            line += f"; prediction `{prediction_id}`"
        return line + "."

    def _notes(self) -> list[str]:
        return [f"- {warning}" for warning in self.extraction.warnings]

    def _inputs_table(self, values: dict[str, Any]) -> list[str]:
        rows = ["| Input | Value | From | Date |", "|---|---|---|---|"]
        for source in self.extraction.sources:
            when = source.when.isoformat() if source.when else ""
            value = self._value(source.feature, values.get(source.feature))
            rows.append(f"| {self._label(source.feature)} | {value} | {source.text} | {when} |")
        return rows

    def _card(
        self,
        card_id: str,
        summary: str,
        indicator: str,
        detail: list[str],
        extension: dict[str, Any],
    ) -> dict[str, Any]:
        return {
            "uuid": card_id,
            "summary": summary,
            "indicator": indicator,
            "detail": "\n".join(detail),
            "source": self.source,
            "links": self.links,
            "extension": {EXTENSION: extension},
        }

    def risk(self, result: dict[str, Any]) -> dict[str, Any]:
        probability: float = result["probability"]
        tier: dict[str, Any] = result["tier"]
        percent = f"{probability * 100:.1f}%"
        summary = f"10-year CHD risk {percent} ({tier['name']}, ACC/AHA)"
        contributions = result["explanation"]["contributions"]
        values = {c["feature"]: c["value"] for c in contributions}
        drivers = [c for c in contributions if c["direction"] != "no effect"][:TOP_CONTRIBUTIONS]
        quality = result["data_quality"]

        detail = [
            f"**10-year coronary heart disease risk: {percent}**, tier *{tier['label']}*.",
        ]
        if tier.get("action"):
            detail.append(f"Suggested: {tier['action']}")
        detail += ["", "**Main drivers** (largest effect first)"]
        detail += [f"- {c['text']} ({c['contribution']:+.2f} log-odds)" for c in drivers]
        issues = []
        for missing in quality["missing"]:
            issues.append(
                f"- {self._label(missing['feature'])} not in the chart: {missing['handling']}."
            )
        for out in quality["out_of_training_range"]:
            feature = out["feature"]
            issues.append(
                f"- {self._label(feature)} {self._value(feature, out['value'])} is outside the "
                f"training range ({_number(out['training_p01'])}-{_number(out['training_p99'])}): "
                "the estimate is less certain."
            )
        for conversion in quality["unit_conversions"]:
            feature = conversion["feature"]
            issues.append(
                f"- {self._label(feature)} converted from {conversion['value']:g} "
                f"{conversion['unit']} to {self._value(feature, conversion['converted_value'])}."
            )
        issues += self._notes()
        if issues:
            detail += ["", "**Data quality**", *issues]
        detail += ["", "**Chart data used**", "", *self._inputs_table(values)]
        detail += [
            "",
            "Problems not on the active problem list count as absent. The ACC/AHA tiers were "
            "defined for ASCVD risk and are applied here to CHD risk.",
            "",
            self._model_line(result["prediction_id"]),
        ]
        extension = {
            "prediction_id": result["prediction_id"],
            "probability": probability,
            "tier": tier["name"],
            "model": result["model"],
            "trustworthy": quality["trustworthy"],
            "computed": True,
        }
        indicator = INDICATORS.get(tier["name"], "info")
        return self._card(result["prediction_id"], summary, indicator, detail, extension)

    def not_computed(
        self,
        *,
        missing: list[str] | None = None,
        invalid: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        missing = missing or []
        invalid = invalid or []
        bad = [str(e.get("field", "")).rsplit(".", 1)[-1] for e in invalid]
        names = [self._label(f) for f in [*missing, *bad]]
        reason = "missing" if missing else "implausible"
        summary = f"10-year CHD risk not computed: {reason} {', '.join(names)}"
        if len(summary) > 140:
            summary = f"10-year CHD risk not computed: {len(names)} inputs {reason}"
        detail = ["The 10-year CHD risk could not be computed from this chart."]
        if missing:
            texts = {s.feature: s.text for s in self.extraction.sources}
            detail += ["", "**Missing required inputs**"]
            detail += [f"- {self._label(f)}: {texts.get(f, 'not found')}" for f in missing]
        if invalid:
            detail += ["", "**Values the model does not accept**"]
            for error, feature in zip(invalid, bad, strict=True):
                value = error.get("value")
                shown = _number(value) if isinstance(value, int | float) else "?"
                detail.append(
                    f"- {self._label(feature)} {shown}: {error.get('message')} "
                    f"(allowed: {error.get('allowed')})"
                )
        notes = self._notes()
        if notes:
            detail += ["", "**Notes**", *notes]
        values = {
            k: (v["value"] if isinstance(v, dict) else v)
            for k, v in self.extraction.features.items()
        }
        detail += ["", "**Chart data found**", "", *self._inputs_table(values)]
        detail += ["", self._model_line(None)]
        extension = {"computed": False, "missing": missing, "invalid": bad}
        return self._card(str(uuid.uuid4()), summary, "info", detail, extension)


# --- feedback -------------------------------------------------------------------------------


def _feedback_outcomes(body: Any) -> list[str]:
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


@router.post(f"/{SERVICE_ID}/feedback", operation_id="cds_cvd_risk_feedback")
async def cds_cvd_risk_feedback(
    request: Request, state: StateDep, _caller: PredictCaller
) -> Response:
    """Card feedback: validated and counted by outcome; comments and reasons are not kept."""
    body = await _read(request, state.settings.max_body_bytes)
    outcomes = _feedback_outcomes(body)
    for outcome in outcomes:
        FEEDBACK.labels(SERVICE_ID, outcome).inc()
    return _json({"received": len(outcomes)})
