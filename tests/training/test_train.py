"""Training end to end on real data (Framingham, the smallest set): reproducible, verifiable,
signed with a temporary key (``training_key``, tests/training/conftest.py) that the tests trust."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from typer.testing import CliRunner

from models.errors import ArtifactError
from models.loader import load_artifact
from models.scoring import ScoringModel
from models.signing import SIGNATURE_FILE, SIGNING_KEY_ENV, TRUSTED_KEYS_ENV
from models.trees import compile_tables, parse_forest
from service.cli import app
from tests.training.conftest import TrainingKey
from training.config import available_configs, load_config
from training.datasets import SHARED_DATA, load_diabetes130
from training.fit import fit_xgboost
from training.train import forest_of, train, write_model_file

FRAMINGHAM = SHARED_DATA / "framingham" / "framingham.csv"


@pytest.fixture(scope="module")
def two_runs(
    tmp_path_factory: pytest.TempPathFactory, training_key: TrainingKey
) -> tuple[Path, Path]:
    """The first run is given its key, the second finds it in CLINRISK_SIGNING_KEY_FILE."""
    config = load_config("cvd")
    first = train(
        config,
        out_dir=tmp_path_factory.mktemp("a"),
        n_boot=200,
        signing_key=training_key.private_file,
    )
    parquet = tmp_path_factory.mktemp("data") / "framingham.parquet"
    pd.read_csv(FRAMINGHAM).to_parquet(parquet)
    with pytest.MonkeyPatch.context() as env:
        env.setenv(SIGNING_KEY_ENV, str(training_key.private_file))
        second = train(config, data_path=parquet, out_dir=tmp_path_factory.mktemp("b"), n_boot=200)
    return first, second


def test_training_signs_the_artifact_with_the_configured_key(
    two_runs: tuple[Path, Path], training_key: TrainingKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TRUSTED_KEYS_ENV, raising=False)
    for folder in two_runs:
        assert (folder / SIGNATURE_FILE).is_file()
        assert load_artifact(folder, training_key.trust).signed_by == training_key.key_id
        # The service's default trusts the release key only: a test key's artifact is refused.
        with pytest.raises(ArtifactError, match="not trusted"):
            load_artifact(folder)


def test_an_edit_to_a_trained_artifacts_manifest_is_refused(
    two_runs: tuple[Path, Path], training_key: TrainingKey, tmp_path: Path
) -> None:
    folder = tmp_path / "cvd" / two_runs[0].name
    shutil.copytree(two_runs[0], folder)
    manifest = folder / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"slope": ', '"slope": 2', 1))

    with pytest.raises(ArtifactError, match="does not verify"):
        load_artifact(folder, training_key.trust)


def test_same_data_config_and_seed_give_identical_predictions(
    two_runs: tuple[Path, Path], training_key: TrainingKey
) -> None:
    first, second = (ScoringModel(load_artifact(f, training_key.trust)) for f in two_runs)
    rows = np.random.default_rng(1).uniform(0, 1, size=(50, len(first.column_names)))
    rows = rows * 100 + 50

    assert first.manifest.model_file == second.manifest.model_file
    model_file = first.manifest.model_file
    assert (two_runs[0] / model_file).read_bytes() == (two_runs[1] / model_file).read_bytes()
    np.testing.assert_array_equal(
        first.score_matrix(rows).probability, second.score_matrix(rows).probability
    )
    assert first.manifest.split.test_ids_sha256 == second.manifest.split.test_ids_sha256


def test_manifest_records_provenance_split_and_validation(
    two_runs: tuple[Path, Path], training_key: TrainingKey
) -> None:
    manifest = load_artifact(two_runs[0], training_key.trust).manifest

    published = dict(
        reversed(line.split()) for line in (SHARED_DATA / "SHA256SUMS").read_text().splitlines()
    )
    assert manifest.dataset.sha256 == published["framingham/framingham.csv"]
    # 25 participants with a prior stroke are outside the intended population (issue 10).
    assert [(e.rule, e.rows) for e in manifest.dataset.population_exclusions] == [
        ("age_30_to_70", 0),
        ("no_prior_stroke", 25),
    ]
    assert manifest.split.n_train + manifest.split.n_test == manifest.dataset.rows_used == 4215
    assert {c.kind for c in manifest.validation.candidates} == {"xgboost", "logistic"}
    assert sum(c.selected for c in manifest.validation.candidates) == 1
    assert any("Framingham 2008" in b.name for b in manifest.validation.baselines)
    assert 0.6 < manifest.validation.test.auroc < 0.85
    assert manifest.explanation.seconds_per_row_batch > 0
    assert {s.factor for s in manifest.validation.subgroups} >= {"sex", "age_band"}
    for spec in manifest.features:
        assert spec.distribution is not None


def test_manifest_records_the_figures_a_governance_board_asks_for(
    two_runs: tuple[Path, Path], training_key: TrainingKey
) -> None:
    """Issue 10: repeated CV beside the test figure, CITL and O/E, baselines on the same folds,
    subgroup intervals and suppression, audit-only factors, net benefit, status and HTI-1."""
    manifest = load_artifact(two_runs[0], training_key.trust).manifest
    val = manifest.validation
    assert val.repeated_cv is not None and val.repeated_cv.repeats == 10
    assert 0.65 < val.repeated_cv.auroc_mean < 0.8 and 0 < val.repeated_cv.auroc_sd < 0.06
    assert abs(val.test.calibration_in_the_large) < 0.5
    assert 0.7 < val.test.observed_expected < 1.4
    framingham = next(b for b in val.baselines if "Framingham" in b.name)
    assert framingham.cv_auroc_mean is not None and "CHD only" in framingham.description
    assert all(t.net_benefit is not None for t in val.tiers)
    education = [s for s in val.subgroups if s.factor == "education"]
    assert education and all(s.audit_only for s in education)
    for s in val.subgroups:
        if s.suppressed:
            assert s.auroc is None and not s.reliable
        else:
            assert s.positives >= 10 and s.n - s.positives >= 10
            assert s.auroc_ci_low is not None and s.auroc_ci_low <= s.auroc <= s.auroc_ci_high
    assert val.characteristics[0].characteristic == "Rows"
    assert manifest.clinical_use.status == "evaluation_only"
    assert manifest.governance is not None
    assert manifest.model_specification is not None  # cvd ships a logistic model
    assert set(manifest.model_specification.coefficients) == {c.name for c in manifest.columns}


def test_a_booster_is_written_in_the_json_model_format_the_service_parses(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3))
    X[rng.random(X.shape) < 0.1] = np.nan
    y = (np.nan_to_num(X).sum(axis=1) + rng.normal(size=500) > 0).astype(int)
    columns = ["a_mg_dl", "b_years", "c_kg"]
    booster = fit_xgboost(
        X, y, {"objective": "binary:logistic", "max_depth": 2, "n_estimators": 20}, columns
    )

    name = write_model_file(tmp_path, booster, columns)

    assert name == "model.json"
    document = json.loads((tmp_path / name).read_text())
    forest = parse_forest(document)
    assert forest.feature_names == columns
    assert forest == forest_of(booster)
    reread = xgb.Booster(model_file=str(tmp_path / name))
    tables = compile_tables(forest)
    margin = reread.predict(xgb.DMatrix(X, feature_names=columns), output_margin=True)
    assert np.max(np.abs(tables.base_margin + tables.contributions(X).sum(axis=1) - margin)) < 1e-5


def test_readmission_loader_keeps_none_as_not_measured_and_excludes_hospice() -> None:
    ds = load_diabetes130(SHARED_DATA / "diabetes130" / "diabetic_data.csv.gz")

    assert ds.features["hba1c_result"].isna().sum() == 0
    assert (ds.features["hba1c_result"] == "not_measured").mean() > 0.8
    assert len(ds.y) == 101_766 - 2_423 - 3
    assert len(np.unique(ds.groups)) < len(ds.groups)


def test_every_config_parses() -> None:
    assert set(available_configs()) >= {"diabetes", "readmission", "cvd"}
    for name in available_configs():
        assert load_config(name).name == name


def test_cli_evaluate_and_models_read_a_registry_elsewhere(
    two_runs: tuple[Path, Path], tmp_path: Path, training_key: TrainingKey
) -> None:
    registry = tmp_path / "registry"
    shutil.copytree(two_runs[0], registry / "cvd" / two_runs[0].name)
    runner = CliRunner(env={TRUSTED_KEYS_ENV: str(training_key.public_file)})

    listed = runner.invoke(app, ["models", "--models-dir", str(registry)])
    report = tmp_path / "report.json"
    evaluated = runner.invoke(
        app,
        [
            "evaluate",
            "cvd",
            "--data",
            str(FRAMINGHAM),
            "--models-dir",
            str(registry),
            "--out",
            str(report),
        ],
    )

    assert listed.exit_code == 0, listed.output
    assert "cvd" in listed.output
    assert evaluated.exit_code == 0, evaluated.output
    result = json.loads(report.read_text())
    assert result["overall"]["n"] == 4240
    assert 0.6 < result["overall"]["auroc"] < 0.9
