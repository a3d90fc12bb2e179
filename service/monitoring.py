"""Live validation (issue 13 part 2): how a model version performs on the outcomes recorded for
its own predictions, overall and per manifest subgroup, beside the manifest's validation figures.

Everything is numpy: scikit-learn and scipy are training-only (the service image has neither).
AUROC is the rank (Mann-Whitney) statistic with DeLong's variance (fast midrank form, Sun & Xu
2014); calibration slope and intercept are the joint logistic fit ``logit P(y) = a + b logit(p)``
(as the manifest's, training/metrics.py), calibration-in-the-large the intercept with ``b`` fixed
at 1; both by Newton steps, with Wald CIs from the inverse information.

Counts come from SQL aggregation; only (probability, outcome, subgroups) of predictions with a
known outcome leave the database.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from prometheus_client import Gauge

from models.manifest import Manifest, SubgroupMetrics, ValidationSummary
from service.audit import audit_records
from service.outcomes import outcomes

Z95 = 1.959963984540054
DEFAULT_MIN_GROUP = 50

# NOTE: labels come from a closed set: model and version from the registry, subgroup keys and
# metric names from the manifest and this module; never a caller's text.
LIVE = Gauge(
    "clinrisk_live_validation",
    "Live validation figures on recorded outcomes (all time), per model version and subgroup.",
    ["model", "version", "subgroup", "metric"],
)

Array = npt.NDArray[np.float64]


# --- subgroup membership ---------------------------------------------------------------------


def subgroup_key(group: SubgroupMetrics) -> str:
    """``factor=level``: unique within a manifest; commas (the stored separator) replaced."""
    return f"{group.factor}={group.level}".replace(",", ";")


def _as_category(value: float | str) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _member(group: SubgroupMetrics, values: Mapping[str, float | str | None]) -> bool:
    value = values.get(group.feature) if group.feature else None
    if value is None:
        return False
    if group.categories:
        return _as_category(value) in group.categories
    if isinstance(value, str):
        return False
    if group.minimum is not None and value < group.minimum:
        return False
    return not (group.maximum is not None and value >= group.maximum)


def subgroups_of(manifest: Manifest, values: Mapping[str, float | str | None]) -> str | None:
    """The keys of the manifest subgroups a validated input belongs to, comma-separated (None:
    the manifest defines no membership). Subgroups without a ``feature`` cannot be placed."""
    if manifest.validation is None:  # an equation-based model may ship without one
        return None
    groups = [g for g in manifest.validation.subgroups if g.feature]
    if not groups:
        return None
    return ",".join(subgroup_key(g) for g in groups if _member(g, values))


# --- statistics ------------------------------------------------------------------------------


def _midrank(x: Array) -> Array:
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    _, first, counts = np.unique(sorted_x, return_index=True, return_counts=True)
    mid = first + (counts + 1) / 2.0  # 1-based average rank of each distinct value
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(mid, counts)
    return ranks


def auroc_delong(y: npt.NDArray[np.int8], p: Array) -> tuple[float, float, float] | None:
    """AUROC with its 95% DeLong CI; None without both classes."""
    pos, neg = p[y == 1], p[y == 0]
    m, n = pos.size, neg.size
    if m < 2 or n < 2:
        return None
    tz = _midrank(np.concatenate([pos, neg]))
    tx, ty = _midrank(pos), _midrank(neg)
    auc = float((tz[:m].sum() / m - (m + 1) / 2.0) / n)
    v01 = (tz[:m] - tx) / n
    v10 = 1.0 - (tz[m:] - ty) / m
    se = math.sqrt(float(np.var(v01, ddof=1)) / m + float(np.var(v10, ddof=1)) / n)
    return auc, max(0.0, auc - Z95 * se), min(1.0, auc + Z95 * se)


def _logit(p: Array) -> Array:
    q = np.clip(p, 1e-12, 1 - 1e-12)
    return np.asarray(np.log(q / (1 - q)), dtype=np.float64)


def _newton(y: Array, design: Array, offset: Array, start: Array) -> tuple[Array, Array] | None:
    """Unpenalised logistic regression by Newton steps (with step halving): coefficients and
    covariance; None when it does not converge (separation, a constant predictor)."""
    beta = start.astype(np.float64)

    def loglik(b: Array) -> float:
        eta = offset + design @ b
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)))

    current = loglik(beta)
    for _ in range(50):
        eta = offset + design @ beta
        mu = 1.0 / (1.0 + np.exp(-eta))
        w = mu * (1 - mu)
        info = design.T @ (design * w[:, None])
        try:
            step = np.linalg.solve(info, design.T @ (y - mu))
        except np.linalg.LinAlgError:
            return None
        scale = 1.0
        while scale > 1e-6:
            candidate = beta + scale * step
            value = loglik(candidate)
            if value >= current - 1e-12:
                break
            scale /= 2
        beta, previous, current = candidate, current, value
        if abs(current - previous) < 1e-10 and float(np.max(np.abs(scale * step))) < 1e-8:
            break
    eta = offset + design @ beta
    mu = 1.0 / (1.0 + np.exp(-eta))
    info = design.T @ (design * (mu * (1 - mu))[:, None])
    try:
        covariance = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(beta)) or float(np.max(np.abs(beta))) > 50:
        return None
    return beta, np.asarray(covariance, dtype=np.float64)


def _estimate(value: float, se: float) -> dict[str, float]:
    return {"value": value, "ci_low": value - Z95 * se, "ci_high": value + Z95 * se}


def calibration(y: Array, p: Array) -> dict[str, dict[str, float] | None]:
    """Joint slope and intercept, and calibration-in-the-large, each with a 95% Wald CI."""
    lp = _logit(p)
    out: dict[str, dict[str, float] | None] = {
        "calibration_slope": None,
        "calibration_intercept": None,
        "calibration_in_the_large": None,
    }
    joint = _newton(
        y, np.column_stack([np.ones_like(lp), lp]), np.zeros_like(lp), np.array([0.0, 1.0])
    )
    if joint is not None:
        beta, cov = joint
        out["calibration_intercept"] = _estimate(float(beta[0]), math.sqrt(cov[0, 0]))
        out["calibration_slope"] = _estimate(float(beta[1]), math.sqrt(cov[1, 1]))
    large = _newton(y, np.ones((lp.size, 1)), lp, np.array([0.0]))
    if large is not None:
        beta, cov = large
        out["calibration_in_the_large"] = _estimate(float(beta[0]), math.sqrt(cov[0, 0]))
    return out


def _wilson(k: int, n: int) -> dict[str, float] | None:
    if n == 0:
        return None
    phat = k / n
    denom = 1 + Z95**2 / n
    centre = (phat + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(phat * (1 - phat) / n + Z95**2 / (4 * n * n)) / denom
    return {"value": phat, "ci_low": max(0.0, centre - half), "ci_high": min(1.0, centre + half)}


def figures(
    y: npt.NDArray[np.int8], p: Array, thresholds: Sequence[tuple[str, float]]
) -> dict[str, Any]:
    """Every live figure for one group with known outcomes."""
    yf = y.astype(np.float64)
    observed, expected = float(yf.sum()), float(p.sum())
    auc = auroc_delong(y, p)
    oe: dict[str, float] | None = None
    if observed > 0 and expected > 0:
        # Poisson on the observed count, on the log scale.
        ratio, se = observed / expected, 1 / math.sqrt(observed)
        oe = {
            "value": ratio,
            "ci_low": ratio * math.exp(-Z95 * se),
            "ci_high": ratio * math.exp(Z95 * se),
        }
    tiers = []
    positives = int(yf.sum())
    for name, threshold in thresholds:
        flagged = p >= threshold
        true_pos = int(np.sum(flagged & (y == 1)))
        tiers.append(
            {
                "tier": name,
                "threshold": threshold,
                "sensitivity": _wilson(true_pos, positives),
                "ppv": _wilson(true_pos, int(flagged.sum())),
            }
        )
    return {
        "auroc": None if auc is None else {"value": auc[0], "ci_low": auc[1], "ci_high": auc[2]},
        **calibration(yf, p),
        "observed_expected": oe,
        "brier": float(np.mean((p - yf) ** 2)),
        "observed_rate": observed / y.size,
        "mean_predicted": expected / y.size,
        "tiers": tiers,
    }


# --- judgement -------------------------------------------------------------------------------


def _judge(live: dict[str, float] | None, reference: float | None, ideal: float | None) -> str:
    """ "worse than validation" when the live CI excludes the validation value on the bad side:
    lower for AUROC, sensitivity and PPV (``ideal`` None); further from ``ideal`` for the
    calibration figures."""
    if live is None or reference is None:
        return "not comparable"
    if live["ci_low"] <= reference <= live["ci_high"]:
        return "consistent with validation"
    if ideal is None:
        worse = live["ci_high"] < reference
    else:
        worse = abs(live["value"] - ideal) > abs(reference - ideal)
    return "worse than validation" if worse else "better than validation"


def _compare(live: dict[str, Any], reference: dict[str, float | None]) -> dict[str, Any]:
    ideal: dict[str, float | None] = {
        "auroc": None,
        "calibration_slope": 1.0,
        "calibration_intercept": 0.0,
        "observed_expected": 1.0,
    }
    out: dict[str, Any] = {}
    for metric, value in reference.items():
        out[metric] = {
            "validation": value,
            "judgement": _judge(live.get(metric), value, ideal.get(metric)),
        }
    return out


def _manifest_expected_ratio(test: ValidationSummary) -> float | None:
    bins = test.calibration_bins
    expected = sum(b.mean_predicted * b.n for b in bins)
    observed = sum(b.observed_rate * b.n for b in bins)
    return observed / expected if expected > 0 else None


# --- the report ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    since: datetime | None = None
    until: datetime | None = None


def _scope(query: sa.Select[Any], manifest: Manifest, window: Window) -> sa.Select[Any]:
    query = query.where(
        audit_records.c.model_name == manifest.name,
        audit_records.c.model_version == manifest.version,
        audit_records.c.status == "scored",
    )
    if window.since is not None:
        query = query.where(audit_records.c.created_at >= window.since)
    if window.until is not None:
        query = query.where(audit_records.c.created_at < window.until)
    return query


def fetch(
    connection: sa.Connection, manifest: Manifest, window: Window
) -> tuple[dict[str | None, tuple[int, int]], dict[str | None, tuple[Array, npt.NDArray[np.int8]]]]:
    """Counts (predictions, outcomes known) per stored subgroup label, by SQL aggregation; and the
    (probability, outcome) pairs of the predictions with an outcome, per label."""
    joined = audit_records.outerjoin(
        outcomes, outcomes.c.prediction_id == audit_records.c.prediction_id
    )
    counted = _scope(
        sa.select(
            audit_records.c.subgroups,
            sa.func.count(),
            sa.func.count(outcomes.c.prediction_id),
        ).select_from(joined),
        manifest,
        window,
    ).group_by(audit_records.c.subgroups)
    counts = {row[0]: (int(row[1]), int(row[2])) for row in connection.execute(counted)}
    pairs_query = _scope(
        sa.select(
            audit_records.c.subgroups, audit_records.c.probability, outcomes.c.outcome
        ).select_from(
            audit_records.join(outcomes, outcomes.c.prediction_id == audit_records.c.prediction_id)
        ),
        manifest,
        window,
    )
    rows = connection.execute(pairs_query).all()
    pairs: dict[str | None, tuple[Array, npt.NDArray[np.int8]]] = {}
    if rows:
        labels, probabilities, outcome_values = zip(*rows, strict=True)
        p_all = np.asarray(probabilities, dtype=np.float64)
        y_all = np.asarray(outcome_values, dtype=np.int8)
        label_arr = np.asarray(labels, dtype=object)
        for label in set(labels):
            mask = label_arr == label
            pairs[label] = (p_all[mask], y_all[mask])
    return counts, pairs


def report(
    connection: sa.Connection,
    manifest: Manifest,
    window: Window = Window(),
    *,
    min_group: int = DEFAULT_MIN_GROUP,
) -> dict[str, Any]:
    """Live figures for one model version beside its validation figures (JSON-ready)."""
    counts, pairs = fetch(connection, manifest, window)
    # A tier flags a patient from its lower bound on (the thresholds the manifest validated).
    thresholds = [(t.name, t.lower) for t in manifest.tiers if t.lower > 0]
    validation = manifest.validation

    def group(
        labels: Sequence[str | None], reference: dict[str, float | None], tier_ref: dict[str, Any]
    ) -> dict[str, Any]:
        predictions = sum(counts.get(label, (0, 0))[0] for label in labels)
        known = sum(counts.get(label, (0, 0))[1] for label in labels)
        parts = [pairs[label] for label in labels if label in pairs]
        out: dict[str, Any] = {"predictions": predictions, "outcomes_known": known}
        if known < min_group:
            out["suppressed"] = True
            out["reason"] = f"fewer than {min_group} predictions with a known outcome"
            return out
        p = np.concatenate([part[0] for part in parts])
        y = np.concatenate([part[1] for part in parts])
        live = figures(y, p, thresholds)
        comparison = _compare(live, reference)
        for tier in live["tiers"]:
            ref = tier_ref.get(tier["tier"], {})
            tier["validation"] = ref
            tier["judgement"] = {
                k: _judge(tier[k], ref.get(k), None) for k in ("sensitivity", "ppv")
            }
        out.update(suppressed=False, positives=int(y.sum()), live=live, validation=comparison)
        out["worse_than_validation"] = sorted(
            [k for k, v in comparison.items() if v["judgement"] == "worse than validation"]
            + [
                f"{t['tier']}.{k}"
                for t in live["tiers"]
                for k, j in t["judgement"].items()
                if j == "worse than validation"
            ]
        )
        return out

    all_labels = list(counts)
    tier_ref = {
        t.tier: {"sensitivity": t.sensitivity, "ppv": t.ppv}
        for t in (validation.tiers if validation is not None else [])
    }
    test = validation.test if validation is not None else None
    overall = group(
        all_labels,
        {
            "auroc": test.auroc if test else None,
            "calibration_slope": test.calibration_slope if test else None,
            "calibration_intercept": test.calibration_intercept if test else None,
            "observed_expected": _manifest_expected_ratio(test) if test else None,
        },
        tier_ref,
    )
    subgroups = []
    for sub in validation.subgroups if validation is not None else []:
        key = subgroup_key(sub)
        entry: dict[str, Any] = {"key": key, "factor": sub.factor, "level": sub.level}
        if not sub.feature:
            entry.update(
                suppressed=True,
                reason="the manifest does not say which inputs place a patient in this subgroup",
            )
        else:
            members = [
                label for label in all_labels if label is not None and key in label.split(",")
            ]
            entry.update(
                group(
                    members,
                    {
                        "auroc": sub.auroc,
                        "calibration_slope": sub.calibration_slope,
                        "calibration_intercept": sub.calibration_intercept,
                        "observed_expected": (
                            sub.observed_rate / sub.mean_predicted if sub.mean_predicted else None
                        ),
                    },
                    {},
                )
            )
        subgroups.append(entry)
    return {
        "model": {"name": manifest.name, "version": manifest.version},
        "window": {"since": window.since, "until": window.until},
        "minimum_group_size": min_group,
        "overall": overall,
        "subgroups": subgroups,
        "methods": {
            "auroc": "rank (Mann-Whitney) statistic, 95% CI by DeLong's variance",
            "calibration": (
                "slope and intercept: joint logistic fit logit P(y) = a + b logit(p), as in the "
                "manifest; calibration-in-the-large: a with b fixed at 1; 95% Wald CIs"
            ),
            "observed_expected": "observed events / sum of predicted risks, 95% CI Poisson",
            "tiers": "p >= the tier's threshold; 95% Wilson CIs",
            "judgement": (
                "'worse than validation' when the live 95% CI excludes the validation value "
                "on the worse side"
            ),
        },
    }


def export(result: dict[str, Any]) -> None:
    """Set the Prometheus gauges from a report over all time."""
    model, version = result["model"]["name"], result["model"]["version"]
    for key, group in [("all", result["overall"])] + [(g["key"], g) for g in result["subgroups"]]:
        LIVE.labels(model, version, key, "predictions").set(group.get("predictions", 0))
        LIVE.labels(model, version, key, "outcomes_known").set(group.get("outcomes_known", 0))
        if group.get("suppressed", True):
            continue
        live = group["live"]
        for metric in ("auroc", "calibration_slope", "calibration_intercept", "observed_expected"):
            if live[metric] is not None:
                LIVE.labels(model, version, key, metric).set(live[metric]["value"])
        LIVE.labels(model, version, key, "brier").set(live["brier"])
        LIVE.labels(model, version, key, "worse_than_validation").set(
            len(group["worse_than_validation"])
        )
