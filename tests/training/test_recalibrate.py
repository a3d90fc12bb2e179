"""`clinrisk recalibrate` (issue 13 part 5) and the approval of its candidate (part 4): held-out
BRFSS rows of an older, heavier population with outcomes miscalibrated against the shipped
diabetes model are the local data; the recalibrated version is calibrated on them, ranks them
exactly as before, explains exactly, records the local data in its card, and goes from
candidate to approved with its trail."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from bench import monitoring_drift as simulation
from models.loader import load_artifact
from models.predictor import Predictor
from models.signing import TRUSTED_KEYS_ENV, TrustPolicy
from service.app import create_app
from service.cli import app as cli
from service.settings import Settings
from tests.conftest import MODELS_DIR, make_keys
from tests.training.conftest import TrainingKey

MODEL = simulation.MODEL
ROWS = 3000


@pytest.fixture(scope="module")
def local_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frame, _ = simulation.shifted(ROWS, seed=8)
    model = Predictor(load_artifact(MODELS_DIR / MODEL / simulation.version()))
    scored = model.predict_many(simulation.records(frame), top_k=[1] * len(frame))
    p = np.array([s.result["probability"] for s in scored])  # type: ignore[union-attr]
    frame = frame.copy()
    frame["outcome"] = simulation.miscalibrated(seed=8)(p, np.zeros(len(p), dtype=np.int64))
    path = tmp_path_factory.mktemp("local") / "local_outcomes.csv"
    frame.to_csv(path, index=False)
    return path


def _recalibrate(models: Path, data: Path, key: TrainingKey, *extra: str) -> Any:
    # The registry trusts the release keys and, for the version written here, the test key.
    trusted = f"{MODELS_DIR / 'trusted_keys'}:{key.public_file}"
    return CliRunner(env={TRUSTED_KEYS_ENV: trusted}).invoke(
        cli,
        [
            "recalibrate",
            MODEL,
            "--data",
            str(data),
            "--models-dir",
            str(models),
            "--out",
            str(models),
            "--signing-key",
            str(key.private_file),
            *extra,
        ],
    )


def test_a_recalibrated_candidate_is_calibrated_exact_and_goes_to_approved(
    local_file: Path, tmp_path: Path, training_key: TrainingKey
) -> None:
    models = tmp_path / "models"
    shutil.copytree(
        MODELS_DIR / MODEL / simulation.version(), models / MODEL / simulation.version()
    )
    old_version = simulation.version()
    major, minor, patch = (int(p) for p in old_version.split("."))
    new_version = f"{major}.{minor}.{patch + 1}"

    result = _recalibrate(models, local_file, training_key, "--method", "slope")
    again = _recalibrate(models, local_file, training_key, "--new-version", new_version)

    assert result.exit_code == 0, result.output
    assert again.exit_code == 2 and "exists already" in again.output
    folder = models / MODEL / new_version
    trust = TrustPolicy.trusting(training_key.trust.keys[training_key.key_id])
    new = Predictor(load_artifact(folder, trust))
    old = Predictor(load_artifact(models / MODEL / old_version))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["version"] == new_version
    assert "local_outcomes.csv" in manifest["calibration"]["fitted_on"]
    assert "recalibrated on local outcomes" in manifest["caveats"][-1]
    card = (folder / "card.md").read_text()
    assert f"## Local recalibration ({new_version})" in card
    assert manifest["calibration"]["fitted_on"].split("sha256 ")[1][:64] in card
    # On the local rows: calibrated now (the fit is in-sample), ranked exactly as before.
    from training import metrics
    from training.local_evaluate import score_local

    before, after = score_local(old, local_file), score_local(new, local_file)
    slope, intercept = metrics.calibration_slope_intercept(after.y, after.p)
    assert slope == pytest.approx(1.0, abs=1e-4) and intercept == pytest.approx(0.0, abs=1e-4)
    assert metrics.calibration_slope_intercept(before.y, before.p)[0] < 0.8
    # A monotone map: the same ranking, up to near-ties float64 rounding merges or splits.
    assert metrics.auroc(after.y, after.p) == pytest.approx(
        metrics.auroc(before.y, before.p), abs=1e-5
    )
    # Explanations stay exact: base + contributions = the new log-odds.
    row = simulation.records(simulation.shifted(1, seed=3)[0])[0]
    explained = new.predict(row, top_k=100).result
    explanation = explained["explanation"]
    total = explanation["base_log_odds"] + sum(
        c["contribution"] for c in explanation["contributions"]
    )
    p = explained["probability"]
    assert total == pytest.approx(math.log(p / (1 - p)), abs=1e-9)

    # The candidate goes through the lifecycle to approved, audited with its evidence.
    keys = make_keys(tmp_path / "keys.json")
    settings = Settings(
        models_dir=models,
        database_url=f"sqlite:///{tmp_path / 'audit.db'}",
        api_keys_file=keys.file,
        pseudonym_key="test-pseudonym-key",  # type: ignore[arg-type]
        trusted_keys=[MODELS_DIR / "trusted_keys", training_key.public_file],
    )
    with TestClient(create_app(settings)) as client:
        base = f"/v1/models/{MODEL}/versions/{new_version}/lifecycle"
        for state, reason in (
            ("shadow", "recalibrated on local outcomes; compare on live traffic"),
            ("approved", "calibration on local data restored; governance board minute 7"),
        ):
            answer = client.post(
                base, json={"state": state, "reason": reason}, headers=keys.header("admin")
            )
            assert answer.status_code == 200, answer.text
        trail = client.get(f"/v1/models/{MODEL}/lifecycle", headers=keys.header("admin")).json()

    assert trail["approved"] == new_version
    assert [(e["from_state"], e["to_state"]) for e in trail["history"]] == [
        ("candidate", "shadow"),
        ("shadow", "approved"),
    ]
    approval = trail["history"][-1]
    assert approval["evidence"]["model_file_sha256"] == manifest["files"][manifest["model_file"]]
    assert approval["changed_by"].startswith("auditor")
