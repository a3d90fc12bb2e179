"""Training learns missingness (issue 14 part 6): masked copies of the training rows only, the
test part validated both with every input and with the optional inputs unknown."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from models.columns import columns_for
from models.loader import load_artifact
from models.manifest import Manifest
from models.signing import TrustPolicy
from training import fit
from training.config import load_config
from training.datasets import SHARED_DATA
from training.train import masking_for, train


def test_augmenting_keeps_the_rows_and_hides_only_optional_inputs() -> None:
    config = load_config("diabetes")
    columns = columns_for(config.features)
    masking = masking_for(config, columns, seed=1)
    assert masking is not None
    rng = np.random.default_rng(0)
    X = rng.integers(0, 5, size=(4000, len(columns))).astype(np.float64)
    y = rng.integers(0, 2, size=4000)

    augmented, labels = masking.augment(X, y)

    optional = list(masking.columns)
    required = [j for j in range(len(columns)) if j not in masking.columns]
    assert [columns[j].feature for j in optional] == [
        s.name for s in config.features if not s.required
    ]
    assert augmented.shape == (3 * len(X), len(columns))
    assert np.array_equal(labels, np.concatenate([y, y, y]))
    assert np.array_equal(augmented[: len(X)], X)  # the rows as given
    assert np.isnan(augmented[len(X) : 2 * len(X), optional]).all()  # the typical chart
    partly = np.isnan(augmented[2 * len(X) :, optional]).mean()
    assert abs(partly - masking.independent_rate) < 0.02  # each hidden independently
    assert not np.isnan(augmented[:, required]).any()
    again, _ = masking.augment(X, y)
    assert np.array_equal(again, augmented, equal_nan=True)  # seeded


def test_a_model_without_missingness_config_trains_as_before() -> None:
    config = load_config("cvd")
    assert config.missingness is None
    assert masking_for(config, columns_for(config.features), seed=1) is None


@pytest.fixture(scope="module")
def small_manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    """The diabetes recipe (fewer trees, one repeat) trained on 8,000 real BRFSS rows."""
    tmp = tmp_path_factory.mktemp("missingness")
    config = load_config("diabetes")
    data = pd.read_csv(SHARED_DATA / config.default_data).sample(8000, random_state=0)
    path = tmp / "brfss_sample.csv"
    data.to_csv(path, index=False)
    xgboost = config.candidates.xgboost.model_copy(update={"depths": [1], "max_trees": 120})
    # A heavily penalised logistic candidate, so the forest (the shipped family) is chosen on
    # this small sample as on the full data.
    logistic = config.candidates.logistic.model_copy(update={"C": [1e-6]})
    quick = config.model_copy(
        update={
            "candidates": config.candidates.model_copy(
                update={"xgboost": xgboost, "logistic": logistic}
            ),
            "validation": config.validation.model_copy(update={"cv_repeats": 1}),
        }
    )
    folder = train(quick, data_path=path, out_dir=tmp / "models", version="9.0.0", n_boot=20)
    # Reading it back runs the trainer's own check that the artifact reproduces both patterns.
    return load_artifact(folder, TrustPolicy(allow_unsigned=True)).manifest


def test_training_reports_the_typical_chart_beside_every_input(small_manifest: Manifest) -> None:
    validation = small_manifest.validation
    assert validation is not None
    assert small_manifest.kind == "xgboost"
    (pattern,) = validation.missing_patterns
    optional = [f.name for f in small_manifest.features if not f.required]

    assert pattern.missing == optional
    assert pattern.test.n == validation.test.n  # the same untouched test rows
    assert pattern.test.auroc < validation.test.auroc
    assert pattern.reference_auroc is not None and 0.5 < pattern.reference_auroc < 1
    assert [t.tier for t in pattern.tiers] == [t.tier for t in validation.tiers]
    assert small_manifest.missing_data_policy is not None
    assert "each independently with chance 0.5" in small_manifest.missing_data_policy
    # Calibration was fitted on both patterns: neither is far off on the test part.
    for summary in (validation.test, pattern.test):
        assert summary.observed_expected is not None
        assert 0.8 < summary.observed_expected < 1.25
    handled = {f.name: f.missing_handling for f in small_manifest.features}
    assert all("unrecorded" in (handled[name] or "") for name in optional)
    assert json.loads(small_manifest.model_dump_json())["validation"]["missing_patterns"]


def test_cv_out_of_fold_margins_cover_both_patterns() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 3))
    y = (X[:, 0] + X[:, 2] + rng.normal(size=3000) > 0).astype(int)
    masking = fit.Masking(columns=(2,), independent_rate=0.5, seed=0)
    folds = fit.group_folds(y, np.arange(3000), n_splits=fit.N_FOLDS, seed=0)
    config = load_config("diabetes").candidates.xgboost.model_copy(
        update={"depths": [1], "max_trees": 40}
    )

    (candidate,) = fit.cv_xgboost(
        X, y, folds, config, [0, 0, 0], seed=0, column_names=["a", "b", "c"], masking=masking
    )

    assert candidate.oof_margin_hidden is not None
    margins, labels = candidate.calibration_rows(y)
    assert len(margins) == len(labels) == 2 * len(y)
    # Hiding a column that carries signal costs discrimination out of fold.
    assert roc_auc_score(y, candidate.oof_margin_hidden) < roc_auc_score(y, candidate.oof_margin)
