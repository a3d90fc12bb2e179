"""Single and batch predictions through the real app: exactness, data quality, bad input."""

from __future__ import annotations

import math
from typing import Any

import pytest
from fastapi.testclient import TestClient

from models.loader import load_artifact
from models.manifest import version_key
from models.registry import artifact_folder
from service.api.schemas import BatchPredictResponse, PredictResponse
from service.openapi_schema import example_features
from tests.conftest import MODEL_NAMES, MODELS_DIR, SHIPPED_VERSION, Keys


def typical(name: str) -> dict[str, Any]:
    return example_features(load_artifact(MODELS_DIR / name / SHIPPED_VERSION).manifest)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


CVD_PATIENT = {
    "sex_male": 1,
    "age_years": 55,
    "current_smoker": 1,
    "cigarettes_per_day": 20,
    "bp_medication": 0,
    "stroke_history": 0,
    "hypertension": 1,
    "diabetes": 0,
    "total_cholesterol_mg_dl": 240,
    "systolic_bp_mm_hg": 150,
    "diastolic_bp_mm_hg": 90,
    "bmi_kg_m2": 28,
    "heart_rate_bpm": 75,
    "glucose_mg_dl": 90,
}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_prediction_explanation_sums_exactly_to_the_log_odds(
    client: TestClient, keys: Keys, name: str
) -> None:
    response = client.post(
        f"/v1/models/{name}/predict",
        headers=keys.header("predict"),
        json={"patient_id": "MRN-1", "features": typical(name)},
    )

    assert response.status_code == 200
    body = PredictResponse.model_validate(response.json())
    explanation = body.explanation
    total = explanation.base_log_odds + sum(c.contribution for c in explanation.contributions)
    assert abs(total - logit(body.probability)) < 1e-6
    assert body.model.name == name
    assert body.model.version == artifact_folder(MODELS_DIR, name).name  # the newest
    assert len(body.model.sha256) == 64
    assert body.tier.lower <= body.probability
    assert body.tier.upper is None or body.probability < body.tier.upper
    assert len(explanation.contributions) == len(typical(name)) or name == "cvd"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_top_k_keeps_the_sum_with_an_other_features_entry(
    client: TestClient, keys: Keys, name: str
) -> None:
    response = client.post(
        f"/v1/models/{name}/predict",
        headers=keys.header("predict"),
        json={"features": typical(name), "top_k": 3},
    )

    assert response.status_code == 200
    body = PredictResponse.model_validate(response.json())
    contributions = body.explanation.contributions
    assert len(contributions) == 4
    assert contributions[-1].feature == "other_features"
    total = body.explanation.base_log_odds + sum(c.contribution for c in contributions)
    assert abs(total - logit(body.probability)) < 1e-6
    magnitudes = [abs(c.contribution) for c in contributions[:3]]
    assert magnitudes == sorted(magnitudes, reverse=True)


def test_alternative_units_are_converted_exactly(client: TestClient, keys: Keys) -> None:
    in_mg = client.post(
        "/v1/models/cvd/predict", headers=keys.header(), json={"features": CVD_PATIENT}
    ).json()
    in_mmol = client.post(
        "/v1/models/cvd/predict",
        headers=keys.header(),
        json={
            "features": {
                **CVD_PATIENT,
                "total_cholesterol_mg_dl": {"value": 240 / 38.67, "unit": "mmol/L"},
                "glucose_mg_dl": {"value": 90 / 18.016, "unit": "mmol/L"},
            }
        },
    ).json()

    assert in_mmol["probability"] == pytest.approx(in_mg["probability"], abs=1e-12)
    conversions = {c["feature"]: c for c in in_mmol["data_quality"]["unit_conversions"]}
    assert conversions["glucose_mg_dl"]["converted_value"] == pytest.approx(90.0)
    assert conversions["total_cholesterol_mg_dl"]["canonical_unit"] == "mg/dL"
    assert in_mg["data_quality"]["unit_conversions"] == []


def test_missing_optional_feature_is_flagged_not_silent(client: TestClient, keys: Keys) -> None:
    features = {k: v for k, v in CVD_PATIENT.items() if k != "glucose_mg_dl"}

    response = client.post(
        "/v1/models/cvd/predict", headers=keys.header(), json={"features": features}
    )

    assert response.status_code == 200
    quality = response.json()["data_quality"]
    assert [m["feature"] for m in quality["missing"]] == ["glucose_mg_dl"]
    assert quality["missing"][0]["handling"]
    assert quality["trustworthy"] is False


def test_plausible_value_outside_training_range_is_flagged(client: TestClient, keys: Keys) -> None:
    response = client.post(
        "/v1/models/cvd/predict",
        headers=keys.header(),
        json={"features": {**CVD_PATIENT, "systolic_bp_mm_hg": 260}},
    )

    assert response.status_code == 200
    flagged = response.json()["data_quality"]["out_of_training_range"]
    assert [f["feature"] for f in flagged] == ["systolic_bp_mm_hg"]
    assert flagged[0]["training_p99"] < 260


@pytest.mark.parametrize(
    ("features", "field", "message"),
    [
        ({**CVD_PATIENT, "systolic_bp_mm_hg": 900}, "features.systolic_bp_mm_hg", "plausible"),
        ({**CVD_PATIENT, "age_years": -3}, "features.age_years", "plausible"),
        ({**CVD_PATIENT, "age_years": "old"}, "features.age_years", "number"),
        ({**CVD_PATIENT, "diabetes": 2}, "features.diabetes", "0 or 1"),
        ({**CVD_PATIENT, "height_cm": 180}, "features.height_cm", "unknown feature"),
        (
            {**CVD_PATIENT, "glucose_mg_dl": {"value": 5, "unit": "g/L"}},
            "features.glucose_mg_dl",
            "unknown unit",
        ),
        (
            {k: v for k, v in CVD_PATIENT.items() if k != "age_years"},
            "features.age_years",
            "required",
        ),
    ],
)
def test_bad_input_is_a_422_problem_naming_field_value_and_range(
    client: TestClient, keys: Keys, features: dict[str, Any], field: str, message: str
) -> None:
    response = client.post(
        "/v1/models/cvd/predict", headers=keys.header(), json={"features": features}
    )

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422
    errors = {e["field"]: e for e in problem["errors"]}
    assert field in errors
    assert message in errors[field]["message"]
    assert errors[field]["allowed"]
    assert "Traceback" not in response.text


def test_categorical_value_must_be_a_known_code(client: TestClient, keys: Keys) -> None:
    features = {**typical("readmission"), "discharge_disposition": "mars"}

    response = client.post(
        "/v1/models/readmission/predict", headers=keys.header(), json={"features": features}
    )

    assert response.status_code == 422
    error = response.json()["errors"][0]
    assert error["field"] == "features.discharge_disposition"
    assert error["value"] == "mars"
    assert "skilled_nursing" in error["allowed"]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"features": {"bmi_kg_m2": NaN}}',
        b"[1, 2]",
        b'{"features": 3}',
        b'{"features": {}, "top_k": 0}',
        b'{"x": 1}',
    ],
)
def test_malformed_bodies_are_422_never_500(client: TestClient, keys: Keys, body: bytes) -> None:
    response = client.post(
        "/v1/models/cvd/predict",
        headers={**keys.header(), "content-type": "application/json"},
        content=body,
    )

    assert response.status_code == 422
    assert response.json()["errors"]


def test_oversized_body_is_413(client: TestClient, keys: Keys) -> None:
    response = client.post(
        "/v1/models/cvd/predict",
        headers={**keys.header(), "content-type": "application/json"},
        content=b'{"features": {}, "patient_id": "' + b"x" * 300_000 + b'"}',
    )

    assert response.status_code == 413
    assert response.json()["title"] == "Payload too large"


def test_unknown_model_and_version_are_404_naming_what_exists(
    client: TestClient, keys: Keys
) -> None:
    no_model = client.post(
        "/v1/models/stroke/predict", headers=keys.header(), json={"features": {}}
    )
    no_version = client.post(
        "/v1/models/cvd/versions/9.0.0/predict", headers=keys.header(), json={"features": {}}
    )

    assert no_model.status_code == 404
    assert (
        "Available: ascvd-pce, ascvd-prevent, cvd, cvd-framingham-2008, diabetes, readmission"
        in no_model.json()["detail"]
    )
    assert no_version.status_code == 404
    # Every committed version is named (1.2.0 stays loadable beside the newest).
    versions = sorted((p.name for p in (MODELS_DIR / "cvd").iterdir()), key=version_key)
    assert SHIPPED_VERSION == versions[-1]
    expected = f"Model 'cvd' has no version '9.0.0'. Available: {', '.join(versions)}."
    assert expected == no_version.json()["detail"]


def test_versioned_route_gives_the_same_answer_as_the_default(
    client: TestClient, keys: Keys
) -> None:
    default = client.post(
        "/v1/models/cvd/predict", headers=keys.header(), json={"features": CVD_PATIENT}
    )
    pinned = client.post(
        f"/v1/models/cvd/versions/{SHIPPED_VERSION}/predict",
        headers=keys.header(),
        json={"features": CVD_PATIENT},
    )

    assert pinned.status_code == 200
    assert pinned.json()["probability"] == default.json()["probability"]


def test_batch_scores_good_items_and_reports_bad_ones(client: TestClient, keys: Keys) -> None:
    items = [
        {"patient_id": "a", "features": CVD_PATIENT},
        {"patient_id": "b", "features": {**CVD_PATIENT, "systolic_bp_mm_hg": 900}},
        {"patient_id": "c", "features": {**CVD_PATIENT, "age_years": 62}},
        "not an object",
    ]

    response = client.post(
        "/v1/models/cvd/predict/batch",
        headers=keys.header("batch"),
        json={"items": items, "top_k": 2},
    )

    assert response.status_code == 200
    body = BatchPredictResponse.model_validate(response.json())
    assert (body.succeeded, body.failed) == (2, 2)
    assert body.results[1].error is not None
    assert body.results[1].error.errors[0].field == "items[1].features.systolic_bp_mm_hg"
    assert body.results[3].error is not None
    single = client.post(
        "/v1/models/cvd/predict", headers=keys.header(), json={"features": CVD_PATIENT}
    )
    assert body.results[0].result is not None
    assert body.results[0].result.probability == single.json()["probability"]
    assert len(body.results[0].result.explanation.contributions) == 3


def test_batch_larger_than_the_limit_is_refused(client: TestClient, keys: Keys) -> None:
    items = [{"features": CVD_PATIENT}] * 51

    response = client.post(
        "/v1/models/cvd/predict/batch", headers=keys.header(), json={"items": items}
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["allowed"] == "at most 50"


def test_a_refused_unknown_key_never_becomes_a_metric_label(client: TestClient, keys: Keys) -> None:
    secret = "jane_doe_1970_mrn_4412"
    single = client.post(
        "/v1/models/cvd/predict",
        headers=keys.header(),
        json={"features": {**CVD_PATIENT, secret: 1}},
    )
    batch = client.post(
        "/v1/models/cvd/predict/batch",
        headers=keys.header(),
        json={"items": [{"features": {**CVD_PATIENT, secret: 1}}]},
    )

    assert single.status_code == 422
    assert batch.status_code == 200
    assert batch.json()["results"][0]["error"]["errors"][0]["code"] == "unknown_feature"
    metrics = client.get("/metrics").text
    assert secret not in metrics
    assert 'clinrisk_validation_failures_total{field="other",model="cvd"}' in metrics
