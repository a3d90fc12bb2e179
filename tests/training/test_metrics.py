from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.special import expit
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from training import metrics
from training.metrics import (
    auprc,
    auroc,
    bootstrap_auroc_ci,
    brier,
    calibration_bins,
    calibration_in_the_large,
    calibration_slope_intercept,
    expected_calibration_error,
    net_benefit,
    observed_expected,
    paired_bootstrap_auroc_difference,
    subgroup_metrics,
    summarize,
    threshold_for_sensitivity,
    threshold_metrics,
)


def _synthetic(n: int, seed: int, *, signal: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Perfectly calibrated data: y ~ Bernoulli(p)."""
    rng = np.random.default_rng(seed)
    p = expit(-1.0 + signal * rng.normal(size=n))
    y = (rng.random(n) < p).astype(np.int64)
    return y, p


# Hand-computed example (8 rows, 3 positives).
Y_TINY = np.array([1, 1, 1, 0, 0, 0, 0, 0])
P_TINY = np.array([0.9, 0.6, 0.3, 0.7, 0.2, 0.1, 0.4, 0.05])


def test_auroc_auprc_brier_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=500)
    p = np.clip(0.3 * y + rng.random(500) * 0.7, 0.001, 0.999)
    p[:50] = np.round(p[:50], 1)  # some ties
    assert auroc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert auprc(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert brier(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert isinstance(auroc(y, p), float)


def test_single_class_is_an_error() -> None:
    with pytest.raises(ValueError, match="single class"):
        auroc(np.ones(5, dtype=int), np.linspace(0.1, 0.9, 5))
    with pytest.raises(ValueError):
        auroc(np.array([0, 1, 2]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError):
        auroc(np.array([0, 1]), np.array([0.1, 1.2]))


def test_weighted_auroc_matches_sklearn_on_expanded_resample() -> None:
    rng = np.random.default_rng(7)
    n = 300
    y = rng.integers(0, 2, size=n)
    p = np.round(np.clip(0.2 * y + 0.8 * rng.random(n), 0.01, 0.99), 2)  # many ties
    structure = metrics._RankStructure(y.astype(np.int64), p.astype(np.float64))
    counts = metrics._bootstrap_counts(rng, n, 5)[0]
    got = structure.aurocs(counts)
    for row, value in zip(counts, got, strict=True):
        reps = row.astype(int)
        expected = roc_auc_score(np.repeat(y, reps), np.repeat(p, reps))
        assert value == pytest.approx(expected, abs=1e-12)


def test_bootstrap_ci_contains_estimate_and_narrows_with_n() -> None:
    y_small, p_small = _synthetic(400, 2)
    y_big, p_big = _synthetic(20_000, 3)
    lo_s, hi_s = bootstrap_auroc_ci(y_small, p_small, n_boot=500, seed=0)
    lo_b, hi_b = bootstrap_auroc_ci(y_big, p_big, n_boot=500, seed=0)
    assert lo_s <= auroc(y_small, p_small) <= hi_s
    assert lo_b <= auroc(y_big, p_big) <= hi_b
    assert (hi_b - lo_b) < 0.5 * (hi_s - lo_s)
    # reproducible for a fixed seed
    assert bootstrap_auroc_ci(y_small, p_small, n_boot=500, seed=0) == (lo_s, hi_s)


def test_bootstrap_skips_single_class_resamples() -> None:
    y = np.array([1] + [0] * 9)
    p = np.linspace(0.1, 0.9, 10)
    lo, hi = bootstrap_auroc_ci(y, p, n_boot=200, seed=3)
    assert 0.0 <= lo <= hi <= 1.0


def test_perfect_calibration() -> None:
    y, p = _synthetic(200_000, 5)
    slope, intercept = calibration_slope_intercept(y, p)
    assert slope == pytest.approx(1.0, abs=0.05)
    assert intercept == pytest.approx(0.0, abs=0.05)
    assert expected_calibration_error(y, p) < 0.01


def test_calibration_slope_recovers_known_miscalibration() -> None:
    rng = np.random.default_rng(6)
    lp = rng.normal(-1.0, 1.0, size=100_000)
    y = (rng.random(lp.size) < expit(lp)).astype(int)
    p_overconfident = expit(2.0 * lp)  # true model: logit P = 0.5 * logit(p)
    slope, intercept = calibration_slope_intercept(y, p_overconfident)
    assert slope == pytest.approx(0.5, abs=0.03)
    assert intercept == pytest.approx(0.0, abs=0.05)


def test_calibration_fit_matches_sklearn_unpenalised_logistic_regression() -> None:
    from sklearn.linear_model import LogisticRegression

    y, p = _synthetic(5000, 8, signal=1.5)
    x = np.log(p / (1 - p)).reshape(-1, 1)
    model = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(x, y)
    slope, intercept = calibration_slope_intercept(y, p)
    assert slope == pytest.approx(float(model.coef_[0, 0]), abs=1e-4)
    assert intercept == pytest.approx(float(model.intercept_[0]), abs=1e-4)


def test_calibration_fit_degenerate_inputs() -> None:
    with pytest.raises(ValueError):
        calibration_slope_intercept(np.array([0, 1, 0, 1]), np.full(4, 0.3))
    with pytest.raises(ValueError):  # perfect separation: no MLE
        calibration_slope_intercept(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]))


def test_calibration_bins_equal_count() -> None:
    y, p = _synthetic(1005, 9)
    bins = calibration_bins(y, p, n_bins=10)
    assert len(bins) == 10
    assert sum(b["n"] for b in bins) == 1005
    assert {b["n"] for b in bins} == {100, 101}
    means = [b["mean_predicted"] for b in bins]
    assert means == sorted(means)
    assert len(calibration_bins(y[:4], p[:4], n_bins=10)) == 4


def test_ece_hand_example() -> None:
    # two bins of two rows: p sorted [0.1, 0.2 | 0.6, 0.8]; y [0, 1 | 1, 1]
    y = np.array([1, 0, 1, 1])
    p = np.array([0.2, 0.1, 0.8, 0.6])
    bins = calibration_bins(y, p, n_bins=2)
    assert bins[0] == {"mean_predicted": pytest.approx(0.15), "observed_rate": 0.5, "n": 2}
    assert bins[1] == {"mean_predicted": pytest.approx(0.7), "observed_rate": 1.0, "n": 2}
    # 0.5 * |0.15 - 0.5| + 0.5 * |0.7 - 1.0| = 0.175 + 0.15
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.325)


def test_threshold_metrics_hand_example() -> None:
    # p >= 0.5 flags 0.9 (y=1), 0.6 (y=1), 0.7 (y=0): TP=2, FP=1, FN=1, TN=4
    m = threshold_metrics(Y_TINY, P_TINY, 0.5)
    assert m == {
        "threshold": 0.5,
        "sensitivity": pytest.approx(2 / 3),
        "specificity": pytest.approx(4 / 5),
        "ppv": pytest.approx(2 / 3),
        "npv": pytest.approx(4 / 5),
        "flagged_fraction": pytest.approx(3 / 8),
    }
    # threshold at a tie with a prediction flags it (p >= t): 0.3 adds the third positive
    m = threshold_metrics(Y_TINY, P_TINY, 0.3)
    assert m["sensitivity"] == 1.0
    assert m["specificity"] == pytest.approx(3 / 5)
    assert m["ppv"] == pytest.approx(3 / 5)
    assert m["npv"] == 1.0
    assert m["flagged_fraction"] == pytest.approx(5 / 8)
    # nobody flagged: PPV undefined
    m = threshold_metrics(Y_TINY, P_TINY, 0.95)
    assert m["ppv"] is None
    assert m["sensitivity"] == 0.0
    assert m["specificity"] == 1.0
    assert m["npv"] == pytest.approx(5 / 8)
    assert m["flagged_fraction"] == 0.0
    # everybody flagged: NPV undefined
    m = threshold_metrics(Y_TINY, P_TINY, 0.0)
    assert m["npv"] is None
    assert m["ppv"] == pytest.approx(3 / 8)
    # no negatives: specificity undefined
    assert threshold_metrics(np.array([1, 1]), np.array([0.2, 0.8]), 0.5)["specificity"] is None


def test_threshold_for_sensitivity_hand_example() -> None:
    # positive predictions, descending: 0.9, 0.6, 0.3
    assert threshold_for_sensitivity(Y_TINY, P_TINY, 1.0) == 0.3
    assert threshold_for_sensitivity(Y_TINY, P_TINY, 2 / 3) == 0.6
    assert threshold_for_sensitivity(Y_TINY, P_TINY, 0.5) == 0.6
    assert threshold_for_sensitivity(Y_TINY, P_TINY, 0.3) == 0.9
    # float edge: 4/5 of 5 positives must need exactly 4
    y = np.array([1, 1, 1, 1, 1, 0])
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.1])
    assert threshold_for_sensitivity(y, p, 0.8) == 0.6
    with pytest.raises(ValueError):
        threshold_for_sensitivity(Y_TINY, P_TINY, 0.0)


def test_threshold_for_sensitivity_is_largest() -> None:
    y, p = _synthetic(2000, 10)
    for target in (0.5, 0.8, 0.9, 0.95):
        t = threshold_for_sensitivity(y, p, target)
        sens_at = threshold_metrics(y, p, t)["sensitivity"]
        sens_above = threshold_metrics(y, p, float(np.nextafter(t, 1.0)))["sensitivity"]
        assert sens_at is not None and sens_above is not None
        assert sens_at >= target
        assert sens_above < target


def test_summarize_is_json_serialisable_plain_python() -> None:
    y, p = _synthetic(3000, 11)
    s = summarize(y, p, seed=0, n_boot=200)
    assert set(s) == {
        "n",
        "positives",
        "prevalence",
        "auroc",
        "auroc_ci_low",
        "auroc_ci_high",
        "auprc",
        "brier",
        "calibration_slope",
        "calibration_intercept",
        "calibration_in_the_large",
        "observed_expected",
        "ece",
        "calibration_bins",
    }
    json.dumps(s)
    for key, value in s.items():
        if key == "calibration_bins":
            continue
        assert type(value) in (int, float), key
    assert type(s["n"]) is int and type(s["positives"]) is int
    for b in s["calibration_bins"]:
        assert type(b["n"]) is int and type(b["mean_predicted"]) is float
    assert s["n"] == 3000
    assert s["auroc_ci_low"] <= s["auroc"] <= s["auroc_ci_high"]
    assert s["auroc"] == pytest.approx(roc_auc_score(y, p))


def test_subgroup_metrics() -> None:
    y, p = _synthetic(2000, 12)
    groups = np.array(["a"] * 1500 + ["b"] * 480 + ["tiny"] * 20, dtype=object)
    rows = subgroup_metrics(y, p, groups)
    json.dumps(rows)
    by_level = {r["level"]: r for r in rows}
    assert [r["level"] for r in rows] == ["a", "b", "tiny"]
    assert by_level["a"]["n"] == 1500
    assert by_level["a"]["auroc"] == pytest.approx(roc_auc_score(y[:1500], p[:1500]))
    assert by_level["a"]["calibration_slope"] is not None
    assert by_level["b"]["auroc"] is not None
    tiny = by_level["tiny"]
    assert tiny["n"] == 20
    assert tiny["auroc"] is None
    assert tiny["calibration_slope"] is None
    assert tiny["calibration_intercept"] is None
    assert tiny["mean_predicted"] == pytest.approx(float(np.mean(p[-20:])))
    assert tiny["observed_rate"] == pytest.approx(float(np.mean(y[-20:])))


def test_subgroup_min_events() -> None:
    y = np.array([1] * 4 + [0] * 96)
    p = np.linspace(0.01, 0.5, 100)
    (row,) = subgroup_metrics(y, p, np.array(["x"] * 100))
    assert row["positives"] == 4
    assert row["auroc"] is None
    (row,) = subgroup_metrics(y, p, np.array(["x"] * 100), min_events=4)
    assert row["auroc"] is not None


def test_paired_bootstrap_difference() -> None:
    rng = np.random.default_rng(13)
    y, p_good = _synthetic(3000, 14, signal=1.5)
    p_noise = expit(rng.normal(-1.0, 1.0, size=y.size))
    result = paired_bootstrap_auroc_difference(y, p_good, p_noise, n_boot=500, seed=0)
    json.dumps(result)
    expected = roc_auc_score(y, p_good) - roc_auc_score(y, p_noise)
    assert result["difference"] == pytest.approx(expected)
    assert result["ci_low"] <= result["difference"] <= result["ci_high"]
    assert result["ci_low"] > 0
    assert result["p_value"] < 0.01

    same = paired_bootstrap_auroc_difference(y, p_good, p_good, n_boot=200, seed=0)
    assert same == {"difference": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0}

    swapped = paired_bootstrap_auroc_difference(y, p_noise, p_good, n_boot=500, seed=0)
    assert swapped["difference"] == pytest.approx(-result["difference"])
    assert swapped["p_value"] == pytest.approx(result["p_value"])


def test_calibration_in_the_large_has_the_slope_fixed_at_one() -> None:
    """With a constant prediction q and observed rate r, CITL = logit(r) - logit(q)."""
    y = np.array([1] * 30 + [0] * 70)
    p = np.full(100, 0.2)
    expected = math.log(0.3 / 0.7) - math.log(0.2 / 0.8)
    assert calibration_in_the_large(y, p) == pytest.approx(expected, abs=1e-9)
    # Predictions too high on average give a negative value.
    assert calibration_in_the_large(y, np.full(100, 0.5)) < 0
    assert observed_expected(y, p) == pytest.approx(30 / 20)


def test_net_benefit_by_hand() -> None:
    # 10 patients, 3 events; at t = 0.25, 4 flagged of which 2 events: 2/10 - 2/10 * (1/3).
    y = np.array([1, 1, 0, 0, 1, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.5, 0.4, 0.3, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05])
    model, treat_all = net_benefit(y, p, 0.25)
    assert model == pytest.approx(0.2 - 0.2 / 3)
    assert treat_all == pytest.approx(0.3 - 0.7 / 3)
    with pytest.raises(ValueError, match="threshold"):
        net_benefit(y, p, 1.0)


def test_cluster_bootstrap_widens_the_interval_when_patients_repeat() -> None:
    """Ten copies of each patient: a row bootstrap treats them as 10x the data, the cluster
    bootstrap as what they are, so its interval is about sqrt(10) times wider."""
    y, p = _synthetic(400, 21)
    y10, p10 = np.repeat(y, 10), np.repeat(p, 10)
    patients = np.repeat(np.arange(400), 10)
    rows = bootstrap_auroc_ci(y10, p10, n_boot=400, seed=0)
    clusters = bootstrap_auroc_ci(y10, p10, n_boot=400, seed=0, groups=patients)
    single = bootstrap_auroc_ci(y, p, n_boot=400, seed=0)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(clusters) > 2.5 * width(rows)
    assert width(clusters) == pytest.approx(width(single), rel=0.3)


def test_subgroup_figures_carry_intervals_and_are_suppressed_below_the_minimum() -> None:
    y, p = _synthetic(2000, 22)
    groups = np.where(np.arange(2000) < 1900, "big", "small")
    y[1900:] = 0
    y[1900:1908] = 1  # 8 events in the small group
    rows = {r["level"]: r for r in subgroup_metrics(y, p, groups, min_events=10, n_boot=200)}
    big, small = rows["big"], rows["small"]
    assert not big["suppressed"]
    assert big["auroc_ci_low"] < big["auroc"] < big["auroc_ci_high"]
    assert big["calibration_in_the_large"] is not None and big["observed_expected"] is not None
    assert small["suppressed"] and small["positives"] == 8
    assert small["auroc"] is None and small["auroc_ci_low"] is None
    assert small["calibration_in_the_large"] is None and small["observed_expected"] is None
