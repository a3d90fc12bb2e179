"""Issue 14: whom a model applies to, at every front door, and how sure a score is.

Real server (uvicorn on a loopback port), real committed models, real SQLite audit store: a
patient outside the intended population gets the typed "not_applicable" answer naming the rule
and no probability (REST single and batch, a batch file through ``clinrisk score``, CDS Hooks);
research use scores anyway with a key allowed to ask and is audited as research; every score
carries the uncertainty statement of its test-part bin and the warnings that qualify it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from models.loader import load_artifact
from models.manifest import FeatureType, Manifest
from models.registry import artifact_folder
from service.app import create_app
from service.auth import create_key
from service.cli import app as cli
from service.settings import Settings
from tests.conftest import MODELS_DIR, Keys, running_server
from tests.service.test_cds_hooks import SERVICE, bundle_path, hook_request, prefetch


def manifest(name: str) -> Manifest:
    return load_artifact(artifact_folder(MODELS_DIR, name)).manifest


def typical_patient(name: str, **overrides: Any) -> dict[str, Any]:
    """A valid payload: each feature at its training median (binary: 0, categorical: the most
    common category), then ``overrides``."""
    features: dict[str, Any] = {}
    for spec in manifest(name).features:
        dist = spec.distribution
        assert dist is not None
        if spec.type is FeatureType.CATEGORICAL:
            features[spec.name] = max(dist.category_rates, key=dist.category_rates.__getitem__)
        elif spec.type is FeatureType.BINARY:
            features[spec.name] = 0
        else:
            features[spec.name] = round(dist.quantiles["p50"])
    return {**features, **overrides}


@pytest.fixture
def research_key(keys: Keys) -> str:
    # Created before the server starts: the key store reads it at start-up.
    return create_key(keys.file, "study", ["predict", "batch", "research"])


@pytest.fixture
def server(settings: Settings, research_key: str) -> Iterator[str]:  # noqa: ARG001 (made first)
    with running_server(create_app(settings)) as url:
        yield url


def post(url: str, path: str, key: str, body: Any) -> httpx.Response:
    return httpx.post(url + path, headers={"Authorization": f"Bearer {key}"}, json=body)


def audit(url: str, keys: Keys, patient_id: str) -> list[dict[str, Any]]:
    response = httpx.get(
        url + "/v1/audit", headers=keys.header("admin"), params={"patient_id": patient_id}
    )
    assert response.status_code == 200, response.text
    records: list[dict[str, Any]] = response.json()["records"]
    return records


def assert_not_applicable(result: dict[str, Any], rule: str, detail: str | None = None) -> None:
    assert result["status"] == "not_applicable"
    assert result["probability"] is None
    assert result["tier"] is None
    assert result["explanation"] is None
    assert result["uncertainty"] is None
    applicability = result["applicability"]
    assert applicability["applicable"] is False
    assert applicability["research_use"] is False
    failed = {f["id"]: f for f in applicability["failed"]}
    assert rule in failed, failed
    assert failed[rule]["source"] and failed[rule]["description"]
    if detail is not None:
        assert failed[rule]["detail"] == detail


# --- REST single ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "features", "context", "rule", "detail"),
    [
        ("cvd", {"age_years": 25}, None, "age_30_to_70", "age 25 is below 30"),
        ("cvd", {"age_years": 90}, None, "age_30_to_70", "age 90 is above 70"),
        ("cvd", {}, {"established_ascvd": True}, "no_established_ascvd", None),
        ("cvd", {}, {"deceased": True}, "not_deceased", None),
        ("diabetes", {}, {"diagnosed_diabetes": True}, "not_diagnosed_diabetes", None),
        ("readmission", {"age_years": 5}, None, "adult", "age 5 is below 18"),
        ("readmission", {}, {"discharged_to_hospice": True}, "not_discharged_to_hospice", None),
    ],
)
def test_rest_single_answers_not_applicable_naming_the_rule_and_audits_it(
    server: str,
    keys: Keys,
    name: str,
    features: dict[str, Any],
    context: dict[str, bool] | None,
    rule: str,
    detail: str | None,
) -> None:
    body: dict[str, Any] = {
        "patient_id": f"pt-{rule}",
        "features": typical_patient(name, **features),
    }
    if context is not None:
        body["context"] = context

    response = post(server, f"/v1/models/{name}/predict", keys.predict, body)

    assert response.status_code == 200, response.text
    result = response.json()
    assert_not_applicable(result, rule, detail)
    assert "probability" not in json.dumps(result["applicability"])
    (record,) = audit(server, keys, f"pt-{rule}")
    assert record["status"] == "not_applicable"
    assert record["probability"] is None and record["tier"] is None
    assert record["channel"] == "single"
    assert record["prediction_id"] == result["prediction_id"]


def test_a_patient_inside_the_population_is_scored_with_its_bins_uncertainty(
    server: str, keys: Keys
) -> None:
    body = {"features": typical_patient("cvd", age_years=50), "context": {"deceased": False}}

    result = post(server, "/v1/models/cvd/predict", keys.predict, body).json()

    assert result["status"] == "scored"
    assert result["applicability"] == {"applicable": True, "research_use": False, "failed": []}
    probability = result["probability"]
    (expected,) = [
        b
        for b in manifest("cvd").validation.test.calibration_bins
        if b.lower is not None and b.upper is not None and b.lower <= probability < b.upper
    ]
    uncertainty = result["uncertainty"]
    assert uncertainty["n"] == expected.n
    assert uncertainty["observed_rate"] == pytest.approx(expected.observed_rate)
    assert uncertainty["ci_low"] == pytest.approx(expected.observed_ci_low)
    assert uncertainty["ci_high"] == pytest.approx(expected.observed_ci_high)
    assert uncertainty["bin"] == pytest.approx([expected.lower, expected.upper])
    assert uncertainty["statement"].startswith(f"Among {expected.n} test patients")
    codes = [w["code"] for w in result["warnings"]]
    # ACC/AHA ASCVD thresholds applied to a CHD risk; established ASCVD was not stated.
    assert "tier_thresholds_borrowed" in codes
    assert "applicability_not_stated" in codes
    assert "subgroup_unreliable" not in codes


def test_a_patient_in_an_unreliable_subgroup_is_warned(server: str, keys: Keys) -> None:
    subgroups = manifest("cvd").validation.subgroups
    unreliable = [s for s in subgroups if s.factor == "age_band" and s.level == "65+"]
    assert unreliable and not unreliable[0].reliable and unreliable[0].concern
    body = {"features": typical_patient("cvd", age_years=67)}

    result = post(server, "/v1/models/cvd/predict", keys.predict, body).json()

    assert result["status"] == "scored"
    (warning,) = [w for w in result["warnings"] if w["code"] == "subgroup_unreliable"]
    assert "65+" in warning["message"]


def test_research_use_needs_a_research_or_admin_key_and_is_audited_as_research(
    server: str, keys: Keys, research_key: str
) -> None:
    body = {
        "patient_id": "pt-research",
        "features": typical_patient("cvd", age_years=25),
        "research_use": True,
    }

    refused = post(server, "/v1/models/cvd/predict", keys.predict, body)
    scored = post(server, "/v1/models/cvd/predict", research_key, body)

    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    (error,) = refused.json()["errors"]
    assert error["field"] == "research_use"
    assert scored.status_code == 200, scored.text
    result = scored.json()
    assert result["status"] == "scored" and result["probability"] is not None
    assert result["applicability"]["applicable"] is False
    assert result["applicability"]["research_use"] is True
    assert "research_use" in [w["code"] for w in result["warnings"]]
    (record,) = audit(server, keys, "pt-research")
    assert record["channel"] == "single+research"
    assert record["probability"] == result["probability"]


def test_context_is_checked_against_the_models_rules(server: str, keys: Keys) -> None:
    features = typical_patient("diabetes")

    unknown = post(
        server,
        "/v1/models/diabetes/predict",
        keys.predict,
        {"features": features, "context": {"established_ascvd": False}},
    )
    not_boolean = post(
        server,
        "/v1/models/diabetes/predict",
        keys.predict,
        {"features": features, "context": {"diagnosed_diabetes": "no"}},
    )

    assert unknown.status_code == 422
    (error,) = unknown.json()["errors"]
    assert error["field"] == "context"
    assert "diagnosed_diabetes" in error["allowed"]
    assert not_boolean.status_code == 422
    assert not_boolean.json()["errors"][0]["field"] == "context.diagnosed_diabetes"


# --- REST batch ----------------------------------------------------------------------------


def test_rest_batch_answers_each_item_and_audits_the_not_applicable_ones(
    server: str, keys: Keys
) -> None:
    items = [
        {"patient_id": "b-0", "features": typical_patient("cvd", age_years=50)},
        {"patient_id": "b-1", "features": typical_patient("cvd", age_years=25)},
        {
            "patient_id": "b-2",
            "features": typical_patient("cvd"),
            "context": {"established_ascvd": True},
        },
    ]

    response = post(server, "/v1/models/cvd/predict/batch", keys.batch, {"items": items})

    assert response.status_code == 200, response.text
    results = [r["result"] for r in response.json()["results"]]
    assert results[0]["status"] == "scored" and results[0]["uncertainty"] is not None
    assert_not_applicable(results[1], "age_30_to_70", "age 25 is below 30")
    assert_not_applicable(results[2], "no_established_ascvd")
    for patient_id, status in (("b-0", "scored"), ("b-1", "not_applicable")):
        (record,) = audit(server, keys, patient_id)
        assert record["status"] == status
        assert record["channel"] == "batch"


# --- batch file (clinrisk score) -----------------------------------------------------------


def test_clinrisk_score_writes_not_applicable_rows_with_reasons_and_no_score(
    tmp_path: Path,
) -> None:
    rows = [
        typical_patient("cvd", age_years=50),
        typical_patient("cvd", age_years=25),
        typical_patient("cvd", age_years=50),
        typical_patient("cvd", age_years=67),
    ]
    contexts = ["", "", "yes", "no"]
    source = tmp_path / "patients.csv"
    with source.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, [*rows[0], "established_ascvd", "patient_id"])
        writer.writeheader()
        for i, (row, context) in enumerate(zip(rows, contexts, strict=True)):
            writer.writerow({**row, "established_ascvd": context, "patient_id": f"f-{i}"})
    output = tmp_path / "scores.csv"

    run = CliRunner().invoke(cli, ["score", "cvd", str(source), "--output", str(output)])

    assert run.exit_code == 0, run.output
    with output.open() as handle:
        scored = list(csv.DictReader(handle))
    assert [r["status"] for r in scored] == ["scored", "not_applicable", "not_applicable", "scored"]
    assert scored[0]["probability"] and scored[0]["uncertainty"].startswith("Among ")
    for row in scored[1:3]:
        assert row["probability"] == "" and row["tier"] == "" and row["uncertainty"] == ""
    assert scored[1]["not_applicable"] == "Adults aged 30 to 70: age 25 is below 30"
    assert "established ASCVD stated as yes" in scored[2]["not_applicable"]
    assert "subgroup_unreliable" in scored[3]["warnings"].split(";")
    assert "applicability_not_stated" in scored[0]["warnings"].split(";")


# --- CDS Hooks -----------------------------------------------------------------------------


def cds(url: str, keys: Keys, request: dict[str, Any]) -> list[dict[str, Any]]:
    response = post(url, SERVICE, keys.predict, request)
    assert response.status_code == 200, response.text
    cards: list[dict[str, Any]] = response.json()["cards"]
    return cards


def test_cds_hooks_gives_a_deceased_patient_no_card_and_no_score(server: str, keys: Keys) -> None:
    # Outside the population as the chart states it: no card at all (patient-view fires at
    # every chart opening; see service/cds_hooks/router.py), nothing scored or audited.
    patient_id, data = prefetch(bundle_path("Reginald_Auer"))  # died 2013-02-18

    assert cds(server, keys, hook_request(patient_id, data)) == []
    assert audit(server, keys, patient_id) == []


def test_cds_hooks_reads_established_ascvd_from_the_conditions(server: str, keys: Keys) -> None:
    patient_id, data = prefetch(bundle_path("Dirk_Kuhlman"))  # aged 54, no ASCVD recorded
    (scored,) = cds(server, keys, hook_request(patient_id, data))
    data["conditions"]["entry"].append(
        {
            "resource": {
                "resourceType": "Condition",
                "subject": {"reference": f"Patient/{patient_id}"},
                "clinicalStatus": {"coding": [{"code": "active"}]},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "22298006"}]},
            },
            "search": {"mode": "match"},
        }
    )

    cards = cds(server, keys, hook_request(patient_id, data))

    assert scored["extension"]["dev.clinrisk.prediction"]["computed"] is True
    assert "percentage points" in scored["detail"]
    assert cards == []  # myocardial infarction: established ASCVD, not primary prevention
