"""Validation metrics for a binary risk model.

Every function takes ``y`` (0/1 outcomes) and ``p`` (calibrated probabilities) as 1-D arrays of
equal length. Results are plain Python ``float``/``int``/``None`` values (never numpy scalars), so
the dictionaries returned by :func:`summarize`, :func:`subgroup_metrics` and friends can be
passed straight to ``json.dumps``.

Conventions
-----------
* AUROC ties count one half (the Mann-Whitney / trapezoidal convention used by scikit-learn).
* Bootstrap intervals are percentile intervals over row resamples drawn with
  ``numpy.random.default_rng(seed)``; resamples containing a single outcome class are skipped.
* Calibration bins are *equal-count* (quantile) bins: rows are sorted by ``p`` and split into
  ``n_bins`` groups whose sizes differ by at most one. Tied predictions may straddle a bin edge.
"""

from __future__ import annotations

import math
from typing import TypedDict

import numpy as np
import numpy.typing as npt
from scipy.special import expit
from sklearn.metrics import average_precision_score, roc_auc_score

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_LOGIT_EPS = 1e-12
"""Probabilities are clipped to [eps, 1 - eps] before taking logits."""
_BOOT_CHUNK_ELEMENTS = 4_000_000
"""Resamples are processed in chunks of about this many (resample, row) cells."""


class CalibrationBin(TypedDict):
    mean_predicted: float
    observed_rate: float
    n: int


class ThresholdMetrics(TypedDict):
    threshold: float
    sensitivity: float | None
    specificity: float | None
    ppv: float | None
    npv: float | None
    flagged_fraction: float


class Summary(TypedDict):
    n: int
    positives: int
    prevalence: float
    auroc: float
    auroc_ci_low: float
    auroc_ci_high: float
    auprc: float
    brier: float
    calibration_slope: float
    calibration_intercept: float
    calibration_in_the_large: float
    observed_expected: float
    ece: float
    calibration_bins: list[CalibrationBin]


class SubgroupMetrics(TypedDict):
    level: str
    n: int
    positives: int
    auroc: float | None
    auroc_ci_low: float | None
    auroc_ci_high: float | None
    calibration_slope: float | None
    calibration_intercept: float | None
    calibration_in_the_large: float | None
    observed_expected: float | None
    mean_predicted: float
    observed_rate: float
    suppressed: bool


class PairedDifference(TypedDict):
    difference: float
    ci_low: float
    ci_high: float
    p_value: float


# --------------------------------------------------------------------------------------------
# input handling


def _check(y: npt.ArrayLike, p: npt.ArrayLike, *, name: str = "p") -> tuple[IntArray, FloatArray]:
    """Validate and convert ``y`` to int64 0/1 and ``p`` to float64 in [0, 1], both 1-D."""
    y_arr = np.asarray(y)
    p_arr = np.asarray(p, dtype=np.float64)
    if y_arr.ndim != 1 or p_arr.ndim != 1:
        raise ValueError("y and p must be 1-D arrays")
    if y_arr.shape != p_arr.shape:
        raise ValueError(f"y has {y_arr.shape[0]} rows but {name} has {p_arr.shape[0]}")
    if y_arr.size == 0:
        raise ValueError("y and p are empty")
    if not np.isin(y_arr, (0, 1)).all():
        raise ValueError("y must contain only 0 and 1")
    if not np.isfinite(p_arr).all() or p_arr.min() < 0.0 or p_arr.max() > 1.0:
        raise ValueError(f"{name} must contain finite probabilities in [0, 1]")
    return y_arr.astype(np.int64), p_arr


def _require_both_classes(y: IntArray) -> None:
    positives = int(y.sum())
    if positives == 0 or positives == y.size:
        raise ValueError("y contains a single class; the metric is undefined")


def _logit(p: FloatArray) -> FloatArray:
    q = np.clip(p, _LOGIT_EPS, 1.0 - _LOGIT_EPS)
    out: FloatArray = np.log(q) - np.log1p(-q)
    return out


# --------------------------------------------------------------------------------------------
# discrimination


def auroc(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Area under the ROC curve (scikit-learn ``roc_auc_score``)."""
    y_arr, p_arr = _check(y, p)
    _require_both_classes(y_arr)
    return float(roc_auc_score(y_arr, p_arr))


def auprc(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Area under the precision-recall curve as average precision (``average_precision_score``)."""
    y_arr, p_arr = _check(y, p)
    _require_both_classes(y_arr)
    return float(average_precision_score(y_arr, p_arr))


class _RankStructure:
    """Sort order and tie groups of ``p``, for AUROC under arbitrary row multiplicities.

    For row weights ``w`` (bootstrap counts), the weighted AUROC is
    ``sum_groups Wpos_g * (Wneg_below_g + Wneg_g / 2) / (Wpos * Wneg)`` where groups are the
    distinct values of ``p`` in ascending order. This equals scikit-learn's AUROC on the data set
    in which row ``i`` is repeated ``w_i`` times, without re-sorting for every resample.
    """

    def __init__(self, y: IntArray, p: FloatArray) -> None:
        self.order = np.argsort(p, kind="stable")
        p_sorted = p[self.order]
        self.y_sorted = y[self.order].astype(np.float64)
        is_start = np.empty(p_sorted.size, dtype=bool)
        is_start[0] = True
        is_start[1:] = p_sorted[1:] != p_sorted[:-1]
        self.group_starts = np.flatnonzero(is_start)

    def aurocs(self, counts: FloatArray) -> FloatArray:
        """AUROC per row of ``counts`` (shape ``(n_resamples, n_rows)``); NaN if one class."""
        w = counts[:, self.order]
        w_pos = w * self.y_sorted
        w_neg = w - w_pos
        pos_g = np.add.reduceat(w_pos, self.group_starts, axis=1)
        neg_g = np.add.reduceat(w_neg, self.group_starts, axis=1)
        neg_below = np.cumsum(neg_g, axis=1) - neg_g
        concordant = (pos_g * (neg_below + 0.5 * neg_g)).sum(axis=1)
        n_pos = pos_g.sum(axis=1)
        n_neg = neg_g.sum(axis=1)
        denom = n_pos * n_neg
        out = np.full(counts.shape[0], np.nan)
        ok = denom > 0
        out[ok] = concordant[ok] / denom[ok]
        return out


def _bootstrap_counts(rng: np.random.Generator, n_rows: int, n_boot: int) -> list[FloatArray]:
    """Row multiplicities for ``n_boot`` resamples of ``n_rows`` rows, in memory-sized chunks."""
    chunk = max(1, _BOOT_CHUNK_ELEMENTS // n_rows)
    out: list[FloatArray] = []
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, n_rows, size=(b, n_rows))
        flat = (idx + (np.arange(b, dtype=np.int64) * n_rows)[:, None]).ravel()
        counts = np.bincount(flat, minlength=b * n_rows).reshape(b, n_rows)
        out.append(counts.astype(np.float64))
        done += b
    return out


def _cluster_counts(
    rng: np.random.Generator, inverse: IntArray, n_clusters: int, n_boot: int
) -> list[FloatArray]:
    """Row multiplicities when whole clusters (patients) are resampled: a row counts as often
    as its cluster was drawn, so a patient's encounters stay together (cluster bootstrap)."""
    chunk = max(1, _BOOT_CHUNK_ELEMENTS // max(inverse.size, 1))
    out: list[FloatArray] = []
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, n_clusters, size=(b, n_clusters))
        flat = (idx + (np.arange(b, dtype=np.int64) * n_clusters)[:, None]).ravel()
        per_cluster = np.bincount(flat, minlength=b * n_clusters).reshape(b, n_clusters)
        out.append(per_cluster[:, inverse].astype(np.float64))
        done += b
    return out


def _resample_counts(
    rng: np.random.Generator, n_rows: int, n_boot: int, groups: npt.ArrayLike | None
) -> list[FloatArray]:
    """Row resamples, or cluster resamples when ``groups`` (one id per row) is given."""
    if groups is None:
        return _bootstrap_counts(rng, n_rows, n_boot)
    g = np.asarray(groups)
    if g.shape != (n_rows,):
        raise ValueError("groups must have one entry per row")
    unique, inverse = np.unique(g, return_inverse=True)
    return _cluster_counts(rng, inverse.astype(np.int64), unique.size, n_boot)


def _percentile_interval(values: FloatArray, alpha: float) -> tuple[float, float]:
    low, high = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def _check_boot_args(n_boot: int, alpha: float) -> None:
    if n_boot < 1:
        raise ValueError("n_boot must be at least 1")
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must lie in (0, 1)")


def bootstrap_auroc_ci(
    y: npt.ArrayLike,
    p: npt.ArrayLike,
    *,
    n_boot: int = 1000,
    seed: int,
    alpha: float = 0.05,
    groups: npt.ArrayLike | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap ``(1 - alpha)`` interval for the AUROC.

    With ``groups`` (e.g. patient ids) whole groups are resampled (cluster bootstrap), so
    repeated encounters of one patient do not narrow the interval as if they were independent.

    Rows are resampled with replacement using ``numpy.random.default_rng(seed)``; resamples with
    a single outcome class are skipped (so slightly fewer than ``n_boot`` may contribute).
    Each resample's AUROC is computed exactly (ties count one half) from its row multiplicities.
    """
    _check_boot_args(n_boot, alpha)
    y_arr, p_arr = _check(y, p)
    _require_both_classes(y_arr)
    ranks = _RankStructure(y_arr, p_arr)
    rng = np.random.default_rng(seed)
    values = np.concatenate(
        [ranks.aurocs(c) for c in _resample_counts(rng, y_arr.size, n_boot, groups)]
    )
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("every bootstrap resample contained a single class")
    return _percentile_interval(values, alpha)


def paired_bootstrap_auroc_difference(
    y: npt.ArrayLike,
    p_a: npt.ArrayLike,
    p_b: npt.ArrayLike,
    *,
    n_boot: int = 1000,
    seed: int,
    alpha: float = 0.05,
    groups: npt.ArrayLike | None = None,
) -> PairedDifference:
    """Paired bootstrap comparison of two models' AUROC on the same rows.

    ``difference`` is ``auroc(y, p_a) - auroc(y, p_b)`` on the full data; ``ci_low``/``ci_high``
    are the percentile interval of the resampled differences (both models scored on the same
    resample). ``p_value`` is two-sided: twice the fraction of resampled differences on the far
    side of zero (``2 * min(P(d <= 0), P(d >= 0))``), capped at 1.
    """
    _check_boot_args(n_boot, alpha)
    y_arr, pa = _check(y, p_a, name="p_a")
    _, pb = _check(y, p_b, name="p_b")
    _require_both_classes(y_arr)
    difference = auroc(y_arr, pa) - auroc(y_arr, pb)
    ranks_a = _RankStructure(y_arr, pa)
    ranks_b = _RankStructure(y_arr, pb)
    rng = np.random.default_rng(seed)
    diffs = np.concatenate(
        [
            ranks_a.aurocs(c) - ranks_b.aurocs(c)
            for c in _resample_counts(rng, y_arr.size, n_boot, groups)
        ]
    )
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size == 0:
        raise ValueError("every bootstrap resample contained a single class")
    ci_low, ci_high = _percentile_interval(diffs, alpha)
    tail = min(float(np.mean(diffs <= 0.0)), float(np.mean(diffs >= 0.0)))
    return {
        "difference": float(difference),
        "ci_low": ci_low,
        "ci_high": ci_high,
        "p_value": min(1.0, 2.0 * tail),
    }


# --------------------------------------------------------------------------------------------
# calibration


def brier(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Brier score: mean squared difference between ``p`` and the 0/1 outcome."""
    y_arr, p_arr = _check(y, p)
    return float(np.mean((p_arr - y_arr) ** 2))


def calibration_slope_intercept(
    y: npt.ArrayLike,
    p: npt.ArrayLike,
    *,
    max_iter: int = 100,
    tol: float = 1e-9,
) -> tuple[float, float]:
    """Return ``(slope, intercept)`` of the fit ``logit P(y=1) = intercept + slope * logit(p)``.

    Both parameters are fitted jointly by unpenalised maximum likelihood (Newton-Raphson with step
    halving, started at the identity ``slope=1, intercept=0``). A perfectly calibrated model has
    slope 1 and intercept 0; slope < 1 means predictions are too extreme.

    Note that "calibration intercept" here is the intercept of this two-parameter fit, not the
    "calibration-in-the-large" intercept fitted with the slope fixed at 1 (offset ``logit(p)``).
    ``p`` is clipped to ``[1e-12, 1 - 1e-12]`` before taking logits.

    Raises ``ValueError`` if ``y`` has a single class, if ``logit(p)`` is constant (slope not
    identifiable), or if the fit does not converge (e.g. ``p`` separates the classes perfectly,
    where the maximum-likelihood estimate does not exist).
    """
    y_arr, p_arr = _check(y, p)
    _require_both_classes(y_arr)
    x = _logit(p_arr)
    if np.ptp(x) == 0.0:
        raise ValueError("p is constant; the calibration slope is not identifiable")
    design = np.column_stack([np.ones_like(x), x])
    yf = y_arr.astype(np.float64)

    def log_likelihood(beta: FloatArray) -> float:
        eta = design @ beta
        return float(np.sum(yf * eta - np.logaddexp(0.0, eta)))

    beta: FloatArray = np.array([0.0, 1.0])
    current = log_likelihood(beta)
    for _ in range(max_iter):
        mu = expit(design @ beta)
        gradient = design.T @ (yf - mu)
        hessian = (design * (mu * (1.0 - mu))[:, None]).T @ design
        try:
            step = np.linalg.solve(hessian, gradient)
        except np.linalg.LinAlgError as exc:
            raise ValueError("calibration fit failed: singular information matrix") from exc
        if not np.isfinite(step).all():
            raise ValueError("calibration fit failed: non-finite Newton step")
        scale = 1.0
        while True:
            candidate = beta + scale * step
            value = log_likelihood(candidate)
            if value >= current - 1e-12 or scale < 1e-10:
                break
            scale /= 2.0
        converged = float(np.max(np.abs(candidate - beta))) < tol * (
            1.0 + float(np.max(np.abs(beta)))
        )
        beta, current = candidate, value
        if converged:
            return float(beta[1]), float(beta[0])
    raise ValueError("calibration fit did not converge (are the classes perfectly separated?)")


def calibration_in_the_large(
    y: npt.ArrayLike, p: npt.ArrayLike, *, max_iter: int = 100, tol: float = 1e-10
) -> float:
    """Calibration-in-the-large: ``a`` in ``logit P(y=1) = a + logit(p)`` (slope fixed at 1).

    0 is ideal; a negative value means the predicted risks are on average too high, a positive
    value too low (the one calibration figure that reads as "too high / too low").
    Fitted by Newton-Raphson on the single parameter; ``p`` is clipped as for the slope.
    """
    y_arr, p_arr = _check(y, p)
    _require_both_classes(y_arr)
    offset = _logit(p_arr)
    yf = y_arr.astype(np.float64)
    a = 0.0
    for _ in range(max_iter):
        mu = expit(offset + a)
        gradient = float(np.sum(yf - mu))
        information = float(np.sum(mu * (1.0 - mu)))
        if information <= 0.0:
            raise ValueError("calibration-in-the-large fit failed: no information")
        step = gradient / information
        a += step
        if abs(step) < tol:
            return float(a)
    raise ValueError("calibration-in-the-large fit did not converge")


def observed_expected(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Observed events divided by the sum of predicted risks (O/E; 1 is ideal, < 1 means the
    model predicts more events than happened)."""
    y_arr, p_arr = _check(y, p)
    expected = float(p_arr.sum())
    if expected <= 0.0:
        raise ValueError("the predicted risks sum to zero; O/E is undefined")
    return float(y_arr.sum()) / expected


def _equal_count_bins(y: IntArray, p: FloatArray, n_bins: int) -> list[CalibrationBin]:
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    order = np.argsort(p, kind="stable")
    bins: list[CalibrationBin] = []
    for idx in np.array_split(order, n_bins):
        if idx.size == 0:
            continue
        bins.append(
            {
                "mean_predicted": float(np.mean(p[idx])),
                "observed_rate": float(np.mean(y[idx])),
                "n": int(idx.size),
            }
        )
    return bins


def calibration_bins(
    y: npt.ArrayLike, p: npt.ArrayLike, *, n_bins: int = 10
) -> list[CalibrationBin]:
    """Equal-count (quantile) bins of ``p`` for a calibration plot, lowest ``p`` first.

    Rows are sorted by ``p`` and split into ``n_bins`` groups whose sizes differ by at most one
    (fewer bins if there are fewer rows than bins). Each bin reports the mean prediction, the
    observed event rate and its row count.
    """
    y_arr, p_arr = _check(y, p)
    return _equal_count_bins(y_arr, p_arr, n_bins)


def expected_calibration_error(y: npt.ArrayLike, p: npt.ArrayLike, *, n_bins: int = 10) -> float:
    """Expected calibration error over equal-count (quantile) bins.

    ``sum_b (n_b / n) * |mean_predicted_b - observed_rate_b|`` over the bins of
    :func:`calibration_bins`.
    """
    y_arr, p_arr = _check(y, p)
    bins = _equal_count_bins(y_arr, p_arr, n_bins)
    total = sum(b["n"] for b in bins)
    return float(sum(b["n"] * abs(b["mean_predicted"] - b["observed_rate"]) for b in bins) / total)


# --------------------------------------------------------------------------------------------
# decision thresholds


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator > 0 else None


def threshold_metrics(y: npt.ArrayLike, p: npt.ArrayLike, threshold: float) -> ThresholdMetrics:
    """Confusion-matrix metrics for the rule "flag if ``p >= threshold``".

    A metric whose denominator is zero (e.g. PPV when nobody is flagged) is ``None``.
    """
    y_arr, p_arr = _check(y, p)
    flagged = p_arr >= threshold
    positive = y_arr == 1
    tp = int(np.sum(flagged & positive))
    fp = int(np.sum(flagged & ~positive))
    fn = int(np.sum(~flagged & positive))
    tn = int(np.sum(~flagged & ~positive))
    return {
        "threshold": float(threshold),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "flagged_fraction": (tp + fp) / y_arr.size,
    }


def net_benefit(y: npt.ArrayLike, p: npt.ArrayLike, threshold: float) -> tuple[float, float]:
    """Decision-curve net benefit at ``threshold`` (Vickers & Elkin 2006): ``(model, treat all)``.

    ``TP/n - FP/n * t/(1-t)`` for the rule "act if ``p >= t``", and the same for acting on
    everyone (``prevalence - (1 - prevalence) * t/(1-t)``); acting on no one is 0.
    """
    y_arr, p_arr = _check(y, p)
    if not 0.0 < threshold < 1.0:
        raise ValueError("the threshold must lie in (0, 1)")
    odds = threshold / (1.0 - threshold)
    n = y_arr.size
    flagged = p_arr >= threshold
    tp = int(np.sum(flagged & (y_arr == 1)))
    fp = int(np.sum(flagged & (y_arr == 0)))
    prevalence = float(y_arr.mean())
    return tp / n - fp / n * odds, prevalence - (1.0 - prevalence) * odds


def threshold_for_sensitivity(y: npt.ArrayLike, p: npt.ArrayLike, target: float) -> float:
    """The largest threshold ``t`` such that the rule ``p >= t`` has sensitivity ``>= target``.

    This is the ``k``-th largest prediction among positives, where ``k`` is the smallest number
    of detected positives with ``k / n_positives >= target`` (compared exactly as
    :func:`threshold_metrics` computes sensitivity). ``target`` must lie in ``(0, 1]``.
    """
    y_arr, p_arr = _check(y, p)
    if not 0.0 < target <= 1.0:
        raise ValueError("target sensitivity must lie in (0, 1]")
    positive_p = np.sort(p_arr[y_arr == 1])[::-1]
    n_pos = positive_p.size
    if n_pos == 0:
        raise ValueError("y has no positives; sensitivity is undefined")
    k = max(1, min(n_pos, math.ceil(target * n_pos)))
    while k > 1 and (k - 1) / n_pos >= target:
        k -= 1
    while k < n_pos and k / n_pos < target:
        k += 1
    return float(positive_p[k - 1])


# --------------------------------------------------------------------------------------------
# reports


def summarize(
    y: npt.ArrayLike,
    p: npt.ArrayLike,
    *,
    seed: int,
    n_boot: int = 1000,
    n_bins: int = 10,
    groups: npt.ArrayLike | None = None,
) -> Summary:
    """All headline validation metrics as a JSON-serialisable dictionary (``groups``: patient
    ids for a cluster bootstrap of the AUROC interval)."""
    y_arr, p_arr = _check(y, p)
    _require_both_classes(y_arr)
    ci_low, ci_high = bootstrap_auroc_ci(y_arr, p_arr, n_boot=n_boot, seed=seed, groups=groups)
    slope, intercept = calibration_slope_intercept(y_arr, p_arr)
    positives = int(y_arr.sum())
    return {
        "n": int(y_arr.size),
        "positives": positives,
        "prevalence": positives / y_arr.size,
        "auroc": auroc(y_arr, p_arr),
        "auroc_ci_low": ci_low,
        "auroc_ci_high": ci_high,
        "auprc": auprc(y_arr, p_arr),
        "brier": brier(y_arr, p_arr),
        "calibration_slope": slope,
        "calibration_intercept": intercept,
        "calibration_in_the_large": calibration_in_the_large(y_arr, p_arr),
        "observed_expected": observed_expected(y_arr, p_arr),
        "ece": expected_calibration_error(y_arr, p_arr, n_bins=n_bins),
        "calibration_bins": calibration_bins(y_arr, p_arr, n_bins=n_bins),
    }


def subgroup_metrics(
    y: npt.ArrayLike,
    p: npt.ArrayLike,
    groups: npt.ArrayLike,
    *,
    min_n: int = 30,
    min_events: int = 5,
    n_boot: int = 0,
    seed: int = 0,
    clusters: npt.ArrayLike | None = None,
) -> list[SubgroupMetrics]:
    """Discrimination and calibration within each level of ``groups`` (sorted by level).

    A level with fewer than ``min_n`` rows, or fewer than ``min_events`` positives or negatives,
    is *suppressed*: every figure but its size, event count, mean prediction and observed rate
    is ``None`` (too few events to judge). The calibration pair is also ``None`` if its fit is
    undefined (constant ``p`` within the level, or perfect separation). With ``n_boot > 0`` the
    AUROC gets a percentile bootstrap interval (cluster bootstrap over ``clusters`` if given).
    Levels are compared as strings.
    """
    y_arr, p_arr = _check(y, p)
    g_arr = np.asarray(groups).astype(str)
    if g_arr.shape != y_arr.shape:
        raise ValueError("groups must have one entry per row of y")
    c_arr = None if clusters is None else np.asarray(clusters)
    out: list[SubgroupMetrics] = []
    for level in np.unique(g_arr):
        mask = g_arr == level
        y_g, p_g = y_arr[mask], p_arr[mask]
        n = int(y_g.size)
        positives = int(y_g.sum())
        eligible = n >= min_n and positives >= min_events and n - positives >= min_events
        auc: float | None = None
        ci: tuple[float | None, float | None] = (None, None)
        slope: float | None = None
        intercept: float | None = None
        citl: float | None = None
        ratio: float | None = None
        if eligible:
            auc = auroc(y_g, p_g)
            if n_boot > 0:
                ci = bootstrap_auroc_ci(
                    y_g,
                    p_g,
                    n_boot=n_boot,
                    seed=seed,
                    groups=None if c_arr is None else c_arr[mask],
                )
            try:
                slope, intercept = calibration_slope_intercept(y_g, p_g)
            except ValueError:
                slope, intercept = None, None
            citl = calibration_in_the_large(y_g, p_g)
            ratio = observed_expected(y_g, p_g)
        out.append(
            {
                "level": str(level),
                "n": n,
                "positives": positives,
                "auroc": auc,
                "auroc_ci_low": ci[0],
                "auroc_ci_high": ci[1],
                "calibration_slope": slope,
                "calibration_intercept": intercept,
                "calibration_in_the_large": citl,
                "observed_expected": ratio,
                "mean_predicted": float(np.mean(p_g)),
                "observed_rate": positives / n,
                "suppressed": not eligible,
            }
        )
    return out
