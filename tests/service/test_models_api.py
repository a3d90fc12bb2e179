"""Model metadata endpoints."""

from __future__ import annotations

from fastapi.testclient import TestClient

from models.registry import artifact_folder
from service.api.schemas import ModelDetail, ModelSummary
from tests.conftest import MODELS_DIR, SHIPPED_VERSION, Keys


def test_list_models_shows_versions_defaults_and_test_auroc(client: TestClient, keys: Keys) -> None:
    response = client.get("/v1/models", headers=keys.header("predict"))

    assert response.status_code == 200
    models = {m["name"]: ModelSummary.model_validate(m) for m in response.json()}
    equations = {"ascvd-pce", "ascvd-prevent", "cvd-framingham-2008"}  # published, not trained
    assert set(models) == {"cvd", "diabetes", "readmission"} | equations
    for name, summary in models.items():
        if name in equations:
            assert summary.kind == "equation" and summary.test_auroc is None
            continue
        assert summary.default_version == artifact_folder(MODELS_DIR, name).name  # the newest
        assert summary.test_auroc is not None and summary.test_auroc_ci is not None
        assert summary.test_auroc_ci[0] < summary.test_auroc < summary.test_auroc_ci[1]


def test_read_model_returns_features_tiers_validation_and_card(
    client: TestClient, keys: Keys
) -> None:
    response = client.get("/v1/models/cvd", headers=keys.header())
    pinned = client.get(f"/v1/models/cvd/versions/{SHIPPED_VERSION}", headers=keys.header())

    assert response.status_code == 200
    detail = ModelDetail.model_validate(response.json())
    assert detail == ModelDetail.model_validate(pinned.json())
    assert [t.lower for t in detail.tiers] == [0.0, 0.05, 0.075, 0.2]
    systolic = next(f for f in detail.features if f.name == "systolic_bp_mm_hg")
    assert (systolic.unit, systolic.loinc) == ("mmHg", "8480-6")
    assert systolic.distribution is not None and "p99" in systolic.distribution.quantiles
    assert detail.validation.subgroups
    assert detail.card_markdown.startswith("# ")
    assert detail.out_of_scope


def test_read_unknown_model_is_404(client: TestClient, keys: Keys) -> None:
    response = client.get("/v1/models/unknown", headers=keys.header())

    assert response.status_code == 404
    assert (
        response.json()["detail"]
        == "No model named 'unknown'. Available: ascvd-pce, ascvd-prevent, cvd, "
        "cvd-framingham-2008, diabetes, readmission."
    )


def test_a_published_equation_shows_its_published_figures_with_sources(
    client: TestClient, keys: Keys
) -> None:
    body = client.get("/v1/models/ascvd-prevent", headers=keys.header()).json()
    figures = body["published_validation"]
    assert figures and body["published_validation_missing"]
    assert body["validation"] is None  # nothing measured locally for an equation
    for figure in figures:
        assert figure["pmid"] or figure["doi"]
        assert figure["citation"] and figure["population"] and figure["outcome"]
        assert (
            figure["citation"] in body["card_markdown"] or figure["study"] in body["card_markdown"]
        )
