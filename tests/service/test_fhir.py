"""FHIR R4 -> cvd features (service/cds_hooks/fhir.py): selection, units, conditions, Synthea."""

from __future__ import annotations

import functools
import json
from datetime import UTC, date, datetime
from typing import Any

import pytest

from models.loader import load_artifact
from models.manifest import FeatureSpec
from models.validation import RowValidator
from service.cds_hooks import fhir
from service.settings import REPO_ROOT
from tests.conftest import MODELS_DIR, SHIPPED_VERSION

SYNTHEA = REPO_ROOT.parent / "shared" / "data" / "synthea_fhir_r4"
TODAY = date(2022, 6, 1)
PATIENT_ID = "p1"


@functools.cache
def cvd() -> tuple[list[FeatureSpec], RowValidator]:
    manifest = load_artifact(MODELS_DIR / "cvd" / SHIPPED_VERSION).manifest
    return list(manifest.features), RowValidator(manifest)


@functools.cache
def synthea(prefix: str) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Patient, Observations, Conditions of one bundle (each file parsed once per module)."""
    (path,) = SYNTHEA.glob(f"{prefix}_*.json")
    resources = [e["resource"] for e in json.loads(path.read_text())["entry"]]
    (patient,) = [r for r in resources if r["resourceType"] == "Patient"]
    observations = [r for r in resources if r["resourceType"] == "Observation"]
    conditions = [r for r in resources if r["resourceType"] == "Condition"]
    return patient, observations, conditions


def concept(code: str, system: str = fhir.LOINC) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": fhir.UCUM, "code": unit}


def obs(
    code: str,
    value: float | None = None,
    unit: str = "mg/dL",
    when: str = "2020-01-01T09:00:00+00:00",
    **extra: Any,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": concept(code),
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "effectiveDateTime": when,
    }
    if value is not None:
        resource["valueQuantity"] = quantity(value, unit)
    resource.update(extra)
    return resource


def bp_panel(systolic: float, diastolic: float, when: str, code: str = "55284-4") -> dict[str, Any]:
    # Diastolic first, as in the Synthea bundles: components are selected by code.
    return obs(
        code,
        when=when,
        component=[
            {"code": concept("8462-4"), "valueQuantity": quantity(diastolic, "mm[Hg]")},
            {"code": concept("8480-6"), "valueQuantity": quantity(systolic, "mm[Hg]")},
        ],
    )


def smoking(code: str, system: str = fhir.SNOMED, when: str = "2020-01-01") -> dict[str, Any]:
    return obs("72166-2", when=when, valueCodeableConcept=concept(code, system))


def condition(code: str, status: str = "active", system: str = fhir.SNOMED, **extra: Any) -> Any:
    return {
        "resourceType": "Condition",
        "clinicalStatus": concept(
            status, "http://terminology.hl7.org/CodeSystem/condition-clinical"
        ),
        "code": concept(code, system),
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        **extra,
    }


PATIENT = {
    "resourceType": "Patient",
    "id": PATIENT_ID,
    "gender": "male",
    "birthDate": "1960-06-15",
}
BASE_OBSERVATIONS = [
    bp_panel(140, 85, "2020-01-01T09:00:00Z"),
    obs("39156-5", 27.0, "kg/m2"),
    obs("2093-3", 210.0),
    smoking("266919005"),
]


def extract(
    observations: list[dict[str, Any]] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    patient: dict[str, Any] | None = PATIENT,
) -> fhir.Extraction:
    specs, _ = cvd()
    return fhir.extract_features(
        specs,
        patient,
        BASE_OBSERVATIONS if observations is None else observations,
        conditions or [],
        today=TODAY,
    )


def test_the_latest_observation_wins_by_date_not_bundle_order() -> None:
    newest_first = [
        obs("39156-5", 31.0, "kg/m2", when="2021-03-01T10:00:00+02:00"),
        obs("39156-5", 29.0, "kg/m2", when="2021-03-01"),
        obs("39156-5", 25.0, "kg/m2", when="2019-05-01T10:00:00Z"),
    ]

    for bundle in (newest_first, newest_first[::-1], [newest_first[1], *newest_first[::2]]):
        result = extract([*BASE_OBSERVATIONS[:1], *bundle])
        assert result.features["bmi_kg_m2"] == 31.0
        assert result.observation_dates["bmi_kg_m2"] == date(2021, 3, 1)


def test_blood_pressure_components_are_selected_by_code() -> None:
    result = extract([bp_panel(systolic=150, diastolic=95, when="2020-02-02T08:00:00Z")])

    assert result.features["systolic_bp_mm_hg"] == 150
    assert result.features["diastolic_bp_mm_hg"] == 95
    sources = {s.feature: s.text for s in result.sources}
    assert "8480-6" in sources["systolic_bp_mm_hg"]
    assert "in panel 55284-4" in sources["systolic_bp_mm_hg"]


def test_a_newer_standalone_reading_or_85354_9_panel_beats_an_older_panel() -> None:
    observations = [
        bp_panel(150, 95, "2020-01-01T08:00:00Z"),
        obs("8480-6", 128.0, "mm[Hg]", when="2021-01-01T08:00:00Z"),
        bp_panel(170, 99, "2020-06-01T08:00:00Z", code="85354-9"),
    ]

    result = extract(observations)

    assert result.features["systolic_bp_mm_hg"] == 128.0
    assert result.features["diastolic_bp_mm_hg"] == 99


def test_an_alternative_unit_is_converted_by_the_models_validator() -> None:
    observations = [*BASE_OBSERVATIONS[:2], obs("2093-3", 5.2, "mmol/L"), BASE_OBSERVATIONS[3]]

    result = extract(observations)
    row = cvd()[1].validate(result.features)

    assert result.features["total_cholesterol_mg_dl"] == {"value": 5.2, "unit": "mmol/L"}
    assert row.values["total_cholesterol_mg_dl"] == pytest.approx(5.2 * 38.67)
    assert [c.unit for c in row.quality.unit_conversions] == ["mmol/L"]


def test_a_unit_the_model_does_not_accept_is_rejected_and_the_previous_value_used() -> None:
    newer = obs("2093-3", 2.1, "g/L", when="2021-01-01")
    older = obs("2093-3", 200.0, "mg/dL", when="2019-01-01")

    with_fallback = extract([*BASE_OBSERVATIONS[:2], newer, older, BASE_OBSERVATIONS[3]])
    without = extract([*BASE_OBSERVATIONS[:2], newer, BASE_OBSERVATIONS[3]])

    assert with_fallback.features["total_cholesterol_mg_dl"] == 200.0
    assert any("`g/L`" in w and "2021-01-01" in w for w in with_fallback.warnings)
    assert "total_cholesterol_mg_dl" not in without.features
    assert without.missing_required == []  # optional: the validator reports it as missing


def test_inexact_or_valueless_readings_are_skipped() -> None:
    low = obs("39156-5", 40.0, "kg/m2", when="2021-01-01")
    low["valueQuantity"]["comparator"] = ">"
    absent = obs("39156-5", when="2021-02-01", dataAbsentReason=concept("unknown"))
    in_error = obs("39156-5", 50.0, "kg/m2", when="2021-03-01", status="entered-in-error")

    result = extract([*BASE_OBSERVATIONS, low, absent, in_error])

    assert result.features["bmi_kg_m2"] == 27.0
    skipped = [w for w in result.warnings if w.startswith("BMI") and w.endswith("skipped.")]
    assert len(skipped) == 2


def test_serum_glucose_is_preferred_and_blood_glucose_is_accepted() -> None:
    blood = obs("2339-0", 95.0, when="2020-01-01T09:00:00Z")
    serum = obs("2345-7", 90.0, when="2020-01-01T09:00:00Z")

    both = extract([*BASE_OBSERVATIONS, blood, serum])
    blood_only = extract([*BASE_OBSERVATIONS, blood])

    assert both.features["glucose_mg_dl"] == 90.0
    assert blood_only.features["glucose_mg_dl"] == 95.0
    glucose = next(s for s in blood_only.sources if s.feature == "glucose_mg_dl")
    assert "2339-0" in glucose.text
    assert "used for LOINC 2345-7" in glucose.text


def test_a_patient_without_glucose_has_every_required_input() -> None:
    patient, observations, conditions = synthea("Israel_Sanford")
    specs, validator = cvd()

    result = fhir.extract_features(specs, patient, observations, conditions, today=TODAY)

    assert "glucose_mg_dl" not in result.features
    assert result.missing_required == []
    missing = [m.feature for m in validator.validate(result.features).quality.missing]
    assert "glucose_mg_dl" in missing


def test_age_is_taken_at_the_hooks_date_not_at_the_latest_observation() -> None:
    result = extract()  # observations of 2020-01-01

    assert result.age_reference == TODAY
    assert result.features["age_years"] == 61  # born 1960-06-15, on 2022-06-01


def test_age_is_taken_today_when_no_observation_is_dated() -> None:
    result = extract(observations=[])

    assert result.age_reference == TODAY
    assert result.features["age_years"] == 61
    assert {"systolic_bp_mm_hg", "diastolic_bp_mm_hg", "current_smoker"} <= set(
        result.missing_required
    )


def test_a_deceased_patient_is_aged_at_death_and_flagged() -> None:
    patient = {**PATIENT, "deceasedDateTime": "2021-03-04T05:06:07+01:00"}

    result = extract(patient=patient)

    assert result.deceased
    assert result.age_reference == date(2021, 3, 4)
    assert result.features["age_years"] == 60
    assert any("deceased on 2021-03-04" in w for w in result.warnings)
    assert not any("Older than" in w for w in result.warnings)


def test_the_deceased_synthea_patient() -> None:
    patient, observations, conditions = synthea("Reginald_Auer")
    specs, _ = cvd()

    result = fhir.extract_features(specs, patient, observations, conditions, today=TODAY)

    assert result.age_reference == date(2013, 2, 18)
    assert result.features["age_years"] == 71  # born 1941-08-11
    assert result.features["hypertension"] == 1
    assert result.missing_required == []


@pytest.mark.parametrize(
    ("code", "system", "smoker", "cigarettes"),
    [
        ("449868002", fhir.SNOMED, 1, None),
        ("428041000124106", fhir.SNOMED, 1, None),
        ("77176002", fhir.SNOMED, 1, None),
        ("LA18976-3", fhir.LOINC, 1, None),
        ("266919005", fhir.SNOMED, 0, 0),
        ("8517006", fhir.SNOMED, 0, 0),
        ("LA15920-4", fhir.LOINC, 0, 0),
    ],
)
def test_smoking_status_codes(code: str, system: str, smoker: int, cigarettes: int | None) -> None:
    result = extract([*BASE_OBSERVATIONS[:3], smoking(code, system)])

    assert result.features["current_smoker"] == smoker
    assert result.features.get("cigarettes_per_day") == cigarettes


def test_an_unknown_smoking_status_falls_back_to_an_older_known_one() -> None:
    unknown = smoking("266927001", when="2021-01-01")

    alone = extract([*BASE_OBSERVATIONS[:3], unknown])
    with_older = extract([*BASE_OBSERVATIONS[:3], unknown, smoking("8517006", when="2018-01-01")])

    assert "current_smoker" in alone.missing_required
    assert with_older.features["current_smoker"] == 0
    assert any("Smoking status of 2021-01-01" in w for w in with_older.warnings)


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([condition("368581000119106")], {"diabetes": 1}),  # a descendant of 44054006
        ([condition("E11.9", system="http://hl7.org/fhir/sid/icd-10-cm")], {"diabetes": 1}),
        ([condition("15777000")], {"diabetes": 0}),  # prediabetes
        ([condition("44054006", status="resolved")], {"diabetes": 0}),
        (
            [
                condition(
                    "38341003",
                    verificationStatus=concept(
                        "refuted", "http://terminology.hl7.org/CodeSystem/condition-ver-status"
                    ),
                )
            ],
            {"hypertension": 0},
        ),
        ([condition("59621000")], {"hypertension": 1}),
        ([condition("230690007", status="resolved")], {"stroke_history": 1}),
        ([condition("I63.9", system="http://hl7.org/fhir/sid/icd-10-cm")], {"stroke_history": 1}),
        ([], {"diabetes": 0, "hypertension": 0, "stroke_history": 0}),
    ],
)
def test_problem_list_features(conditions: list[dict[str, Any]], expected: dict[str, int]) -> None:
    result = extract(conditions=conditions)

    assert {k: result.features[k] for k in expected} == expected


def test_resources_about_another_patient_are_ignored() -> None:
    other = obs("39156-5", 45.0, "kg/m2", when="2022-01-01", subject={"reference": "Patient/p2"})
    mine = obs("39156-5", 27.0, "kg/m2", subject={"reference": "urn:uuid:p1"})
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": other}, {"resource": mine}, {"resource": {"resourceType": "X"}}],
    }

    kept, foreign = fhir.bundle_resources(bundle, "Observation", PATIENT_ID)

    assert kept == [mine]
    assert foreign == 1
    assert fhir.bundle_resources(None, "Observation", PATIENT_ID) == ([], 0)
    with pytest.raises(ValueError, match="Patient"):
        fhir.bundle_resources({"resourceType": "Patient"}, "Observation", PATIENT_ID)


def test_chart_text_in_warnings_and_sources_cannot_inject_markdown() -> None:
    odd_unit = obs("2093-3", 5.0, when="2021-01-01")
    odd_unit["valueQuantity"] = {"value": 5.0, "unit": "x|[y](http://e)`"}
    icd = "http://hl7.org/fhir/sid/icd-10-cm"

    result = extract(
        [*BASE_OBSERVATIONS, odd_unit],
        conditions=[condition("E11](http://e)", system=icd), condition("I10", system=icd)],
    )

    (warning,) = [w for w in result.warnings if w.startswith("Total cholesterol")]
    assert "`x?[y]?http?//e??`" in warning  # no pipe, backtick or link left
    assert result.features["diabetes"] == 0  # malformed code: not matched, never shown
    assert result.features["hypertension"] == 1


def test_sex_other_than_male_or_female_is_missing() -> None:
    result = extract(patient={**PATIENT, "gender": "unknown"})

    assert "sex_male" in result.missing_required
    assert any("`unknown`" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021", datetime(2021, 1, 1, tzinfo=UTC)),
        ("2021-03", datetime(2021, 3, 1, tzinfo=UTC)),
        ("2021-03-04", datetime(2021, 3, 4, tzinfo=UTC)),
        ("2021-03-04T01:00:00+02:00", datetime(2021, 3, 3, 23, tzinfo=UTC)),
        ("2021-03-04T01:00:00Z", datetime(2021, 3, 4, 1, tzinfo=UTC)),
        ("2021-02-30", None),
        ("yesterday", None),
        (None, None),
    ],
)
def test_fhir_dates(text: str | None, expected: datetime | None) -> None:
    assert fhir.parse_datetime(text) == expected


# The README's table of the latest values per Synthea patient (sex, sys/dia, BMI, TC, T2DM, HTN).
README_TABLE = {
    "Adalberto_Hartmann": (1, 168, 89, 28.0, 174.0, 0, 1),
    "Alfreda_Wyman": (0, 168, 103, 29.5, 187.7, 0, 1),
    "Dirk_Kuhlman": (1, 166, 113, 30.0, 162.9, 1, 1),
    "Emery_Purdy": (1, 164, 112, 29.0, 236.2, 1, 1),
    "Estrella_Daugherty": (0, 151, 98, 30.5, 165.8, 1, 1),
    "Fabian_Murray": (1, 125, 82, 30.3, 242.8, 1, 0),
    "Israel_Sanford": (1, 129, 78, 27.4, 179.1, 0, 0),
    "Joie_Morissette": (0, 122, 77, 29.2, 167.4, 0, 0),
    "Leonel_Hand": (1, 128, 74, 28.2, 200.1, 1, 0),
    "Leonor_Trujillo": (0, 110, 71, 28.1, 204.2, 1, 0),
    "Louis_Maggio": (1, 106, 84, 30.0, 228.1, 1, 0),
    "Lupe_Little": (1, 137, 80, 27.3, 166.4, 0, 0),
    "Maida_Gerhold": (0, 155, 96, 43.3, 198.3, 0, 1),
    "Morris_Lockman": (1, 173, 110, 28.3, 189.3, 1, 1),
    "Patria_Schimmel": (0, 119, 74, 30.3, 191.8, 1, 0),
    "Reginald_Auer": (1, 150, 100, 30.0, 160.3, 0, 1),
    "Renato_Dare": (1, 111, 82, 30.4, 189.0, 1, 0),
    "Reuben_Lind": (1, 164, 116, 30.2, 173.8, 0, 1),
}


@pytest.mark.parametrize("name", sorted(README_TABLE))
def test_synthea_patients_match_the_published_latest_values(name: str) -> None:
    patient, observations, conditions = synthea(name)
    specs, validator = cvd()

    result = fhir.extract_features(specs, patient, observations, conditions, today=TODAY)
    f = result.features

    got = (
        f["sex_male"],
        round(f["systolic_bp_mm_hg"]),
        round(f["diastolic_bp_mm_hg"]),
        round(f["bmi_kg_m2"], 1),
        round(f["total_cholesterol_mg_dl"], 1),
        f["diabetes"],
        f["hypertension"],
    )
    assert got == README_TABLE[name]
    assert f["current_smoker"] == 0  # only never / former smokers in this set
    assert result.missing_required == []
    validator.validate(result.features)  # scorable as extracted


# --- the published equations, medications and the other models (issues 11 and 12) -----------


@functools.cache
def specs_of(name: str) -> list[FeatureSpec]:
    from models.registry import artifact_folder

    return list(load_artifact(artifact_folder(MODELS_DIR, name)).manifest.features)


def medication(
    name: str,
    status: str = "active",
    kind: str = "MedicationRequest",
    authored: str = "2019-01-01",
    **extra: Any,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": kind,
        "id": name.split()[0].lower(),
        "status": status,
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "display": name}],
            "text": name,
        },
        **extra,
    }
    if kind == "MedicationRequest":
        resource.setdefault("intent", "order")
        resource["authoredOn"] = authored
    else:
        resource["effectiveDateTime"] = authored
    return resource


def prevent(
    observations: list[dict[str, Any]],
    medications: list[dict[str, Any]] | None = None,
    patient: dict[str, Any] = PATIENT,
) -> fhir.Extraction:
    chart = fhir.Chart(patient, observations, [], medications or [])
    return fhir.chart_features(specs_of("ascvd-prevent"), chart, on=TODAY)


def source(result: fhir.Extraction, feature: str) -> fhir.Source:
    (found,) = [s for s in result.sources if s.feature == feature]
    return found


def test_egfr_is_derived_with_ckd_epi_2021_from_the_latest_creatinine() -> None:
    from models.equations import ckd_epi_2021

    creatinine = obs("38483-4", 1.1, when="2021-05-01T08:00:00Z", id="cr1")
    mdrd = obs("33914-3", 70.0, "mL/min/{1.73_m2}", when="2021-05-01T08:00:00Z", id="md1")

    result = prevent([creatinine, mdrd])

    expected = round(ckd_epi_2021(1.1, 60, True), 1)  # born 1960-06-15, aged 60 on 2021-05-01
    assert result.features["egfr_ml_min_1_73m2"] == expected
    used = source(result, "egfr_ml_min_1_73m2")
    assert used.derived and used.reference == "Observation/cr1"
    assert used.when == date(2021, 5, 1) and "CKD-EPI 2021" in used.text


def test_a_newer_ckd_epi_2021_egfr_is_used_as_is_and_creatinine_in_umol_per_litre_converts() -> (
    None
):
    egfr = obs("98979-8", 88.0, "mL/min/{1.73_m2}", when="2021-06-01", id="e1")
    older = obs("2160-0", 97.0, "umol/L", when="2021-01-01", id="c1")
    newer = obs("2160-0", 97.0, "umol/L", when="2021-07-01", id="c2")

    assert prevent([egfr, older]).features["egfr_ml_min_1_73m2"] == 88.0
    derived = prevent([egfr, newer])
    assert source(derived, "egfr_ml_min_1_73m2").reference == "Observation/c2"
    assert "1.10 mg/dL" in source(derived, "egfr_ml_min_1_73m2").text  # 97 / 88.42


def test_an_mdrd_egfr_alone_is_used_with_a_warning() -> None:
    result = prevent([obs("33914-3", 70.0, "mL/min/{1.73_m2}", id="m1")])

    assert result.features["egfr_ml_min_1_73m2"] == 70.0
    assert any("not CKD-EPI 2021" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("medications", "treated", "statin"),
    [
        ([medication("Amlodipine 5 MG Oral Tablet")], 1, 0),
        ([medication("Lisinopril 10 MG", kind="MedicationStatement")], 1, 0),
        ([medication("Amlodipine 5 MG / Atorvastatin 10 MG Oral Tablet")], 1, 1),
        ([medication("Simvastatin 20 MG Oral Tablet", status="stopped")], 0, 0),
        ([medication("Hydrochlorothiazide 25 MG", status="completed")], 0, 0),
        ([medication("Amlodipine 5 MG", authored="2023-01-01")], 0, 0),  # after the hook date
        ([medication("Amlodipine 5 MG", intent="proposal")], 0, 0),
        ([medication("Acetaminophen 325 MG Oral Tablet")], 0, 0),
        ([], 0, 0),
    ],
)
def test_treatment_and_statin_from_current_medications(
    medications: list[dict[str, Any]], treated: int, statin: int
) -> None:
    result = prevent(BASE_OBSERVATIONS, medications)

    assert result.features["bp_medication"] == treated
    assert result.features["statin"] == statin
    if treated:
        assert source(result, "bp_medication").reference is not None


def test_a_current_smoker_without_an_amount_is_missing_never_averaged() -> None:
    result = extract([*BASE_OBSERVATIONS[:3], smoking("449868002")])

    assert result.features["current_smoker"] == 1
    assert "cigarettes_per_day" not in result.features
    assert any("cigarettes per day is left missing" in w for w in result.warnings)
    packs = obs("8664-8", 1.5, "{packs}/d", when="2020-02-01")
    with_amount = extract([*BASE_OBSERVATIONS[:3], smoking("449868002"), packs])
    assert with_amount.features["cigarettes_per_day"] == 30.0


def test_the_diabetes_models_chart_features() -> None:
    chart = fhir.Chart(
        PATIENT,
        [
            obs("39156-5", 31.0, "kg/m2", when="2021-01-01"),
            obs("2093-3", 250.0, when="2019-01-01", id="tc"),
            smoking("8517006"),  # former smoker: smoked 100 cigarettes
        ],
        [condition("38341003", status="resolved")],  # "ever told": resolved counts
    )

    result = fhir.chart_features(specs_of("diabetes"), chart, on=TODAY)

    features = result.features
    assert features["smoked_100_cigarettes"] == 1
    assert features["high_blood_pressure"] == 1
    assert features["high_cholesterol"] == 1  # 250 mg/dL >= 240, derived
    assert source(result, "high_cholesterol").derived
    assert features["cholesterol_checked_5y"] == 1
    # The questionnaire answers a chart lacks may be unknown (issue 14 part 6): none required.
    assert result.missing_required == []
    assert not set(features) & fhir.SURVEY_ITEMS
    assert {s.feature for s in result.sources} >= fhir.SURVEY_ITEMS
    old = fhir.chart_features(specs_of("diabetes"), chart, on=date(2025, 6, 1))
    assert old.features["cholesterol_checked_5y"] == 0


def test_chart_from_resources_keeps_this_patients_resources_only() -> None:
    other = {**obs("2093-3", 300.0), "subject": {"reference": "Patient/other"}}
    resources = [PATIENT, *BASE_OBSERVATIONS, other, medication("Amlodipine 5 MG")]

    chart = fhir.Chart.from_resources(resources, PATIENT_ID)

    assert chart.patient == PATIENT
    assert len(chart.observations) == len(BASE_OBSERVATIONS)
    assert len(chart.medications) == 1


def stay(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": "stay",
        "status": "finished",
        "class": {"code": "IMP"},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "period": {"start": "2022-05-20T10:00:00Z", "end": "2022-05-24T12:00:00Z"},
        "reasonCode": [concept("I21.4", "http://hl7.org/fhir/sid/icd-10-cm")],
        **extra,
    }


def visit(cls: str, start: str, end: str | None = None, rid: str = "v") -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": rid,
        "class": {"code": cls},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "period": {"start": start, "end": end or start},
    }


def readmission(
    encounters: list[dict[str, Any]],
    observations: list[dict[str, Any]] | None = None,
    medications: list[dict[str, Any]] | None = None,
) -> fhir.Extraction:
    chart = fhir.Chart(
        PATIENT,
        observations or [],
        [condition("44054006", onsetDateTime="2010-01-01")],
        medications or [],
        encounters,
    )
    return fhir.chart_features(
        specs_of("readmission"), chart, on=date(2022, 5, 24), encounter_id="stay"
    )


def test_the_stay_features_of_the_readmission_model() -> None:
    encounters = [
        stay(
            hospitalization={
                "admitSource": concept("emd"),
                "dischargeDisposition": concept("06", "http://www.nubc.org/patient-discharge"),
            },
            priority=concept("EM"),
        ),
        visit("AMB", "2022-01-10T09:00:00Z", rid="a1"),
        visit("AMB", "2020-01-10T09:00:00Z", rid="a0"),  # more than a year before
        visit("EMER", "2021-12-01T09:00:00Z", rid="e1"),
        visit("IMP", "2021-10-01T09:00:00Z", "2021-10-05T09:00:00Z", rid="i1"),
        visit("IMP", "2021-10-20T09:00:00Z", "2021-10-22T09:00:00Z", rid="i2"),
    ]
    observations = [
        obs("4548-4", 8.4, "%", when="2022-05-21T08:00:00Z"),
        obs("2339-0", 250.0, when="2022-05-21T09:00:00Z"),
        obs("2339-0", 140.0, when="2022-05-22T09:00:00Z"),
    ]
    medications = [
        medication(
            "insulin glargine 100 UNT/ML",
            authored="2022-05-22",
            encounter={"reference": "Encounter/stay"},
        ),
        medication("Metformin 500 MG", authored="2015-01-01"),
    ]

    result = readmission(encounters, observations, medications)

    f = result.features
    assert f["time_in_hospital_days"] == 4
    assert f["outpatient_visits_prior_year"] == 1
    assert f["emergency_visits_prior_year"] == 1
    assert f["inpatient_admissions_prior_year"] == 2
    assert f["prior_encounters"] == 2 and f["prior_readmissions_30d"] == 1
    assert f["hba1c_result"] == "above_8" and f["max_glucose_serum"] == "above_200"
    assert f["insulin"] == "steady" and f["diabetes_medication"] == 1
    assert f["medication_change"] == 1  # insulin ordered during the stay
    assert f["medications"] == 1
    assert f["discharge_disposition"] == "home_health"
    assert f["admission_source"] == "emergency_room" and f["admission_type"] == "emergency"
    assert f["primary_diagnosis"] == "circulatory"
    assert result.missing_required == []
    assert "not_inpatient" not in result.facts
    assert result.denied == {"discharged_to_hospice"}  # home health: stated, not assumed


def test_an_unknown_diagnosis_code_is_missing_not_other_and_an_outpatient_visit_is_flagged() -> (
    None
):
    unknown = stay(reasonCode=[concept("999999999")])
    result = readmission([unknown])
    assert "primary_diagnosis" in result.missing_required
    assert result.features["discharge_disposition"] == "unknown"

    ambulatory = readmission([{**stay(), "class": {"code": "AMB"}}])
    assert "not_inpatient" in ambulatory.facts

    hospice = stay(hospitalization={"dischargeDisposition": concept("hosp")})
    assert "discharged_to_hospice" in readmission([hospice]).facts


def race(*codes: str) -> dict[str, Any]:
    return {
        **PATIENT,
        "extension": [
            {
                "url": fhir.US_CORE_RACE,
                "extension": [
                    {"url": "ombCategory", "valueCoding": {"system": fhir.CDC_RACE, "code": c}}
                    for c in codes
                ],
            }
        ],
    }


@pytest.mark.parametrize(
    ("patient", "expected"),
    [
        (race("2106-3"), "white"),
        (race("2054-5"), "african_american"),
        (race("2028-9"), "other"),  # the guideline: white equations for other races
        (race("2106-3", "2054-5"), None),  # more than one: the clinician chooses
        (PATIENT, None),
    ],
)
def test_the_pooled_cohort_equations_race_variant_from_us_core(
    patient: dict[str, Any], expected: str | None
) -> None:
    chart = fhir.Chart(patient, BASE_OBSERVATIONS)

    result = fhir.chart_features(specs_of("ascvd-pce"), chart, on=TODAY)

    assert result.features.get("race") == expected
    assert ("race" in result.missing_required) is (expected is None)


def test_every_synthea_patient_reads_into_the_pce_and_framingham_equations() -> None:
    from tests.service.synthea_fhir import store

    incomplete: dict[str, list[str]] = {}
    for name, patient_id in store().patients.items():
        resources = [
            r
            for (kind, _), r in store().resources.items()
            if kind == "Patient"
            or (r.get("subject") or {}).get("reference") == (f"Patient/{patient_id}")
        ]
        chart = fhir.Chart.from_resources(resources, patient_id)
        for model in ("ascvd-pce", "cvd-framingham-2008"):
            result = fhir.chart_features(specs_of(model), chart, on=TODAY)
            if result.missing_required:
                incomplete[f"{name} {model}"] = result.missing_required
    # Every input of both equations is in every Synthea chart (BMI by its implied LOINC code),
    # except the race of two patients whose race extension holds 2135-2 (Hispanic or Latino,
    # an OMB ethnicity, not a race): left to the clinician, not guessed.
    assert incomplete == {"Adalberto ascvd-pce": ["race"], "Leonor ascvd-pce": ["race"]}


def test_the_primary_diagnosis_is_the_ranked_condition_the_encounter_references() -> None:
    diagnoses = [
        {"condition": {"reference": "Condition/c2"}, "rank": 2},
        {"condition": {"reference": "Condition/c1"}, "rank": 1},
    ]
    chart = fhir.Chart(
        PATIENT,
        [],
        [
            condition("J18.9", system="http://hl7.org/fhir/sid/icd-10-cm", id="c1"),
            condition("I50.9", system="http://hl7.org/fhir/sid/icd-10-cm", id="c2"),
        ],
        [],
        [stay(diagnosis=diagnoses)],
    )

    result = fhir.chart_features(
        specs_of("readmission"), chart, on=date(2022, 5, 24), encounter_id="stay"
    )

    assert result.features["primary_diagnosis"] == "respiratory"  # J18.9 pneumonia, rank 1
