"""The card of a hook response: the 10-year risk with its drivers, or why it was not computed.

Plain functions of the model, the FHIR extraction and the prediction (no HTTP), rendered as CDS
Hooks 2.0 cards: Markdown detail, source, link to the model page and a clinrisk extension.
"""

from __future__ import annotations

import uuid
from typing import Any

from models import describe
from models.predictor import Predictor
from service.cds_hooks import fhir

EXTENSION = "dev.clinrisk.prediction"
TOP_CONTRIBUTIONS = 5
INDICATORS = {"low": "info", "borderline": "info", "intermediate": "warning", "high": "critical"}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


class Cards:
    """Builds the one card of a response (Markdown detail, source, link, extension)."""

    def __init__(self, model: Predictor, extraction: fhir.Extraction, page: str) -> None:
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
        # One wording for values everywhere: models.describe ("Female", "168 mmHg").
        return describe.value_text(spec, value)

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
        # Percentage points of this patient's risk, never log-odds (models.describe).
        detail += [
            f"- {c['text']} "
            f"({describe.points_text(describe.points_change(probability, c['contribution']))})"
            for c in drivers
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
        uncertainty = result.get("uncertainty")
        if uncertainty:
            detail += ["", f"**How sure:** {uncertainty['statement']}"]
        # The borrowed-tier caution is the card's closing sentence already.
        warnings = [
            w for w in result.get("warnings", []) if w["code"] != "tier_thresholds_borrowed"
        ]
        if warnings:
            detail += ["", "**Cautions**", *(f"- {w['message']}" for w in warnings)]
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
            "status": "scored",
            "warnings": [w["code"] for w in result.get("warnings", [])],
        }
        indicator = INDICATORS.get(tier["name"], "info")
        return self._card(result["prediction_id"], summary, indicator, detail, extension)

    def not_applicable(self, result: dict[str, Any]) -> dict[str, Any]:
        """An info card: the model does not apply to this patient, why, and no score at all."""
        failed = result["applicability"]["failed"]
        summary = "10-year CHD risk not applicable: " + "; ".join(f["detail"] for f in failed)
        if len(summary) > 140:
            summary = f"10-year CHD risk not applicable: {len(failed)} criteria not met"
        detail = [
            "This model is not intended for this patient, so no risk is given.",
            "",
            "**Criteria not met**",
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
        detail += self._chart_context()
        detail += ["", self._model_line(None)]
        extension = {"computed": False, "missing": missing, "invalid": bad}
        return self._card(str(uuid.uuid4()), summary, "info", detail, extension)
