"""Fitting: cross-validated candidate selection, final fit and Platt calibration.

Pure functions over a column matrix ``X`` (NaN = missing) and labels ``y``; the seed is passed
explicitly to every splitter and estimator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import xgboost as xgb
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from models.manifest import FeatureSpec, ModelColumn
from training.config import LogisticCandidates, XGBoostCandidates

Float = npt.NDArray[np.float64]
N_FOLDS = 5
# Prefer fewer trees unless more trees gain at least this much mean CV AUROC.
TREE_TOLERANCE = 0.0005


def group_folds(
    y: np.ndarray, groups: np.ndarray, *, n_splits: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified K-fold over groups: rows of a group (a patient, or identical duplicate rows)
    share a fold, and folds are stratified on whether the group has any positive row.

    sklearn's StratifiedGroupKFold does the same but loops over groups in Python, which takes
    minutes for BRFSS's 229k groups."""
    unique, inverse = np.unique(groups, return_inverse=True)
    group_label = np.zeros(len(unique), dtype=int)
    np.maximum.at(group_label, inverse, y.astype(int))
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    folds = []
    for _, held_groups in splitter.split(np.zeros(len(unique)), group_label):
        held = np.isin(inverse, held_groups)
        folds.append((np.flatnonzero(~held), np.flatnonzero(held)))
    return folds


def cv_folds(
    y: np.ndarray, groups: np.ndarray, *, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified 5-fold CV on the training part, grouped (see :func:`group_folds`)."""
    return group_folds(y, groups, n_splits=N_FOLDS, seed=seed)


@dataclass(frozen=True)
class Masking:
    """How a forest learns where an unknown optional input goes (issue 14).

    XGBoost sends a missing value down each split's default branch, but it learns that branch
    only from training rows that lack the value; survey rows lack none, so "unknown" would go
    wherever the tie fell. The training rows are therefore given twice more: once with every
    optional input hidden (the typical chart) and once with each hidden independently at
    ``independent_rate`` (a partly completed form). Validation and test rows are never altered.
    """

    columns: tuple[int, ...]
    """Model columns of the optional features."""
    independent_rate: float
    seed: int

    def hide(self, X: Float) -> Float:
        """``X`` with every optional column unknown (the typical chart pattern)."""
        hidden = X.copy()
        hidden[:, list(self.columns)] = np.nan
        return hidden

    def augment(self, X: Float, y: np.ndarray) -> tuple[Float, np.ndarray]:
        """The rows, then all optional inputs hidden, then each hidden independently."""
        rng = np.random.default_rng(self.seed)
        independent = X.copy()
        block = independent[:, list(self.columns)]
        block[rng.random(block.shape) < self.independent_rate] = np.nan
        independent[:, list(self.columns)] = block
        return np.vstack([X, self.hide(X), independent]), np.concatenate([y, y, y])


@dataclass
class FittedCandidate:
    kind: str
    params: dict[str, Any]
    cv_aurocs: list[float]
    oof_margin: Float
    oof_margin_hidden: Float | None = None
    """Out-of-fold margins of the same rows with the optional inputs hidden (with masking)."""

    def calibration_rows(self, y: np.ndarray) -> tuple[Float, np.ndarray]:
        """Margins and labels Platt scaling is fitted on: both patterns where there are two,
        so a probability means the same whether the questionnaire answers are known or not."""
        if self.oof_margin_hidden is None:
            return self.oof_margin, y
        return np.concatenate([self.oof_margin, self.oof_margin_hidden]), np.concatenate([y, y])

    @property
    def cv_mean(self) -> float:
        return float(np.mean(self.cv_aurocs))

    @property
    def cv_std(self) -> float:
        return float(np.std(self.cv_aurocs))


def xgb_params(
    candidates: XGBoostCandidates, depth: int, monotone: list[int], *, seed: int
) -> dict[str, Any]:
    return {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "max_depth": depth,
        "eta": candidates.learning_rate,
        "min_child_weight": candidates.min_child_weight,
        "lambda": candidates.reg_lambda,
        "monotone_constraints": "(" + ",".join(str(m) for m in monotone) + ")",
        "eval_metric": "auc",
        "seed": seed,
        "nthread": 2,
    }


def cv_xgboost(
    X: Float,
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    candidates: XGBoostCandidates,
    monotone: list[int],
    *,
    seed: int,
    column_names: list[str],
    masking: Masking | None = None,
) -> list[FittedCandidate]:
    """One candidate per depth, with the number of trees chosen on the mean CV AUROC curve of
    the unaltered validation rows (with ``masking``, training folds are augmented)."""
    results: list[FittedCandidate] = []
    for depth in candidates.depths:
        params = xgb_params(candidates, depth, monotone, seed=seed)
        curves, boosters = [], []
        for train_idx, val_idx in folds:
            X_fold, y_fold = X[train_idx], y[train_idx]
            if masking is not None:
                X_fold, y_fold = masking.augment(X_fold, y_fold)
            dtrain = xgb.DMatrix(X_fold, y_fold, feature_names=column_names)
            dval = xgb.DMatrix(X[val_idx], y[val_idx], feature_names=column_names)
            history: dict[str, dict[str, list[float]]] = {}
            booster = xgb.train(
                params,
                dtrain,
                candidates.max_trees,
                evals=[(dval, "val")],
                evals_result=history,
                verbose_eval=False,
            )
            curves.append(history["val"]["auc"])
            boosters.append(booster)
        mean_curve = np.mean(np.array(curves), axis=0)
        n_trees = int(np.argmax(mean_curve >= mean_curve.max() - TREE_TOLERANCE)) + 1
        oof = np.zeros(len(y))
        oof_hidden = np.zeros(len(y)) if masking is not None else None
        for booster, (_, val_idx) in zip(boosters, folds, strict=True):
            dval = xgb.DMatrix(X[val_idx], feature_names=column_names)
            oof[val_idx] = booster.predict(dval, output_margin=True, iteration_range=(0, n_trees))
            if masking is not None and oof_hidden is not None:
                dhidden = xgb.DMatrix(masking.hide(X[val_idx]), feature_names=column_names)
                oof_hidden[val_idx] = booster.predict(
                    dhidden, output_margin=True, iteration_range=(0, n_trees)
                )
        results.append(
            FittedCandidate(
                kind="xgboost",
                params={**params, "n_estimators": n_trees},
                cv_aurocs=[float(c[n_trees - 1]) for c in curves],
                oof_margin=oof,
                oof_margin_hidden=oof_hidden,
            )
        )
    return results


def fit_xgboost(
    X: Float,
    y: np.ndarray,
    params: dict[str, Any],
    columns: list[str],
    masking: Masking | None = None,
) -> xgb.Booster:
    train_params = {k: v for k, v in params.items() if k != "n_estimators"}
    if masking is not None:
        X, y = masking.augment(X, y)
    dtrain = xgb.DMatrix(X, y, feature_names=columns)
    return xgb.train(train_params, dtrain, int(params["n_estimators"]))


@dataclass
class LinearFit:
    coefficients: Float
    intercept: float
    means: Float

    def margin(self, X: Float) -> Float:
        filled = np.where(np.isnan(X), self.means, X)
        out: Float = self.intercept + filled @ self.coefficients
        return out


def sign_bounds(
    monotone: Sequence[int] | None, n_columns: int
) -> list[tuple[float | None, float | None]]:
    """L-BFGS-B bounds per column: >= 0 for a declared +1 direction, <= 0 for -1, free for 0."""
    signs = list(monotone) if monotone is not None else [0] * n_columns
    if len(signs) != n_columns:
        raise ValueError(f"{len(signs)} monotone signs for {n_columns} columns")
    return [(0.0, None) if m > 0 else (None, 0.0) if m < 0 else (None, None) for m in signs]


def fit_logistic(
    X: Float, y: np.ndarray, C: float, *, seed: int, monotone: Sequence[int] | None = None
) -> LinearFit:
    """L2 logistic regression on standardised, mean-imputed columns, returned in raw units.

    The objective is scikit-learn's (``0.5 * |w|^2 + C * sum(log-loss)``, intercept not
    penalised), minimised by L-BFGS-B so that a column with a declared clinical direction gets
    a sign-bounded coefficient (standardising divides by a positive scale, so the sign carries
    over to raw units). With no binding bound this is the unconstrained fit. ``seed`` is kept
    for the fitting interface; the fit is deterministic.
    """
    del seed
    means = np.nanmean(X, axis=0)
    filled = np.where(np.isnan(X), means, X)
    scale = filled.std(axis=0)
    scale[scale == 0] = 1.0
    Z = (filled - means) / scale
    target = y.astype(np.float64)
    n, k = Z.shape
    # Divided by C * n: the same minimiser, with gradients of order one for the line search.
    ridge = 1.0 / (C * n)

    def objective(params: Float) -> tuple[float, Float]:
        w, b = params[:k], params[k]
        z = Z @ w + b
        # log(1 + e^z) - y*z, stably; its derivative is sigmoid(z) - y.
        loss = float(np.mean(np.logaddexp(0.0, z) - target * z)) + 0.5 * ridge * float(w @ w)
        residual = _expit(z) - target
        grad = np.empty(k + 1)
        grad[:k] = Z.T @ residual / n + ridge * w
        grad[k] = residual.mean()
        return loss, grad

    bounds = [*sign_bounds(monotone, k), (None, None)]
    prior = float(np.clip(target.mean(), 1e-6, 1 - 1e-6))
    start = np.zeros(k + 1)
    start[k] = np.log(prior / (1 - prior))
    solution = minimize(
        objective,
        start,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 5000, "ftol": 1e-13, "gtol": 1e-9},
    )
    if not solution.success and "ABNORMAL" not in str(solution.message):
        raise RuntimeError(f"logistic fit did not converge: {solution.message}")
    coefficients = np.asarray(solution.x[:k]) / scale
    intercept = float(solution.x[k] - coefficients @ means)
    return LinearFit(coefficients=coefficients, intercept=intercept, means=means)


def _expit(z: Float) -> Float:
    out: Float = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


def cv_logistic(
    X: Float,
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    candidates: LogisticCandidates,
    *,
    seed: int,
    monotone: Sequence[int] | None = None,
    masking: Masking | None = None,
) -> list[FittedCandidate]:
    """One candidate per C. A linear model fills an unknown input with the training mean, so
    masked copies would teach it nothing; with ``masking`` only its hidden-input out-of-fold
    margins are kept, for the same calibration and reporting as a forest."""
    results = []
    for C in candidates.C:
        oof = np.zeros(len(y))
        oof_hidden = np.zeros(len(y)) if masking is not None else None
        aurocs = []
        for train_idx, val_idx in folds:
            fit = fit_logistic(X[train_idx], y[train_idx], C, seed=seed, monotone=monotone)
            oof[val_idx] = fit.margin(X[val_idx])
            if masking is not None and oof_hidden is not None:
                oof_hidden[val_idx] = fit.margin(masking.hide(X[val_idx]))
            aurocs.append(float(roc_auc_score(y[val_idx], oof[val_idx])))
        results.append(
            FittedCandidate(
                kind="logistic",
                params={"C": C},
                cv_aurocs=aurocs,
                oof_margin=oof,
                oof_margin_hidden=oof_hidden,
            )
        )
    return results


class DirectionError(ValueError):
    """A fitted effect contradicts a feature's declared clinical direction."""


# Margin changes smaller than this are numerical noise, not an effect.
SIGN_TOLERANCE = 1e-9
# Rows and grid points for the cheap check of a forest's shape per constrained column.
SHAPE_ROWS = 200
SHAPE_POINTS = 12


def fitted_signs(
    fitted: xgb.Booster | LinearFit, X: Float, columns: list[ModelColumn]
) -> dict[str, int]:
    """The fitted effect's sign for each feature with a single model column (not one-hot).

    Linear: the coefficient's sign. Forest: the sign of the mean margin change from the
    training 1st to 99th percentile, over a sample of training rows (other inputs fixed);
    features whose shape is not monotone get the sign of that net change.
    """
    signs: dict[str, int] = {}
    for j, column in enumerate(columns):
        if column.category is not None:
            continue
        if isinstance(fitted, LinearFit):
            value = float(fitted.coefficients[j])
        else:
            grid, margins = _shape(fitted, X, columns, j)
            value = float(np.mean(margins[:, -1] - margins[:, 0])) if len(grid) > 1 else 0.0
        signs[column.feature] = int(np.sign(value)) if abs(value) > SIGN_TOLERANCE else 0
    return signs


def check_directions(
    fitted: xgb.Booster | LinearFit,
    X: Float,
    columns: list[ModelColumn],
    specs: Sequence[FeatureSpec],
) -> dict[str, int]:
    """Fail when a fitted effect contradicts a declared direction; return the fitted signs.

    A linear coefficient must not have the opposite sign. A forest must be monotone in the
    declared direction for every sampled row (XGBoost's constraint guarantees it; this checks
    that it was applied to the right columns).
    """
    declared = {s.name: s.direction for s in specs}
    signs = fitted_signs(fitted, X, columns)
    problems = []
    for j, column in enumerate(columns):
        direction = declared.get(column.feature, 0)
        if column.category is not None or direction == 0:
            continue
        if isinstance(fitted, LinearFit):
            wrong = float(fitted.coefficients[j]) * direction < -SIGN_TOLERANCE
        else:
            _, margins = _shape(fitted, X, columns, j)
            wrong = bool((np.diff(margins, axis=1) * direction < -1e-6).any())
        if wrong:
            problems.append(
                f"{column.feature}: declared direction {direction:+d}, fitted sign "
                f"{signs[column.feature]:+d}"
                + (
                    ""
                    if isinstance(fitted, LinearFit)
                    else " (the forest's shape is not monotone in the declared direction)"
                )
            )
    if problems:
        raise DirectionError(
            "fitted effects contradict the declared clinical directions: " + "; ".join(problems)
        )
    return signs


def _shape(
    booster: xgb.Booster, X: Float, columns: list[ModelColumn], j: int
) -> tuple[Float, Float]:
    """(grid, margins rows x grid) of column ``j`` varied over its training p01..p99."""
    present = X[:, j][~np.isnan(X[:, j])]
    if not len(present):
        return np.zeros(0), np.zeros((0, 0))
    grid = np.unique(np.quantile(present, np.linspace(0.01, 0.99, SHAPE_POINTS)))
    rng = np.random.default_rng(0)
    rows = X[rng.choice(len(X), size=min(SHAPE_ROWS, len(X)), replace=False)]
    block = np.repeat(rows, len(grid), axis=0)
    block[:, j] = np.tile(grid, len(rows))
    names = [c.name for c in columns]
    margins = booster.predict(xgb.DMatrix(block, feature_names=names), output_margin=True)
    return grid, np.asarray(margins, dtype=np.float64).reshape(len(rows), len(grid))


def best_xgboost(candidates: list[FittedCandidate], tolerance: float) -> FittedCandidate:
    """The shallowest forest within ``tolerance`` CV AUROC of the best depth."""
    best = max(c.cv_mean for c in candidates)
    eligible = [c for c in candidates if c.cv_mean >= best - tolerance]
    return min(eligible, key=lambda c: (c.params["max_depth"], c.params["n_estimators"]))


def fit_platt(margin: Float, y: np.ndarray) -> tuple[float, float]:
    """``logit(p) = slope * margin + intercept`` by unpenalised maximum likelihood."""
    model = LogisticRegression(C=np.inf, max_iter=1000)
    model.fit(margin.reshape(-1, 1), y)
    return float(model.coef_[0, 0]), float(model.intercept_[0])
