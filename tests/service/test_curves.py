"""Risk curves: each grid point is exactly the prediction with that one value substituted."""

from __future__ import annotations

import math
from typing import Any

import pytest
from fastapi.testclient import TestClient

from models.curves import risk_curves
from models.describe import value_key, value_text
from models.loader import load_artifact
from models.manifest import version_key
from models.predictor import Predictor
from models.registry import artifact_folder
from service.openapi_schema import example_features
from tests.conftest import MODELS_DIR, Keys

SBP = "systolic_bp_mm_hg"
CVD_PATIENT: dict[str, Any] = {
    "sex_male": 1,
    "age_years": 55,
    "current_smoker": 1,
    "cigarettes_per_day": 20,
    "bp_medication": 0,
    "stroke_history": 0,
    "hypertension": 1,
    "diabetes": 0,
    "total_cholesterol_mg_dl": {"value": 6.2, "unit": "mmol/L"},
    "systolic_bp_mm_hg": 150,
    "diastolic_bp_mm_hg": 90,
    "bmi_kg_m2": 28,
    "heart_rate_bpm": 75,
    "glucose_mg_dl": None,
}


@pytest.fixture(scope="module")
def loaded() -> dict[str, Predictor]:
    return {
        # The version the service serves by default: each model's highest.
        name: Predictor(load_artifact(artifact_folder(MODELS_DIR, name)))
        for name in ("diabetes", "readmission", "cvd")
    }


def typical(model: Predictor) -> dict[str, Any]:
    return example_features(model.manifest)


def curves(
    client: TestClient, keys: Keys, name: str, body: dict[str, Any], which: str = "predict"
) -> Any:
    return client.post(f"/v1/models/{name}/curves", headers=keys.header(which), json=body)


def assert_points_match_predictions(
    model: Predictor, features: dict[str, Any], curve: dict[str, Any]
) -> None:
    spec = model.manifest.feature(curve["feature"])
    for point in curve["points"]:
        value = point["value"]
        # A value that fixes related inputs (a non-smoker smokes 0 cigarettes) sets them too.
        implied = spec.implies.get(value_key(value), {})
        if isinstance(value, float) and curve["type"] == "binary":
            value = int(value)
        patient = {**features, curve["feature"]: value, **implied}
        expected = model.predict(patient).result["probability"]
        assert point["probability"] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_numeric_curve_spans_the_training_range_and_passes_through_the_patient(
    client: TestClient, keys: Keys, loaded: dict[str, Predictor]
) -> None:
    model = loaded["diabetes"]
    features = {**typical(model), "bmi_kg_m2": 31}

    response = curves(
        client, keys, "diabetes", {"features": features, "features_to_vary": ["bmi_kg_m2"]}
    )

    assert response.status_code == 200
    body = response.json()
    assert body["method"] == "individual_conditional_expectation"
    assert body["model"]["name"] == "diabetes"
    assert body["probability"] == model.predict(features).result["probability"]
    (curve,) = body["curves"]
    distribution = model.manifest.feature("bmi_kg_m2").distribution
    assert distribution is not None
    low, high = distribution.quantiles["p01"], distribution.quantiles["p99"]
    values = [p["value"] for p in curve["points"]]
    assert values == sorted(values)
    assert (values[0], values[-1]) == (low, high)
    assert curve["training_range"] == [low, high]
    assert curve["current_value"] == 31.0
    own = next(p for p in curve["points"] if p["value"] == 31.0)
    assert own["probability"] == pytest.approx(body["probability"], abs=1e-12)
    assert own["label"] == "31.0 kg/m²"  # BMI to one decimal, as charted
    assert_points_match_predictions(model, features, curve)


def depth_one_diabetes() -> Predictor:
    """The newest committed diabetes forest of depth 1 (1.4.0 learned depth 2)."""
    folders = sorted((MODELS_DIR / "diabetes").iterdir(), key=lambda f: version_key(f.name))
    for folder in reversed(folders):
        artifact = load_artifact(folder)
        if artifact.manifest.hyperparameters.get("max_depth") == 1:
            return Predictor(artifact)
    raise AssertionError("no depth-1 diabetes forest is committed")


def test_depth_one_forest_curve_is_the_shape_function_shifted_by_the_other_inputs() -> None:
    model = depth_one_diabetes()
    young = {**typical(model), "age_years": 27}
    old = {**young, "age_years": 72, "high_blood_pressure": 1, "general_health": 4}

    curves_of = [
        risk_curves(model.core, model.validator.validate(f), ["bmi_kg_m2"], 20)[0]
        for f in (young, old)
    ]

    def logits(curve: Any) -> list[float]:
        return [math.log(p["probability"] / (1 - p["probability"])) for p in curve["points"]]

    # Additive model: changing the other inputs shifts the whole curve by one constant (log-odds).
    shifts = [b - a for a, b in zip(logits(curves_of[0]), logits(curves_of[1]), strict=True)]
    assert max(shifts) - min(shifts) < 1e-9
    assert shifts[0] > 0


def test_categorical_and_binary_curves_have_every_value_and_match_predictions(
    client: TestClient, keys: Keys, loaded: dict[str, Predictor]
) -> None:
    # No categorical input is modifiable, so the grid is checked on the curves core directly.
    readmission = loaded["readmission"]
    features = typical(readmission)
    row = readmission.validator.validate(features)
    (disposition,) = risk_curves(readmission.core, row, ["discharge_disposition"], 10)
    spec = readmission.manifest.feature("discharge_disposition")
    assert [p["value"] for p in disposition["points"]] == [c.code for c in spec.categories]
    assert [p["label"] for p in disposition["points"]] == [c.label for c in spec.categories]
    assert disposition["training_range"] is None
    assert_points_match_predictions(readmission, features, dict(disposition))

    diabetes = loaded["diabetes"]
    features = typical(diabetes)
    response = curves(
        client, keys, "diabetes", {"features": features, "features_to_vary": ["physically_active"]}
    )
    assert response.status_code == 200
    (active,) = response.json()["curves"]
    spec = diabetes.manifest.feature("physically_active")
    assert [p["value"] for p in active["points"]] == [0.0, 1.0]
    assert [p["label"] for p in active["points"]] == [value_text(spec, v) for v in (0.0, 1.0)]
    assert_points_match_predictions(diabetes, features, active)


def test_count_features_are_varied_over_whole_numbers(loaded: dict[str, Predictor]) -> None:
    model = loaded["readmission"]
    row = model.validator.validate(typical(model))
    (curve,) = risk_curves(model.core, row, ["emergency_visits_prior_year"], 10)
    values = [p["value"] for p in curve["points"]]
    assert values == [float(v) for v in range(int(values[-1]) + 1)]


def test_logistic_model_curves_with_units_and_a_missing_optional_input(
    client: TestClient, keys: Keys, loaded: dict[str, Predictor]
) -> None:
    model = loaded["cvd"]
    varied = ["systolic_bp_mm_hg", "total_cholesterol_mg_dl", "glucose_mg_dl", "current_smoker"]

    response = curves(
        client, keys, "cvd", {"features": CVD_PATIENT, "features_to_vary": varied, "points": 7}
    )

    assert response.status_code == 200
    body = response.json()
    by_feature = {c["feature"]: c for c in body["curves"]}
    assert list(by_feature) == varied
    assert by_feature["glucose_mg_dl"]["current_value"] is None
    assert len(by_feature["glucose_mg_dl"]["points"]) == 7
    # The patient's cholesterol (converted exactly from mmol/L) is added to the 7-point grid.
    cholesterol = by_feature["total_cholesterol_mg_dl"]
    assert cholesterol["current_value"] == pytest.approx(6.2 * 38.67)
    assert len(cholesterol["points"]) == 8
    for curve in body["curves"]:
        assert_points_match_predictions(model, CVD_PATIENT, curve)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"features": CVD_PATIENT, "features_to_vary": ["height_cm"]}, 422, "features_to_vary[0]"),
        (
            {"features": CVD_PATIENT, "features_to_vary": [SBP, SBP]},
            422,
            "features_to_vary[1]",
        ),
        (
            {"features": {**CVD_PATIENT, "age_years": 300}, "features_to_vary": [SBP]},
            422,
            "features.age_years",
        ),
        ({"features": CVD_PATIENT, "features_to_vary": ["age_years"]}, 422, "features_to_vary[0]"),
        ({"features": CVD_PATIENT, "features_to_vary": []}, 422, "features_to_vary"),
        ({"features": CVD_PATIENT, "features_to_vary": [SBP], "points": 1}, 422, "points"),
        ({"features": CVD_PATIENT, "features_to_vary": [SBP], "x": 1}, 422, "x"),
    ],
)
def test_bad_curves_requests_are_422_problems_naming_the_field(
    client: TestClient, keys: Keys, body: dict[str, Any], status: int, field: str
) -> None:
    response = curves(client, keys, "cvd", body)

    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]]


def test_curves_need_the_predict_scope(client: TestClient, keys: Keys) -> None:
    body = {"features": CVD_PATIENT, "features_to_vary": [SBP]}

    assert client.post("/v1/models/cvd/curves", json=body).status_code == 401
    assert curves(client, keys, "cvd", body, which="batch").status_code == 403
    assert curves(client, keys, "cvd", body, which="predict").status_code == 200


def test_curves_for_an_unknown_model_are_404(client: TestClient, keys: Keys) -> None:
    response = curves(client, keys, "nope", {"features": {}, "features_to_vary": ["age_years"]})

    assert response.status_code == 404


def test_curves_are_not_written_to_the_audit_trail(client: TestClient, keys: Keys) -> None:
    body = {"features": CVD_PATIENT, "features_to_vary": [SBP]}

    assert curves(client, keys, "cvd", body).status_code == 200

    audit = client.get("/v1/audit", headers=keys.header("admin"))
    assert audit.status_code == 200
    assert audit.json()["records"] == []
