"""Clinical language (issue 14, part 5): the issue's examples render as a clinician writes them,
from the labels the training configs declare, at every front door that words a value."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import pytest

from models import describe
from models.loader import load_artifact
from models.manifest import FeatureSpec, Manifest
from models.predictor import Predictor
from models.registry import artifact_folder
from models.validation import InvalidFeatures
from service.cds_hooks import fhir
from service.cds_hooks.cards import Cards
from tests.conftest import MODELS_DIR
from training.config import load_config

WORDING_FIELDS = ("label", "description", "direction", "direction_rationale", "value_labels")


def spec(model: str, name: str) -> FeatureSpec:
    """The feature as its config declares it (so as the retrained manifest carries it)."""
    return next(f for f in load_config(model).features if f.name == name)


def predictor(model: str) -> Predictor:
    """The shipped model, worded with its config's labels, directions and links (identical to
    the manifest's once the artifact was trained from the current config; the fitted model and
    its validation are the artifact's own)."""
    artifact = load_artifact(artifact_folder(MODELS_DIR, model))
    config = {f.name: f for f in load_config(model).features}
    features = [
        f.model_copy(
            update={
                **{k: getattr(config[f.name], k) for k in WORDING_FIELDS},
                "implies": config[f.name].implies,
                "modifiable": config[f.name].modifiable,
            }
        )
        for f in artifact.manifest.features
    ]
    manifest = Manifest.model_validate(
        {**artifact.manifest.model_dump(), "features": [f.model_dump() for f in features]}
    )
    return Predictor(dataclasses.replace(artifact, manifest=manifest))


@pytest.mark.parametrize(
    ("model", "feature", "value", "expected"),
    [
        ("cvd", "sex_male", 0.0, "Female"),  # not "Male sex: no"
        ("cvd", "sex_male", 1.0, "Male"),
        ("diabetes", "general_health", 4.0, "Self-rated health: Fair"),  # not "... 4"
        ("cvd", "cigarettes_per_day", 20.0, "20 cigarettes per day"),  # unit said once
        ("cvd", "systolic_bp_mm_hg", 167.676, "Systolic BP 168 mmHg"),  # mmHg whole
        ("cvd", "total_cholesterol_mg_dl", 239.754, "Total cholesterol 240 mg/dL"),
        ("cvd", "bmi_kg_m2", 43.04, "BMI 43.0 kg/m²"),  # BMI one decimal
        ("cvd", "current_smoker", 1.0, "Current smoker"),
        ("cvd", "current_smoker", 0.0, "Non-smoker"),
        ("cvd", "heart_rate_bpm", 74.6, "Heart rate 75 beats per minute"),
        ("cvd", "glucose_mg_dl", None, "Glucose not known"),
        ("diabetes", "poor_mental_health_days", 3.0, "Poor mental health days: 3"),
        ("readmission", "hba1c_result", "above_8", "HbA1c this stay: above 8%"),
        ("readmission", "emergency_visits_prior_year", 2.0, "ED visits (prior year): 2"),
    ],
)
def test_values_read_as_a_clinician_writes_them(
    model: str, feature: str, value: float | str | None, expected: str
) -> None:
    assert describe.describe_value(spec(model, feature), value) == expected


def test_a_feature_with_a_clinical_direction_raises_or_lowers_the_risk() -> None:
    smoker = spec("cvd", "current_smoker")
    assert smoker.direction == 1
    assert describe.contribution_text(smoker, 1.0, 1) == "Current smoker raised the predicted risk"
    active = spec("diabetes", "physically_active")
    assert describe.contribution_text(active, 1.0, -1) == (
        "Physically active lowered the predicted risk"
    )


@pytest.mark.parametrize(
    ("model", "feature", "value", "sign", "expected"),
    [
        (
            "readmission",
            "hba1c_result",
            "above_8",
            -1,
            "HbA1c this stay: above 8% is associated with lower predicted risk in the training "
            "data",
        ),
        (
            "diabetes",
            "cholesterol_checked_5y",
            1.0,
            1,
            "Cholesterol checked in 5 years is associated with higher predicted risk in the "
            "training data",
        ),
        (
            "cvd",
            "bp_medication",
            0.0,
            0,
            "Not on blood-pressure medication: no effect on the predicted risk",
        ),
    ],
)
def test_a_feature_without_a_clinical_direction_is_worded_as_an_association(
    model: str, feature: str, value: float | str, sign: int, expected: str
) -> None:
    assert spec(model, feature).direction == 0
    text = describe.contribution_text(spec(model, feature), value, sign)
    assert text == expected
    assert "raised" not in text and "lowered" not in text


def test_changes_are_in_percentage_points_and_add_up_on_the_probability_scale() -> None:
    base, probability = 0.10, 0.25
    whole = math.log(probability / (1 - probability)) - math.log(base / (1 - base))
    # All of the change from the base risk, in points: 25% - 10% = 15 points.
    assert describe.points_change(probability, whole) == pytest.approx(15.0)
    assert describe.points_text(15.0) == "+15.0 percentage points"
    assert describe.points_text(-0.3) == "-0.3 percentage points"
    assert describe.points_text(0.01) == "<0.1 percentage points"
    assert describe.change_text(0.633, 0.58) == "from 63.3% to 58.0% (-5.3 percentage points)"


def test_help_texts_and_missing_handling_use_clinical_words() -> None:
    for model in ("cvd", "diabetes", "readmission"):
        for feature in load_config(model).features:
            assert not re.search(r"\b[01] = ", feature.description), feature.name
            assert "imputed" not in feature.description
    assert spec("cvd", "sex_male").description == "Sex recorded in the chart."


CVD_WOMAN: dict[str, Any] = {
    "sex_male": 0,
    "age_years": 61,
    "current_smoker": 1,
    "cigarettes_per_day": 20,
    "bp_medication": 0,
    "stroke_history": 0,
    "hypertension": 1,
    "diabetes": 0,
    "total_cholesterol_mg_dl": 262,
    "systolic_bp_mm_hg": 167.676,
    "diastolic_bp_mm_hg": 95,
    "bmi_kg_m2": 43,
    "heart_rate_bpm": 80,
    "glucose_mg_dl": 90,
}


def test_a_real_prediction_explains_itself_in_clinical_words() -> None:
    model = predictor("cvd")
    result = model.predict(CVD_WOMAN).result
    assert result["explanation"] is not None
    texts = [c["text"] for c in result["explanation"]["contributions"]]
    joined = " | ".join(texts)
    assert "Female" in joined and "Male sex" not in joined
    assert "Systolic BP 168 mmHg" in joined and "167.676" not in joined
    assert "20 cigarettes per day" in joined and "cigarettes/day" not in joined
    assert "log-odds" not in joined
    by_feature = {c["feature"]: c["text"] for c in result["explanation"]["contributions"]}
    assert by_feature["heart_rate_bpm"].endswith("in the training data") or (
        "no effect" in by_feature["heart_rate_bpm"]
    )


def test_the_cds_card_gives_percentage_points_never_log_odds() -> None:
    model = predictor("cvd")
    result = model.predict(CVD_WOMAN).result
    extraction = fhir.Extraction(
        features=dict(CVD_WOMAN), missing_required=[], sources=[], warnings=[]
    )
    card = Cards(model, extraction, "https://example.org/model").risk(dict(result))
    assert "log-odds" not in card["detail"]
    drivers = [line for line in card["detail"].splitlines() if line.startswith("- ")]
    assert drivers and all(line.endswith("percentage points)") for line in drivers[:3])


def test_what_if_is_offered_only_for_modifiable_inputs() -> None:
    model = predictor("cvd")
    with pytest.raises(InvalidFeatures) as raised:
        model.curves(CVD_WOMAN, ["systolic_bp_mm_hg", "age_years"], 5)
    errors = raised.value.errors
    assert [(e.field, e.code, e.value) for e in errors] == [
        ("features_to_vary[1]", "not_modifiable", "age_years")
    ]
    assert errors[0].allowed is not None and "systolic_bp_mm_hg" in errors[0].allowed
    assert "age_years" not in errors[0].allowed


def test_quitting_smoking_sets_cigarettes_per_day_to_zero_and_lowers_the_risk() -> None:
    model = predictor("cvd")
    body = model.curves(CVD_WOMAN, ["current_smoker"], 5)
    (curve,) = body["curves"]
    points = {p["value"]: p for p in curve["points"]}
    assert points[0.0]["label"] == "Non-smoker, 0 cigarettes per day"
    assert points[1.0]["label"] == "Current smoker"
    quit_ = model.predict({**CVD_WOMAN, "current_smoker": 0, "cigarettes_per_day": 0}).result
    assert points[0.0]["probability"] == pytest.approx(quit_["probability"], abs=1e-12)
    assert points[0.0]["probability"] < points[1.0]["probability"]
