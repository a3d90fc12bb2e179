"""HTI-1 source attributes per model version (issue 13 part 6): filled from the manifest and
live validation, a value the artifact does not state shown as missing with its reason, never
invented. SQLite and PostgreSQL for the live part."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bench import monitoring_drift as simulation
from models.registry import artifact_folder
from service.app import create_app
from service.auth import create_key
from service.settings import Settings
from tests.conftest import MODELS_DIR, Keys

GOVERNANCE = {
    "developer": "developer",
    "contact": "contact",
    "funding_source": "funding",
    "intended_users": "intended_users",
    "decision_role": "decision_role",
    "relevance_to_deployed_setting": "data_provenance",
    "fairness_approach": "fairness_approach",
    "external_validation": "external_validation",
    "monitoring_plan": "monitoring_plan",
    "update_process_and_frequency": "update_plan",
}


@pytest.fixture
def outcomes_key(keys: Keys) -> str:
    # Before the app starts: a key file changed within the same second may not be re-read yet.
    return create_key(keys.file, "registry", ["outcomes"])


@pytest.fixture
def client(keys: Keys, outcomes_key: str, database_url: str) -> Iterator[TestClient]:
    del outcomes_key  # created, in the file the app reads
    settings = Settings(
        models_dir=MODELS_DIR,
        database_url=database_url,
        api_keys_file=keys.file,
        pseudonym_key="test-pseudonym-key",  # type: ignore[arg-type]
        max_batch_size=1000,
        max_body_bytes=16 * 1024 * 1024,
        monitoring_min_group=50,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _sheet(client: TestClient, keys: Keys, name: str, version: str) -> dict[str, Any]:
    answer = client.get(
        f"/v1/models/{name}/versions/{version}/transparency", headers=keys.header("predict")
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _attributes(sheet: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for s in sheet["sections"] for k, v in s["attributes"].items()}


def _manifest(name: str) -> tuple[str, dict[str, Any]]:
    folder: Path = artifact_folder(MODELS_DIR, name)
    return folder.name, json.loads((folder / "manifest.json").read_text())


@pytest.mark.parametrize("name", ["diabetes", "readmission", "cvd", "ascvd-pce"])
def test_every_attribute_is_from_the_manifest_or_missing_with_a_reason(
    client: TestClient, keys: Keys, name: str
) -> None:
    version, manifest = _manifest(name)

    sheet = _sheet(client, keys, name, version)

    attributes = _attributes(sheet)
    assert sheet["missing"] == sorted(k for k, v in attributes.items() if v["status"] == "missing")
    for key, attribute in attributes.items():
        if attribute["status"] == "missing":
            assert attribute["value"] is None and attribute["reason"], key
        else:
            assert attribute["value"] not in (None, "", []), key
            assert attribute["source"], key
    governance = manifest.get("governance") or {}
    for key, field in GOVERNANCE.items():
        stated = governance.get(field)
        assert attributes[key]["status"] == ("present" if stated else "missing"), key
        if stated:
            assert attributes[key]["value"] == stated
    assert attributes["intended_use"]["value"] == manifest["intended_use"]
    assert attributes["lifecycle_decisions"]["value"] == {"state": "candidate", "decisions": []}
    assert attributes["out_of_scope"]["value"] == manifest["out_of_scope"]
    # No outcomes recorded yet: the local figures are missing, with the count.
    assert attributes["validity_local_data"]["status"] == "missing"
    assert "0 predictions with a recorded outcome" in attributes["validity_local_data"]["reason"]
    if manifest.get("validation") is None:
        assert attributes["validity_test_data"]["status"] == "missing"
        assert "published equation" in attributes["training_data"]["reason"]
    else:
        test = attributes["validity_test_data"]["value"]
        assert test["auroc"]["value"] == manifest["validation"]["test"]["auroc"]
        assert test["n"] == manifest["validation"]["test"]["n"]


def test_local_validity_and_fairness_come_from_recorded_outcomes(
    client: TestClient, keys: Keys, outcomes_key: str
) -> None:
    frame, y = simulation.unshifted(1500)
    replay_keys = simulation.Keys(batch=keys.batch, outcomes=outcomes_key, admin=keys.admin)
    counts = simulation.replay(client, replay_keys, frame, y, simulation.real_outcomes)
    live, _ = simulation.reports(client, replay_keys)

    shadow = client.post(
        f"/v1/models/{simulation.MODEL}/versions/{simulation.version()}/lifecycle",
        json={"state": "shadow", "reason": "local pilot"},
        headers=keys.header("admin"),
    )
    assert shadow.status_code == 200, shadow.text

    sheet = _sheet(client, keys, simulation.MODEL, simulation.version())

    attributes = _attributes(sheet)
    local = attributes["validity_local_data"]
    assert local["status"] == "present"
    assert local["value"]["outcomes_known"] == counts["scored"]
    assert local["value"]["auroc"] == live["overall"]["live"]["auroc"]
    fairness = {(g["factor"], g["level"]): g for g in attributes["fairness_local_data"]["value"]}
    for group in live["subgroups"]:
        shown = fairness[(group["factor"], group["level"])]
        if group["suppressed"]:
            assert "auroc" not in shown and shown["suppressed"] == group["reason"]
        else:
            assert shown["auroc"] == group["live"]["auroc"]
    decisions = attributes["lifecycle_decisions"]["value"]
    assert decisions["state"] == "shadow"
    assert decisions["decisions"][0]["reason"] == "local pilot"
    assert decisions["decisions"][0]["evidence"]["local"]["outcomes_known"] == counts["scored"]
    monitoring = attributes["monitoring_of_validity_and_fairness"]["value"]
    assert "fewer" not in monitoring["live_validation"]
    assert "under 50 known outcomes are suppressed" in monitoring["live_validation"]
