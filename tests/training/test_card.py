"""The model card rendered from a manifest."""

from __future__ import annotations

import pytest

from models.manifest import ClinicalUse, Governance, Manifest, ModelSpecification
from training.card import REQUIRED_SECTIONS, render_card

SECTIONS = list(REQUIRED_SECTIONS)


@pytest.fixture
def card(sample_manifest: Manifest) -> str:
    return render_card(sample_manifest)


def _line_containing(card: str, text: str) -> str:
    matches = [line for line in card.splitlines() if text in line]
    assert matches, f"no line contains {text!r}"
    return matches[0]


def test_title_line(card: str) -> None:
    assert card.splitlines()[0] == "# 10-year coronary heart disease risk — cvd 1.2.0"


def _section_body(card: str, heading: str) -> list[str]:
    """The non-blank lines between ``heading`` and the next heading of any level."""
    lines = card.splitlines()
    body = []
    for line in lines[lines.index(heading) + 1 :]:
        if line.startswith("#"):
            break
        if line.strip():
            body.append(line)
    return body


@pytest.mark.parametrize("heading", SECTIONS)
def test_has_section_with_content(card: str, heading: str) -> None:
    assert heading in card.splitlines()
    if heading != "## Performance":  # its content is in its subsections
        assert _section_body(card, heading), f"{heading} is empty"


def test_an_artifact_without_governance_says_not_available_with_the_reason(card: str) -> None:
    for field in ("Developer", "Funding", "Licence", "Collection dates", "Decision role"):
        line = _line_containing(card, f"**{field}:**")
        assert "Not available: not recorded by this artifact" in line
    assert "**Clinical-use status:** **evaluation only**. not stated by this artifact" in card
    body = _section_body(card, "### Repeated cross-validation")
    assert body == [
        "Not available: not recorded by this artifact (built before the governance fields, 1.3.0)."
    ]


def test_governance_and_status_are_shown(sample_manifest: Manifest) -> None:
    governance = Governance(
        developer="Dev team",
        contact="dev@example.org",
        funding="None",
        data_licence="CC BY 4.0",
        data_provenance="From a registry",
        data_collection_dates="2001-2003",
        intended_users="GPs",
        decision_role="Informs",
        outcome_timing="Within 10 years",
        fairness_approach="Audited by sex",
        external_validation="None yet",
        update_plan="Yearly",
        monitoring_plan="Quarterly review",
    )
    manifest = sample_manifest.model_copy(
        update={
            "governance": governance,
            "clinical_use": ClinicalUse(status="teaching_data_only", reason="Teaching file."),
        }
    )
    card = render_card(manifest)
    assert "**Clinical-use status:** **teaching data only**. Teaching file." in card
    assert "- **Contact:** dev@example.org" in card
    assert "- **Collection dates:** 2001-2003" in card
    assert _section_body(card, "## External validation") == ["None yet"]
    assert "- **Monitoring:** Quarterly review" in card


def test_sections_in_model_card_order(card: str) -> None:
    lines = card.splitlines()
    positions = [lines.index(h) for h in SECTIONS]
    assert positions == sorted(positions)


def test_model_details(card: str) -> None:
    assert "gradient-boosted trees (XGBoost), 300 trees of depth 2" in card
    assert "2025-01-02T03:04:05+00:00" in card
    assert "`0123abc`" in card
    assert "Platt (logistic) recalibration of the margin, slope 1.010, intercept -0.050" in card
    assert "complete forest is the model file `model.json`" in card
    assert "1.50 µs" in card
    assert "24.0 µs" in card
    assert "pred_contribs" in card


def test_logistic_kind(sample_manifest: Manifest) -> None:
    manifest = sample_manifest.model_copy(update={"kind": "logistic", "hyperparameters": {}})
    assert "regularised logistic regression" in render_card(manifest)


def test_auroc_with_ci(card: str) -> None:
    assert "0.825 (0.821\u20130.829)" in card
    assert "0.790 (0.780\u20130.800)" in card


def test_every_feature_label_and_category(sample_manifest: Manifest, card: str) -> None:
    for spec in sample_manifest.features:
        assert f"| {spec.label} |" in card
        for category in spec.categories:
            assert category.label in card
    row = _line_containing(card, "| Systolic BP |")
    assert "mmHg" in row
    assert "70\u2013260" in row
    assert "8480-6" in row
    assert "required" in row
    smoking = _line_containing(card, "| Smoking status |")
    assert "optional (follows the forest's learned missing-value branch)" in smoking


def test_out_of_scope_bullets(sample_manifest: Manifest, card: str) -> None:
    assert "Out of scope" in card
    for item in sample_manifest.out_of_scope:
        assert f"- {item}" in card.splitlines()


def test_subgroup_without_auroc_is_suppressed(card: str) -> None:
    row = _line_containing(card, "| age band | 90+ |")
    assert "suppressed (too few events)" in row
    assert "0.830" in _line_containing(card, "| sex | female |")


def test_calibration_wording(card: str) -> None:
    """Only calibration-in-the-large reads as "too high / too low" (issue 10)."""
    for line in card.splitlines():
        if "too high" in line or "too low" in line:
            assert "Calibration-in-the-large" in line or "calibration-in-the-large" in line, line


def test_linear_model_prints_its_coefficients(sample_manifest: Manifest) -> None:
    spec = ModelSpecification(
        intercept=-7.5,
        coefficients={"systolic_bp": 0.0125},
        means={"systolic_bp": 132.0},
    )
    manifest = sample_manifest.model_copy(
        update={"kind": "logistic", "hyperparameters": {}, "model_specification": spec}
    )
    body = _section_body(render_card(manifest), "## Full model")
    assert "| (intercept) | -7.5 | — |" in body
    assert "| systolic_bp | 0.0125 | 132 |" in body


def test_tiers_table(card: str) -> None:
    high = _line_containing(card, "| High |")
    assert "≥ 20.0%" in high
    assert "Start a statin." in high
    assert "48.0%" in high  # sensitivity
    assert "90.0%" in high  # specificity
    assert "39.0%" in high  # PPV
    elevated = _line_containing(card, "| Elevated |")
    assert "5.0% to < 20.0%" in elevated
    assert "91.0%" in elevated
    assert "< 5.0%" in _line_containing(card, "| Low |")


def test_calibration_bins(card: str) -> None:
    assert "20.9%" in card
    assert "21.2%" in card


def test_candidates_and_baselines(card: str) -> None:
    selected = _line_containing(card, "0.823 ± 0.006")
    assert "✓" in selected
    assert "n_estimators=300" in selected
    assert "✓" not in _line_containing(card, "0.816 ± 0.007")
    baseline = _line_containing(card, "| Framingham 2008 |")
    assert "+0.035" in baseline
    assert "p < 0.001" in baseline


def test_participants_and_data(card: str) -> None:
    assert "seed 20240101" in card
    assert "40,000 rows: 32,000 development, 8,000 test" in card
    assert "b" * 64 in card
    assert "a" * 64 in card
    assert "2000 rows with prevalent CHD at baseline" in card
    assert "12.1% in the development part" in card


def test_limitations_never_empty(sample_manifest: Manifest) -> None:
    validation = sample_manifest.validation.model_copy(update={"shortfalls": []})
    manifest = sample_manifest.model_copy(update={"validation": validation, "caveats": []})
    assert _section_body(render_card(manifest), "## Known limitations") == ["None recorded."]


def test_pipes_in_text_do_not_break_tables(sample_manifest: Manifest) -> None:
    spec = sample_manifest.features[0].model_copy(update={"source": "sysBP | SBP"})
    manifest = sample_manifest.model_copy(
        update={"features": [spec, *sample_manifest.features[1:]]}
    )
    row = _line_containing(render_card(manifest), "| Systolic BP |")
    assert "sysBP \\| SBP" in row


def test_deterministic(sample_manifest: Manifest) -> None:
    assert render_card(sample_manifest) == render_card(sample_manifest)
    assert render_card(sample_manifest.model_copy(deep=True)) == render_card(sample_manifest)
