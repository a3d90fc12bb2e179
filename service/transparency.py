"""ONC HTI-1 source attributes of a predictive decision support intervention (45 CFR
170.315(b)(11)(iv)(B)), per model version (issue 13 part 6).

Every attribute is filled from the model version's manifest or, for validity and fairness in
local data and their monitoring, from live validation on the outcomes recorded here. An
attribute the artifact does not state is returned as missing, with the reason, and never
filled with a default or a guess: the governance statements (developer, funding, intended
users, decision role, fairness approach, external validation, update plan) come only from a
manifest's ``governance`` block, which artifacts built before it do not have.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from models.manifest import Manifest

# The (b)(11)(iv)(A)(5)-(13) demographic and social data elements, as canonical feature names
# in clinrisk's feature catalogue (a feature not listed here is none of them).
DEMOGRAPHIC_FEATURES = {
    "age_years": "date of birth (as age)",
    "sex_male": "sex",
    "race": "race",
    "ethnicity": "ethnicity",
    "language": "language",
    "sexual_orientation": "sexual orientation",
    "gender_identity": "gender identity",
    "general_health": "health status assessment (self-rated general health)",
    "poor_mental_health_days": "health status assessment (days of poor mental health)",
    "poor_physical_health_days": "health status assessment (days of poor physical health)",
    "difficulty_walking": "health status assessment (difficulty walking)",
}


def _present(value: Any, source: str) -> dict[str, Any]:
    return {"status": "present", "value": value, "source": source}


def _missing(reason: str) -> dict[str, Any]:
    return {"status": "missing", "value": None, "reason": reason}


def _governance(manifest: Manifest, field: str) -> dict[str, Any]:
    governance = getattr(manifest, "governance", None)
    value = getattr(governance, field, None) if governance is not None else None
    if value:
        return _present(value, f"manifest: governance.{field}")
    if governance is None:
        return _missing("this artifact's manifest has no governance statement")
    return _missing(f"the manifest's governance statement leaves {field} empty")


def _trained(manifest: Manifest, build: Callable[[], Any], source: str) -> dict[str, Any]:
    if manifest.validation is None or manifest.dataset is None:
        return _missing(
            "a published equation: not trained or validated on local data here; "
            "see the card's citations"
        )
    return _present(build(), source)


def _test_validity(manifest: Manifest) -> dict[str, Any]:
    assert manifest.validation is not None and manifest.split is not None
    test = manifest.validation.test
    return {
        "data": f"held-out test split of the training source ({manifest.split.method})",
        "n": test.n,
        "events": test.positives,
        "auroc": {"value": test.auroc, "ci_low": test.auroc_ci_low, "ci_high": test.auroc_ci_high},
        "calibration_slope": test.calibration_slope,
        "calibration_intercept": test.calibration_intercept,
        "brier": test.brier,
        "tiers": [t.model_dump() for t in manifest.validation.tiers],
    }


def _test_fairness(manifest: Manifest) -> list[dict[str, Any]]:
    assert manifest.validation is not None
    return [
        {
            "factor": g.factor,
            "level": g.level,
            "n": g.n,
            "events": g.positives,
            "auroc": g.auroc,
            "calibration_slope": g.calibration_slope,
            "observed_expected": g.observed_rate / g.mean_predicted if g.mean_predicted else None,
            "reliable": g.reliable,
            "concern": g.concern,
        }
        for g in manifest.validation.subgroups
    ]


def _local(live: dict[str, Any] | None, pick: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    if live is None:
        return _missing("the audit store could not be read")
    overall = live["overall"]
    if overall.get("suppressed"):
        return _missing(
            f"{overall['outcomes_known']} predictions with a recorded outcome so far; figures are "
            f"shown from {live['minimum_group_size']}"
        )
    return _present(pick(live), "live validation on outcomes recorded here (all time)")


def _local_validity(live: dict[str, Any]) -> dict[str, Any]:
    overall = live["overall"]
    return {
        "predictions": overall["predictions"],
        "outcomes_known": overall["outcomes_known"],
        **{
            k: overall["live"][k]
            for k in ("auroc", "calibration_slope", "calibration_intercept", "observed_expected")
        },
        "brier": overall["live"]["brier"],
        "worse_than_validation": overall["worse_than_validation"],
    }


def _local_fairness(live: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for group in live["subgroups"]:
        entry = {
            "factor": group["factor"],
            "level": group["level"],
            "predictions": group.get("predictions"),
            "outcomes_known": group.get("outcomes_known"),
        }
        if group.get("suppressed"):
            entry["suppressed"] = group["reason"]
        else:
            entry.update(
                auroc=group["live"]["auroc"],
                observed_expected=group["live"]["observed_expected"],
                worse_than_validation=group["worse_than_validation"],
            )
        out.append(entry)
    return out


def source_attributes(
    manifest: Manifest,
    live: dict[str, Any] | None,
    monitoring: dict[str, Any],
    decisions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The source attributes, grouped as the rule groups them. ``live``: the live-validation
    report (None if unavailable); ``monitoring``: how this service monitors (thresholds);
    ``decisions``: this version's lifecycle events (None if unavailable)."""
    target = manifest.target
    users = _governance(manifest, "intended_users")
    output = (
        f"A probability of: {target.definition}" if target is not None else "A probability"
    ) + (
        f"; a risk tier ({', '.join(t.label for t in manifest.tiers)}); and the inputs that "
        "raised or lowered it (exact additive contributions, associations, not causes)."
    )
    demographic = {
        f.name: DEMOGRAPHIC_FEATURES[f.name]
        for f in manifest.features
        if f.name in DEMOGRAPHIC_FEATURES
    }
    population = [r.description for r in manifest.applicability]
    sections: list[dict[str, Any]] = [
        {
            "section": "Details and output of the intervention",
            "attributes": {
                "developer": _governance(manifest, "developer"),
                "contact": _governance(manifest, "contact"),
                "funding_source": _governance(manifest, "funding"),
                "output": _present(output, "manifest: target, tiers, explanation"),
                "output_type": _present("prediction", "manifest: kind (a risk model)"),
            },
        },
        {
            "section": "Purpose of the intervention",
            "attributes": {
                "intended_use": _present(manifest.intended_use, "manifest: intended_use"),
                "intended_population": (
                    _present(population, "manifest: applicability")
                    if population
                    else _missing("the manifest states no applicability rules")
                ),
                "intended_users": users,
                "decision_role": _governance(manifest, "decision_role"),
            },
        },
        {
            "section": "Cautioned out-of-scope use",
            "attributes": {
                "out_of_scope": _present(manifest.out_of_scope, "manifest: out_of_scope"),
                "known_risks_and_limitations": _present(
                    manifest.caveats
                    + (manifest.validation.shortfalls if manifest.validation else []),
                    "manifest: caveats, validation.shortfalls",
                ),
            },
        },
        {
            "section": "Development details and input features",
            "attributes": {
                "training_data": _trained(
                    manifest,
                    lambda: {
                        "description": manifest.dataset.description if manifest.dataset else None,
                        "rows_used": manifest.dataset.rows_used if manifest.dataset else None,
                        "sha256": manifest.dataset.sha256 if manifest.dataset else None,
                    },
                    "manifest: dataset",
                ),
                "inclusion_exclusion_criteria": _trained(
                    manifest,
                    lambda: manifest.dataset.exclusions if manifest.dataset else [],
                    "manifest: dataset.exclusions",
                ),
                "demographic_inputs": _present(
                    demographic or "none of the listed demographic or social elements",
                    "manifest: features (by canonical name)",
                ),
                "demographic_representativeness": _trained(
                    manifest,
                    lambda: [
                        {"factor": g["factor"], "level": g["level"], "n": g["n"]}
                        for g in _test_fairness(manifest)
                    ],
                    "manifest: validation.subgroups (test split counts)",
                ),
                "relevance_to_deployed_setting": _governance(manifest, "data_provenance"),
            },
        },
        {
            "section": "Process used to ensure fairness in development",
            "attributes": {
                "fairness_approach": _governance(manifest, "fairness_approach"),
                "ethical_considerations": _present(
                    manifest.ethical_considerations, "manifest: ethical_considerations"
                ),
            },
        },
        {
            "section": "External validation process",
            "attributes": {
                "external_validation": _governance(manifest, "external_validation"),
                "published_reference": (
                    _present(manifest.validation.published_reference, "manifest: validation")
                    if manifest.validation is not None
                    else _missing("no validation block (a published equation: see its card)")
                ),
            },
        },
        {
            "section": "Quantitative measures of performance",
            "attributes": {
                "validity_test_data": _trained(
                    manifest, lambda: _test_validity(manifest), "manifest: validation.test"
                ),
                "fairness_test_data": _trained(
                    manifest, lambda: _test_fairness(manifest), "manifest: validation.subgroups"
                ),
                "validity_external_data": _missing(
                    "no external validation figures are stored with this version"
                ),
                "fairness_external_data": _missing(
                    "no external validation figures are stored with this version"
                ),
                "validity_local_data": _local(live, _local_validity),
                "fairness_local_data": _local(live, _local_fairness),
            },
        },
        {
            "section": "Ongoing maintenance of intervention implementation and use",
            "attributes": {
                "monitoring_of_validity_and_fairness": _present(
                    monitoring, "this service's live validation and drift monitoring"
                ),
                "monitoring_plan": _governance(manifest, "monitoring_plan"),
                "update_process_and_frequency": _governance(manifest, "update_plan"),
                "lifecycle_decisions": (
                    _present(
                        {
                            "state": decisions[-1]["to_state"] if decisions else "candidate",
                            "decisions": decisions,
                        },
                        "lifecycle events recorded here (who, when, why, evidence)",
                    )
                    if decisions is not None
                    else _missing("the audit store could not be read")
                ),
            },
        },
    ]
    missing = sorted(
        name
        for section in sections
        for name, attribute in section["attributes"].items()
        if attribute["status"] == "missing"
    )
    return {
        "model": {"name": manifest.name, "version": manifest.version},
        "regulation": "45 CFR 170.315(b)(11)(iv)(B): source attributes of a predictive DSI",
        "sections": sections,
        "missing": missing,
    }
