"""A scored prediction as a FHIR R4 ``RiskAssessment`` (plain JSON, no I/O).

Used by the REST API (``service.api.fhir_out``) and offered on a CDS card as a suggestion whose
``create`` action writes it to the EHR. Choices, each stated in the resource itself:

- ``prediction[0].probabilityDecimal`` is on the **0-1 scale** (0.083 = 8.3%), as FHIR defines
  the element; ``note`` says so in words for a reader of the raw resource;
- ``qualitativeRisk`` maps the model's tiers onto FHIR's risk-probability codes: the lowest tier
  is ``low``, the highest ``high``, any tier between ``moderate``; the tier's own label is the
  text;
- ``whenRange``: the model's horizon from the assessment (10 years for the cardiovascular
  equations, 30 days after discharge for readmission); the diabetes screening model estimates a
  present, undiagnosed condition, so it has none and ``note`` says so;
- ``performer`` is a contained ``Device`` naming the model, its version and artifact sha256,
  ``method`` the model; ``basis`` references the resources the inputs were read from;
- ``rationale``: the top reasons in words, with their effect in percentage points.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from models.predictor import Predictor
from service.cds_hooks.points import driver_text, points_phrase

MODEL_SYSTEM = "https://clinrisk.dev/fhir/CodeSystem/models"
RISK_PROBABILITY = "http://terminology.hl7.org/CodeSystem/risk-probability"
UCUM = "http://unitsofmeasure.org"
# Horizon per model: (value, UCUM code, unit) of the whenRange's upper bound.
HORIZONS: dict[str, tuple[int, str, str]] = {
    "ascvd-prevent": (10, "a", "years"),
    "ascvd-pce": (10, "a", "years"),
    "cvd-framingham-2008": (10, "a", "years"),
    "cvd": (10, "a", "years"),
    "readmission": (30, "d", "days"),
}
TOP_REASONS = 3


def qualitative(tiers: Sequence[Mapping[str, Any]], tier: Mapping[str, Any]) -> str:
    names = [t["name"] for t in tiers]
    index = names.index(tier["name"]) if tier["name"] in names else 1
    return "low" if index == 0 else "high" if index == len(names) - 1 else "moderate"


def rationale(result: Mapping[str, Any], specs: Mapping[str, Any], top: int = TOP_REASONS) -> str:
    explanation = result["explanation"]
    drivers = [c for c in explanation["contributions"] if c["direction"] != "no effect"][:top]
    if not drivers:
        return "No single input moved the risk noticeably."
    reasons = [
        f"{driver_text(specs, c)} ({points_phrase(result, c['contribution'])})" for c in drivers
    ]
    return "Main reasons: " + "; ".join(reasons) + "."


def risk_assessment(
    result: Mapping[str, Any],
    model: Predictor,
    *,
    subject: str,
    occurrence: datetime,
    basis: Sequence[str] = (),
    encounter: str | None = None,
) -> dict[str, Any]:
    """The RiskAssessment of one scored result (``status`` "scored") about ``subject``
    (``Patient/<id>``)."""
    core = model.core
    tier = result["tier"]
    probability = float(result["probability"])
    label = f"clinrisk {core.name} {core.version}"
    method = {
        "coding": [
            {
                "system": MODEL_SYSTEM,
                "code": core.name,
                "version": core.version,
                "display": model.manifest.title,
            }
        ],
        "text": f"{label}: {model.manifest.title}",
    }
    prediction: dict[str, Any] = {
        "outcome": {"text": model.manifest.title},
        "probabilityDecimal": round(probability, 6),
        "qualitativeRisk": {
            "coding": [
                {
                    "system": RISK_PROBABILITY,
                    "code": qualitative(model.tiers, tier),
                }
            ],
            "text": tier["label"],
        },
        "rationale": rationale(result, {spec.name: spec for spec in model.specs}),
    }
    notes = [
        f"probabilityDecimal is on the 0-1 scale: {probability:.4f} = {probability * 100:.1f}%."
    ]
    horizon = HORIZONS.get(core.name)
    if horizon is not None:
        value, code, unit = horizon
        prediction["whenRange"] = {
            "low": {"value": 0, "unit": unit, "system": UCUM, "code": code},
            "high": {"value": value, "unit": unit, "system": UCUM, "code": code},
        }
    else:
        notes.append("The outcome is a present, undiagnosed condition: no time range applies.")
    clinical_use = getattr(model.manifest, "clinical_use", None)
    status = getattr(clinical_use, "status", None)
    if isinstance(status, str):
        notes.append(f"Clinical-use status of this model: {status.replace('_', ' ')}.")
    resource: dict[str, Any] = {
        "resourceType": "RiskAssessment",
        "contained": [
            {
                "resourceType": "Device",
                "id": "model",
                "deviceName": [{"name": label, "type": "model-name"}],
                "version": [{"value": core.version}],
                "identifier": [
                    {"system": "urn:ietf:rfc:3986", "value": f"urn:sha256:{core.sha256}"}
                ],
            }
        ],
        "identifier": [
            {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{result['prediction_id']}"}
        ],
        "status": "final",
        "method": method,
        "code": {"text": model.manifest.title},
        "subject": {"reference": subject},
        "occurrenceDateTime": occurrence.isoformat(),
        "performer": {"reference": "#model", "display": label},
        "prediction": [prediction],
        "note": [{"text": " ".join(notes)}],
    }
    if encounter is not None:
        resource["encounter"] = {"reference": encounter}
    if basis:
        resource["basis"] = [{"reference": reference} for reference in basis]
    return resource
