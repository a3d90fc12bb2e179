"""Explanations are exact: contributions sum to the calibrated log-odds, single equals batch,
linear terms are coefficient times centred value (tables vs XGBoost: test_trees.py)."""

from __future__ import annotations

import numpy as np
import pytest

from models.columns import encode
from models.loader import load_artifact
from models.scoring import ScoringModel
from tests.conftest import MODELS_DIR, SHIPPED_VERSION
from training.config import load_config
from training.datasets import LOADERS, SHARED_DATA
from training.train import feature_values


def real_rows(name: str, n: int = 3000) -> np.ndarray:
    """Rows of the model's own dataset (with their missing values), as model columns."""
    config = load_config(name)
    manifest = load_artifact(MODELS_DIR / name / SHIPPED_VERSION).manifest
    ds = LOADERS[config.loader](SHARED_DATA / config.default_data)
    matrix = encode(manifest.columns, feature_values(ds, list(manifest.features)))
    rng = np.random.default_rng(0)
    return matrix[rng.choice(len(matrix), size=n, replace=False)]


@pytest.fixture(scope="module", params=["diabetes", "readmission", "cvd"])
def model_and_rows(request: pytest.FixtureRequest) -> tuple[ScoringModel, np.ndarray]:
    name = request.param
    return ScoringModel(load_artifact(MODELS_DIR / name / SHIPPED_VERSION)), real_rows(name)


def test_contributions_sum_to_the_calibrated_log_odds(
    model_and_rows: tuple[ScoringModel, np.ndarray],
) -> None:
    model, rows = model_and_rows

    scores = model.score_matrix(rows)

    logit = np.log(scores.probability / (1 - scores.probability))
    assert np.max(np.abs(scores.base_log_odds + scores.contributions.sum(axis=1) - logit)) < 1e-9


def test_single_row_path_equals_the_batch_path(
    model_and_rows: tuple[ScoringModel, np.ndarray],
) -> None:
    model, rows = model_and_rows
    batch = model.score_matrix(rows[:200])

    for i, row in enumerate(rows[:200]):
        probability, contributions, tier = model.score_one(row.tolist())
        assert probability == pytest.approx(batch.probability[i], abs=1e-12)
        assert np.max(np.abs(contributions - batch.contributions[i])) < 1e-12
        assert tier == batch.tier_index[i]


def test_linear_contributions_are_coefficient_times_centred_value() -> None:
    artifact = load_artifact(MODELS_DIR / "cvd" / SHIPPED_VERSION)
    if artifact.linear is None:
        pytest.skip("cvd shipped as a tree model in this build")
    model = ScoringModel(artifact)
    rows = real_rows("cvd", 500)
    coefficients = np.array(artifact.linear.coefficients)
    means = np.array(artifact.linear.means)

    contributions = model.explainer.contributions(rows)

    expected = np.where(np.isnan(rows), 0.0, (rows - means) * coefficients)
    assert np.max(np.abs(contributions - expected)) < 1e-12
    margin = artifact.linear.intercept + np.where(np.isnan(rows), means, rows) @ coefficients
    assert np.max(np.abs(model.explainer.base_margin + contributions.sum(axis=1) - margin)) < 1e-9
