"""Declared clinical directions: every feature has one, both model kinds honour it, and a fitted
effect that contradicts one stops training (issue 14, part 2)."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb
from sklearn.linear_model import LogisticRegression

from models.columns import columns_for, encode
from models.manifest import FeatureSpec, FeatureType, ModelColumn
from training import fit
from training.config import available_configs, load_config
from training.datasets import LOADERS, SHARED_DATA
from training.train import feature_values


def synthetic(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Columns on different scales with some gaps; column 2 truly lowers the risk."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)) * [1.0, 10.0, 0.5, 5.0, 1.0] + [0.0, 100.0, 1.0, 50.0, 0.0]
    X[rng.random(X.shape) < 0.05] = np.nan
    filled = np.where(np.isnan(X), np.nanmean(X, axis=0), X)
    logit = -1.0 + (filled - np.nanmean(X, axis=0)) @ np.array([0.8, 0.05, -1.5, 0.0, 0.3])
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
    return X, y


@pytest.mark.parametrize("C", [0.01, 0.1, 1.0])
def test_unbound_sign_constrained_fit_is_the_sklearn_fit(C: float) -> None:
    X, y = synthetic()
    ours = fit.fit_logistic(X, y, C, seed=0, monotone=[1, 1, -1, 0, 0])  # no bound binds
    means = np.nanmean(X, axis=0)
    filled = np.where(np.isnan(X), means, X)
    scale = filled.std(axis=0)
    reference = LogisticRegression(C=C, max_iter=5000, tol=1e-10).fit((filled - means) / scale, y)
    coefficients = reference.coef_[0] / scale
    assert np.allclose(ours.coefficients, coefficients, rtol=1e-5, atol=1e-7)
    assert ours.intercept == pytest.approx(reference.intercept_[0] - coefficients @ means, abs=1e-5)


def test_binding_bounds_hold_and_the_rest_refits() -> None:
    X, y = synthetic()
    free = fit.fit_logistic(X, y, 1.0, seed=0)
    assert free.coefficients[2] < 0
    # Declare the truly protective column as raising the risk, and a raising one as lowering.
    bound = fit.fit_logistic(X, y, 1.0, seed=0, monotone=[-1, 0, 1, 0, 0])
    assert bound.coefficients[0] == 0.0
    assert bound.coefficients[2] == 0.0
    assert bound.coefficients[4] > 0  # an unconstrained column still fits its effect
    assert fit.check_directions(bound, X, _columns(5), _specs([-1, 0, 1, 0, 0]))["x2"] == 0


def test_a_contradicted_linear_direction_fails_naming_feature_direction_and_sign() -> None:
    X, y = synthetic()
    free = fit.fit_logistic(X, y, 1.0, seed=0)
    with pytest.raises(fit.DirectionError, match=r"x2: declared direction \+1, fitted sign -1"):
        fit.check_directions(free, X, _columns(5), _specs([0, 0, 1, 0, 0]))


def test_a_forest_without_the_constraint_fails_the_check_and_with_it_passes() -> None:
    X, y = synthetic()
    columns = _columns(5)
    names = [c.name for c in columns]
    params = {"objective": "binary:logistic", "max_depth": 2, "eta": 0.3, "nthread": 1}
    free = xgb.train(params, xgb.DMatrix(X, y, feature_names=names), 30)
    with pytest.raises(fit.DirectionError, match=r"x2: declared direction \+1"):
        fit.check_directions(free, X, columns, _specs([0, 0, 1, 0, 0]))
    constrained = xgb.train(
        {**params, "monotone_constraints": "(0,0,1,0,0)"},
        xgb.DMatrix(X, y, feature_names=names),
        30,
    )
    signs = fit.check_directions(constrained, X, columns, _specs([0, 0, 1, 0, 0]))
    assert signs["x2"] >= 0 and signs["x0"] == 1


def test_training_data_contradicting_a_declared_direction_stops_training() -> None:
    """Real Framingham rows: an unconstrained fit gives resting heart rate a negative effect, so
    declaring it as raising the risk must fail; the constrained fit passes the same check."""
    config = load_config("cvd")
    specs = [
        s.model_copy(update={"direction": 1}) if s.name == "heart_rate_bpm" else s
        for s in config.features
    ]
    ds = LOADERS[config.loader](SHARED_DATA / config.default_data)
    columns = columns_for(specs)
    X = encode(columns, feature_values(ds, specs))
    y = ds.y.astype(int)
    free = fit.fit_logistic(X, y, 0.1, seed=0)
    with pytest.raises(fit.DirectionError, match="heart_rate_bpm: declared direction"):
        fit.check_directions(free, X, columns, specs)
    monotone = [s.direction for s in specs]  # no one-hot columns in cvd
    constrained = fit.fit_logistic(X, y, 0.1, seed=0, monotone=monotone)
    signs = fit.check_directions(constrained, X, columns, specs)
    assert all(signs[s.name] * s.direction >= 0 for s in specs)


@pytest.mark.parametrize("name", available_configs())
def test_every_feature_declares_a_direction_a_rationale_and_clinical_labels(name: str) -> None:
    config = load_config(name)
    names = {f.name for f in config.features}
    for spec in config.features:
        assert spec.direction in (-1, 0, 1)
        assert len(spec.direction_rationale) > 20, spec.name
        assert spec.monotone == spec.direction, spec.name  # the direction is the constraint
        if spec.type is FeatureType.CATEGORICAL:
            assert spec.direction == 0
        if spec.type is FeatureType.BINARY:
            assert set(spec.value_labels) == {"0", "1"}, f"{spec.name}: no value labels"
        if spec.type is FeatureType.ORDINAL:
            assert spec.minimum is not None and spec.maximum is not None
            steps = range(int(spec.minimum), int(spec.maximum) + 1)
            assert set(spec.value_labels) == {str(v) for v in steps}, spec.name
        for fixed in spec.implies.values():
            assert set(fixed) <= names
        # Help texts in clinical words, not codes.
        assert "1 =" not in spec.description and "0 =" not in spec.description


def test_a_config_without_a_rationale_or_with_a_conflicting_constraint_is_refused() -> None:
    config = load_config("cvd").model_dump()
    config["features"][0]["direction_rationale"] = ""
    with pytest.raises(ValueError, match="direction_rationale is required"):
        type(load_config("cvd")).model_validate(config)
    config = load_config("cvd").model_dump()
    config["features"][1]["monotone"] = -1  # age declared +1
    with pytest.raises(ValueError, match="contradicts direction"):
        type(load_config("cvd")).model_validate(config)


def _columns(k: int) -> list[ModelColumn]:
    return [ModelColumn(name=f"x{j}", feature=f"x{j}") for j in range(k)]


def _specs(directions: list[int]) -> list[FeatureSpec]:
    return [
        FeatureSpec(
            name=f"x{j}",
            label=f"x{j}",
            description="",
            type=FeatureType.NUMERIC,
            source="synthetic",
            direction=d,  # type: ignore[arg-type]
            direction_rationale="synthetic",
        )
        for j, d in enumerate(directions)
    ]
