"""Train one model from its config and write a verified artifact ``models/<name>/<version>/``.

The artifact is signed (``manifest.sig``, :mod:`models.signing`) with the private key in
``CLINRISK_SIGNING_KEY_FILE`` (or ``signing_key``); without one it is written unsigned, which the
service refuses unless unsigned models are allowed (development).

Flow: load and clean -> split off an untouched test part (grouped where rows share a patient or
duplicate content) -> 5-fold CV on the training part for every candidate -> ship the better
family -> final fit on the whole training part -> Platt calibration on out-of-fold margins ->
validate on the test part (overall, per tier, per subgroup, against baselines) -> export.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from models.columns import columns_for, encode
from models.loader import (
    TREE_MODEL_FILE,
    LinearParameters,
    load_artifact,
    sha256_file,
    sign_artifact,
)
from models.manifest import (
    Baseline,
    Calibration,
    CalibrationBin,
    Candidate,
    DatasetRef,
    Distribution,
    ExplanationInfo,
    FeatureSpec,
    FeatureType,
    Manifest,
    MissingPattern,
    ModelColumn,
    ModelSpecification,
    RepeatedCV,
    Split,
    SubgroupMetrics,
    Target,
    TemporalValidation,
    ThresholdMetrics,
    Tier,
    Validation,
    ValidationSummary,
)
from models.scoring import (
    Explainer,
    LinearExplainer,
    ScoringModel,
    TreeExplainer,
    sigmoid,
)
from models.signing import (
    SIGNING_KEY_ENV,
    KeyFileError,
    TrustPolicy,
    default_policy,
    key_id,
    load_private_key,
)
from models.trees import Forest, compile_tables, parse_forest
from training import fit, metrics
from training.baselines import BASELINES, PublishedBaseline
from training.card import render_card
from training.config import ModelConfig
from training.datasets import LOADERS, SHARED_DATA, Dataset
from training.validation import (
    Recipe,
    characteristics,
    frame_for_baselines,
    population_exclusions,
    repeated_cv,
    temporal_validation,
)

Progress = Callable[[str], None]
QUANTILES = {
    "p01": 0.01,
    "p05": 0.05,
    "p25": 0.25,
    "p50": 0.5,
    "p75": 0.75,
    "p95": 0.95,
    "p99": 0.99,
}
LIBRARIES = ("xgboost", "numpy", "scikit-learn", "pandas", "scipy")


def split_test(ds: Dataset, *, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, test): one fold of a stratified group split is the test part."""
    n_splits = round(1 / test_fraction)
    _, test_idx = fit.group_folds(ds.y, ds.groups, n_splits=n_splits, seed=seed)[0]
    test = np.zeros(len(ds.y), dtype=bool)
    test[test_idx] = True
    return ~test, test


def feature_values(ds: Dataset, specs: list[FeatureSpec]) -> dict[str, np.ndarray]:
    values: dict[str, np.ndarray] = {}
    for spec in specs:
        column = ds.features[spec.name]
        if spec.type is FeatureType.CATEGORICAL:
            values[spec.name] = column.astype(object).where(column.notna(), None).to_numpy()
        else:
            values[spec.name] = column.to_numpy(dtype=np.float64)
    return values


def distribution(spec: FeatureSpec, column: pd.Series) -> Distribution:
    missing = float(column.isna().mean())
    present = column.dropna()
    if spec.type is FeatureType.CATEGORICAL or spec.type is FeatureType.BINARY:
        rates = present.astype(str).value_counts(normalize=True).sort_index()
        return Distribution(
            missing_rate=missing,
            mean=float(present.mean()) if spec.type is FeatureType.BINARY else None,
            category_rates={str(k): float(v) for k, v in rates.items()},
        )
    return Distribution(
        missing_rate=missing,
        mean=float(present.mean()),
        quantiles={k: float(present.quantile(q)) for k, q in QUANTILES.items()},
    )


def code_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "training", "models/*.py"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent.parent,
        ).stdout.strip()
        return out.stdout.strip() + ("+local-changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def build_tiers(config: ModelConfig, y_train: np.ndarray, p_oof: np.ndarray) -> list[Tier]:
    lowers: list[float] = []
    for level in config.tiers.levels:
        if config.tiers.method == "fixed":
            lowers.append(float(level.lower or 0.0))
        elif level.target_sensitivity is None:
            lowers.append(0.0)
        else:
            threshold = metrics.threshold_for_sensitivity(y_train, p_oof, level.target_sensitivity)
            lowers.append(round(float(threshold), 4))
    uppers: list[float | None] = [*lowers[1:], None]
    return [
        Tier(name=lv.name, label=lv.label, lower=lo, upper=up, action=lv.action)
        for lv, lo, up in zip(config.tiers.levels, lowers, uppers, strict=True)
    ]


def time_explanations(
    explainer: Explainer, X: np.ndarray, booster: xgb.Booster | None, columns: list[str]
) -> ExplanationInfo:
    """Seconds per row of the scoring core's explanations (and of XGBoost's, for reference)."""
    rows = X[:10_000]
    start = time.perf_counter()
    explainer.contributions(rows)
    batch = (time.perf_counter() - start) / len(rows)
    singles = [list(r) for r in rows[:500]]
    start = time.perf_counter()
    for r in singles:
        explainer.contributions_one(r)
    single = (time.perf_counter() - start) / len(singles)
    reference = None
    if booster is not None:
        dm = xgb.DMatrix(rows, feature_names=columns)
        start = time.perf_counter()
        booster.predict(dm, pred_contribs=True)
        reference = (time.perf_counter() - start) / len(rows)
    return ExplanationInfo(
        method=explainer.method,
        seconds_per_row_batch=batch,
        seconds_per_row_single=single,
        reference_seconds_per_row=reference,
    )


def compare_baselines(
    y_test: np.ndarray,
    p_test: np.ndarray,
    candidates: list[tuple[str, str, np.ndarray, bool]],
    *,
    n_boot: int,
    seed: int,
    groups: np.ndarray | None = None,
    cv: dict[str, tuple[float, float]] | None = None,
) -> list[Baseline]:
    """AUROC (CI), Brier (probabilities only) and the paired AUROC difference of each baseline
    on the test rows; its repeated-CV AUROC on the same folds as the shipped recipe if known."""
    baselines = []
    for name, description, p_base, probability in candidates:
        valid = ~np.isnan(p_base)
        y, p_ours, p = y_test[valid], p_test[valid], p_base[valid]
        g = None if groups is None else groups[valid]
        lo, hi = metrics.bootstrap_auroc_ci(y, p, n_boot=n_boot, seed=seed, groups=g)
        diff = metrics.paired_bootstrap_auroc_difference(
            y, p_ours, p, n_boot=n_boot, seed=seed, groups=g
        )
        excluded = int((~valid).sum())
        note = f" ({excluded} test rows without the inputs it needs excluded)" if excluded else ""
        cv_mean, cv_sd = (cv or {}).get(name, (None, None))
        baselines.append(
            Baseline(
                name=name,
                description=description + note,
                auroc=metrics.auroc(y, p),
                auroc_ci_low=lo,
                auroc_ci_high=hi,
                brier=metrics.brier(y, p) if probability else None,
                auroc_difference_vs_shipped=diff["difference"],
                difference_p_value=diff["p_value"],
                n=int(valid.sum()),
                cv_auroc_mean=cv_mean,
                cv_auroc_sd=cv_sd,
            )
        )
    return baselines


def features_with_distributions(
    specs: list[FeatureSpec], train_features: pd.DataFrame, kind: str
) -> list[FeatureSpec]:
    """Feature specs plus their training distribution and how the model treats a gap."""
    gap = (
        "not known: counted as the training patients' average, which moves the risk neither way"
        if kind == "logistic"
        else "follows the forest's learned missing-value branch"
    )
    return [
        spec.model_copy(
            update={
                "distribution": distribution(spec, train_features[spec.name]),
                "missing_handling": spec.missing_handling or (None if spec.required else gap),
            }
        )
        for spec in specs
    ]


def forest_of(booster: xgb.Booster) -> Forest:
    """The booster as the service reads it: XGBoost's JSON model format, parsed without XGBoost."""
    return parse_forest(json.loads(booster.save_raw("json")))


def write_model_file(folder: Path, fitted: xgb.Booster | fit.LinearFit, columns: list[str]) -> str:
    """The fitted model in a documented, non-pickle format; returns the file name."""
    if isinstance(fitted, xgb.Booster):
        # The ".json" suffix selects XGBoost's JSON model format, which models/ parses itself.
        fitted.save_model(folder / TREE_MODEL_FILE)
        return TREE_MODEL_FILE
    params = {
        "columns": columns,
        "coefficients": fitted.coefficients.tolist(),
        "intercept": fitted.intercept,
        "means": fitted.means.tolist(),
    }
    (folder / "linear.json").write_text(json.dumps(params, indent=2))
    return "linear.json"


def explainer_for(fitted: xgb.Booster | fit.LinearFit, columns: list[str]) -> Explainer:
    if isinstance(fitted, xgb.Booster):
        return TreeExplainer(compile_tables(forest_of(fitted)))
    return LinearExplainer(
        LinearParameters(
            columns=columns,
            coefficients=fitted.coefficients.tolist(),
            intercept=fitted.intercept,
            means=fitted.means.tolist(),
        )
    )


def _summary(
    y: np.ndarray, p: np.ndarray, seed: int, groups: np.ndarray | None = None
) -> ValidationSummary:
    summary = ValidationSummary.model_validate(metrics.summarize(y, p, seed=seed, groups=groups))
    method = (
        "percentile bootstrap over patients (cluster bootstrap: a patient's encounters are "
        "resampled together), 1,000 resamples"
        if groups is not None
        else "percentile bootstrap over rows, 1,000 resamples"
    )
    return summary.model_copy(
        update={"calibration_bins": uncertainty_bins(y, p), "auroc_ci_method": method}
    )


def wilson_interval(events: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound at 0 or n events, unlike Wald)."""
    if n == 0:
        return 0.0, 1.0
    rate = events / n
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def uncertainty_bins(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> list[CalibrationBin]:
    """The test part's equal-count calibration bins with edges and the observed rate's 95% CI.

    Edges tile [0, 1]: a bin runs from its lowest test prediction to the next bin's (the first
    from 0, the last to 1), so every future probability falls in exactly one bin and the result
    can say how often a similar prediction came true on untouched data.
    """
    plain = metrics.calibration_bins(y, p, n_bins=n_bins)
    order = np.argsort(p, kind="stable")
    groups = [g for g in np.array_split(order, n_bins) if g.size]
    lowers = [0.0, *(float(p[g].min()) for g in groups[1:])]
    uppers = [*lowers[1:], 1.0]
    out = []
    for b, lo, hi in zip(plain, lowers, uppers, strict=True):
        events = round(b["observed_rate"] * b["n"])
        ci_low, ci_high = wilson_interval(events, b["n"])
        out.append(
            CalibrationBin(
                **b, lower=lo, upper=hi, observed_ci_low=ci_low, observed_ci_high=ci_high
            )
        )
    return out


# Subgroup factors a patient's inputs place them in (the factor's feature and level codes).
_FACTOR_FEATURES = {"sex": "sex_male", "age_band": "age_years", "diabetes": "diabetes"}
_LEVEL_CODES = {"male": ["1"], "female": ["0"], "diabetic": ["1"], "not diabetic": ["0"]}
MIN_RELIABLE_N = 100
RELIABLE_SLOPE = (0.7, 1.3)


def membership(factor: str, level: str, feature_names: set[str]) -> dict[str, Any]:
    """How a patient's inputs place them in ``factor = level`` (nothing if they cannot)."""
    feature = _FACTOR_FEATURES.get(factor)
    if feature is None or feature not in feature_names:
        return {}
    if factor == "age_band":
        if level.endswith("+"):
            return {"feature": feature, "minimum": float(level[:-1])}
        lo, hi = level.split("-")
        return {"feature": feature, "minimum": float(lo), "maximum": float(hi) + 1}
    codes = _LEVEL_CODES.get(level)
    return {"feature": feature, "categories": codes} if codes else {}


# Mean predicted risk this far from observed (and outside its 95% CI) is poor calibration.
RELIABLE_OE = (0.8, 1.25)


def reliability(
    row: metrics.SubgroupMetrics, factor: str, min_events: int, unit: str = "patients"
) -> dict[str, Any]:
    """Whether a subgroup's figures can be trusted, and if not, why (in words).

    Age bands are judged by calibration only: age carries much of the discrimination, so a
    lower AUROC within a band is structural, not a failure (issue 10)."""
    if row["suppressed"]:
        return {
            "reliable": False,
            "concern": f"too few events to judge ({row['positives']} events among "
            f"{row['n']} test {unit}; figures are withheld below {min_events})",
        }
    reasons = []
    if row["n"] < MIN_RELIABLE_N:
        reasons.append(f"only {row['n']} test {unit}")
    lo, hi = row["auroc_ci_low"], row["auroc_ci_high"]
    if factor != "age_band" and row["auroc"] is not None and lo is not None and lo <= 0.5:
        reasons.append(
            f"discrimination not shown (AUROC {row['auroc']:.2f}, 95% CI {lo:.2f}-{hi:.2f})"
        )
    slope = row["calibration_slope"]
    if slope is not None and not RELIABLE_SLOPE[0] <= slope <= RELIABLE_SLOPE[1]:
        reasons.append(f"poor calibration (slope {slope:.2f}; 1 is ideal)")
    ratio = row["observed_expected"]
    if ratio is not None and not RELIABLE_OE[0] <= ratio <= RELIABLE_OE[1]:
        ci_low, ci_high = wilson_interval(row["positives"], row["n"])
        if not ci_low <= row["mean_predicted"] <= ci_high:
            reasons.append(
                f"predicted risk too {'low' if ratio > 1 else 'high'} on average "
                f"(predicted {row['mean_predicted']:.1%}, observed {row['observed_rate']:.1%})"
            )
    return {"reliable": not reasons, "concern": "; ".join(reasons) or None}


def subgroup_rows(
    y: np.ndarray,
    p: np.ndarray,
    factors: pd.DataFrame,
    feature_names: set[str],
    *,
    seed: int,
    n_boot: int,
    min_events: int,
    clusters: np.ndarray | None = None,
) -> list[SubgroupMetrics]:
    """Per subgroup of the test part: metrics with CIs (suppressed below ``min_events``), who
    belongs to it, whether it is reliable, and whether it is an audit factor only."""
    out = []
    for col in factors.columns:
        levels = factors[col].to_numpy(str)
        rows = metrics.subgroup_metrics(
            y, p, levels, min_events=min_events, n_boot=n_boot, seed=seed, clusters=clusters
        )
        for row in rows:
            member = membership(col, row["level"], feature_names)
            out.append(
                SubgroupMetrics(
                    factor=col,
                    **row,
                    **member,
                    # Rows are encounters where patients repeat (clusters given).
                    **reliability(
                        row, col, min_events, "patients" if clusters is None else "encounters"
                    ),
                    audit_only=not member,
                )
            )
    return out


def tier_rows(y: np.ndarray, p: np.ndarray, tiers: list[Tier]) -> list[ThresholdMetrics]:
    """Share flagged, sensitivity, PPV and net benefit at each tier's lower bound."""
    rows = []
    for t in tiers[1:]:
        benefit, treat_all = metrics.net_benefit(y, p, t.lower)
        rows.append(
            ThresholdMetrics(
                tier=t.name,
                **metrics.threshold_metrics(y, p, t.lower),
                net_benefit=benefit,
                net_benefit_treat_all=treat_all,
            )
        )
    return rows


def masking_for(config: ModelConfig, columns: list[ModelColumn], seed: int) -> fit.Masking | None:
    """Masked training copies for the optional inputs, when the config asks to learn them."""
    if config.missingness is None:
        return None
    optional = {s.name for s in config.features if not s.required}
    if not optional:
        raise ValueError(f"{config.name}: [missingness] needs at least one optional feature")
    return fit.Masking(
        columns=tuple(j for j, c in enumerate(columns) if c.feature in optional),
        independent_rate=config.missingness.independent_rate,
        seed=seed,
    )


def _margin(fitted: xgb.Booster | fit.LinearFit, X: np.ndarray, columns: list[str]) -> np.ndarray:
    if isinstance(fitted, xgb.Booster):
        dm = xgb.DMatrix(X, feature_names=columns)
        return np.asarray(fitted.predict(dm, output_margin=True), dtype=np.float64)
    return np.asarray(fitted.margin(X), dtype=np.float64)


def known_inputs_reference(
    recipe: Recipe,
    masking: fit.Masking,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_hidden: np.ndarray,
    y_test: np.ndarray,
) -> float | None:
    """Test AUROC of the forest recipe refitted without the optional inputs at all: what a model
    of the known inputs alone reaches, the most "unknown" could recover (forests only: a linear
    model already scores an unknown input as the mean)."""
    if recipe.kind != "xgboost":
        return None
    plain = Recipe(recipe.kind, recipe.params, recipe.monotone, recipe.column_names, recipe.seed)
    fitted = plain.fit_rows(masking.hide(X_train), y_train)
    # AUROC is rank-based: the uncalibrated probability ranks as the calibrated one would.
    return metrics.auroc(y_test, sigmoid(plain.margin(fitted, X_hidden)))


def missing_data_policy(config: ModelConfig, specs: list[FeatureSpec], kind: str) -> str:
    """Which inputs may be unknown, why, and how the shipped model treats an unknown one."""
    optional = [s.label for s in specs if not s.required]
    if not optional:
        return "Every input is required: the service refuses a request that lacks one."
    if config.missingness is None or kind != "xgboost":
        how = (
            "an unknown input counts as the training patients' average"
            if kind == "logistic"
            else "an unknown input follows the forest's default branch"
        )
        return f"Optional inputs: {', '.join(optional)}; {how}."
    rate = config.missingness.independent_rate
    return (
        f"Optional inputs ({len(optional)}): {', '.join(optional)}. Each may be left unknown; "
        "the forest learned where an unknown answer goes (XGBoost's default branch at every "
        "split) from copies of the training rows with these inputs hidden, all together (the "
        f"typical chart) and each independently with chance {rate:g} (a partly completed "
        "form). Nothing is imputed; the test part was never altered, and its figures are "
        f"reported with every input known and with all optional inputs unknown. "
        f"{config.missingness.required_rationale}"
    )


def train(
    config: ModelConfig,
    *,
    data_path: Path | None = None,
    out_dir: Path,
    version: str = "1.3.0",
    seed: int | None = None,
    progress: Progress = lambda _msg: None,
    n_boot: int = 1000,
    signing_key: Path | None = None,
) -> Path:
    """Train, validate and write the artifact; sign it with ``signing_key`` (default:
    ``CLINRISK_SIGNING_KEY_FILE``), else write it unsigned and say so."""
    seed = config.seed if seed is None else seed
    # Read the key before minutes of training, so a wrong path fails at once.
    env_key = os.environ.get(SIGNING_KEY_ENV)
    key_file = signing_key or (Path(env_key) if env_key else None)
    key = load_private_key(key_file) if key_file is not None else None
    data_path = data_path or SHARED_DATA / config.default_data
    progress(f"loading {data_path}")
    loaded = LOADERS[config.loader](data_path)
    # The test part is drawn before the population exclusions, so it is the same untouched
    # patients whatever the rules (minus those now outside the population).
    train_all, test_all = split_test(loaded, test_fraction=config.test_fraction, seed=seed)
    ds, excluded, kept = population_exclusions(loaded, config.applicability)
    train_mask, test_mask = train_all[kept], test_all[kept]
    if any(e.rows for e in excluded):
        progress(
            "outside the intended population (excluded): "
            + ", ".join(f"{e.rule} {e.rows}" for e in excluded)
        )
    specs = config.features
    columns = columns_for(specs)
    column_names = [c.name for c in columns]
    X = encode(columns, feature_values(ds, specs))
    y = ds.y.astype(int)

    X_train, y_train, X_test, y_test = X[train_mask], y[train_mask], X[test_mask], y[test_mask]
    folds = fit.cv_folds(y_train, ds.groups[train_mask], seed=seed)
    monotone: list[int] = [
        specs[[s.name for s in specs].index(c.feature)].monotone if c.category is None else 0
        for c in columns
    ]

    masking = masking_for(config, columns, seed)
    if masking is not None:
        progress(
            f"learning missingness: training rows x3 (as given; {len(masking.columns)} optional "
            f"inputs hidden together; each hidden with chance {masking.independent_rate})"
        )

    progress(f"cross-validating XGBoost depths {config.candidates.xgboost.depths}")
    xgb_candidates = fit.cv_xgboost(
        X_train,
        y_train,
        folds,
        config.candidates.xgboost,
        monotone,
        seed=seed,
        column_names=column_names,
        masking=masking,
    )
    progress(f"cross-validating logistic regression C in {config.candidates.logistic.C}")
    lr_candidates = fit.cv_logistic(
        X_train,
        y_train,
        folds,
        config.candidates.logistic,
        seed=seed,
        monotone=monotone,
        masking=masking,
    )
    best_xgb = fit.best_xgboost(xgb_candidates, config.candidates.xgboost.depth_tolerance)
    best_lr = max(lr_candidates, key=lambda c: c.cv_mean)
    chosen, other = (
        (best_xgb, best_lr) if best_xgb.cv_mean >= best_lr.cv_mean else (best_lr, best_xgb)
    )

    progress(f"final fit: {chosen.kind} {chosen.params}")
    fitted: dict[str, xgb.Booster | fit.LinearFit] = {}
    margins_test: dict[str, np.ndarray] = {}
    calibrations: dict[str, tuple[float, float]] = {}
    for cand in (best_xgb, best_lr):
        calibrations[cand.kind] = fit.fit_platt(*cand.calibration_rows(y_train))
        if cand.kind == "xgboost":
            booster = fit.fit_xgboost(X_train, y_train, cand.params, column_names, masking)
            fitted["xgboost"] = booster
            margins_test["xgboost"] = booster.predict(
                xgb.DMatrix(X_test, feature_names=column_names), output_margin=True
            ).astype(np.float64)
        else:
            linear = fit.fit_logistic(
                X_train, y_train, float(cand.params["C"]), seed=seed, monotone=monotone
            )
            fitted["logistic"] = linear
            margins_test["logistic"] = linear.margin(X_test)
    # Both families honour the declared clinical directions, or training stops here.
    fitted_signs = fit.check_directions(fitted[chosen.kind], X_train, columns, specs)
    fit.check_directions(fitted[other.kind], X_train, columns, specs)
    progress(
        "fitted signs (declared/fitted): "
        + ", ".join(
            f"{s.name} {s.direction:+d}/{fitted_signs[s.name]:+d}"
            for s in specs
            if s.name in fitted_signs
        )
    )

    def calibrated(kind: str, margin: np.ndarray) -> np.ndarray:
        slope, intercept = calibrations[kind]
        return sigmoid(slope * margin + intercept)

    p_test = calibrated(chosen.kind, margins_test[chosen.kind])
    p_oof = calibrated(chosen.kind, chosen.oof_margin)
    tiers = build_tiers(config, y_train, p_oof)
    grouped_by = {
        "brfss": "identical row content (duplicates)",
        "diabetes130": "patient_nbr",
    }.get(config.loader)
    patients_test = None if ds.patients is None else ds.patients[test_mask]

    recipe = Recipe(chosen.kind, chosen.params, monotone, column_names, seed, masking)
    published: list[PublishedBaseline] = BASELINES.get(config.name, [])
    baseline_frame = frame_for_baselines(ds)
    baseline_values = {b.name: b.ranking(baseline_frame) for b in published}
    progress(f"repeated CV of the recipe: {config.validation.cv_repeats} x {fit.N_FOLDS} folds")
    cv_summary, cv_baselines = repeated_cv(
        recipe,
        X_train,
        y_train,
        ds.groups[train_mask],
        repeats=config.validation.cv_repeats,
        baselines=[(name, v[train_mask]) for name, v in baseline_values.items()],
        grouped_by=grouped_by,
    )
    temporal = None
    if config.validation.temporal_train_fraction is not None:
        if ds.patients is None:
            raise ValueError(f"{config.name}: temporal validation needs patient ids")
        progress("temporal validation")
        temporal = temporal_validation(
            recipe,
            X,
            y,
            ds.ids,
            ds.patients,
            train_fraction=config.validation.temporal_train_fraction,
            n_boot=n_boot,
        )

    progress("validating on the held-out test part")
    test_summary = _summary(y_test, p_test, seed, patients_test)
    tier_metrics = tier_rows(y_test, p_test, tiers)
    missing_patterns = []
    # (rows, probabilities) the artifact read back must reproduce
    checks = [(X_test, p_test)]
    if masking is not None and config.missingness is not None:
        progress("validating on the held-out test part with the optional inputs unknown")
        X_hidden = masking.hide(X_test)
        p_hidden = calibrated(chosen.kind, _margin(fitted[chosen.kind], X_hidden, column_names))
        missing_patterns.append(
            MissingPattern(
                name="typical chart",
                description=config.missingness.typical_pattern,
                missing=[s.name for s in specs if not s.required],
                test=_summary(y_test, p_hidden, seed, patients_test),
                tiers=tier_rows(y_test, p_hidden, tiers),
                reference_auroc=known_inputs_reference(
                    recipe, masking, X_train, y_train, X_hidden, y_test
                ),
            )
        )
        checks.append((X_hidden, p_hidden))
    subgroups = subgroup_rows(
        y_test,
        p_test,
        ds.factors[test_mask],
        {s.name for s in specs},
        seed=seed,
        n_boot=n_boot,
        min_events=config.validation.subgroup_min_events,
        clusters=patients_test,
    )
    baselines = compare_baselines(
        y_test,
        p_test,
        [
            (
                f"{other.kind} (not shipped)",
                f"The other candidate family, best CV settings {_public_params(other.params)}",
                calibrated(other.kind, margins_test[other.kind]),
                True,
            ),
            *[
                (b.name, b.description, baseline_values[b.name][test_mask], b.probability)
                for b in published
            ],
        ],
        n_boot=n_boot,
        seed=seed,
        groups=patients_test,
        cv=cv_baselines,
    )
    features_out = features_with_distributions(specs, ds.features[train_mask], chosen.kind)
    shipped = fitted[chosen.kind]
    timing = time_explanations(
        explainer_for(shipped, column_names),
        X_test,
        shipped if isinstance(shipped, xgb.Booster) else None,
        column_names,
    )

    candidates = [
        Candidate(
            kind=c.kind,
            params=_public_params(c.params),
            cv_auroc_mean=c.cv_mean,
            cv_auroc_std=c.cv_std,
            selected=c is chosen,
        )
        for c in [*xgb_candidates, *lr_candidates]
    ]
    test_ids = "\n".join(str(i) for i in sorted(ds.ids[test_mask].tolist()))
    shortfalls = _shortfalls(test_summary, baselines, subgroups, cv_summary, temporal)

    folder = out_dir / config.name / version
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    model_file = write_model_file(folder, fitted[chosen.kind], column_names)

    slope, intercept = calibrations[chosen.kind]
    manifest = Manifest(
        name=config.name,
        version=version,
        title=config.title,
        summary=config.summary,
        intended_use=config.intended_use,
        out_of_scope=config.out_of_scope,
        created_at=datetime.now(UTC).replace(microsecond=0),
        code_revision=code_revision(),
        kind=chosen.kind,
        model_file=model_file,
        libraries={lib: metadata.version(lib) for lib in LIBRARIES},
        dataset=DatasetRef(
            path=_relative_data_path(data_path),
            sha256=sha256_file(data_path),
            rows_read=ds.rows_read,
            rows_used=len(y),
            description=config.dataset_description,
            exclusions=ds.exclusions,
            population_exclusions=excluded,
        ),
        target=Target(
            column=config.target_column,
            definition=config.target_definition,
            positive_rate_train=float(y_train.mean()),
            positive_rate_test=float(y_test.mean()),
        ),
        features=features_out,
        missing_data_policy=missing_data_policy(config, specs, chosen.kind),
        applicability=config.applicability,
        columns=columns,
        hyperparameters=_public_params(chosen.params),
        calibration=Calibration(
            slope=slope,
            intercept=intercept,
            fitted_on="out-of-fold margins of the 5-fold CV on the training part",
        ),
        tiers=tiers,
        tiers_borrowed_from=config.tiers.borrowed_from,
        split=Split(
            method="stratified group split: one of 5 folds (groups: see grouped_by)",
            seed=seed,
            test_fraction=config.test_fraction,
            grouped_by=grouped_by,
            n_train=int(train_mask.sum()),
            n_test=int(test_mask.sum()),
            test_ids_sha256=hashlib.sha256(test_ids.encode()).hexdigest(),
            id_column={"diabetes130": "encounter_id"}.get(
                config.loader, "row number in the file (0-based)"
            ),
        ),
        validation=Validation(
            test=test_summary,
            tiers=tier_metrics,
            subgroups=subgroups,
            candidates=candidates,
            baselines=baselines,
            published_reference=config.published_reference,
            shortfalls=shortfalls,
            repeated_cv=cv_summary,
            temporal=temporal,
            subgroup_min_events=config.validation.subgroup_min_events,
            missing_patterns=missing_patterns,
            characteristics=characteristics(
                ds,
                train_mask,
                test_mask,
                age_note=" (from recorded age bands)"
                if config.loader in ("brfss", "diabetes130")
                else "",
            ),
        ),
        clinical_use=config.clinical_use,
        governance=config.governance,
        model_specification=_specification(shipped, column_names),
        explanation=timing,
        caveats=config.caveats,
        ethical_considerations=config.ethical_considerations,
        files={model_file: sha256_file(folder / model_file), "card.md": "0" * 64},
    )
    (folder / "card.md").write_text(render_card(manifest))
    manifest = manifest.model_copy(
        update={
            "files": {
                model_file: sha256_file(folder / model_file),
                "card.md": sha256_file(folder / "card.md"),
            }
        }
    )
    (folder / "manifest.json").write_text(manifest.model_dump_json(indent=2) + "\n")

    if key is not None:
        sign_artifact(folder, key)
        trust = TrustPolicy.trusting(key.public_key())
        progress(f"signed with {_trust_note(key_id(key.public_key()))}")
    else:
        trust = TrustPolicy(allow_unsigned=True)
        progress(
            f"UNSIGNED artifact: the service refuses it unless unsigned models are allowed; set "
            f"{SIGNING_KEY_ENV} or run `clinrisk signing sign {folder} --key FILE`"
        )
    # The shipped artifact, read back through the verifying loader and the service's scoring
    # core, must reproduce the probabilities validated above (with unknown inputs too).
    core = ScoringModel(load_artifact(folder, trust))
    for rows, expected in checks:
        worst = float(np.max(np.abs(core.score_matrix(rows).probability - expected)))
        if worst > 1e-6:
            raise RuntimeError(f"artifact disagrees with the validated model by {worst:.2e}")
    progress(f"wrote {folder}")
    return folder


def _trust_note(signer: str) -> str:
    """The key id, and whether this environment's trusted keys (the service's default) hold it."""
    try:
        trusted = signer in default_policy().keys
    except KeyFileError as exc:
        return f"{signer} (trusted keys unreadable here: {exc})"
    if trusted:
        return f"{signer} (a trusted key)"
    return f"{signer} (NOT among the trusted keys here: add its public key before serving)"


def _public_params(params: dict[str, Any]) -> dict[str, Any]:
    drop = {"nthread", "eval_metric", "objective"}
    return {k: v for k, v in params.items() if k not in drop}


def _relative_data_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(SHARED_DATA.resolve()))
    except ValueError:
        return path.name


def _specification(
    fitted: xgb.Booster | fit.LinearFit, columns: list[str]
) -> ModelSpecification | None:
    """The full linear model for the card (a forest is in its model file, too long to print)."""
    if not isinstance(fitted, fit.LinearFit):
        return None
    return ModelSpecification(
        intercept=fitted.intercept,
        coefficients=dict(zip(columns, fitted.coefficients.tolist(), strict=True)),
        means=dict(zip(columns, fitted.means.tolist(), strict=True)),
    )


def _shortfalls(
    test: ValidationSummary,
    baselines: list[Baseline],
    subgroups: list[SubgroupMetrics],
    cv: RepeatedCV,
    temporal: TemporalValidation | None,
) -> list[str]:
    notes = []
    for b in baselines:
        if b.auroc_difference_vs_shipped is not None and b.auroc_difference_vs_shipped < 0:
            notes.append(
                f"{b.name} discriminates better on the test part "
                f"(AUROC {b.auroc:.3f} vs {test.auroc:.3f})."
            )
        if b.cv_auroc_mean is not None and b.cv_auroc_mean >= cv.auroc_mean - cv.auroc_sd:
            notes.append(
                f"On repeated cross-validation the model ({cv.auroc_mean:.3f} ± "
                f"{cv.auroc_sd:.3f}) is not clearly better than {b.name} "
                f"({b.cv_auroc_mean:.3f} ± {b.cv_auroc_sd or 0:.3f}) on the same folds."
            )
    if abs(test.auroc - cv.auroc_mean) > cv.auroc_sd:
        notes.append(
            f"The single test-part AUROC ({test.auroc:.3f}) is more than one SD from the "
            f"repeated-CV mean ({cv.auroc_mean:.3f} ± {cv.auroc_sd:.3f}): quote the CV figure."
        )
    if abs(test.calibration_slope - 1) > 0.1:
        notes.append(
            f"Calibration slope on the test part is {test.calibration_slope:.2f} (1 is ideal)."
        )
    citl = test.calibration_in_the_large
    if citl is not None and abs(citl) > 0.1:
        notes.append(
            f"Calibration-in-the-large on the test part is {citl:+.2f}: predicted risks are "
            f"on average too {'high' if citl < 0 else 'low'}."
        )
    worst = [
        s
        for s in subgroups
        if s.factor != "age_band" and s.auroc is not None and s.auroc < test.auroc - 0.05
    ]
    notes.extend(
        f"Lower discrimination for {s.factor} = {s.level} (AUROC {s.auroc:.3f}, 95% CI "
        f"{s.auroc_ci_low or 0:.3f}-{s.auroc_ci_high or 0:.3f}, n = {s.n})."
        for s in worst
    )
    notes.extend(
        f"Weak figures for {s.factor} = {s.level}: {s.concern}."
        for s in subgroups
        if not s.reliable and not s.suppressed and s not in worst
    )
    if temporal is not None:
        for c in temporal.cohorts:
            notes.append(
                f"Temporal validation, {c.name}: AUROC {c.auroc:.3f} "
                f"({c.auroc_ci_low:.3f}-{c.auroc_ci_high:.3f}), calibration-in-the-large "
                f"{c.calibration_in_the_large:+.2f}, O/E {c.observed_expected:.2f}."
            )
    if test.auroc < 0.7:
        notes.append(
            f"Modest discrimination overall (AUROC {test.auroc:.3f}); "
            "use as one input among several."
        )
    return notes
