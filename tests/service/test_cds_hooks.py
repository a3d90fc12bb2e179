"""The CDS Hooks services through the real app: discovery, all 18 Synthea patients through each
service, card content, prefetch errors, feedback."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.riskassessment import RiskAssessment
from prometheus_client import REGISTRY

from models.loader import load_artifact
from models.registry import artifact_folder
from service.cds_hooks import fhir
from service.cds_hooks.services import ASCVD, DIABETES, READMISSION, SERVICES, HookService
from tests.conftest import MODELS_DIR, Keys
from tests.service.synthea_fhir import BUNDLES, DATA, store

HOOK_EXAMPLE = DATA / "cds_hooks" / "patient-view-request.json"
FEEDBACK_EXAMPLES = sorted((DATA / "cds_hooks").glob("feedback-*.json"))
SERVICE = f"/cds-services/{ASCVD.id}"
PSEUDONYM_KEY = b"test-pseudonym-key"  # tests/conftest.py settings
CARD_KEYS = {
    "uuid",
    "summary",
    "indicator",
    "detail",
    "source",
    "links",
    "overrideReasons",
    "extension",
    "suggestions",
    "selectionBehavior",
}


def bundle_path(prefix: str) -> Path:
    (path,) = [p for p in BUNDLES if p.name.startswith(prefix + "_")]
    return path


def prefetch(path: Path, service: HookService = ASCVD) -> tuple[str, dict[str, Any]]:
    """What an EHR sends for the service's templates, from the FHIR server's searches."""
    patient_id = store().patients[path.name.split("_")[0]]
    return patient_id, store().prefetch(service, patient_id)


def hook_request(
    patient_id: str,
    data: dict[str, Any] | None,
    hook: str = "patient-view",
    encounter_id: str | None = None,
) -> dict[str, Any]:
    """The spec's example request for this patient (its fhirServer is never called: the
    prefetch is complete)."""
    request: dict[str, Any] = json.loads(HOOK_EXAMPLE.read_text())
    request["hook"] = hook
    request["context"]["patientId"] = patient_id
    if encounter_id is not None:
        request["context"]["encounterId"] = encounter_id
    if data is None:
        del request["prefetch"]
    else:
        request["prefetch"] = data
    return request


def discharge(name: str) -> tuple[str, str, dict[str, Any]]:
    """The encounter-discharge call for a patient's latest inpatient stay (else latest
    encounter): patient id, encounter id, prefetch."""
    patient_id = store().patients[name]
    encounters = sorted(store().of("Encounter", patient_id), key=lambda e: e["period"]["start"])
    stays = [e for e in encounters if e["class"]["code"] == "IMP"]
    encounter_id = (stays or encounters)[-1]["id"]
    return patient_id, encounter_id, store().prefetch(READMISSION, patient_id, encounter_id)


def call(client: TestClient, keys: Keys, request: Any, service: HookService = ASCVD) -> Any:
    return client.post(f"/cds-services/{service.id}", headers=keys.header("predict"), json=request)


def cards_of(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    cards: list[dict[str, Any]] = response.json()["cards"]
    for card in cards:
        check_well_formed(card)
    return cards


def only_card(response: Any) -> dict[str, Any]:
    (card,) = cards_of(response)
    return card


def check_well_formed(card: dict[str, Any]) -> None:
    """CDS Hooks 2.0 card rules, and the RiskAssessment a suggestion creates is valid FHIR."""
    assert set(card) <= CARD_KEYS and {"uuid", "summary", "indicator", "source"} <= set(card)
    assert isinstance(card["summary"], str) and 0 < len(card["summary"]) <= 140
    assert card["indicator"] in ("info", "warning")  # the indicator policy: never critical
    assert card["source"]["label"] and card["source"]["url"].startswith("http")
    assert "log-odds" not in card["detail"] and "log_odds" not in card["detail"]
    for reason in card["overrideReasons"]:
        assert {"code", "system", "display"} <= set(reason)
    for link in card["links"]:
        assert link["type"] in ("absolute", "smart") and link["url"].startswith("http")
    suggestions = card.get("suggestions", [])
    if suggestions:
        assert card["selectionBehavior"] == "at-most-one"
    for suggestion in suggestions:
        (action,) = suggestion["actions"]
        assert action["type"] == "create"
        RiskAssessment.model_validate(action["resource"])


# Each patient's expected answer per service, with the reason (the 18 Synthea patients; ages
# are taken today, as the hooks fire today; the readmission call closes the patient's latest
# inpatient stay, else their latest encounter).
NO_CARD = "none"
EXPECTED: dict[str, dict[str, str]] = {
    ASCVD.id: {
        # Coronary heart disease on the problem list: established ASCVD, not primary prevention.
        "Adalberto": NO_CARD,
        # Deceased in 2013.
        "Reginald": NO_CARD,
        # No creatinine or eGFR in the chart (the controls): PREVENT needs eGFR.
        "Israel": "not_computed",
        "Joie": "not_computed",
    },
    DIABETES.id: {
        # Diagnosed diabetes: screening does not apply.
        **dict.fromkeys(
            ["Dirk", "Emery", "Estrella", "Fabian", "Leonel", "Leonor", "Louis", "Morris"],
            NO_CARD,
        ),
        **dict.fromkeys(["Patria", "Renato"], NO_CARD),
        # Deceased (and the model has no age limit to stop it first).
        "Reginald": NO_CARD,
        # Everyone else: scored from what the chart holds (age, sex, BMI, smoking, problem list,
        # cholesterol results); the eight survey answers no FHIR chart holds may be unknown
        # (issue 14 part 6) and the card names each.
        **dict.fromkeys(
            ["Adalberto", "Alfreda", "Israel", "Joie", "Lupe", "Maida", "Reuben"], "scored"
        ),
    },
    READMISSION.id: {
        # The one inpatient stay of an adult with every input: scored.
        "Dirk": "scored",
        # Maida's surgical admission has no diagnosis or reason coded: primary diagnosis missing.
        "Maida": "not_computed",
        # Adalberto's only inpatient stay was at age 2 (1951): the model is for adults.
        "Adalberto": NO_CARD,
        # Everyone else's latest encounter is ambulatory or emergency: not a hospital discharge.
    },
}


def expected(service: HookService, name: str) -> str:
    default = "scored" if service is ASCVD else NO_CARD
    return EXPECTED[service.id].get(name, default)


def run(client: TestClient, keys: Keys, service: HookService, name: str) -> list[dict[str, Any]]:
    if service is READMISSION:
        patient_id, encounter_id, data = discharge(name)
        request = hook_request(patient_id, data, "encounter-discharge", encounter_id)
    else:
        patient_id, data = prefetch(bundle_path(name), service)
        request = hook_request(patient_id, data)
    return cards_of(call(client, keys, request, service))


def kind(cards: list[dict[str, Any]]) -> str:
    if not cards:
        return NO_CARD
    (card,) = cards
    extension = card["extension"]["dev.clinrisk.prediction"]
    if extension["computed"]:
        return "scored"
    return "out_of_range" if extension.get("status") == "not_applicable" else "not_computed"


@pytest.mark.parametrize("service", list(SERVICES.values()), ids=list(SERVICES))
def test_all_18_synthea_patients_get_a_well_formed_card_or_a_reasoned_none(
    client: TestClient, keys: Keys, subtests: pytest.Subtests, service: HookService
) -> None:
    assert len(BUNDLES) == 18
    seen: dict[str, int] = {}
    for name in sorted(store().patients):
        with subtests.test(patient=name):
            cards = run(client, keys, service, name)
            assert kind(cards) == expected(service, name)
            seen[kind(cards)] = seen.get(kind(cards), 0) + 1
            for card in cards:
                if kind(cards) == "scored":
                    check_risk_card(card, service)
    assert sum(seen.values()) == 18


def check_risk_card(card: dict[str, Any], service: HookService) -> None:
    extension = card["extension"]["dev.clinrisk.prediction"]
    assert card["uuid"] == extension["prediction_id"]
    percent = f"{extension['probability'] * 100:.1f}%"
    assert card["summary"].startswith(f"{service.outcome} ")
    assert percent in card["summary"] or "<" in card["summary"]
    assert card["indicator"] == ("warning" if extension["tier"] == "high" else "info")
    model = extension["model"]
    assert card["source"]["label"] == f"clinrisk {model['name']} {model['version']}"
    assert card["source"]["url"] == f"http://testserver/ui#model/{model['name']}"
    smart = [link for link in card["links"] if link["type"] == "smart"]
    assert smart == [
        {
            "label": "Open in clinrisk (this patient, what-if)",
            "url": "http://testserver/ui",
            "type": "smart",
            "appContext": json.dumps({"model": model["name"]}),
        }
    ]
    detail = card["detail"]
    assert "**Main drivers**" in detail and "percentage points)" in detail
    assert "**Chart data used**" in detail and "| Input | Value | From | Date |" in detail
    (suggestion,) = card["suggestions"]
    resource = suggestion["actions"][0]["resource"]
    assert resource["prediction"][0]["probabilityDecimal"] == pytest.approx(
        extension["probability"], abs=1e-6
    )
    assert resource["basis"] and all("/" in b["reference"] for b in resource["basis"])


def test_discovery_offers_three_services_with_narrow_prefetch(
    client: TestClient, keys: Keys
) -> None:
    # No EHR issuer configured: the API key is the development door (EHR JWTs:
    # tests/service/test_cds_security.py); discovery is authenticated too (CDS Hooks 2.0).
    assert client.get("/cds-services").status_code == 401
    response = client.get("/cds-services", headers=keys.header("predict"))

    assert response.status_code == 200
    services = {s["id"]: s for s in response.json()["services"]}
    assert {k: s["hook"] for k, s in services.items()} == {
        "clinrisk-ascvd-risk": "patient-view",
        "clinrisk-diabetes-risk": "patient-view",
        "clinrisk-readmission-risk": "encounter-discharge",
    }
    # Prefetch tokens name only context fields the hook defines (CDS Hooks 2.0: patient-view
    # has patientId, encounter-discharge patientId and encounterId).
    tokens = {"patient-view": {"patientId"}, "encounter-discharge": {"patientId", "encounterId"}}
    for service in services.values():
        used = {
            t.removeprefix("context.")
            for template in service["prefetch"].values()
            for t in re.findall(r"\{\{([^}]+)\}\}", template)
        }
        assert used <= tokens[service["hook"]], service["id"]
        assert service["title"] and service["description"]
        assert service["prefetch"]["patient"] == "Patient/{{context.patientId}}"
        for template in service["prefetch"].values():
            # Every search is bounded: a count, and observations newest first.
            if "?" in template:
                assert "_count=" in template
            if template.startswith("Observation?") and "encounter=" not in template:
                assert "_sort=-date" in template
    ascvd = services["clinrisk-ascvd-risk"]["prefetch"]
    assert (
        "MedicationRequest?patient={{context.patientId}}&status=active"
        in (ascvd["medicationRequests"])
    )
    readmission = services["clinrisk-readmission-risk"]["prefetch"]
    assert readmission["encounter"] == "Encounter/{{context.encounterId}}"


def test_every_observation_code_a_model_reads_is_in_its_services_templates(
    client: TestClient,
) -> None:
    state = client.app.state.clinrisk  # type: ignore[attr-defined]
    for service in (ASCVD, DIABETES):
        specs = state.registry.get(service.model, None).specs
        templates = " ".join(p.template for p in service.prefetch.values())
        for code in fhir.observation_codes(specs):
            if code in ("85354-9", "8462-4"):  # other BP panel / diastolic: not read by these
                continue
            assert f"{fhir.LOINC}|{code}" in templates, (service.id, code)


def test_the_card_scores_exactly_like_the_predict_endpoint_and_is_audited(
    client: TestClient, keys: Keys
) -> None:
    patient_id, data = prefetch(bundle_path("Dirk_Kuhlman"))
    chart = fhir.Chart.from_resources(
        [
            r
            for v in data.values()
            for r in ([v] if "entry" not in v else [e["resource"] for e in v["entry"]])
        ],
        patient_id,
    )
    state = client.app.state.clinrisk  # type: ignore[attr-defined]
    specs = state.registry.get(ASCVD.model, None).specs
    extracted = fhir.chart_features(specs, chart, on=date.today())

    card = only_card(call(client, keys, hook_request(patient_id, data)))
    direct = client.post(
        f"/v1/models/{ASCVD.model}/predict",
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
    expected_pseudonym = hmac.new(PSEUDONYM_KEY, patient_id.encode(), hashlib.sha256).hexdigest()
    assert record["patient_pseudonym"] == expected_pseudonym


def table_row(detail: str, label: str) -> list[str]:
    (row,) = [line for line in detail.splitlines() if line.startswith(f"| {label} |")]
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_the_ascvd_card_reads_medications_egfr_and_age_at_the_hooks_date(
    client: TestClient, keys: Keys
) -> None:
    patient_id, data = prefetch(bundle_path("Alfreda_Wyman"))  # hydrochlorothiazide, no statin

    card = only_card(call(client, keys, hook_request(patient_id, data)))

    detail = card["detail"]
    treated = table_row(detail, "Treated for high blood pressure")
    assert treated[1] == "Yes" and "Hydrochlorothiazide" in treated[2]
    assert table_row(detail, "Statin")[1] == "No"
    egfr = table_row(detail, "eGFR")
    assert "derived: CKD-EPI 2021 from LOINC 38483-4" in egfr[2] and egfr[3]
    age = table_row(detail, "Age")
    assert f"age on {date.today().isoformat()}" in age[2]
    birth = date.fromisoformat(data["patient"]["birthDate"])
    assert age[1] == f"{fhir.age_in_years(birth, date.today())} years"
    (suggestion,) = card["suggestions"]
    basis = {b["reference"] for b in suggestion["actions"][0]["resource"]["basis"]}
    medication = [b for b in basis if b.startswith("MedicationRequest/")]
    creatinine = [b for b in basis if b.startswith("Observation/")]
    assert medication and creatinine
    assert "Treated for high blood pressure: yes, raised" in detail


def test_a_deceased_or_established_ascvd_patient_gets_no_card_and_no_audit_record(
    client: TestClient, keys: Keys
) -> None:
    for name in ("Reginald_Auer", "Adalberto_Hartmann"):
        patient_id, data = prefetch(bundle_path(name))
        assert cards_of(call(client, keys, hook_request(patient_id, data))) == []
    assert client.get("/v1/audit", headers=keys.header("admin")).json()["records"] == []
    reasons = {
        reason: REGISTRY.get_sample_value(
            "clinrisk_cds_hook_results_total", {"service": ASCVD.id, "result": reason}
        )
        for reason in ("no_card_deceased", "no_card_established_ascvd")
    }
    assert all(value and value >= 1 for value in reasons.values()), reasons


def test_missing_blood_pressure_gives_one_info_card_and_no_score(
    client: TestClient, keys: Keys
) -> None:
    patient_id, data = prefetch(bundle_path("Leonel_Hand"))
    data["bloodPressure"] = None  # the EHR has no such data

    card = only_card(call(client, keys, hook_request(patient_id, data)))

    assert card["indicator"] == "info"
    assert card["summary"] == "10-year ASCVD risk not computed: missing Systolic BP"
    assert card["extension"]["dev.clinrisk.prediction"] == {
        "computed": False,
        "missing": ["systolic_bp_mm_hg"],
        "invalid": [],
    }
    assert "no usable LOINC 8480-6 observation" in card["detail"]
    assert client.get("/v1/audit", headers=keys.header("admin")).json()["records"] == []


def test_a_value_outside_the_equations_range_gives_an_info_card_without_a_score(
    client: TestClient, keys: Keys
) -> None:
    patient_id, data = prefetch(bundle_path("Leonel_Hand"))
    panel = data["bloodPressure"]["entry"][0]["resource"]
    for component in panel["component"]:
        if fhir.loinc_codes(component["code"]) == {"8480-6"}:
            component["valueQuantity"]["value"] = 230

    card = only_card(call(client, keys, hook_request(patient_id, data)))

    extension = card["extension"]["dev.clinrisk.prediction"]
    assert extension["status"] == "not_applicable" and "probability" not in extension
    assert "systolic_bp_mm_hg_90_to_200" in extension["not_applicable"]
    assert card["summary"].startswith("10-year ASCVD risk not computed: systolic bp 230")


def test_cholesterol_in_mmol_per_litre_is_converted(client: TestClient, keys: Keys) -> None:
    patient_id, data = prefetch(bundle_path("Leonel_Hand"))
    quantity = data["totalCholesterol"]["entry"][0]["resource"]["valueQuantity"]
    mg_dl = quantity["value"]
    quantity.update(value=round(mg_dl / 38.67, 2), unit="mmol/L", code="mmol/L")

    card = only_card(call(client, keys, hook_request(patient_id, data)))

    assert card["extension"]["dev.clinrisk.prediction"]["computed"] is True
    assert "Total cholesterol converted from" in card["detail"]


def test_missing_prefetch_without_a_fhir_server_is_412_naming_the_keys(
    client: TestClient, keys: Keys
) -> None:
    patient_id, data = prefetch(bundle_path("Lupe_Little"))
    del data["hdlCholesterol"]
    data["smokingStatus"] = {"resourceType": "OperationOutcome", "issue": []}
    request = hook_request(patient_id, data)
    del request["fhirServer"]

    response = call(client, keys, request)

    assert response.status_code == 412
    assert response.headers["content-type"] == "application/problem+json"
    errors = {e["field"]: e for e in response.json()["errors"]}
    assert set(errors) == {"prefetch.hdlCholesterol", "prefetch.smokingStatus"}
    assert errors["prefetch.hdlCholesterol"]["allowed"] == ASCVD.prefetch["hdlCholesterol"].template


def test_an_http_fhir_server_off_this_machine_is_not_sent_the_token(
    client: TestClient, keys: Keys
) -> None:
    # The spec's example points at http://hooks.smarthealthit.org:9080: not https, not loopback.
    patient_id, data = prefetch(bundle_path("Lupe_Little"))
    del data["hdlCholesterol"]

    response = call(client, keys, hook_request(patient_id, data))

    assert response.status_code == 412
    assert "must be https" in response.json()["detail"]


def test_the_specs_example_request_validates_and_its_prefetch_key_is_ignored(
    client: TestClient, keys: Keys
) -> None:
    example = json.loads(HOOK_EXAMPLE.read_text())
    patient_id, data = prefetch(bundle_path("Lupe_Little"))
    example["context"]["patientId"] = patient_id
    example["prefetch"].update(data)  # the example's own "patientToGreet" stays

    card = only_card(call(client, keys, example))

    assert card["extension"]["dev.clinrisk.prediction"]["computed"] is True


MALFORMED: list[tuple[Callable[[dict[str, Any]], None], str]] = [
    (lambda r: r.update(hook="order-select"), "hook"),
    (lambda r: r.pop("hookInstance"), "hookInstance"),
    (lambda r: r["context"].pop("patientId"), "context.patientId"),
    (lambda r: r.update(prefetch=[]), "prefetch"),
    (lambda r: r["prefetch"].update(patient={"resourceType": "Observation"}), "prefetch.patient"),
    (
        lambda r: r["prefetch"].update(hdlCholesterol={"resourceType": "Patient"}),
        "prefetch.hdlCholesterol",
    ),
    (lambda r: r.update(fhirAuthorization={"token": 1}), "fhirAuthorization"),
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
    with subtests.test(field="context.encounterId"):
        patient_id, _, data = discharge("Dirk")
        request = hook_request(patient_id, data, "encounter-discharge")
        del request["context"]["encounterId"]  # the example patient-view call carries one
        response = call(client, keys, request, READMISSION)
        assert response.status_code == 400
        assert "context.encounterId" in [e["field"] for e in response.json()["errors"]]
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


def test_the_readmission_card_reads_the_stay_being_closed(client: TestClient, keys: Keys) -> None:
    patient_id, encounter_id, data = discharge("Dirk")
    request = hook_request(patient_id, data, "encounter-discharge", encounter_id)

    card = only_card(call(client, keys, request, READMISSION))

    detail = card["detail"]
    assert table_row(detail, "Length of stay")[1] == "1 days"
    assert table_row(detail, "Primary diagnosis")[1] == "injury or poisoning"
    assert table_row(detail, "HbA1c this stay")[1] == "not measured"
    assert table_row(detail, "Insulin at discharge")[1] == "unchanged dose"
    assert "dose changes are not coded" in detail
    (suggestion,) = card["suggestions"]
    resource = suggestion["actions"][0]["resource"]
    assert resource["encounter"] == {"reference": f"Encounter/{encounter_id}"}
    assert resource["prediction"][0]["whenRange"]["high"] == {
        "value": 30,
        "unit": "days",
        "system": "http://unitsofmeasure.org",
        "code": "d",
    }


def test_the_diabetes_card_scores_a_chart_and_names_each_survey_answer_it_lacks(
    client: TestClient, keys: Keys
) -> None:
    patient_id, data = prefetch(bundle_path("Lupe_Little"), DIABETES)

    card = only_card(call(client, keys, hook_request(patient_id, data), DIABETES))

    extension = card["extension"]["dev.clinrisk.prediction"]
    assert extension["computed"] is True and extension["status"] == "scored"
    check_risk_card(card, DIABETES)
    detail = card["detail"]
    # Each questionnaire answer the chart lacks is named with what the model does about it.
    specs = {
        s.name: s for s in load_artifact(artifact_folder(MODELS_DIR, "diabetes")).manifest.features
    }
    for name in fhir.SURVEY_ITEMS:
        spec = specs[name]
        assert f"- {spec.label} not in the chart: {spec.missing_handling}." in detail
        row = table_row(detail, spec.label)
        assert row[2] == "a survey answer the chart does not hold in coded form"
    # Lupe has prediabetes on the problem list: the card says what that means for this score.
    assert "Prediabetes is already on the problem list (SNOMED CT 15777000)" in detail
    # What the chart does hold is read: BMI, smoking, problem list, cholesterol checked.
    assert table_row(detail, "Ever smoker")[1] == "Never smoker"
    assert table_row(detail, "BMI")[1] == "27.3 kg/m²"
    assert (
        table_row(detail, "Cholesterol checked in last 5 years")[2].startswith("derived")
        or "no LOINC 2093-3" in table_row(detail, "Cholesterol checked in last 5 years")[2]
    )
    # A driver that is an unknown answer never reads as an effect of the patient's answer.
    drivers = detail.split("**Main drivers**")[1].split("\n\n")[0]
    for name in fhir.SURVEY_ITEMS:
        if specs[name].label in drivers:
            assert f"{specs[name].label} not known: in this model an unrecorded value" in drivers
