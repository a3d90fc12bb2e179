"""The card of a hook response: the risk with its drivers, or why it was not computed (no HTTP).

Rendered as CDS Hooks 2.0 cards a clinician reads in five seconds:

- ``summary`` (at most 140 characters): the risk, its percentage and its tier;
- **indicator policy**: these are long-horizon or planning risks (10-year cardiovascular risk,
  screening, 30-day readmission), never an emergency, so ``critical`` is never used; the highest
  tier is ``warning`` (worth acting on at this visit or discharge), every other tier and every
  card without a risk ``info``;
- ``detail`` (Markdown): the tier's suggested action, the main drivers in percentage points of
  this patient's risk (never log-odds), cautions, data quality, and the chart data used with the
  resource and date each value came from (derived values say so);
- ``source`` names the model and version and links to its card; ``overrideReasons`` are the
  reasons offered when the clinician dismisses the card (their choice comes back as feedback);
- a suggestion to save the result to the chart as a FHIR ``RiskAssessment`` (``create`` action).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from models import describe
from models.predictor import Predictor
from service.cds_hooks import fhir
from service.cds_hooks.points import driver_text, points_phrase
from service.cds_hooks.riskassessment import risk_assessment

EXTENSION = "dev.clinrisk.prediction"
TOP_CONTRIBUTIONS = 5
MAX_SUMMARY = 140
OVERRIDE_SYSTEM = "https://clinrisk.dev/fhir/CodeSystem/cds-override-reason"
OVERRIDE_REASONS = [
    {"system": OVERRIDE_SYSTEM, "code": "data-wrong", "display": "Chart data used is wrong or old"},
    {"system": OVERRIDE_SYSTEM, "code": "already-addressed", "display": "Already addressed"},
    {"system": OVERRIDE_SYSTEM, "code": "not-relevant", "display": "Not relevant for this patient"},
    {"system": OVERRIDE_SYSTEM, "code": "patient-declined", "display": "Patient declined"},
]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _short(text: str, limit: int = MAX_SUMMARY) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def indicator(tiers: list[Any], tier_name: str) -> str:
    """The indicator policy: the highest tier is a warning, everything else info."""
    return "warning" if tiers and tiers[-1]["name"] == tier_name else "info"


class Cards:
    """Builds the one card of a response (Markdown detail, source, links, suggestion)."""

    def __init__(
        self,
        model: Predictor,
        extraction: fhir.Extraction,
        page: str,
        *,
        outcome: str | None = None,
        subject: str | None = None,
        encounter: str | None = None,
        launch: str | None = None,
    ) -> None:
        self.outcome = outcome or model.manifest.title
        """The risk in words ("10-year ASCVD risk"); the model's title by default."""
        self.model = model
        self.extraction = extraction
        self.page = page
        self.subject = subject
        self.encounter = encounter
        self.specs = {spec.name: spec for spec in model.specs}
        label = f"clinrisk {model.core.name} {model.core.version}"
        self.source = {
            "label": label,
            "url": page,
            "topic": {
                "system": "https://clinrisk.dev/fhir/CodeSystem/models",
                "code": model.core.name,
                "display": model.manifest.title,
            },
        }
        self.links: list[dict[str, Any]] = [
            {
                "label": f"Model card: {model.core.name} {model.core.version}",
                "url": page,
                "type": "absolute",
            }
        ]
        if launch is not None:
            # SMART App Launch of the clinician page for this patient, this model open (the
            # page reads appContext's model from the EHR's token answer: service/smart.py).
            self.links.append(
                {
                    "label": "Open in clinrisk (this patient, what-if)",
                    "url": launch,
                    "type": "smart",
                    "appContext": json.dumps({"model": model.core.name}),
                }
            )

    def _label(self, feature: str) -> str:
        spec = self.specs.get(feature)
        return spec.label if spec else feature

    def _value(self, feature: str, value: Any) -> str:
        spec = self.specs[feature]
        if value is None:
            return "missing"
        if isinstance(value, dict):
            return f"{value.get('value')} {value.get('unit')}"
        # One wording for values everywhere: models.describe ("Female", "168 mmHg").
        return describe.value_text(spec, value)

    def _driver(self, contribution: dict[str, Any]) -> str:
        return driver_text(self.specs, contribution)

    def _model_line(self, prediction_id: str | None) -> str:
        core = self.model.core
        line = f"Model **{core.name} {core.version}** ({self.model.manifest.title})"
        clinical_use = getattr(self.model.manifest, "clinical_use", None)
        status = getattr(clinical_use, "status", None)
        if isinstance(status, str):
            line += f", clinical use: *{status.replace('_', ' ')}*"
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
        level: str,
        detail: list[str],
        extension: dict[str, Any],
    ) -> dict[str, Any]:
        return {
            "uuid": card_id,
            "summary": _short(summary),
            "indicator": level,
            "detail": "\n".join(detail),
            "source": self.source,
            "links": self.links,
            "overrideReasons": OVERRIDE_REASONS,
            "extension": {EXTENSION: extension},
        }

    def risk(self, result: dict[str, Any]) -> dict[str, Any]:
        probability: float = result["probability"]
        tier: dict[str, Any] = result["tier"]
        percent = describe.probability_text(probability)
        summary = f"{self.outcome} {percent}: {tier['label']}"
        contributions = result["explanation"]["contributions"]
        values = {c["feature"]: c["value"] for c in contributions}
        drivers = [c for c in contributions if c["direction"] != "no effect"][:TOP_CONTRIBUTIONS]
        quality = result["data_quality"]

        detail = [f"**{self.outcome}: {percent}**, tier *{tier['label']}*."]
        if tier.get("action"):
            detail.append(f"Suggested: {tier['action']}")
        detail += ["", "**Main drivers** (change in this patient's risk, largest first)"]
        detail += [
            f"- {self._driver(c)} ({points_phrase(result, c['contribution'])})" for c in drivers
        ]
        issues = []
        for missing in quality["missing"]:
            issues.append(
                f"- {self._label(missing['feature'])} not in the chart: {missing['handling']}."
            )
        for out in quality["out_of_training_range"]:
            feature = out["feature"]
            issues.append(
                f"- {self._label(feature)} {self._value(feature, out['value'])} is outside the "
                f"range the model was built on ({_number(out['training_p01'])}-"
                f"{_number(out['training_p99'])}): the estimate is less certain."
            )
        for conversion in quality["unit_conversions"]:
            feature = conversion["feature"]
            issues.append(
                f"- {self._label(feature)} converted from {conversion['value']:g} "
                f"{conversion['unit']} to {self._value(feature, conversion['converted_value'])}."
            )
        issues += self._notes()
        uncertainty = result.get("uncertainty")
        if uncertainty:
            detail += ["", f"**How sure:** {uncertainty['statement']}"]
        warnings = result.get("warnings", [])
        if warnings:
            detail += ["", "**Cautions**", *(f"- {w['message']}" for w in warnings)]
        if issues:
            detail += ["", "**Data quality**", *issues]
        detail += ["", "**Chart data used**", "", *self._inputs_table(values)]
        detail += [
            "",
            "Conditions and medications not in the chart count as absent. The risk describes "
            "people with these values, not what changing one would do for this patient.",
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
            "status": "scored",
            "warnings": [w["code"] for w in warnings],
        }
        card = self._card(
            result["prediction_id"],
            summary,
            indicator(self.model.tiers, tier["name"]),
            detail,
            extension,
        )
        if self.subject is not None:
            assessment = risk_assessment(
                result,
                self.model,
                subject=self.subject,
                occurrence=_now(),
                basis=self.extraction.basis(),
                encounter=self.encounter,
            )
            card["suggestions"] = [
                {
                    "label": "Save this risk assessment to the chart",
                    "uuid": str(uuid.uuid4()),
                    "isRecommended": False,
                    "actions": [
                        {
                            "type": "create",
                            "description": f"Record the {self.outcome} "
                            f"({percent}) as a RiskAssessment",
                            "resource": assessment,
                        }
                    ],
                }
            ]
            card["selectionBehavior"] = "at-most-one"
        return card

    def _chart_context(self) -> list[str]:
        """The notes and the table of chart data found: what a card that gives no risk shows."""
        lines: list[str] = []
        notes = self._notes()
        if notes:
            lines += ["", "**Notes**", *notes]
        values = {
            k: (v["value"] if isinstance(v, dict) else v)
            for k, v in self.extraction.features.items()
        }
        return [*lines, "", "**Chart data found**", "", *self._inputs_table(values)]

    def not_applicable(self, result: dict[str, Any]) -> dict[str, Any]:
        """An info card for values outside the equation's accepted ranges (the population
        itself, age and stated conditions, gets no card): which, and no score at all."""
        failed = result["applicability"]["failed"]
        summary = f"{self.outcome} not computed: " + "; ".join(f["detail"] for f in failed)
        if len(summary) > MAX_SUMMARY:
            summary = f"{self.outcome} not computed: {len(failed)} values out of range"
        detail = [
            "The model does not apply with these values, so no risk is given; check them.",
            "",
            "**Out of the model's range**",
            *(f"- {f['description']}: {f['detail']}. Why: {f['source']}" for f in failed),
        ]
        detail += self._chart_context()
        detail += ["", self._model_line(result["prediction_id"])]
        extension = {
            "prediction_id": result["prediction_id"],
            "computed": False,
            "status": "not_applicable",
            "not_applicable": [f["id"] for f in failed],
            "model": result["model"],
        }
        return self._card(result["prediction_id"], summary, "info", detail, extension)

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
        summary = f"{self.outcome} not computed: {reason} {', '.join(names)}"
        if missing and not invalid and set(missing) <= fhir.SURVEY_ITEMS:
            # Answers only the patient can give: say so, the SMART link opens the form.
            summary = f"{self.outcome}: needs {len(missing)} questionnaire answers (open clinrisk)"
        elif len(summary) > MAX_SUMMARY:
            summary = f"{self.outcome} not computed: {len(names)} inputs {reason}"
        detail = [f"The {self.outcome.lower()} could not be computed from this chart."]
        if missing:
            texts = {s.feature: s.text for s in self.extraction.sources}
            detail += ["", "**Missing required inputs**"]
            detail += [f"- {self._label(f)}: {texts.get(f, 'not found')}" for f in missing]
            detail += ["", "The model page can score the patient with the missing values entered."]
        if invalid:
            detail += ["", "**Values the model does not accept**"]
            for error, feature in zip(invalid, bad, strict=True):
                value = error.get("value")
                shown = _number(value) if isinstance(value, int | float) else "?"
                detail.append(
                    f"- {self._label(feature)} {shown}: {error.get('message')} "
                    f"(allowed: {error.get('allowed')})"
                )
        detail += self._chart_context()
        detail += ["", self._model_line(None)]
        extension = {"computed": False, "missing": missing, "invalid": bad}
        return self._card(str(uuid.uuid4()), summary, "info", detail, extension)


def _now() -> datetime:
    return datetime.now(UTC)
