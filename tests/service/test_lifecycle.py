"""Governed model versions (issue 13 part 4): lifecycle states changed only by recorded
decisions (who, when, why, evidence), through the admin API and `clinrisk models`; every change
kept. SQLite and PostgreSQL."""

from __future__ import annotations

import getpass
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service.app import create_app
from service.cli import app as cli
from service.settings import Settings, get_settings
from tests.conftest import MODELS_DIR, SHIPPED_VERSION, Keys

MODEL = "cvd"


def _next(version: str) -> str:
    major, minor, patch = (int(p) for p in version.split("."))
    return f"{major}.{minor}.{patch + 1}"


NEW_VERSION = _next(SHIPPED_VERSION)


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """The shipped cvd artifact and an (unsigned) copy of it as the next patch version."""
    root = tmp_path / "models"
    shutil.copytree(MODELS_DIR / MODEL / SHIPPED_VERSION, root / MODEL / SHIPPED_VERSION)
    target = root / MODEL / NEW_VERSION
    shutil.copytree(MODELS_DIR / MODEL / SHIPPED_VERSION, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["version"] = NEW_VERSION
    (target / "manifest.json").write_text(json.dumps(manifest))
    (target / "manifest.sig").unlink(missing_ok=True)
    return root


@pytest.fixture
def client(keys: Keys, database_url: str, models_dir: Path) -> Iterator[TestClient]:
    settings = Settings(
        models_dir=models_dir,
        database_url=database_url,
        api_keys_file=keys.file,
        pseudonym_key="test-pseudonym-key",  # type: ignore[arg-type]
        allow_unsigned_models=True,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _lifecycle(client: TestClient, keys: Keys) -> dict[str, Any]:
    answer = client.get(f"/v1/models/{MODEL}/lifecycle", headers=keys.header("admin"))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _change(client: TestClient, keys: Keys, version: str, body: Any, key: str = "admin") -> Any:
    return client.post(
        f"/v1/models/{MODEL}/versions/{version}/lifecycle", json=body, headers=keys.header(key)
    )


def test_versions_start_as_candidates_and_approval_needs_a_shadow_period(
    client: TestClient, keys: Keys
) -> None:
    before = _lifecycle(client, keys)
    direct = _change(client, keys, NEW_VERSION, {"state": "approved", "reason": "looks good"})

    assert [v["state"] for v in before["versions"]] == ["candidate", "candidate"]
    assert before["versions"][0]["reason"] == "no decision recorded"
    assert before["approved"] is None and before["served_default"] == NEW_VERSION
    assert direct.status_code == 409
    problem = direct.json()
    assert problem["errors"][0]["field"] == "state"
    assert problem["errors"][0]["allowed"] == "shadow, retired"
    assert _lifecycle(client, keys)["history"] == []  # a refused change records nothing


def test_an_approval_is_recorded_with_who_why_and_evidence_and_supersedes(
    client: TestClient, keys: Keys
) -> None:
    manifest = json.loads((MODELS_DIR / MODEL / SHIPPED_VERSION / "manifest.json").read_text())
    steps = [
        (SHIPPED_VERSION, "shadow", "first review"),
        (SHIPPED_VERSION, "approved", "governance board 2026-11, minutes 14"),
        (NEW_VERSION, "shadow", "recalibrated on local data"),
        (NEW_VERSION, "approved", "local calibration better; board 2026-12"),
    ]
    for version, state, reason in steps:
        answer = _change(client, keys, version, {"state": state, "reason": reason, "note": "n"})
        assert answer.status_code == 200, answer.text

    result = _lifecycle(client, keys)
    again = _change(client, keys, SHIPPED_VERSION, {"state": "shadow", "reason": "retry"})

    states = {v["version"]: v for v in result["versions"]}
    assert states[NEW_VERSION]["state"] == "approved"
    assert states[SHIPPED_VERSION]["state"] == "retired"
    assert states[SHIPPED_VERSION]["reason"].startswith(f"superseded by {NEW_VERSION}")
    assert result["approved"] == NEW_VERSION
    history = result["history"]
    assert [(e["model_version"], e["from_state"], e["to_state"]) for e in history] == [
        (SHIPPED_VERSION, "candidate", "shadow"),
        (SHIPPED_VERSION, "shadow", "approved"),
        (NEW_VERSION, "candidate", "shadow"),
        (SHIPPED_VERSION, "approved", "retired"),
        (NEW_VERSION, "shadow", "approved"),
    ]
    approval = history[-1]
    assert approval["changed_by"].startswith("auditor (")  # the admin key's name and id
    assert approval["reason"] == "local calibration better; board 2026-12"
    evidence = approval["evidence"]
    assert evidence["validation"]["auroc"] == manifest["validation"]["test"]["auroc"]
    assert evidence["local"]["predictions"] == 0 and evidence["local"]["suppressed"] is True
    assert evidence["drift_breaches"] == [] and evidence["note"] == "n"
    assert evidence["model_file_sha256"] == manifest["files"][manifest["model_file"]]
    assert again.status_code == 409 and "stays retired" in again.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"state": "shadow"}, "reason"),
        ({"state": "shadow", "reason": "   "}, "reason"),
        ({"state": "live", "reason": "x"}, "state"),
        ({"state": "shadow", "reason": "x", "by": "me"}, "by"),
        (["shadow"], "body"),
    ],
)
def test_a_bad_change_is_refused_naming_the_field(
    client: TestClient, keys: Keys, body: Any, field: str
) -> None:
    answer = _change(client, keys, NEW_VERSION, body)

    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["errors"][0]["field"] == field


def test_only_admin_keys_govern_and_unknown_versions_are_404(
    client: TestClient, keys: Keys
) -> None:
    forbidden = _change(client, keys, NEW_VERSION, {"state": "shadow", "reason": "x"}, "predict")
    unknown = _change(client, keys, "9.9.9", {"state": "shadow", "reason": "x"})
    read = client.get(f"/v1/models/{MODEL}/lifecycle", headers=keys.header("predict"))

    assert forbidden.status_code == 403
    assert unknown.status_code == 404
    assert read.status_code == 403


def test_the_cli_approves_with_the_same_trail(
    models_dir: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLINRISK_DATABASE_URL", database_url)
    monkeypatch.setenv("CLINRISK_ALLOW_UNSIGNED_MODELS", "true")  # the copied version
    get_settings.cache_clear()
    runner = CliRunner()
    base = ["models"]
    where = ["--models-dir", str(models_dir)]
    try:
        refused = runner.invoke(
            cli, [*base, "approve", MODEL, NEW_VERSION, "--reason", "x", *where]
        )
        shadow = runner.invoke(
            cli, [*base, "set-state", MODEL, NEW_VERSION, "shadow", "--reason", "pilot", *where]
        )
        approved = runner.invoke(
            cli, [*base, "approve", MODEL, NEW_VERSION, "--reason", "board", *where]
        )
        shown = runner.invoke(cli, [*base, "lifecycle", MODEL, *where])
        listed = runner.invoke(cli, [*base, *where])
    finally:
        get_settings.cache_clear()

    assert refused.exit_code == 1 and "cannot become approved" in refused.output
    assert shadow.exit_code == 0, shadow.output
    assert approved.exit_code == 0, approved.output
    assert f"shadow -> approved by cli:{getpass.getuser()}" in approved.output
    assert shown.exit_code == 0 and f"approved: {NEW_VERSION}" in shown.output
    assert listed.exit_code == 0 and MODEL in listed.output


def test_the_serving_policy_scores_the_approved_version_and_refuses_retired_ones(
    client: TestClient, keys: Keys
) -> None:
    from service import lifecycle

    engine = client.app.state.clinrisk.audit.engine  # type: ignore[attr-defined]
    loaded = [SHIPPED_VERSION, NEW_VERSION]
    policy = lifecycle.policy_for(engine)
    policy.refresh()
    undecided = policy.version_to_score(MODEL, None, loaded)
    for version, state in [
        (NEW_VERSION, "shadow"),
        (NEW_VERSION, "approved"),
        (SHIPPED_VERSION, "retired"),
    ]:
        answer = _change(client, keys, version, {"state": state, "reason": f"to {state}"})
        assert answer.status_code == 200, answer.text

    default = policy.version_to_score(MODEL, None, loaded)
    pinned = policy.version_to_score(MODEL, NEW_VERSION, loaded)
    with pytest.raises(lifecycle.VersionRetired) as retired:
        policy.version_to_score(MODEL, SHIPPED_VERSION, loaded)
    fresh = lifecycle.ServingPolicy(engine)  # another worker, on its next refresh
    fresh.refresh()

    assert undecided is None  # no decision: the registry's default
    assert default == pinned == NEW_VERSION
    assert retired.value.status == 410
    assert "to retired" in retired.value.detail and NEW_VERSION in retired.value.detail
    assert fresh.version_to_score(MODEL, None, loaded) == NEW_VERSION
    assert policy.version_to_score("diabetes", None, ["1.0.0"]) is None


def test_the_scoring_routes_serve_the_approved_version_and_refuse_a_retired_one(
    client: TestClient, keys: Keys
) -> None:
    from models.loader import load_artifact
    from service.openapi_schema import example_features

    features = example_features(load_artifact(MODELS_DIR / MODEL / SHIPPED_VERSION).manifest)
    body = {"features": features, "context": {"established_ascvd": False}}
    before = client.post(f"/v1/models/{MODEL}/predict", json=body, headers=keys.header("predict"))
    for version, state in [
        (SHIPPED_VERSION, "shadow"),
        (SHIPPED_VERSION, "approved"),
        (NEW_VERSION, "retired"),
    ]:
        answer = _change(client, keys, version, {"state": state, "reason": f"to {state}"})
        assert answer.status_code == 200, answer.text

    served = client.post(f"/v1/models/{MODEL}/predict", json=body, headers=keys.header("predict"))
    retired = client.post(
        f"/v1/models/{MODEL}/versions/{NEW_VERSION}/predict/batch",
        json={"items": [body]},
        headers=keys.header("batch"),
    )
    described = client.get(f"/v1/models/{MODEL}/versions/{NEW_VERSION}", headers=keys.header())
    listed = client.get("/v1/models", headers=keys.header()).json()

    assert before.json()["model"]["version"] == NEW_VERSION  # no decision: the newest
    assert served.status_code == 200 and served.json()["model"]["version"] == SHIPPED_VERSION
    assert retired.status_code == 410
    assert retired.headers["content-type"] == "application/problem+json"
    assert "retired" in retired.json()["detail"] and SHIPPED_VERSION in retired.json()["detail"]
    assert described.status_code == 200  # a retired version can still be read and reviewed
    assert {m["name"]: m["default_version"] for m in listed}[MODEL] == SHIPPED_VERSION


def test_a_shadow_version_is_scored_and_audited_beside_the_served_one_never_returned(
    client: TestClient, keys: Keys
) -> None:
    from models.loader import load_artifact
    from service.openapi_schema import example_features

    features = example_features(load_artifact(MODELS_DIR / MODEL / SHIPPED_VERSION).manifest)
    body = {"patient_id": "p-1", "features": features}
    for version, state in [
        (SHIPPED_VERSION, "shadow"),
        (SHIPPED_VERSION, "approved"),
        (NEW_VERSION, "shadow"),
    ]:
        answer = _change(client, keys, version, {"state": state, "reason": f"to {state}"})
        assert answer.status_code == 200, answer.text

    single = client.post(f"/v1/models/{MODEL}/predict", json=body, headers=keys.header())
    batch = client.post(
        f"/v1/models/{MODEL}/predict/batch",
        json={"items": [body, {"features": {"age_years": "old"}}, body]},
        headers=keys.header(),
    )
    trail = client.get(f"/v1/audit?model={MODEL}&limit=100", headers=keys.header("admin")).json()

    assert single.status_code == 200 and single.json()["model"]["version"] == SHIPPED_VERSION
    assert batch.json()["succeeded"] == 2 and batch.json()["failed"] == 1
    assert {r["result"]["model"]["version"] for r in batch.json()["results"] if r["result"]} == {
        SHIPPED_VERSION
    }
    records = [(r["model_version"], r["channel"]) for r in trail["records"]]
    assert sorted(records) == sorted(
        [(SHIPPED_VERSION, "single"), (NEW_VERSION, "shadow")]
        + [(SHIPPED_VERSION, "batch"), (NEW_VERSION, "shadow")] * 2
    )
