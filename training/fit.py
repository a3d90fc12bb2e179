"""Fitting: cross-validated candidate selection, final fit and Platt calibration.

Pure functions over a column matrix ``X`` (NaN = missing) and labels ``y``; the seed is passed
explicitly to every splitter and estimator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import xgboost as xgb
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

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


@dataclass
class FittedCandidate:
    kind: str
    params: dict[str, Any]
    cv_aurocs: list[float]
    oof_margin: Float

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
) -> list[FittedCandidate]:
    """One candidate per depth, with the number of trees chosen on the mean CV AUROC curve."""
    results: list[FittedCandidate] = []
    for depth in candidates.depths:
        params = xgb_params(candidates, depth, monotone, seed=seed)
        curves, boosters = [], []
        for train_idx, val_idx in folds:
            dtrain = xgb.DMatrix(X[train_idx], y[train_idx], feature_names=column_names)
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
        for booster, (_, val_idx) in zip(boosters, folds, strict=True):
            dval = xgb.DMatrix(X[val_idx], feature_names=column_names)
            oof[val_idx] = booster.predict(dval, output_margin=True, iteration_range=(0, n_trees))
        results.append(
            FittedCandidate(
                kind="xgboost",
                params={**params, "n_estimators": n_trees},
                cv_aurocs=[float(c[n_trees - 1]) for c in curves],
                oof_margin=oof,
            )
        )
    return results


def fit_xgboost(X: Float, y: np.ndarray, params: dict[str, Any], columns: list[str]) -> xgb.Booster:
    train_params = {k: v for k, v in params.items() if k != "n_estimators"}
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


def fit_logistic(X: Float, y: np.ndarray, C: float, *, seed: int) -> LinearFit:
    """L2 logistic regression on standardised, mean-imputed columns, returned in raw units."""
    means = np.nanmean(X, axis=0)
    filled = np.where(np.isnan(X), means, X)
    scale = filled.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=C, max_iter=2000, random_state=seed)
    model.fit((filled - means) / scale, y)
    coefficients = model.coef_[0] / scale
    intercept = float(model.intercept_[0] - coefficients @ means)
    return LinearFit(coefficients=coefficients, intercept=intercept, means=means)


def cv_logistic(
    X: Float,
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    candidates: LogisticCandidates,
    *,
    seed: int,
) -> list[FittedCandidate]:
    results = []
    for C in candidates.C:
        oof = np.zeros(len(y))
        aurocs = []
        for train_idx, val_idx in folds:
            fit = fit_logistic(X[train_idx], y[train_idx], C, seed=seed)
            oof[val_idx] = fit.margin(X[val_idx])
            aurocs.append(float(roc_auc_score(y[val_idx], oof[val_idx])))
        results.append(
            FittedCandidate(kind="logistic", params={"C": C}, cv_aurocs=aurocs, oof_margin=oof)
        )
    return results


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
