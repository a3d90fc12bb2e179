"""FHIR out: a score as a FHIR R4 RiskAssessment from the REST API, validated with
fhir.resources; the same resource the CDS card offers to write back."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.riskassessment import RiskAssessment

from service.cds_hooks.services import ASCVD, READMISSION
from tests.conftest import Keys
from tests.service.test_cds_hooks import (
    bundle_path,
    call,
    discharge,
    hook_request,
    only_card,
    prefetch,
)

ROUTE = "/v1/models/{}/risk-assessment"
WOMAN = {
    "sex_male": 0,
    "age_years": 55,
    "total_cholesterol_mg_dl": 213,
    "hdl_cholesterol_mg_dl": 50,
    "systolic_bp_mm_hg": 140,
    "bp_medication": 1,
    "statin": 0,
    "diabetes": 0,
    "current_smoker": 0,
    "egfr_ml_min_1_73m2": 90,
}


def assess(client: TestClient, keys: Keys, model: str, body: dict[str, Any]) -> Any:
    return client.post(ROUTE.format(model), headers=keys.header("predict"), json=body)


def test_a_score_as_a_valid_risk_assessment(client: TestClient, keys: Keys) -> None:
    body = {
        "patient_id": "p-1",
        "features": WOMAN,
        "basis": ["Observation/bp-1", "MedicationRequest/mr-1"],
        "encounter": "e-9",
    }
    direct = client.post(
        "/v1/models/ascvd-prevent/predict", headers=keys.header("predict"), json={"features": WOMAN}
    ).json()

    response = assess(client, keys, "ascvd-prevent", body)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/fhir+json"
    resource = response.json()
    RiskAssessment.model_validate(resource)
    assert resource["status"] == "final"
    assert resource["subject"] == {"reference": "Patient/p-1"}
    assert resource["encounter"] == {"reference": "Encounter/e-9"}
    assert [b["reference"] for b in resource["basis"]] == body["basis"]
    (prediction,) = resource["prediction"]
    assert prediction["probabilityDecimal"] == pytest.approx(direct["probability"], abs=1e-6)
    assert 0 < prediction["probabilityDecimal"] < 1  # the 0-1 scale, stated in the note
    assert "0-1 scale" in resource["note"][0]["text"]
    tier = direct["tier"]
    expected = {"low": "low", "high": "high"}.get(tier["name"], "moderate")
    assert prediction["qualitativeRisk"]["coding"][0]["code"] == expected
    assert prediction["qualitativeRisk"]["text"] == tier["label"]
    assert prediction["whenRange"]["high"]["value"] == 10
    assert prediction["whenRange"]["high"]["code"] == "a"
    assert prediction["rationale"].startswith("Main reasons: ")
    assert "percentage points" in prediction["rationale"]
    (device,) = resource["contained"]
    version = direct["model"]["version"]
    assert resource["performer"] == {
        "reference": "#model",
        "display": f"clinrisk ascvd-prevent {version}",
    }
    assert device["version"] == [{"value": version}]
    assert device["identifier"][0]["value"] == f"urn:sha256:{direct['model']['sha256']}"
    assert resource["method"]["coding"][0]["code"] == "ascvd-prevent"


def test_diabetes_screening_has_no_time_range_and_says_why(client: TestClient, keys: Keys) -> None:
    state = client.app.state.clinrisk  # type: ignore[attr-defined]
    model = state.registry.get("diabetes", None)
    features = {
        s.name: (s.distribution.quantiles.get("p50") if s.distribution.quantiles else 0)
        for s in model.specs
        if s.distribution is not None
    }
    features["general_health"] = 3

    response = assess(client, keys, "diabetes", {"patient_id": "p-2", "features": features})

    assert response.status_code == 200, response.text
    resource = response.json()
    RiskAssessment.model_validate(resource)
    assert "whenRange" not in resource["prediction"][0]
    assert "no time range applies" in resource["note"][0]["text"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"features": WOMAN}, "patient_id"),
        ({"patient_id": "has space", "features": WOMAN}, "patient_id"),
        ({"patient_id": "p", "features": WOMAN, "basis": ["not a reference"]}, "basis"),
        ({"patient_id": "p", "features": WOMAN, "encounter": ["e"]}, "encounter"),
        ({"patient_id": "p", "features": {**WOMAN, "age_years": "old"}}, "features.age_years"),
    ],
)
def test_bad_input_is_a_problem_naming_the_field(
    client: TestClient, keys: Keys, body: dict[str, Any], field: str
) -> None:
    response = assess(client, keys, "ascvd-prevent", body)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]]


def test_outside_the_population_there_is_no_risk_assessment(client: TestClient, keys: Keys) -> None:
    body = {"patient_id": "p-3", "features": {**WOMAN, "age_years": 25}}

    response = assess(client, keys, "ascvd-prevent", body)

    assert response.status_code == 422
    assert "outside the model's intended population" in response.json()["detail"]
    assert response.json()["errors"][0]["allowed"] == "age_years_30_to_79"


def test_the_cards_suggestion_is_the_same_resource(client: TestClient, keys: Keys) -> None:
    patient_id, data = prefetch(bundle_path("Emery_Purdy"))
    card = only_card(call(client, keys, hook_request(patient_id, data)))
    (suggestion,) = card["suggestions"]
    suggested = suggestion["actions"][0]["resource"]

    RiskAssessment.model_validate(suggested)
    assert suggested["subject"] == {"reference": f"Patient/{patient_id}"}
    assert suggested["identifier"][0]["value"] == f"urn:uuid:{card['uuid']}"
    assert all(
        b["reference"].split("/")[0] in {"Observation", "MedicationRequest", "Condition", "Patient"}
        for b in suggested["basis"]
    )

    patient_id, encounter_id, data = discharge("Dirk")
    request = hook_request(patient_id, data, "encounter-discharge", encounter_id)
    discharge_card = only_card(call(client, keys, request, READMISSION))
    resource = discharge_card["suggestions"][0]["actions"][0]["resource"]
    RiskAssessment.model_validate(resource)
    assert resource["prediction"][0]["whenRange"]["high"]["code"] == "d"
    assert ASCVD.model in suggested["method"]["coding"][0]["code"]
