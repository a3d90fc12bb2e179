"""The committed openapi.yaml is exactly what the app serves."""

from __future__ import annotations

import yaml

from service.openapi import render
from service.settings import REPO_ROOT


def test_committed_openapi_matches_the_app() -> None:
    committed = (REPO_ROOT / "openapi.yaml").read_text()

    assert committed == render(), "openapi.yaml is stale: run `make openapi`"


def test_each_model_has_its_own_feature_schema_with_units_and_ranges() -> None:
    document = yaml.safe_load(render())
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
    assert set(examples) == {"cvd", "diabetes", "readmission"}
    assert 0 < examples["cvd"]["value"]["probability"] < 1
