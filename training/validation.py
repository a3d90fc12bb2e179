"""Validation designs beyond the single held-out split (issue 10): who is excluded from the
development data, repeated cross-validation of the shipped recipe, temporal validation, and the
participant characteristics table.

"The recipe" is the shipped model family with its selected settings (number of trees, depth,
regularisation), refitted from scratch on each training part and Platt-calibrated there, so each
figure describes the procedure that produced the artifact, not one lucky split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from models.manifest import (
    ApplicabilityRule,
    Characteristic,
    PopulationExclusion,
    RepeatedCV,
    TemporalCohort,
    TemporalValidation,
)
from models.scoring import sigmoid
from training import fit, metrics
from training.datasets import Dataset


@dataclass(frozen=True)
class Recipe:
    """The shipped family and settings, refittable on any rows."""

    kind: str
    params: dict[str, Any]
    monotone: list[int]
    column_names: list[str]
    seed: int
    masking: fit.Masking | None = None
    """Issue 14: a forest is trained on masked copies too; calibration sees both patterns."""

    def fit_rows(self, X: np.ndarray, y: np.ndarray) -> xgb.Booster | fit.LinearFit:
        if self.kind == "xgboost":
            return fit.fit_xgboost(X, y, self.params, self.column_names, self.masking)
        return fit.fit_logistic(
            X, y, float(self.params["C"]), seed=self.seed, monotone=self.monotone
        )

    def calibrate(
        self, fitted: xgb.Booster | fit.LinearFit, X: np.ndarray, y: np.ndarray
    ) -> tuple[float, float]:
        """Platt (slope, intercept) on these rows, and on them with the optional inputs hidden
        when the recipe masks (as the shipped calibration is fitted)."""
        margin = self.margin(fitted, X)
        if self.masking is None:
            return fit.fit_platt(margin, y)
        hidden = self.margin(fitted, self.masking.hide(X))
        return fit.fit_platt(np.concatenate([margin, hidden]), np.concatenate([y, y]))

    def margin(self, fitted: xgb.Booster | fit.LinearFit, X: np.ndarray) -> np.ndarray:
        if isinstance(fitted, xgb.Booster):
            dm = xgb.DMatrix(X, feature_names=self.column_names)
            return np.asarray(fitted.predict(dm, output_margin=True), dtype=np.float64)
        return np.asarray(fitted.margin(X), dtype=np.float64)


def population_exclusions(
    ds: Dataset, rules: Sequence[ApplicabilityRule]
) -> tuple[Dataset, list[PopulationExclusion], np.ndarray]:
    """Drop the rows a feature-range applicability rule puts outside the intended population
    (e.g. prior stroke for cvd, children for readmission), counted per rule in order; also
    return the kept-row mask. A missing value is not outside (the service does not withhold a
    score for it either)."""
    keep = np.ones(len(ds.y), dtype=bool)
    counted = []
    for rule in rules:
        if rule.kind != "feature_range" or rule.feature not in ds.features:
            continue
        values = ds.features[rule.feature].to_numpy(dtype=np.float64)
        outside = np.zeros(len(values), dtype=bool)
        with np.errstate(invalid="ignore"):
            if rule.minimum is not None:
                outside |= values < rule.minimum
            if rule.maximum is not None:
                outside |= values > rule.maximum
        counted.append(
            PopulationExclusion(
                rule=rule.id, description=rule.description, rows=int((outside & keep).sum())
            )
        )
        keep &= ~outside
    return ds.subset(keep), counted, keep


def _calibration(y: np.ndarray, p: np.ndarray) -> tuple[float, float, float]:
    """(calibration-in-the-large, slope, O/E)."""
    slope, _ = metrics.calibration_slope_intercept(y, p)
    return metrics.calibration_in_the_large(y, p), slope, metrics.observed_expected(y, p)


def repeated_cv(
    recipe: Recipe,
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    repeats: int,
    baselines: Sequence[tuple[str, np.ndarray]] = (),
    grouped_by: str | None,
) -> tuple[RepeatedCV, dict[str, tuple[float, float]]]:
    """``repeats`` x 5-fold stratified (grouped) CV of the recipe on the development part, and
    each baseline's AUROC on the same validation folds: (summary, {baseline: (mean, sd)})."""
    aurocs: list[float] = []
    calib: list[tuple[float, float, float]] = []
    base: dict[str, list[float]] = {name: [] for name, _ in baselines}
    for r in range(repeats):
        folds = fit.group_folds(y, groups, n_splits=fit.N_FOLDS, seed=recipe.seed + 1 + r)
        for train_idx, val_idx in folds:
            fitted = recipe.fit_rows(X[train_idx], y[train_idx])
            slope, intercept = recipe.calibrate(fitted, X[train_idx], y[train_idx])
            p = sigmoid(slope * recipe.margin(fitted, X[val_idx]) + intercept)
            aurocs.append(metrics.auroc(y[val_idx], p))
            calib.append(_calibration(y[val_idx], p))
            for name, values in baselines:
                v = values[val_idx]
                ok = ~np.isnan(v)
                base[name].append(metrics.auroc(y[val_idx][ok], v[ok]))
    c = np.array(calib)
    grouping = f", grouped by {grouped_by}" if grouped_by else ""
    summary = RepeatedCV(
        method=(
            f"{repeats} x {fit.N_FOLDS}-fold stratified cross-validation{grouping} of the "
            "development part; the shipped family and settings refitted on each training fold "
            "and Platt-calibrated on that fold's own margins; mean and SD over "
            f"{len(aurocs)} validation folds"
        ),
        repeats=repeats,
        folds=fit.N_FOLDS,
        auroc_mean=float(np.mean(aurocs)),
        auroc_sd=float(np.std(aurocs, ddof=1)),
        calibration_in_the_large_mean=float(c[:, 0].mean()),
        calibration_in_the_large_sd=float(c[:, 0].std(ddof=1)),
        calibration_slope_mean=float(c[:, 1].mean()),
        calibration_slope_sd=float(c[:, 1].std(ddof=1)),
        observed_expected_mean=float(c[:, 2].mean()),
        observed_expected_sd=float(c[:, 2].std(ddof=1)),
    )
    return summary, {
        name: (float(np.mean(v)), float(np.std(v, ddof=1))) for name, v in base.items()
    }


def temporal_validation(
    recipe: Recipe,
    X: np.ndarray,
    y: np.ndarray,
    order: np.ndarray,
    patients: np.ndarray,
    *,
    train_fraction: float,
    n_boot: int,
) -> TemporalValidation:
    """Fit the recipe on the earliest ``train_fraction`` of rows (by ``order``) with Platt
    calibration on grouped 5-fold out-of-fold margins there, and test it on the later rows:
    all later encounters, and those of patients not seen in the earlier part."""
    rank = np.argsort(np.argsort(order, kind="stable"), kind="stable")
    early = rank < int(len(y) * train_fraction)
    X_e, y_e, g_e = X[early], y[early], patients[early]
    oof = np.zeros(len(y_e))
    for train_idx, val_idx in fit.group_folds(y_e, g_e, n_splits=fit.N_FOLDS, seed=recipe.seed):
        fitted = recipe.fit_rows(X_e[train_idx], y_e[train_idx])
        oof[val_idx] = recipe.margin(fitted, X_e[val_idx])
    slope, intercept = fit.fit_platt(oof, y_e)
    final = recipe.fit_rows(X_e, y_e)
    late = ~early
    p_late = sigmoid(slope * recipe.margin(final, X[late]) + intercept)
    y_late, g_late = y[late], patients[late]
    new = ~np.isin(g_late, np.unique(g_e))
    cohorts = []
    for name, description, mask in (
        (
            "later encounters",
            "every encounter after the cut, including those of patients seen before it",
            np.ones(len(y_late), dtype=bool),
        ),
        ("new patients", "encounters after the cut of patients with none before it", new),
    ):
        yy, pp = y_late[mask], p_late[mask]
        lo, hi = metrics.bootstrap_auroc_ci(
            yy, pp, n_boot=n_boot, seed=recipe.seed, groups=g_late[mask]
        )
        citl, cal_slope, oe = _calibration(yy, pp)
        cohorts.append(
            TemporalCohort(
                name=name,
                description=description,
                n=int(mask.sum()),
                positives=int(yy.sum()),
                auroc=metrics.auroc(yy, pp),
                auroc_ci_low=lo,
                auroc_ci_high=hi,
                calibration_in_the_large=citl,
                calibration_slope=cal_slope,
                observed_expected=oe,
            )
        )
    return TemporalValidation(
        method=(
            f"The recipe refitted on the earliest {train_fraction:.0%} of encounters (encounter "
            "id order, which approximates time), calibrated on grouped out-of-fold margins "
            "there, and tested on the later encounters; 95% CI by patient-level bootstrap"
        ),
        n_train=int(early.sum()),
        cohorts=cohorts,
    )


def _pct(part: float) -> str:
    return f"{part * 100:.1f}%"


def characteristics(
    ds: Dataset, development: np.ndarray, test: np.ndarray, *, age_note: str = ""
) -> list[Characteristic]:
    """Participant characteristics of the development and test parts (n, events, age, sex and
    every audit factor's levels)."""
    parts = (development, test)

    def row(label: str, fmt: Any) -> Characteristic:
        dev, tst = (fmt(m) for m in parts)
        return Characteristic(characteristic=label, development=dev, test=tst)

    rows = [
        row("Rows", lambda m: f"{int(m.sum()):,}"),
        row(
            "Outcome events",
            lambda m: f"{int(ds.y[m].sum()):,} ({_pct(float(ds.y[m].mean()))})",
        ),
    ]
    if ds.patients is not None:
        rows.append(row("Patients", lambda m: f"{len(np.unique(ds.patients[m])):,}"))
    if "age_years" in ds.features:
        age = ds.features["age_years"].to_numpy(dtype=np.float64)
        rows.append(
            row(
                f"Age, years, mean (SD){age_note}",
                lambda m: f"{np.nanmean(age[m]):.1f} ({np.nanstd(age[m], ddof=1):.1f})",
            )
        )
    if "sex_male" in ds.features:
        male = ds.features["sex_male"].to_numpy(dtype=np.float64)
        rows.append(row("Male", lambda m: _pct(float(np.nanmean(male[m])))))
    for factor in ds.factors.columns:
        if factor == "sex":
            continue
        levels = ds.factors[factor].astype(str)
        for level in sorted(levels.unique()):
            member = (levels == level).to_numpy()
            rows.append(
                row(
                    f"{factor.replace('_', ' ')}: {level}",
                    lambda m, member=member: (
                        f"{int((member & m).sum()):,} ({_pct(float((member & m).sum() / m.sum()))})"
                    ),
                )
            )
    return rows


def frame_for_baselines(ds: Dataset) -> pd.DataFrame:
    """Canonical features plus the source columns published baselines need."""
    if ds.extras is None:
        return ds.features
    return pd.concat([ds.features, ds.extras], axis=1)
