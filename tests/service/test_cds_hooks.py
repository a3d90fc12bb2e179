"""The CDS Hooks service through the real app: discovery, one card per Synthea patient, errors."""

from __future__ import annotations

import copy
import functools
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from models.loader import load_artifact
from service.cds_hooks import fhir
from service.settings import REPO_ROOT
from tests.conftest import MODELS_DIR, SHIPPED_VERSION, Keys

DATA = REPO_ROOT.parent / "shared" / "data"
BUNDLES = sorted((DATA / "synthea_fhir_r4").glob("*.json"))
HOOK_EXAMPLE = DATA / "cds_hooks" / "patient-view-request.json"
FEEDBACK_EXAMPLES = sorted((DATA / "cds_hooks").glob("feedback-*.json"))
SERVICE = "/cds-services/clinrisk-cvd-risk"
MODEL_PAGE = "http://testserver/ui#model/cvd"
PSEUDONYM_KEY = b"test-pseudonym-key"  # tests/conftest.py settings
BP_CODES = {"55284-4", "85354-9", "8480-6", "8462-4"}


@functools.cache
def resources(path: Path) -> tuple[dict[str, Any], ...]:
    """The resources of one transaction bundle (each file parsed once per module)."""
    return tuple(e["resource"] for e in json.loads(path.read_text())["entry"])


def bundle_path(prefix: str) -> Path:
    (path,) = [p for p in BUNDLES if p.name.startswith(prefix + "_")]
    return path


def searchset(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(items),
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in items],
    }


def prefetch(path: Path) -> tuple[str, dict[str, Any]]:
    """What an EHR would send for the discovery templates: the patient, its searches' results."""
    everything = resources(path)
    (patient,) = [r for r in everything if r["resourceType"] == "Patient"]
    observations = [
        r
        for r in everything
        if r["resourceType"] == "Observation"
        and fhir.loinc_codes(r["code"]) & set(fhir.CVD_OBSERVATION_CODES)
    ]
    conditions = [
        r
        for r in everything
        if r["resourceType"] == "Condition" and r["clinicalStatus"]["coding"][0]["code"] == "active"
    ]
    data = {
        "patient": patient,
        "observations": searchset(observations),
        "conditions": searchset(conditions),
    }
    return patient["id"], copy.deepcopy(data)  # tests edit it; the parsed bundle stays intact


def hook_request(patient_id: str, data: dict[str, Any] | None) -> dict[str, Any]:
    request: dict[str, Any] = json.loads(HOOK_EXAMPLE.read_text())
    request["context"]["patientId"] = patient_id
    if data is None:
        del request["prefetch"]
    else:
        request["prefetch"] = data
    return request


def call(client: TestClient, keys: Keys, request: Any) -> Any:
    return client.post(SERVICE, headers=keys.header("predict"), json=request)


def only_card(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    assert len(cards) == 1
    card: dict[str, Any] = cards[0]
    return card


def test_discovery_describes_one_patient_view_service_with_prefetch(
    client: TestClient, keys: Keys
) -> None:
    # No EHR issuer configured: the API key is the development door (EHR JWTs:
    # tests/service/test_cds_security.py); discovery is authenticated too (CDS Hooks 2.0).
    assert client.get("/cds-services").status_code == 401
    response = client.get("/cds-services", headers=keys.header("predict"))

    assert response.status_code == 200
    (service,) = response.json()["services"]
    assert service["id"] == "clinrisk-cvd-risk"
    assert service["hook"] == "patient-view"
    assert service["title"]
    assert service["description"]
    templates = service["prefetch"]
    assert templates["patient"] == "Patient/{{context.patientId}}"
    assert templates["conditions"] == (
        "Condition?patient={{context.patientId}}&clinical-status=active"
    )
    observations = templates["observations"]
    assert observations.startswith("Observation?patient={{context.patientId}}&code=")
    codes = observations.split("&code=", 1)[1].split(",")
    expected = {"55284-4", "85354-9", "8480-6", "8462-4", "39156-5", "2093-3", "2345-7"}
    expected |= {"2339-0", "8867-4", "72166-2"}
    assert set(codes) == {f"http://loinc.org|{code}" for code in expected}


def test_every_synthea_patient_gets_exactly_one_risk_card(
    client: TestClient, keys: Keys, subtests: pytest.Subtests
) -> None:
    assert len(BUNDLES) == 18
    for path in BUNDLES:  # one app for all 18 patients: subtests report each on its own
        with subtests.test(patient=path.name.split("_")[0]):
            check_risk_card(client, keys, path)


# Outside the intended population (issue 14): established ASCVD (coronary arteriosclerosis on
# the problem list) and, as the bundles' birth dates age, over 70; Reginald is also deceased.
NOT_APPLICABLE = {"Adalberto", "Reginald"}


def check_risk_card(client: TestClient, keys: Keys, path: Path) -> None:
    patient_id, data = prefetch(path)

    card = only_card(call(client, keys, hook_request(patient_id, data)))

    extension = card["extension"]["dev.clinrisk.prediction"]
    if path.name.split("_")[0] in NOT_APPLICABLE:
        assert extension["computed"] is False
        assert "no_established_ascvd" in extension["not_applicable"]
        assert "probability" not in extension
        assert card["summary"].startswith("10-year CHD risk not applicable: ")
        assert card["indicator"] == "info"
        return
    assert extension["computed"] is True
    assert card["uuid"] == extension["prediction_id"]
    assert len(card["summary"]) < 140
    assert card["summary"] == (
        f"10-year CHD risk {extension['probability'] * 100:.1f}% ({extension['tier']}, ACC/AHA)"
    )
    expected_indicator = {
        "low": "info",
        "borderline": "info",
        "intermediate": "warning",
        "high": "critical",
    }[extension["tier"]]
    assert card["indicator"] == expected_indicator
    assert card["source"]["label"] == f"clinrisk cvd {SHIPPED_VERSION}"
    assert card["links"] == [
        {
            "label": "clinrisk: model 'cvd' card and validation",
            "url": MODEL_PAGE,
            "type": "absolute",
        }
    ]
    detail = card["detail"]
    assert extension["model"]["sha256"] in detail
    assert "**Main drivers**" in detail
    assert "On blood-pressure medication not in the chart" in detail  # never prefetched
    assert "| Systolic BP |" in detail


def test_the_card_scores_exactly_like_the_predict_endpoint_and_is_audited(
    client: TestClient, keys: Keys
) -> None:
    patient_id, data = prefetch(bundle_path("Dirk_Kuhlman"))  # every input incl. glucose
    patient = data["patient"]
    observations, _ = fhir.bundle_resources(data["observations"], "Observation", patient_id)
    conditions, _ = fhir.bundle_resources(data["conditions"], "Condition", patient_id)
    specs = load_artifact(MODELS_DIR / "cvd" / SHIPPED_VERSION).manifest.features
    extracted = fhir.extract_features(specs, patient, observations, conditions, today=date.today())
    assert "glucose_mg_dl" in extracted.features

    card = only_card(call(client, keys, hook_request(patient_id, data)))
    direct = client.post(
        "/v1/models/cvd/predict",
        headers=keys.header("predict"),
        json={"features": extracted.features},
    ).json()

    extension = card["extension"]["dev.clinrisk.prediction"]
    assert extension["probability"] == direct["probability"]
    assert extension["tier"] == direct["tier"]["name"]
    records = client.get(
        "/v1/audit", headers=keys.header("admin"), params={"patient_id": patient_id}
    ).json()["records"]
    (record,) = records
    assert record["channel"] == "cds-hooks"
    assert record["prediction_id"] == card["uuid"]
    assert record["probability"] == direct["probability"]
    assert record["caller"] == keys.predict.split("_")[1]
    expected = hmac.new(PSEUDONYM_KEY, patient_id.encode(), hashlib.sha256).hexdigest()
    assert record["patient_pseudonym"] == expected


@pytest.mark.parametrize("control", ["Israel_Sanford", "Joie_Morissette"])
def test_controls_without_hba1c_or_glucose_still_get_a_risk_card(
    client: TestClient, keys: Keys, control: str
) -> None:
    patient_id, data = prefetch(bundle_path(control))

    card = only_card(call(client, keys, hook_request(patient_id, data)))

    assert card["extension"]["dev.clinrisk.prediction"]["computed"] is True
    assert "Glucose not in the chart" in card["detail"]


def test_the_deceased_patients_card_says_so(client: TestClient, keys: Keys) -> None:
    patient_id, data = prefetch(bundle_path("Reginald_Auer"))

    card = only_card(call(client, keys, hook_request(patient_id, data)))

    assert "deceased on 2013-02-18" in card["detail"]
    assert "age on 2013-02-18" in card["detail"]
    # Issue 14: a deceased patient is outside the intended population: no score.
    assert card["extension"]["dev.clinrisk.prediction"]["status"] == "not_applicable"


def test_missing_blood_pressure_gives_one_info_card_and_no_score(
    client: TestClient, keys: Keys
) -> None:
    patient_id, data = prefetch(bundle_path("Leonel_Hand"))
    data["observations"]["entry"] = [
        e
        for e in data["observations"]["entry"]
        if not fhir.loinc_codes(e["resource"]["code"]) & BP_CODES
    ]

    card = only_card(call(client, keys, hook_request(patient_id, data)))

    assert card["indicator"] == "info"
    assert card["summary"] == "10-year CHD risk not computed: missing Systolic BP, Diastolic BP"
    assert card["extension"]["dev.clinrisk.prediction"] == {
        "computed": False,
        "missing": ["systolic_bp_mm_hg", "diastolic_bp_mm_hg"],
        "invalid": [],
    }
    assert "no usable LOINC 8480-6 observation" in card["detail"]
    assert card["source"]["label"] == f"clinrisk cvd {SHIPPED_VERSION}"
    assert card["links"][0]["url"] == MODEL_PAGE
    audit = client.get("/v1/audit", headers=keys.header("admin")).json()
    assert audit["records"] == []


def test_an_implausible_value_gives_one_info_card(client: TestClient, keys: Keys) -> None:
    patient_id, data = prefetch(bundle_path("Lupe_Little"))
    data["patient"]["birthDate"] = "2012-01-01"  # a child: outside the model's 20-100 years

    card = only_card(call(client, keys, hook_request(patient_id, data)))

    assert card["indicator"] == "info"
    assert card["summary"] == "10-year CHD risk not computed: implausible Age"
    assert "outside the plausible range" in card["detail"]


def test_a_value_in_mmol_per_litre_is_converted(client: TestClient, keys: Keys) -> None:
    patient_id, data = prefetch(bundle_path("Lupe_Little"))
    for entry in data["observations"]["entry"]:
        if "2093-3" in fhir.loinc_codes(entry["resource"]["code"]):
            entry["resource"]["valueQuantity"] = {
                "value": 4.5,
                "unit": "mmol/L",
                "system": "http://unitsofmeasure.org",
                "code": "mmol/L",
            }

    card = only_card(call(client, keys, hook_request(patient_id, data)))

    assert "Total cholesterol converted from 4.5 mmol/L to 174 mg/dL" in card["detail"]


def test_missing_prefetch_is_412_naming_the_keys(
    client: TestClient, keys: Keys, subtests: pytest.Subtests
) -> None:
    for missing in (["patient"], ["observations"], ["conditions", "patient"], None):
        with subtests.test(missing=missing or "the whole prefetch"):
            patient_id, data = prefetch(bundle_path("Lupe_Little"))
            for key in missing or []:
                del data[key]

            response = call(
                client, keys, hook_request(patient_id, None if missing is None else data)
            )

            assert response.status_code == 412
            assert response.headers["content-type"] == "application/problem+json"
            errors = response.json()["errors"]
            expected = missing or ["patient", "observations", "conditions"]
            assert sorted(e["field"] for e in errors) == sorted(f"prefetch.{k}" for k in expected)
            templates = ("Patient/", "Observation?", "Condition?")
            assert all(e["allowed"].startswith(templates) for e in errors)


def test_an_operation_outcome_in_place_of_a_prefetch_is_412(client: TestClient, keys: Keys) -> None:
    patient_id, data = prefetch(bundle_path("Lupe_Little"))
    data["conditions"] = {"resourceType": "OperationOutcome", "issue": []}

    response = call(client, keys, hook_request(patient_id, data))

    assert response.status_code == 412
    assert [e["field"] for e in response.json()["errors"]] == ["prefetch.conditions"]


def test_null_prefetch_means_no_data(client: TestClient, keys: Keys) -> None:
    patient_id, data = prefetch(bundle_path("Lupe_Little"))
    data["observations"] = None
    data["conditions"] = None

    card = only_card(call(client, keys, hook_request(patient_id, data)))

    assert card["extension"]["dev.clinrisk.prediction"]["computed"] is False
    assert "current_smoker" in card["extension"]["dev.clinrisk.prediction"]["missing"]


MALFORMED: list[tuple[Callable[[dict[str, Any]], Any], str]] = [
    (lambda r: r.update(hook="order-sign"), "hook"),
    (lambda r: r["context"].pop("patientId"), "context.patientId"),
    (lambda r: r.pop("hookInstance"), "hookInstance"),
    (lambda r: r["prefetch"]["patient"].update(id="someone-else"), "prefetch.patient.id"),
    (lambda r: r["prefetch"].update(observations=[]), "prefetch.observations"),
]


def test_a_malformed_hook_request_is_400(
    client: TestClient, keys: Keys, subtests: pytest.Subtests
) -> None:
    for change, field in MALFORMED:
        with subtests.test(field=field):
            patient_id, data = prefetch(bundle_path("Lupe_Little"))
            request = hook_request(patient_id, data)
            change(request)

            response = call(client, keys, request)

            assert response.status_code == 400
            assert response.headers["content-type"] == "application/problem+json"
            assert field in [e["field"] for e in response.json()["errors"]]
    with subtests.test(field="body"):
        not_json = client.post(
            SERVICE,
            headers={**keys.header("predict"), "content-type": "application/json"},
            content=b"{not json",
        )
        assert not_json.status_code == 400


def test_the_service_needs_a_key_with_the_predict_scope(client: TestClient, keys: Keys) -> None:
    patient_id, data = prefetch(bundle_path("Lupe_Little"))
    request = hook_request(patient_id, data)

    anonymous = client.post(SERVICE, json=request)
    batch_only = client.post(SERVICE, headers=keys.header("batch"), json=request)
    feedback = client.post(f"{SERVICE}/feedback", json=json.loads(FEEDBACK_EXAMPLES[0].read_text()))

    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert batch_only.status_code == 403
    assert feedback.status_code == 401


def feedback_count(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "clinrisk_cds_feedback_total", {"service": "clinrisk-cvd-risk", "outcome": outcome}
    )
    return value or 0.0


def test_feedback_examples_are_accepted_and_counted(
    client: TestClient, keys: Keys, subtests: pytest.Subtests
) -> None:
    assert {p.stem for p in FEEDBACK_EXAMPLES} == {
        "feedback-overridden-with-reason",
        "feedback-suggestion-accepted",
    }
    for path in FEEDBACK_EXAMPLES:
        with subtests.test(example=path.stem):
            body = json.loads(path.read_text())
            outcome = body["feedback"][0]["outcome"]
            before = feedback_count(outcome)

            response = client.post(f"{SERVICE}/feedback", headers=keys.header("predict"), json=body)

            assert response.status_code == 200
            assert response.json() == {"received": 1}
            assert feedback_count(outcome) == before + 1
    assert "A comment entered by the clinician" not in client.get("/metrics").text


INVALID_FEEDBACK: list[dict[str, Any]] = [
    {},
    {"feedback": []},
    {"feedback": [{"card": "c", "outcome": "ignored", "outcomeTimestamp": "2021-01-01"}]},
    {"feedback": [{"card": "c", "outcome": "accepted"}]},
    {"feedback": [{"outcome": "overridden", "outcomeTimestamp": "2021-01-01T00:00:00Z"}]},
]


def test_invalid_feedback_is_400_and_not_counted(
    client: TestClient, keys: Keys, subtests: pytest.Subtests
) -> None:
    for index, body in enumerate(INVALID_FEEDBACK):
        with subtests.test(case=index):
            before = feedback_count("overridden") + feedback_count("accepted")

            response = client.post(f"{SERVICE}/feedback", headers=keys.header("predict"), json=body)

            assert response.status_code == 400
            assert feedback_count("overridden") + feedback_count("accepted") == before
