"""Live validation (issue 13 part 2) on a real replay: the cvd model's held-out Framingham rows
are scored through the API and their real outcomes recorded; the live figures must match an
independent scipy computation and the manifest's own test figures (same rows, same model), and
the "worse than validation" judgement must fire for deliberately miscalibrated outcomes only.
SQLite and PostgreSQL."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy import optimize, stats

from service.app import create_app
from service.auth import create_key
from service.monitoring import _newton
from service.risk_bins import RISK_BIN_WIDTH
from service.settings import Settings
from tests.conftest import MODELS_DIR, SHIPPED_VERSION, Keys
from training.datasets import SHARED_DATA, load_framingham
from training.train import membership, split_test

MIN_GROUP = 50


@dataclass(frozen=True)
class Replay:
    client: TestClient
    admin: dict[str, str]
    outcomes_key: str
    ids: list[str]
    probabilities: np.ndarray
    outcomes: np.ndarray
    sex_male: np.ndarray
    manifest: dict[str, Any]


def _models_with_membership(tmp_path: Path) -> Path:
    """The shipped cvd artifact, its subgroups given membership if its manifest predates it
    (unsigned copy: the manifest changed, so the release signature no longer holds)."""
    source = MODELS_DIR / "cvd" / SHIPPED_VERSION
    target = tmp_path / "models" / "cvd" / SHIPPED_VERSION
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    features = {f["name"] for f in manifest["features"]}
    for group in manifest["validation"]["subgroups"]:
        if not group.get("feature"):
            group.update(membership(group["factor"], group["level"], features))
    (target / "manifest.json").write_text(json.dumps(manifest))
    (target / "manifest.sig").unlink(missing_ok=True)
    return tmp_path / "models"


@pytest.fixture
def replay(tmp_path: Path, keys: Keys, database_url: str) -> Iterator[Replay]:
    models_dir = _models_with_membership(tmp_path)
    manifest = json.loads((models_dir / "cvd" / SHIPPED_VERSION / "manifest.json").read_text())
    split = manifest["split"]
    data = load_framingham(SHARED_DATA / "framingham" / "framingham.csv")
    _, test = split_test(data, test_fraction=split["test_fraction"], seed=split["seed"])
    held_out = data.features[test]
    names = [f["name"] for f in manifest["features"]]
    rows = [
        {k: (None if v != v else v) for k, v in row.items() if k in names}
        for row in held_out.to_dict("records")
    ]
    y_all = data.y[test].astype(int)
    outcomes_key = create_key(keys.file, "registry", ["outcomes"])
    settings = Settings(
        models_dir=models_dir,
        database_url=database_url,
        api_keys_file=keys.file,
        pseudonym_key="test-pseudonym-key",  # type: ignore[arg-type]
        allow_unsigned_models=True,
        max_batch_size=1000,
        max_body_bytes=4 * 1024 * 1024,
        monitoring_min_group=MIN_GROUP,
    )
    with TestClient(create_app(settings)) as client:
        answer = client.post(
            "/v1/models/cvd/predict/batch",
            json={"items": [{"features": r} for r in rows], "top_k": 1},
            headers=keys.header("batch"),
        )
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        scored = [
            i
            for i, r in enumerate(results)
            if r["result"] and r["result"]["probability"] is not None
        ]
        yield Replay(
            client=client,
            admin=keys.header("admin"),
            outcomes_key=outcomes_key,
            ids=[results[i]["result"]["prediction_id"] for i in scored],
            probabilities=np.array([results[i]["result"]["probability"] for i in scored]),
            outcomes=y_all[scored],
            sex_male=np.array([rows[i]["sex_male"] for i in scored]),
            manifest=manifest,
        )


def _record(replay: Replay, outcomes: np.ndarray, key: str) -> None:
    rows = [
        {"prediction_id": i, "outcome": int(y)} for i, y in zip(replay.ids, outcomes, strict=True)
    ]
    answer = replay.client.post(
        "/v1/outcomes", json={"outcomes": rows}, headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["rejected"] == []


def _monitoring(replay: Replay, **params: str) -> dict[str, Any]:
    answer = replay.client.get(
        f"/v1/models/cvd/versions/{SHIPPED_VERSION}/monitoring", params=params, headers=replay.admin
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _binned(p: np.ndarray) -> np.ndarray:
    """The probabilities at the centres of their stored risk bins (an independent rewrite)."""
    logit = np.round(np.log(p / (1 - p)) / RISK_BIN_WIDTH) * RISK_BIN_WIDTH
    return np.asarray(1 / (1 + np.exp(-logit)))


def _scipy_auroc(y: np.ndarray, p: np.ndarray) -> float:
    u = stats.mannwhitneyu(p[y == 1], p[y == 0]).statistic
    return float(u / ((y == 1).sum() * (y == 0).sum()))


def _scipy_calibration(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    lp = np.log(p / (1 - p))

    def loss(beta: np.ndarray) -> float:
        eta = beta[0] + beta[1] * lp
        return float(np.sum(np.logaddexp(0, eta) - y * eta))

    fit = optimize.minimize(loss, np.array([0.0, 1.0]), method="BFGS", options={"gtol": 1e-8})
    return float(fit.x[0]), float(fit.x[1])


def test_real_outcomes_match_independent_figures_and_validation(replay: Replay) -> None:
    _record(replay, replay.outcomes, replay.outcomes_key)

    report = _monitoring(replay)

    overall = report["overall"]
    y, p = replay.outcomes, replay.probabilities
    assert overall["predictions"] == overall["outcomes_known"] == len(replay.ids)
    live = overall["live"]
    # Exact on the stored risk bins; within the binning's reach of the raw scores.
    binned = _binned(p)
    assert live["auroc"]["value"] == pytest.approx(_scipy_auroc(y, binned), abs=1e-9)
    assert live["auroc"]["value"] == pytest.approx(_scipy_auroc(y, p), abs=1e-3)
    intercept, slope = _scipy_calibration(y, binned)
    assert live["calibration_slope"]["value"] == pytest.approx(slope, abs=1e-4)
    assert live["calibration_intercept"]["value"] == pytest.approx(intercept, abs=1e-4)
    raw_intercept, raw_slope = _scipy_calibration(y, p)
    assert live["calibration_slope"]["value"] == pytest.approx(raw_slope, abs=1e-2)
    assert live["calibration_intercept"]["value"] == pytest.approx(raw_intercept, abs=1e-2)
    assert live["brier"] == pytest.approx(float(np.mean((p - y) ** 2)))
    assert live["observed_expected"]["value"] == pytest.approx(y.sum() / p.sum())
    # The replayed rows are the manifest's own test rows: the live figures are its figures.
    test = replay.manifest["validation"]["test"]
    if len(replay.ids) == test["n"]:
        assert live["auroc"]["value"] == pytest.approx(test["auroc"], abs=1e-3)
    high = next(t for t in live["tiers"] if t["tier"] == "high")
    flagged = p >= high["threshold"]
    assert high["sensitivity"]["value"] == pytest.approx((flagged & (y == 1)).sum() / y.sum())
    assert high["ppv"]["value"] == pytest.approx((flagged & (y == 1)).sum() / flagged.sum())
    assert overall["worse_than_validation"] == []
    assert overall["validation"]["auroc"]["judgement"] == "consistent with validation"
    # The live calibration curve in the validation deciles: every outcome in one decile, and
    # on the manifest's own test rows each decile's observed rate is the validation's.
    curve = overall["calibration_curve"]
    assert len(curve) == len(test["calibration_bins"])
    assert sum(c["live"]["n"] for c in curve) == len(replay.ids)
    uppers = [b["upper"] for b in test["calibration_bins"][:-1]]
    decile = np.searchsorted(uppers, binned, side="left")
    for i, point in enumerate(curve):
        assert point["live"]["n"] == int((decile == i).sum())
        assert point["live"]["observed_rate"] == pytest.approx(y[decile == i].mean())
        if len(replay.ids) == test["n"]:
            assert point["live"]["observed_rate"] == pytest.approx(
                point["validation"]["observed_rate"], abs=0.02
            )

    groups = {g["key"]: g for g in report["subgroups"]}
    female = groups["sex=female"]
    women = replay.sex_male == 0
    assert female["outcomes_known"] == int(women.sum())
    assert female["live"]["auroc"]["value"] == pytest.approx(
        _scipy_auroc(y[women], binned[women]), abs=1e-9
    )
    assert female["worse_than_validation"] == []
    # Small groups are shown with their n, never with figures.
    # Audit-only factors (e.g. education: not an input) cannot place a live patient: no count.
    small = [g for g in report["subgroups"] if g.get("outcomes_known", 0) < MIN_GROUP]
    assert small, "expected at least one subgroup under the minimum (e.g. diabetic patients)"
    for group in small:
        assert group["suppressed"] is True and "live" not in group
    assert all(
        not g["suppressed"] for g in report["subgroups"] if g.get("outcomes_known", 0) >= MIN_GROUP
    )

    metrics = replay.client.get("/metrics").text
    assert (
        f'clinrisk_live_validation{{metric="auroc",model="cvd",subgroup="all",'
        f'version="{SHIPPED_VERSION}"}}' in metrics
    )
    assert 'subgroup="sex=female"' in metrics


def test_miscalibrated_outcomes_are_judged_worse_than_validation(replay: Replay) -> None:
    # Outcomes drawn at three times the predicted risk: the model under-predicts badly.
    rng = np.random.default_rng(13)
    drawn = (rng.random(len(replay.ids)) < np.minimum(1.0, 3 * replay.probabilities)).astype(int)
    key = replay.outcomes_key
    _record(replay, drawn, key)

    report = _monitoring(replay)

    overall = report["overall"]
    assert "observed_expected" in overall["worse_than_validation"]
    assert "calibration_intercept" in overall["worse_than_validation"]
    assert overall["validation"]["observed_expected"]["judgement"] == "worse than validation"
    # Correcting back to the real outcomes clears the judgement.
    _record(replay, replay.outcomes, key)
    assert _monitoring(replay)["overall"]["worse_than_validation"] == []


def test_time_window_and_bad_window(replay: Replay, keys: Keys) -> None:
    _record(replay, replay.outcomes, replay.outcomes_key)

    future = _monitoring(replay, since="2100-01-01T00:00:00Z")
    bad = replay.client.get(
        f"/v1/models/cvd/versions/{SHIPPED_VERSION}/monitoring",
        params={"since": "2030-01-01T00:00:00Z", "until": "2020-01-01T00:00:00Z"},
        headers=replay.admin,
    )
    forbidden = replay.client.get(
        f"/v1/models/cvd/versions/{SHIPPED_VERSION}/monitoring", headers=keys.header("predict")
    )

    assert future["overall"] == {
        "predictions": 0,
        "outcomes_known": 0,
        "suppressed": True,
        "reason": f"fewer than {MIN_GROUP} predictions with a known outcome",
    }
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "until"
    assert forbidden.status_code == 403


def test_calibration_survives_a_newton_step_far_off_on_separated_outcomes() -> None:
    # Seen in a run: on a small, nearly separated subgroup Newton reached b = (437.7, 325.9),
    # where the logistic as 1 / (1 + exp(-eta)) overflowed (an error under the test settings).
    lp = np.array([-800, -400, 0, 400], dtype=np.float64) * RISK_BIN_WIDTH
    design = np.column_stack([np.ones_like(lp), lp])
    n, events = np.full(4, 50.0), np.array([0.0, 0.0, 50.0, 50.0])
    # Separated: no finite maximum, so no estimate (and no warning on the way).
    assert _newton(events, n, design, np.zeros(4), np.array([437.66, 325.88])) is None
