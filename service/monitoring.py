"""Live validation (issue 13 part 2): how a model version performs on the outcomes recorded for
its own predictions, overall and per manifest subgroup, beside the manifest's validation figures.

Everything is numpy on database aggregates: scikit-learn and scipy are training-only (the
service image has neither). AUROC is the rank (Mann-Whitney) statistic with DeLong's variance,
from counts per risk bin (service/risk_bins.py); calibration slope and intercept are the joint
logistic fit ``logit P(y) = a + b logit(p)`` (as the manifest's, training/metrics.py),
calibration-in-the-large the intercept with ``b`` fixed at 1; both by Newton steps on the binned
counts, with Wald CIs from the inverse information.

Predictions are counted per stored subgroup label on the audit trail; outcomes are read from
the counts kept per group and risk bin as they are recorded (service/outcome_counts.py), the
partial days at a window's ends from the outcome rows. No row per prediction leaves the
database.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from prometheus_client import Gauge

from models.applicability import subgroup_key
from models.manifest import Manifest, ValidationSummary
from service.audit import audit_records
from service.outcome_counts import ALL, as_utc, groups, read
from service.outcomes import outcomes
from service.risk_bins import RISK_BIN_WIDTH, risk_bin

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


# --- statistics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Binned:
    """Predictions with known outcomes, summarised: counts per risk bin and exact sums."""

    bins: npt.NDArray[np.int64]
    n: Array
    events: Array
    sum_p: float
    sum_pp: float
    sum_py: float
    flagged: Array
    """Per tier threshold: predictions at or above it."""
    true_positives: Array

    @property
    def total(self) -> int:
        return int(self.n.sum())

    @classmethod
    def merge(cls, parts: Sequence[Binned], tiers: int) -> Binned:
        if not parts:
            empty = np.zeros(0)
            return cls(
                np.zeros(0, np.int64), empty, empty, 0, 0, 0, np.zeros(tiers), np.zeros(tiers)
            )
        bins, inverse = np.unique(np.concatenate([p.bins for p in parts]), return_inverse=True)
        return cls(
            bins=bins,
            n=np.bincount(inverse, np.concatenate([p.n for p in parts]), bins.size).astype(
                np.float64
            ),
            events=np.bincount(
                inverse, np.concatenate([p.events for p in parts]), bins.size
            ).astype(np.float64),
            sum_p=sum(p.sum_p for p in parts),
            sum_pp=sum(p.sum_pp for p in parts),
            sum_py=sum(p.sum_py for p in parts),
            flagged=np.sum([p.flagged for p in parts], axis=0),
            true_positives=np.sum([p.true_positives for p in parts], axis=0),
        )


def without(whole: Binned, part: Binned) -> Binned:
    """``whole`` less ``part`` (outcomes counted in both): a window's partial day read as its
    whole day's counts less the rest of the day, when the rest is the smaller part. Counts stay
    exact; bins left empty are dropped, as a query over the rows never returns them."""
    bins = np.union1d(whole.bins, part.bins)

    def spread(data: Binned, values: Array) -> Array:
        out = np.zeros(bins.size)
        out[np.searchsorted(bins, data.bins)] = values
        return out

    n = spread(whole, whole.n) - spread(part, part.n)
    events = spread(whole, whole.events) - spread(part, part.events)
    keep = n > 0
    return Binned(
        bins=bins[keep],
        n=n[keep],
        events=events[keep],
        sum_p=whole.sum_p - part.sum_p,
        sum_pp=whole.sum_pp - part.sum_pp,
        sum_py=whole.sum_py - part.sum_py,
        flagged=whole.flagged - part.flagged,
        true_positives=whole.true_positives - part.true_positives,
    )


def auroc_delong(data: Binned) -> tuple[float, float, float] | None:
    """AUROC (ties count half) with its 95% DeLong CI; None without two of each class.

    DeLong's structural components are the same for every patient in a bin, so the variance is
    a weighted one: V10 of an event in bin k is P(non-event below) + P(non-event in k) / 2, V01
    of a non-event likewise (DeLong, DeLong & Clarke-Pearson 1988)."""
    pos, neg = data.events, data.n - data.events
    m, n = float(pos.sum()), float(neg.sum())
    if m < 2 or n < 2:
        return None
    neg_below = np.cumsum(neg) - neg
    pos_above = m - np.cumsum(pos)
    v10 = (neg_below + neg / 2) / n
    v01 = (pos_above + pos / 2) / m
    auc = float(np.sum(pos * v10) / m)
    var10 = float(np.sum(pos * (v10 - auc) ** 2)) / (m - 1)
    var01 = float(np.sum(neg * (v01 - auc) ** 2)) / (n - 1)
    se = math.sqrt(var10 / m + var01 / n)
    return auc, max(0.0, auc - Z95 * se), min(1.0, auc + Z95 * se)


def _newton(
    events: Array, n: Array, design: Array, offset: Array, start: Array
) -> tuple[Array, Array] | None:
    """Binomial logistic regression (``events`` of ``n`` per row) by Newton steps with step
    halving: coefficients and covariance; None when it does not converge (separation)."""
    beta = start.astype(np.float64)

    def loglik(b: Array) -> float:
        eta = offset + design @ b
        return float(np.sum(events * eta - n * np.logaddexp(0.0, eta)))

    def information(b: Array) -> tuple[Array, Array]:
        # The logistic from exp(-|eta|): no overflow for the far-off linear predictors a Newton
        # step can try on (nearly) separated data (1 / (1 + exp(-eta)) overflowed there).
        eta = offset + design @ b
        e = np.exp(-np.abs(eta))
        mu = np.where(eta >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        info = design.T @ (design * (n * mu * (1 - mu))[:, None])
        return info, design.T @ (events - n * mu)

    current = loglik(beta)
    for _ in range(50):
        info, score = information(beta)
        try:
            step = np.linalg.solve(info, score)
        except np.linalg.LinAlgError:
            return None
        scale = 1.0
        candidate, value = beta + step, loglik(beta + step)
        while value < current - 1e-12 and scale > 1e-6:
            scale /= 2
            candidate = beta + scale * step
            value = loglik(candidate)
        beta, current = candidate, value
        # Newton converges quadratically: a handful of steps reach this from the identity.
        if float(np.max(np.abs(scale * step))) < 1e-8:
            break
    info, _ = information(beta)
    try:
        covariance = np.asarray(np.linalg.inv(info), dtype=np.float64)
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(beta)) or float(np.max(np.abs(beta))) > 50:
        return None
    return beta, covariance


def _estimate(value: float, se: float) -> dict[str, float]:
    return {"value": value, "ci_low": value - Z95 * se, "ci_high": value + Z95 * se}


def calibration(data: Binned) -> dict[str, dict[str, float] | None]:
    """Joint slope and intercept, and calibration-in-the-large, each with a 95% Wald CI."""
    lp = data.bins.astype(np.float64) * RISK_BIN_WIDTH
    out: dict[str, dict[str, float] | None] = {
        "calibration_slope": None,
        "calibration_intercept": None,
        "calibration_in_the_large": None,
    }
    if data.events.sum() == 0 or data.events.sum() == data.n.sum():
        return out
    design = np.column_stack([np.ones_like(lp), lp])
    joint = _newton(data.events, data.n, design, np.zeros_like(lp), np.array([0.0, 1.0]))
    if joint is not None:
        beta, cov = joint
        out["calibration_intercept"] = _estimate(float(beta[0]), math.sqrt(cov[0, 0]))
        out["calibration_slope"] = _estimate(float(beta[1]), math.sqrt(cov[1, 1]))
    large = _newton(data.events, data.n, np.ones((lp.size, 1)), lp, np.array([0.0]))
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


def figures(data: Binned, thresholds: Sequence[tuple[str, float]]) -> dict[str, Any]:
    """Every live figure for one group with known outcomes."""
    total = data.total
    observed, expected = float(data.events.sum()), data.sum_p
    auc = auroc_delong(data)
    oe: dict[str, float] | None = None
    if observed > 0 and expected > 0:
        # Poisson on the observed count, on the log scale.
        ratio, se = observed / expected, 1 / math.sqrt(observed)
        oe = {
            "value": ratio,
            "ci_low": ratio * math.exp(-Z95 * se),
            "ci_high": ratio * math.exp(Z95 * se),
        }
    tiers = [
        {
            "tier": name,
            "threshold": threshold,
            "sensitivity": _wilson(int(data.true_positives[i]), int(observed)),
            "ppv": _wilson(int(data.true_positives[i]), int(data.flagged[i])),
        }
        for i, (name, threshold) in enumerate(thresholds)
    ]
    return {
        "auroc": None if auc is None else {"value": auc[0], "ci_low": auc[1], "ci_high": auc[2]},
        **calibration(data),
        "observed_expected": oe,
        # sum (p - y)^2 = sum p^2 - 2 sum p y + sum y (y is 0 or 1)
        "brier": (data.sum_pp - 2 * data.sum_py + observed) / total,
        "observed_rate": observed / total,
        "mean_predicted": expected / total,
        "tiers": tiers,
    }


def calibration_curve(data: Binned, test: ValidationSummary) -> list[dict[str, Any]]:
    """Live observed rate per validation decile of predicted risk, beside the validation's.
    A live risk bin joins the decile of its centre (at most 0.0025 from any score in it on the
    logit scale); the mean predicted risk is that of the bin centres."""
    bins = test.calibration_bins
    uppers = np.array([b.upper if b.upper is not None else 1.0 for b in bins[:-1]])
    centre = 1.0 / (1.0 + np.exp(-data.bins.astype(np.float64) * RISK_BIN_WIDTH))
    decile = np.searchsorted(uppers, centre, side="left")
    n = np.bincount(decile, data.n, len(bins))
    events = np.bincount(decile, data.events, len(bins))
    predicted = np.bincount(decile, data.n * centre, len(bins))
    curve = []
    for i, ref in enumerate(bins):
        count = int(n[i])
        observed = _wilson(int(events[i]), count)
        curve.append(
            {
                "lower": ref.lower,
                "upper": ref.upper,
                "validation": {
                    "n": ref.n,
                    "mean_predicted": ref.mean_predicted,
                    "observed_rate": ref.observed_rate,
                    "ci_low": ref.observed_ci_low,
                    "ci_high": ref.observed_ci_high,
                },
                "live": {
                    "n": count,
                    "mean_predicted": float(predicted[i] / count) if count else None,
                    "observed_rate": observed["value"] if observed else None,
                    "ci_low": observed["ci_low"] if observed else None,
                    "ci_high": observed["ci_high"] if observed else None,
                },
            }
        )
    return curve


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


def _scope(query: sa.Select[Any], table: sa.Table, manifest: Manifest, window: Window) -> Any:
    time = table.c.created_at if table is audit_records else table.c.predicted_at
    query = query.where(
        table.c.model_name == manifest.name, table.c.model_version == manifest.version
    )
    if table is audit_records:
        query = query.where(table.c.status == "scored")
    if window.since is not None:
        query = query.where(time >= window.since)
    if window.until is not None:
        query = query.where(time < window.until)
    return query


def _by_group(labelled: dict[str | None, Binned], tiers: int) -> dict[str, Binned]:
    """Per-label summaries merged into :func:`service.outcome_counts.groups`: every outcome,
    and each subgroup key's labels."""
    parts: dict[str, list[Binned]] = {}
    for label, data in labelled.items():
        for group in groups(label):
            parts.setdefault(group, []).append(data)
    return {group: Binned.merge(items, tiers) for group, items in parts.items()}


def direct(
    connection: sa.Connection, manifest: Manifest, window: Window, thresholds: Sequence[float]
) -> dict[str, Binned]:
    """The known outcomes per group summarised from the outcome rows themselves: one query
    grouped by stored label and risk bin (~1 s at 1M outcomes on PostgreSQL). The window's
    partial days, and the reference the stored counts are tested against."""
    p, y = outcomes.c.probability, outcomes.c.outcome
    flagged = [sa.func.sum(sa.case((p >= t, 1), else_=0)) for t in thresholds]
    hits = [sa.func.sum(sa.case((p >= t, y), else_=0)) for t in thresholds]
    query = _scope(
        sa.select(
            outcomes.c.subgroups,
            outcomes.c.risk_bin,
            sa.func.count(),
            sa.func.sum(y),
            sa.func.sum(p),
            sa.func.sum(p * p),
            sa.func.sum(p * y),
            *flagged,
            *hits,
        ),
        outcomes,
        manifest,
        window,
    ).group_by(outcomes.c.subgroups, outcomes.c.risk_bin)
    rows: dict[str | None, list[Any]] = {}
    # .all(): one fetch of the ~(labels x bins) rows, not one call per row.
    for row in connection.execute(query).all():
        rows.setdefault(row[0], []).append(row[1:])
    k = len(thresholds)
    labelled: dict[str | None, Binned] = {}
    for label, values in rows.items():
        array = np.asarray(values, dtype=np.float64).reshape(-1, 6 + 2 * k)
        labelled[label] = Binned(
            bins=array[:, 0].astype(np.int64),
            n=array[:, 1],
            events=array[:, 2],
            sum_p=float(array[:, 3].sum()),
            sum_pp=float(array[:, 4].sum()),
            sum_py=float(array[:, 5].sum()),
            flagged=array[:, 6 : 6 + k].sum(axis=0),
            true_positives=array[:, 6 + k :].sum(axis=0),
        )
    return _by_group(labelled, k)


# A bin decides a tier flag (p >= t) unless it is within one bin of the threshold's: the bins
# are 0.005 wide on the logit scale, so any rounding in the logit is far inside that margin.
EDGE_BINS = 1


def _stored(
    connection: sa.Connection,
    manifest: Manifest,
    days: tuple[date | None, date | None] | None,
    thresholds: Sequence[float],
) -> dict[str, Binned]:
    """The known outcomes per group from the counts kept per risk bin (all time, or whole UTC
    days ``[first, end)``); tier flags of the outcomes next to a threshold from their rows."""
    rows = read(connection, manifest.name, manifest.version, days)
    k = len(thresholds)
    edges = [risk_bin(t) for t in thresholds]
    near: dict[str, Array] = {}
    if thresholds:
        p, y, b = outcomes.c.probability, outcomes.c.outcome, outcomes.c.risk_bin
        # Per threshold: (flagged, hits) among the outcomes in the bins next to it.
        sums = [
            sa.func.sum(sa.case(((b.between(e - EDGE_BINS, e + EDGE_BINS)) & (p >= t), v), else_=0))
            for t, e in zip(thresholds, edges, strict=True)
            for v in (sa.literal(1), y)
        ]
        bins = sorted({e + d for e in edges for d in range(-EDGE_BINS, EDGE_BINS + 1)})
        since = None if days is None or days[0] is None else _midnight(days[0])
        until = None if days is None or days[1] is None else _midnight(days[1])
        query = _scope(
            sa.select(outcomes.c.subgroups, *sums).where(b.in_(bins)),
            outcomes,
            manifest,
            Window(since, until),
        ).group_by(outcomes.c.subgroups)
        labelled = connection.execute(query).all()
        for label, *values in labelled:
            for group in groups(label):
                near[group] = near.get(group, np.zeros(2 * k)) + np.asarray(values, np.float64)
    out: dict[str, Binned] = {}
    # `read` orders the rows by group.
    for group, members in itertools.groupby(rows, key=operator.itemgetter(0)):
        array = np.asarray([r[1:] for r in members], dtype=np.float64)
        bins_, n, events = array[:, 0].astype(np.int64), array[:, 1], array[:, 2]
        counted = near.get(group, np.zeros(2 * k))
        above = [bins_ > e + EDGE_BINS for e in edges]
        out[group] = Binned(
            bins=bins_,
            n=n,
            events=events,
            sum_p=float(array[:, 3].sum()),
            sum_pp=float(array[:, 4].sum()),
            sum_py=float(array[:, 5].sum()),
            flagged=np.array([n[a].sum() + counted[2 * i] for i, a in enumerate(above)]),
            true_positives=np.array(
                [events[a].sum() + counted[2 * i + 1] for i, a in enumerate(above)]
            ),
        )
    return out


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _whole_days(window: Window) -> tuple[date | None, date | None] | None:
    """The UTC days wholly inside the window, ``[first, end)`` (None: unbounded); None when
    there is none (then the window is read from the outcome rows)."""
    first = end = None
    if window.since is not None:
        since = as_utc(window.since)
        first = since.date()
        if since != _midnight(first):
            if first == date.max:
                return None
            first += timedelta(days=1)
    if window.until is not None:
        end = as_utc(window.until).date()
    if first is not None and end is not None and first >= end:
        return None
    return first, end


def known_outcomes(
    connection: sa.Connection, manifest: Manifest, window: Window, thresholds: Sequence[float]
) -> dict[str, Binned]:
    """The known outcomes per group: the kept counts for all time or the window's whole UTC
    days; a partial day at either end from the outcome rows, either its part in the window or,
    when that is the smaller part, the whole day's counts less the rows of the rest of it."""
    k = len(thresholds)
    if window.since is None and window.until is None:
        return _stored(connection, manifest, None, thresholds)
    days = _whole_days(window)
    if days is None:
        return direct(connection, manifest, window, thresholds)
    first, end = days
    since = None if window.since is None else as_utc(window.since)
    until = None if window.until is None else as_utc(window.until)
    added: list[Window] = []
    taken: list[Window] = []
    if first is not None and since is not None and since < _midnight(first):
        start = _midnight(first) - timedelta(days=1)
        if since - start < _midnight(first) - since:
            first -= timedelta(days=1)
            taken.append(Window(start, since))
        else:
            added.append(Window(since, _midnight(first)))
    if end is not None and until is not None and _midnight(end) < until:
        if end < date.max and _midnight(end) + timedelta(days=1) - until < until - _midnight(end):
            end += timedelta(days=1)
            taken.append(Window(until, _midnight(end)))
        else:
            added.append(Window(_midnight(end), until))
    parts = [_stored(connection, manifest, (first, end), thresholds)]
    parts += [direct(connection, manifest, w, thresholds) for w in added]
    merged: dict[str, list[Binned]] = {}
    for part in parts:
        for group, data in part.items():
            merged.setdefault(group, []).append(data)
    out = {group: Binned.merge(items, k) for group, items in merged.items()}
    for rest in (direct(connection, manifest, w, thresholds) for w in taken):
        for group, data in rest.items():
            out[group] = without(out[group], data)
            if out[group].total == 0:
                del out[group]
    return out


def fetch(
    connection: sa.Connection,
    manifest: Manifest,
    window: Window,
    thresholds: Sequence[float],
    *,
    from_rows: bool = False,
) -> tuple[dict[str | None, int], dict[str, Binned]]:
    """Predictions per stored subgroup label (one query on the audit trail), and the known
    outcomes per group (:func:`known_outcomes`; ``from_rows``: :func:`direct` over the whole
    window, the reference). No row per prediction leaves the database."""
    predicted = _scope(
        sa.select(audit_records.c.subgroups, sa.func.count()),
        audit_records,
        manifest,
        window,
    ).group_by(audit_records.c.subgroups)
    totals = {row[0]: int(row[1]) for row in connection.execute(predicted)}
    read_outcomes = direct if from_rows else known_outcomes
    return totals, read_outcomes(connection, manifest, window, thresholds)


def report(
    connection: sa.Connection,
    manifest: Manifest,
    window: Window = Window(),
    *,
    min_group: int = DEFAULT_MIN_GROUP,
    from_rows: bool = False,
) -> dict[str, Any]:
    """Live figures for one model version beside its validation figures (JSON-ready);
    ``from_rows``: outcomes aggregated from their rows (the reference, :func:`direct`)."""
    # A tier flags a patient from its lower bound on (the thresholds the manifest validated).
    thresholds = [(t.name, t.lower) for t in manifest.tiers if t.lower > 0]
    totals, binned = fetch(
        connection, manifest, window, [t for _, t in thresholds], from_rows=from_rows
    )
    validation = manifest.validation

    def group(
        name: str,
        labels: Sequence[str | None],
        reference: dict[str, float | None],
        tier_ref: dict[str, Any],
    ) -> dict[str, Any]:
        data = Binned.merge([binned[name]] if name in binned else [], len(thresholds))
        known = data.total
        predictions = sum(totals[label] for label in labels)
        out: dict[str, Any] = {"predictions": predictions, "outcomes_known": known}
        if known < min_group:
            out["suppressed"] = True
            out["reason"] = f"fewer than {min_group} predictions with a known outcome"
            return out
        live = figures(data, thresholds)
        comparison = _compare(live, reference)
        for tier in live["tiers"]:
            ref = tier_ref.get(tier["tier"], {})
            tier["validation"] = ref
            tier["judgement"] = {
                k: _judge(tier[k], ref.get(k), None) for k in ("sensitivity", "ppv")
            }
        positives = int(data.events.sum())
        out.update(suppressed=False, positives=positives, live=live, validation=comparison)
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

    tier_ref = {
        t.tier: {"sensitivity": t.sensitivity, "ppv": t.ppv}
        for t in (validation.tiers if validation is not None else [])
    }
    test = validation.test if validation is not None else None
    overall = group(
        ALL,
        list(totals),
        {
            "auroc": test.auroc if test else None,
            "calibration_slope": test.calibration_slope if test else None,
            "calibration_intercept": test.calibration_intercept if test else None,
            "observed_expected": _manifest_expected_ratio(test) if test else None,
        },
        tier_ref,
    )
    if test is not None and not overall.get("suppressed", True):
        overall["calibration_curve"] = calibration_curve(binned[ALL], test)
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
            members = [label for label in totals if label is not None and key in label.split(",")]
            entry.update(
                group(
                    key,
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
            "auroc": (
                "rank (Mann-Whitney) statistic, 95% CI by DeLong's variance; scores in bins "
                f"of {RISK_BIN_WIDTH} on the logit scale"
            ),
            "calibration": (
                "slope and intercept: joint logistic fit logit P(y) = a + b logit(p), as in the "
                "manifest; calibration-in-the-large: a with b fixed at 1; 95% Wald CIs; "
                f"logit(p) in bins of {RISK_BIN_WIDTH}"
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
