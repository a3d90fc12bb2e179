"""The model card rendered from a manifest."""

from __future__ import annotations

import pytest

from models.manifest import Manifest
from training.card import render_card

SECTIONS = [
    "## Model details",
    "## Intended use",
    "## Inputs",
    "## Factors",
    "## Metrics",
    "## Evaluation data",
    "## Training data",
    "## Quantitative analyses",
    "### Test metrics",
    "### Risk tiers",
    "### Calibration",
    "### Subgroups",
    "### Model selection",
    "### Baselines",
    "### Where this model falls short",
    "## Ethical considerations",
    "## Caveats and recommendations",
]


@pytest.fixture
def card(sample_manifest: Manifest) -> str:
    return render_card(sample_manifest)


def _line_containing(card: str, text: str) -> str:
    matches = [line for line in card.splitlines() if text in line]
    assert matches, f"no line contains {text!r}"
    return matches[0]


def test_title_line(card: str) -> None:
    assert card.splitlines()[0] == "# 10-year coronary heart disease risk — cvd 1.2.0"


@pytest.mark.parametrize("heading", SECTIONS)
def test_has_section(card: str, heading: str) -> None:
    assert heading in card.splitlines()


def test_sections_in_model_card_order(card: str) -> None:
    lines = card.splitlines()
    positions = [lines.index(h) for h in SECTIONS]
    assert positions == sorted(positions)


def test_model_details(card: str) -> None:
    assert "gradient-boosted trees (XGBoost), 300 trees of depth 2" in card
    assert "2025-01-02T03:04:05+00:00" in card
    assert "`0123abc`" in card
    assert "Platt (logistic) recalibration of the margin, slope 1.010, intercept -0.050" in card
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


def test_factors_listed(card: str) -> None:
    factors = card.split("## Factors", 1)[1].split("## Metrics", 1)[0]
    assert "sex" in factors
    assert "age_band" in factors


def test_subgroup_without_auroc_is_na(card: str) -> None:
    row = _line_containing(card, "| age_band | 90+ |")
    assert "n/a (too few events)" in row
    assert "0.830" in _line_containing(card, "| sex | female |")


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


def test_evaluation_and_training_data(card: str) -> None:
    assert "seed 20240101" in card
    assert "32,000 training rows, 8,000 test rows" in card
    assert "b" * 64 in card
    assert "a" * 64 in card
    assert "- 2000 rows with prevalent CHD at baseline." in card.splitlines()
    assert "12.1% in the training part" in card


def test_shortfalls_heading_omitted_when_empty(sample_manifest: Manifest) -> None:
    validation = sample_manifest.validation.model_copy(update={"shortfalls": []})
    manifest = sample_manifest.model_copy(update={"validation": validation})
    assert "falls short" not in render_card(manifest)


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
