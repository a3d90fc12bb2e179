"""The committed openapi.yaml is exactly what the app serves, and it says what the service does."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from service.errors import PROBLEM_JSON
from service.openapi import render
from service.settings import REPO_ROOT

PROBLEM = {"schema": {"$ref": "#/components/schemas/Problem"}}


@pytest.fixture(scope="module")
def rendered() -> str:
    return render()


@pytest.fixture(scope="module")
def document(rendered: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(rendered)
    return loaded


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    ]


def test_committed_openapi_matches_the_app(rendered: str) -> None:
    committed = (REPO_ROOT / "openapi.yaml").read_text()

    assert committed == rendered, "openapi.yaml is stale: run `make openapi`"


def test_each_model_has_its_own_feature_schema_with_units_and_ranges(
    document: dict[str, Any],
) -> None:
    schemas = document["components"]["schemas"]

    cvd = schemas["CvdFeatures"]["properties"]
    assert cvd["systolic_bp_mm_hg"]["maximum"] == 300
    assert cvd["systolic_bp_mm_hg"]["x-unit"] == "mmHg"
    assert "mmol/L" in str(cvd["glucose_mg_dl"]["anyOf"])
    assert "age_years" in schemas["DiabetesFeatures"]["required"]
    assert (
        "skilled_nursing"
        in schemas["ReadmissionFeatures"]["properties"]["discharge_disposition"]["enum"]
    )
    examples = document["paths"]["/v1/models/{name}/predict"]["post"]["responses"]["200"][
        "content"
    ]["application/json"]["examples"]
    assert set(examples) == {
        "cvd",
        "diabetes",
        "readmission",
        "ascvd-pce",
        "ascvd-prevent",
        "cvd-framingham-2008",
    }
    assert 0 < examples["cvd"]["value"]["probability"] < 1


def test_optional_features_may_be_null_and_required_ones_may_not(
    document: dict[str, Any],
) -> None:
    features = document["components"]["schemas"]["CvdFeatures"]
    required = set(features["required"])

    for name, schema in features["properties"].items():
        nullable = {"type": "null"} in schema.get("anyOf", [])
        assert nullable == (name not in required), name


def test_every_error_answer_is_a_problem_in_problem_json(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        for status, response in operation["responses"].items():
            if int(status) >= 400 and (method, path, status) != ("GET", "/health/ready", "503"):
                assert response["content"] == {PROBLEM_JSON: PROBLEM}, (method, path, status)
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_every_secured_operation_lists_401_and_only_health_is_open(
    document: dict[str, Any],
) -> None:
    open_operations, ehr_operations = set(), set()
    for method, path, operation in _operations(document):
        security = operation.get("security")
        if security in ([{"apiKey": []}], [{"apiKey": []}, {"ehrJwt": []}]):
            assert "401" in operation["responses"], (method, path)
            if {"ehrJwt": []} in security:
                ehr_operations.add(path)
        else:
            open_operations.add(path)

    assert open_operations == {"/health/live", "/health/ready"}
    # CDS Hooks: the EHR's signed JWT (the API key only where the configuration allows it).
    assert ehr_operations == {p for p in document["paths"] if p.startswith("/cds-services")}
    assert document["components"]["securitySchemes"]["ehrJwt"]["bearerFormat"] == "JWT"


def test_audit_parameters_are_bounded_and_times_are_date_times(document: dict[str, Any]) -> None:
    operation = document["paths"]["/v1/audit"]["get"]
    parameters = {p["name"]: p["schema"] for p in operation["parameters"]}

    assert parameters["offset"]["maximum"] == 2**63 - 1
    assert parameters["limit"] == {**parameters["limit"], "minimum": 1, "maximum": 1000}
    assert {"type": "string", "format": "date-time"} in parameters["until"]["anyOf"]
    assert set(operation["responses"]) == {"200", "401", "403", "422", "503"}


def test_a_curves_body_names_only_its_own_models_features(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    body = document["paths"]["/v1/models/{name}/curves"]["post"]["requestBody"]

    variants = body["content"]["application/json"]["schema"]["oneOf"]
    assert len(variants) == 6  # three trained models, three published equations
    cvd = schemas["CvdCurvesRequest"]["properties"]
    assert cvd["features"] == {"$ref": "#/components/schemas/CvdFeatures"}
    assert set(cvd["features_to_vary"]["items"]["enum"]) == set(
        schemas["CvdFeatures"]["properties"]
    )
    assert cvd["features_to_vary"]["uniqueItems"] is True
