"""Drift before outcomes arrive (issue 13 part 3): how today's inputs, predicted risks and tier
shares compare with the training and validation figures the manifest stores, and what
performance to expect from the predicted risks alone.

Privacy: no input is stored. Each scored row only increments counters, per model version, UTC
day, feature and bin (:class:`Accumulator`, in process); a thread flushes them to
``drift_counts`` (migration 0007) every ``drift_flush_seconds`` and at shutdown, adding to what
other workers wrote. Reports read those sums.

Statistics (numpy only: the service image carries neither scipy nor a drift library; NannyML
or Evidently compute the same PSI and "confidence-based performance estimation" but from raw
rows in pandas frames, which is exactly what we do not keep):

- **PSI** ``sum((a - e) * ln(a / e))`` over bins, proportions floored at 1e-4. Numeric bins are
  right-closed intervals between the distinct stored quantiles (p01..p99), whose expected
  proportions are the quantile levels; missing values are one more bin (``missing_rate``);
  categorical and binary features use ``category_rates`` plus an "other" bin (a value unseen in
  training) and the missing bin. Quantiles cannot say how much mass a value that is itself a
  quantile holds (BMI p25 = 24 kg/m2 in whole units, or p01..p50 = 0 for a count): the training
  share at or below such a value lies between its level and the next quantile's level, and the
  expected share is taken as the observed one clipped to that range, the most favourable
  reading of the stored reference: PSI never alarms on the reference's own ambiguity (a lower
  bound for whole-number and repeated quantiles, exact for interpolated ones). Exact bin rates
  stored by training would remove the ambiguity.
- **Predicted risk**: PSI against the validation test split's calibration bins (deciles).
- **Tier shares** now vs at validation (``validation.tiers`` flagged fractions): PSI and the
  patients flagged per day.
- **Expected performance without labels**: the models are calibrated (validated slope ~1,
  intercept ~0), so a patient with predicted risk p has the event with probability p. Under that
  assumption the expected events are ``sum p``; the expected AUROC is the probability that an
  event outranks a non-event when each patient counts as p of an event and 1 - p of a
  non-event: ``sum_i sum_j p_i (1 - p_j) [p_i > p_j] (ties 1/2) / (sum p)(sum (1 - p))``, over
  risk bins 0.05 wide on the logit scale; the expected PPV and sensitivity at a tier threshold
  are ``sum of p above it / number above it`` and ``/ sum p``. These move with the case mix
  only: a changed relation between inputs and outcome needs outcomes (live validation).
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import math
import operator
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
import structlog
from prometheus_client import Gauge
from sqlalchemy.dialects import postgresql, sqlite

from models.manifest import Manifest
from service import monitoring
from service.audit import metadata

log = structlog.get_logger("clinrisk.drift")

FLOOR = 1e-4
"""Proportions below this count as this in PSI (an empty bin would make it infinite)."""
RISK = "@risk"
"""Pseudo-feature: the predicted risk in the validation deciles."""
RISK_LOGIT = "@risk_logit"
"""Pseudo-feature: the predicted risk in fine logit bins (expected performance)."""
TIER = "@tier"
LOGIT_BIN_WIDTH = 0.05
MISSING_BIN = -1

drift_counts = sa.Table(
    "drift_counts",
    metadata,
    sa.Column("model_name", sa.String(64), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("feature", sa.String(64), primary_key=True),
    sa.Column("bin", sa.Integer, primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
    sa.Column("sum_p", sa.Float, nullable=False),
)

# NOTE: label values come from the registry and the manifest (feature and tier names), never
# from a request.
PSI = Gauge(
    "clinrisk_drift_psi",
    "Population stability index of recent inputs (feature), predicted risk (@risk) and tier "
    "shares (@tier) against training/validation, over the drift window.",
    ["model", "version", "feature"],
)
BREACH = Gauge(
    "clinrisk_drift_breach",
    "1 when a drift check exceeds its configured threshold over the drift window, else 0.",
    ["model", "version", "check"],
)
EXPECTED = Gauge(
    "clinrisk_drift_expected",
    "Performance expected from the predicted risks alone (calibrated model) beside validation.",
    ["model", "version", "metric"],
)
TIER_SHARE = Gauge(
    "clinrisk_drift_tier_share",
    "Share of scored patients in each tier: now (window) and at validation.",
    ["model", "version", "tier", "source"],
)

Array = npt.NDArray[np.float64]


# --- the reference: bins and expected proportions from the manifest --------------------------


@dataclass(frozen=True)
class NumericBins:
    edges: Array
    """Distinct quantile values; bin i is (edges[i-1], edges[i]], the last is above edges[-1]."""
    low: Array
    """Per edge: the lowest possible training share at or below it (of present values)."""
    high: Array
    """Per edge: the highest (equal to ``low`` where the quantile is exact)."""


@dataclass(frozen=True)
class FeatureReference:
    name: str
    label: str
    kind: str
    """``numeric`` or ``categorical`` (binary features are categorical: their rates are stored)."""
    labels: list[str]
    """Bin labels in storage order (the missing bin is stored as -1 and labelled apart)."""
    missing_rate: float
    numeric: NumericBins | None = None
    categories: dict[str, int] = field(default_factory=dict)
    rates: Array = field(default_factory=lambda: np.zeros(0))
    codes: tuple[Array, npt.NDArray[np.int64]] | None = None
    """Categories whose codes are numbers ("0.0", "1.0"): the sorted numbers and their bins."""
    """Categorical: expected share of each category among present values ("other" last)."""

    @property
    def size(self) -> int:
        return len(self.labels)


def _numeric(quantiles: Mapping[str, float]) -> NumericBins:
    levels = sorted((int(k[1:]) / 100, v) for k, v in quantiles.items())
    edges = sorted({v for _, v in levels})
    low, high = [], []
    for edge in edges:
        tied = [level for level, v in levels if v == edge]
        above = [level for level, v in levels if v > edge]
        low.append(max(tied))
        # NOTE: a quantile repeated, or a whole number (a value charted in whole units, or a
        # band or count), may hold a point mass: the training share at or below it is then
        # known only to lie between its level and the next quantile's level. An interpolated
        # quantile (128.25) holds none: its level is exact.
        massed = len(tied) > 1 or float(edge).is_integer()
        high.append((min(above) if above else 1.0) if massed else max(tied))
    return NumericBins(np.array(edges), np.array(low), np.array(high))


def _label_number(value: float) -> str:
    return f"{value:g}"


def _code_label(feature: Any, code: str) -> str:
    """A category's words: its label, or the value label of a numeric code ("1.0" -> "Male")."""
    for category in feature.categories:
        if category.code == code:
            return str(category.label)
    number = _float_or_none(code)
    if number is not None and number.is_integer():
        return str(feature.value_labels.get(str(int(number)), code))
    return code


def feature_reference(feature: Any) -> FeatureReference | None:
    """Bins for one manifest feature; None when the manifest stores no usable distribution."""
    dist = feature.distribution
    if dist is None:
        return None
    if dist.category_rates:
        codes = list(dist.category_rates)
        rates = np.array([dist.category_rates[c] for c in codes] + [0.0])
        numbers = [_float_or_none(c) for c in codes]
        numeric_codes = None
        if all(v is not None for v in numbers):
            order = np.argsort(np.array(numbers, dtype=np.float64), kind="stable")
            numeric_codes = (np.array(numbers, dtype=np.float64)[order], order.astype(np.int64))
        return FeatureReference(
            name=feature.name,
            label=feature.label,
            kind="categorical",
            labels=[*(_code_label(feature, c) for c in codes), "other"],
            missing_rate=dist.missing_rate,
            categories={c: i for i, c in enumerate(codes)},
            rates=rates,
            codes=numeric_codes,
        )
    if dist.quantiles:
        bins = _numeric(dist.quantiles)
        edges = [_label_number(e) for e in bins.edges]
        labels = [f"<= {edges[0]}"]
        labels += [f"> {a} and <= {b}" for a, b in itertools.pairwise(edges)]
        labels.append(f"> {edges[-1]}")
        unit = f" {feature.unit}" if feature.unit else ""
        labels = [label + unit for label in labels]
        return FeatureReference(
            name=feature.name,
            label=feature.label,
            kind="numeric",
            labels=labels,
            missing_rate=dist.missing_rate,
            numeric=bins,
        )
    return None


@dataclass(frozen=True)
class Reference:
    """Everything drift needs from one manifest, and where each feature's bins sit in one flat
    counter array (one ``bincount`` per batch updates them all)."""

    name: str
    version: str
    features: list[FeatureReference]
    offsets: npt.NDArray[np.int64]
    """Flat slot of each feature's missing bin; its bins follow."""
    size: int
    risk_uppers: Array
    risk_expected: Array
    tier_names: list[str]
    tier_expected: Array | None
    tier_index: dict[str | None, int]
    plan: list[tuple[str, int, list[float] | None, dict[Any, int], int]]
    """The one-row path, per feature: name, slot of bin 0, numeric edges as a list (else None),
    categorical bin by value (numeric codes keyed by number: 1 and 1.0 hash alike), "other"."""
    risk_list: list[float]

    @classmethod
    def of(cls, manifest: Manifest) -> Reference:
        features = [r for f in manifest.features if (r := feature_reference(f)) is not None]
        sizes = [1 + r.size for r in features]
        # [: len(features)]: a model without training distributions (a published equation) has
        # no feature to count, and no offset.
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)[: len(features)]
        test = manifest.validation.test if manifest.validation is not None else None
        bins = test.calibration_bins if test is not None else []
        if bins and all(b.upper is not None for b in bins):
            uppers = np.array([b.upper for b in bins[:-1]], dtype=np.float64)
            counts = np.array([b.n for b in bins], dtype=np.float64)
            risk_expected = counts / counts.sum()
        else:
            uppers, risk_expected = np.zeros(0), np.zeros(0)
        names = [t.name for t in manifest.tiers]
        return cls(
            name=manifest.name,
            version=manifest.version,
            features=features,
            offsets=offsets,
            size=int(sum(sizes)),
            risk_uppers=uppers,
            risk_expected=risk_expected,
            tier_names=names,
            tier_expected=_tier_shares(manifest),
            tier_index={name: i for i, name in enumerate(names)},
            plan=[
                (
                    r.name,
                    offset + 1,
                    r.numeric.edges.tolist() if r.numeric is not None else None,
                    _by_value(r),
                    r.size - 1,
                )
                for r, offset in zip(features, offsets.tolist(), strict=True)
            ],
            risk_list=uppers.tolist(),
        )


def _by_value(ref: FeatureReference) -> dict[Any, int]:
    if ref.codes is None:
        return dict(ref.categories)
    return {float(code): i for code, i in ref.categories.items()}


def _tier_shares(manifest: Manifest) -> Array | None:
    """Validation share of each tier, from the flagged fractions (p >= each threshold)."""
    if manifest.validation is None or not manifest.validation.tiers:
        return None
    flagged = {t.tier: t.flagged_fraction for t in manifest.validation.tiers}
    at_or_above = []
    for tier in manifest.tiers:
        if tier.lower <= 0:
            at_or_above.append(1.0)
        elif tier.name in flagged and flagged[tier.name] is not None:
            at_or_above.append(float(flagged[tier.name]))
        else:
            return None
    above = np.array([*at_or_above, 0.0])
    shares: Array = np.clip(above[:-1] - above[1:], 0.0, 1.0)
    return shares


_references: dict[tuple[str, str], Reference] = {}
_references_lock = threading.Lock()


def reference(manifest: Manifest) -> Reference:
    """The (cached) reference of a model version: manifests never change under a version."""
    key = (manifest.name, manifest.version)
    found = _references.get(key)
    if found is None:
        with _references_lock:
            found = _references.setdefault(key, Reference.of(manifest))
    return found


# --- observing: binning a batch ---------------------------------------------------------------


def _float_or_none(code: str) -> float | None:
    try:
        return float(code)
    except ValueError:
        return None


def _bin_feature(ref: FeatureReference, column: Sequence[Any]) -> npt.NDArray[np.int64]:
    """Bin index per value; MISSING_BIN for a missing one."""
    if ref.numeric is not None:
        x = np.array(column, dtype=np.float64)  # None becomes NaN
        index = np.searchsorted(ref.numeric.edges, x, side="left").astype(np.int64)
        index[np.isnan(x)] = MISSING_BIN
        return index
    other = ref.size - 1
    if ref.codes is not None:
        # Binary and numerically coded features arrive as floats and are stored as "0.0"/"1.0"
        # (str of a float): matched as numbers, vectorised.
        x = np.array(column, dtype=np.float64)
        codes, order = ref.codes
        at = np.minimum(np.searchsorted(codes, x), codes.size - 1)
        index = np.where(codes[at] == x, order[at], other)
        index[np.isnan(x)] = MISSING_BIN
        return index.astype(np.int64)
    get = ref.categories.get
    return np.array([MISSING_BIN if v is None else get(v, other) for v in column], dtype=np.int64)


def _columns(
    rows: Sequence[Mapping[str, Any]], features: Sequence[FeatureReference]
) -> list[Sequence[Any]]:
    """The rows' values feature by feature (None where a row lacks one). Rows from the scoring
    core hold every feature: transposed in C, a third of the cost of a lookup per cell."""
    names = [f.name for f in features]
    if len(names) > 1:
        with contextlib.suppress(KeyError):
            return list(zip(*map(operator.itemgetter(*names), rows), strict=True))
    return [[row.get(name) for row in rows] for name in names]


@dataclass
class Counts:
    """One model version's counters for one UTC day."""

    # NOTE: Python lists, not arrays: one patient's increments on numpy scalars cost ~1 us
    # each; a batch adds its arrays element by element (a few hundred bins).
    slots: list[int]
    risk: list[int]
    tiers: list[int]
    tier_sum_p: list[float]
    logit: dict[int, list[float]] = field(default_factory=dict)
    """Fine logit bin -> [n, sum p]."""

    def add(
        self,
        slots: Sequence[int],
        risk: Sequence[int],
        tiers: Sequence[int],
        tier_sum_p: Sequence[float],
    ) -> None:
        for target, source in ((self.slots, slots), (self.risk, risk), (self.tiers, tiers)):
            for i, n in enumerate(source):
                if n:
                    target[i] += n
        for i, value in enumerate(tier_sum_p):
            self.tier_sum_p[i] += value


class Accumulator:
    """In-process counters, added to per batch and taken whole by :meth:`drain`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, date], Counts] = {}
        self.seen: dict[tuple[str, str], Manifest] = {}

    def observe(
        self,
        manifest: Manifest,
        rows: Sequence[Mapping[str, Any]],
        probabilities: Sequence[float],
        tiers: Sequence[str | None],
        *,
        today: date | None = None,
    ) -> None:
        """Count one batch of scored rows (validated values, probability, tier name)."""
        if not rows:
            return
        ref = reference(manifest)
        key = (manifest.name, manifest.version, today or datetime.now(UTC).date())
        if len(rows) == 1:
            self._observe_one(ref, manifest, key, rows[0], probabilities[0], tiers[0])
            return
        parts = [
            _bin_feature(f, column) + (offset + 1)
            for f, column, offset in zip(
                ref.features, _columns(rows, ref.features), ref.offsets.tolist(), strict=True
            )
        ]
        slots = np.bincount(np.concatenate(parts), minlength=ref.size) if parts else None
        p = np.asarray(probabilities, dtype=np.float64)
        risk = np.bincount(
            np.searchsorted(ref.risk_uppers, p, side="left"), minlength=ref.risk_uppers.size + 1
        )
        tier_index = np.array([ref.tier_index.get(t, -1) for t in tiers], dtype=np.int64)
        known = tier_index >= 0
        n_tiers = len(ref.tier_names)
        tier_n = np.bincount(tier_index[known], minlength=n_tiers)
        tier_p = np.bincount(tier_index[known], weights=p[known], minlength=n_tiers)
        clipped = np.clip(p, 1e-12, 1 - 1e-12)
        fine = np.round(np.log(clipped / (1 - clipped)) / LOGIT_BIN_WIDTH).astype(np.int64)
        uniq, inverse = np.unique(fine, return_inverse=True)
        fine_n = np.bincount(inverse).tolist()
        fine_p = np.bincount(inverse, weights=p).tolist()
        with self._lock:
            counts = self._counts_for(key, ref, manifest)
            counts.add(
                slots.tolist() if slots is not None else [],
                risk.tolist(),
                tier_n.tolist(),
                tier_p.tolist(),
            )
            for b, n, s in zip(uniq.tolist(), fine_n, fine_p, strict=True):
                cell = counts.logit.setdefault(b, [0, 0.0])
                cell[0] += n
                cell[1] += s

    def _observe_one(
        self,
        ref: Reference,
        manifest: Manifest,
        key: tuple[str, str, date],
        row: Mapping[str, Any],
        p: float,
        tier: str | None,
    ) -> None:
        """One row without numpy: a dozen numpy calls per feature would cost more than the
        scoring of a single patient (bisect on the edges as Python lists instead)."""
        slots = []
        for name, first, edges, by_value, other in ref.plan:
            value = row.get(name)
            if value is None or value != value:
                slots.append(first - 1)
            elif edges is not None:
                slots.append(first + bisect.bisect_left(edges, value))
            else:
                slots.append(first + by_value.get(value, other))
        decile = bisect.bisect_left(ref.risk_list, p)
        t = ref.tier_index.get(tier, -1)
        clipped = min(max(p, 1e-12), 1 - 1e-12)
        fine = round(math.log(clipped / (1 - clipped)) / LOGIT_BIN_WIDTH)
        with self._lock:
            counts = self._counts_for(key, ref, manifest)
            for slot in slots:
                counts.slots[slot] += 1
            counts.risk[decile] += 1
            if t >= 0:
                counts.tiers[t] += 1
                counts.tier_sum_p[t] += p
            cell = counts.logit.setdefault(fine, [0, 0.0])
            cell[0] += 1
            cell[1] += p

    def _counts_for(self, key: tuple[str, str, date], ref: Reference, manifest: Manifest) -> Counts:
        self.seen[(manifest.name, manifest.version)] = manifest
        counts = self._counts.get(key)
        if counts is None:
            n_tiers = len(ref.tier_names)
            counts = self._counts[key] = Counts(
                [0] * ref.size, [0] * (ref.risk_uppers.size + 1), [0] * n_tiers, [0.0] * n_tiers
            )
        return counts

    def drain(self) -> dict[tuple[str, str, date], Counts]:
        with self._lock:
            taken, self._counts = self._counts, {}
        return taken

    def restore(self, taken: dict[tuple[str, str, date], Counts]) -> None:
        """Put back counts a failed flush could not write (they are added to newer ones)."""
        with self._lock:
            for key, old in taken.items():
                new = self._counts.get(key)
                if new is None:
                    self._counts[key] = old
                    continue
                new.add(old.slots, old.risk, old.tiers, old.tier_sum_p)
                for b, (n, s) in old.logit.items():
                    cell = new.logit.setdefault(b, [0, 0.0])
                    cell[0] += n
                    cell[1] += s


# One accumulator per audit database (an app's engine): two apps in one process (tests) never
# count into each other's store.
_accumulators: weakref.WeakKeyDictionary[sa.Engine, Accumulator] = weakref.WeakKeyDictionary()
_accumulators_lock = threading.Lock()


def accumulator_for(engine: sa.Engine) -> Accumulator:
    found = _accumulators.get(engine)
    if found is None:
        with _accumulators_lock:
            found = _accumulators.setdefault(engine, Accumulator())
    return found


def observe(engine: sa.Engine, model: Any, scored: Sequence[Any]) -> None:
    """The prediction path's one call: count the scored rows of a batch (or of one patient) of
    ``model`` (a :class:`models.predictor.Predictor`) for the audit database ``engine``; rows
    without a score, or scored for research outside the intended population, are skipped."""
    rows, probabilities, tiers = [], [], []
    for item in scored:
        result = item.result
        # NOTE: a research-use score outside the intended population is not the population
        # the model serves: it would read as drift.
        if result["probability"] is None or not result["applicability"]["applicable"]:
            continue
        rows.append(item.values)
        probabilities.append(result["probability"])
        tier = result["tier"]
        tiers.append(tier["name"] if tier is not None else None)
    accumulator_for(engine).observe(model.manifest, rows, probabilities, tiers)


# --- flushing to the database -----------------------------------------------------------------


def _rows(manifest: Manifest, day: date, counts: Counts) -> Iterator[dict[str, Any]]:
    ref = reference(manifest)
    base = {"model_name": manifest.name, "model_version": manifest.version, "day": day}
    slots = counts.slots
    for f, offset in zip(ref.features, ref.offsets.tolist(), strict=True):
        for b in range(-1, f.size):
            n = slots[offset + 1 + b]
            if n:
                yield {**base, "feature": f.name, "bin": b, "n": n, "sum_p": 0.0}
    for b, n in enumerate(counts.risk):
        if n:
            yield {**base, "feature": RISK, "bin": b, "n": n, "sum_p": 0.0}
    for b, (n, s) in enumerate(zip(counts.tiers, counts.tier_sum_p, strict=True)):
        if n:
            yield {**base, "feature": TIER, "bin": b, "n": n, "sum_p": s}
    for b, (n, s) in counts.logit.items():
        yield {**base, "feature": RISK_LOGIT, "bin": b, "n": int(n), "sum_p": s}


def flush(engine: sa.Engine, accumulator: Accumulator | None = None) -> int:
    """Add the accumulated counts to ``drift_counts`` (one transaction); on failure they stay in
    the accumulator for the next flush. Returns the rows written."""
    accumulator = accumulator or accumulator_for(engine)
    taken = accumulator.drain()
    if not taken:
        return 0
    rows = [
        row
        for (name, version, day), counts in taken.items()
        for row in _rows(accumulator.seen[(name, version)], day, counts)
    ]
    # NOTE: every worker upserts in key order, so two flushing at once on PostgreSQL wait for
    # each other's row locks in the same order and never deadlock.
    rows.sort(key=lambda r: (r["model_name"], r["model_version"], r["day"], r["feature"], r["bin"]))
    insert: Any = (postgresql if engine.dialect.name == "postgresql" else sqlite).insert(
        drift_counts
    )
    statement = insert.on_conflict_do_update(
        index_elements=["model_name", "model_version", "day", "feature", "bin"],
        set_={
            "n": drift_counts.c.n + insert.excluded.n,
            "sum_p": drift_counts.c.sum_p + insert.excluded.sum_p,
        },
    )
    try:
        with engine.begin() as connection:
            connection.execute(statement, rows)
    except Exception:
        accumulator.restore(taken)
        raise
    return len(rows)


# --- the report -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    psi_warn: float = 0.1
    psi_alert: float = 0.25
    min_rows: int = 500
    expected_auroc_drop: float = 0.05
    live_min_group: int = 50
    """Live validation's minimum group, for the gauges the flusher refreshes (alert rules)."""


def psi(observed: Array, expected: Array) -> float:
    a = np.maximum(observed, FLOOR)
    e = np.maximum(expected, FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def _status(value: float | None, n: int, t: Thresholds) -> str:
    if value is None:
        return "no reference"
    if n < t.min_rows:
        return "too few rows"
    if value >= t.psi_alert:
        return "alert"
    return "warning" if value >= t.psi_warn else "stable"


def expected_numeric(ref: FeatureReference, present: Array) -> Array:
    """Expected shares of the present values' bins (see the module docstring for ties)."""
    assert ref.numeric is not None
    total = present.sum()
    observed_cdf = np.cumsum(present)[:-1] / total if total else np.zeros(ref.numeric.edges.size)
    cdf = np.clip(observed_cdf, ref.numeric.low, ref.numeric.high)
    return np.diff(np.concatenate([[0.0], cdf, [1.0]]))


def feature_drift(
    ref: FeatureReference, counts: Mapping[int, int], t: Thresholds
) -> dict[str, Any]:
    observed = np.array([counts.get(b, 0) for b in range(ref.size)], dtype=np.float64)
    missing = float(counts.get(MISSING_BIN, 0))
    n = int(observed.sum() + missing)
    if ref.numeric is not None:
        shares = expected_numeric(ref, observed)
    else:
        shares = ref.rates
    expected = np.concatenate([[ref.missing_rate], (1 - ref.missing_rate) * shares])
    actual = np.concatenate([[missing], observed]) / n if n else np.zeros(ref.size + 1)
    value = psi(actual, expected) if n else None
    labels = ["missing", *ref.labels]
    bins: list[dict[str, Any]] = [
        {"bin": label, "expected": float(e), "observed": float(a)}
        for label, e, a in zip(labels, expected, actual, strict=True)
    ]
    largest = max(bins, key=lambda b: abs(b["observed"] - b["expected"])) if n else None
    return {
        "feature": ref.name,
        "label": ref.label,
        "kind": ref.kind,
        "n": n,
        "psi": value,
        "status": _status(value, n, t),
        "largest_shift": largest,
        "bins": bins,
    }


def expected_auroc(n: Array, sum_p: Array) -> float | None:
    """Expected AUROC of a calibrated model from risk bins sorted by risk (module docstring)."""
    events = sum_p
    non_events = n - sum_p
    m, k = float(events.sum()), float(non_events.sum())
    if m <= 0 or k <= 0:
        return None
    below = np.cumsum(non_events) - non_events
    return float(np.sum(events * (below + non_events / 2)) / (m * k))


def _window(days: int, until: date | None) -> tuple[date, date]:
    end = until or datetime.now(UTC).date()
    return end - timedelta(days=days - 1), end


def fetch(
    connection: sa.Connection, manifest: Manifest, first: date, last: date
) -> tuple[dict[str, dict[int, tuple[int, float]]], dict[date, dict[int, int]]]:
    """Sums per feature and bin over the window, and the tier counts per day."""
    scope = (
        (drift_counts.c.model_name == manifest.name)
        & (drift_counts.c.model_version == manifest.version)
        & (drift_counts.c.day >= first)
        & (drift_counts.c.day <= last)
    )
    query = (
        sa.select(
            drift_counts.c.feature,
            drift_counts.c.bin,
            sa.func.sum(drift_counts.c.n),
            sa.func.sum(drift_counts.c.sum_p),
        )
        .where(scope)
        .group_by(drift_counts.c.feature, drift_counts.c.bin)
    )
    sums: dict[str, dict[int, tuple[int, float]]] = {}
    for feature, b, n, s in connection.execute(query).all():
        sums.setdefault(feature, {})[int(b)] = (int(n), float(s))
    per_day: dict[date, dict[int, int]] = {}
    daily = sa.select(drift_counts.c.day, drift_counts.c.bin, drift_counts.c.n).where(
        scope & (drift_counts.c.feature == TIER)
    )
    for day, b, n in connection.execute(daily).all():
        per_day.setdefault(day, {})[int(b)] = int(n)
    return sums, per_day


def report(
    connection: sa.Connection,
    manifest: Manifest,
    *,
    days: int = 7,
    until: date | None = None,
    thresholds: Thresholds = Thresholds(),
) -> dict[str, Any]:
    """Drift of one model version over the ``days`` UTC days ending ``until`` (JSON-ready)."""
    ref = reference(manifest)
    first, last = _window(days, until)
    sums, per_day = fetch(connection, manifest, first, last)

    def counts(name: str) -> dict[int, int]:
        return {b: n for b, (n, _) in sums.get(name, {}).items()}

    features = [feature_drift(f, counts(f.name), thresholds) for f in ref.features]
    risk_counts = np.array(
        [counts(RISK).get(b, 0) for b in range(ref.risk_expected.size)], dtype=np.float64
    )
    # Every scored row has a fine risk bin (the deciles need a validation the equations lack).
    scored = sum(n for n, _ in sums.get(RISK_LOGIT, {}).values())
    risk_psi = (
        psi(risk_counts / scored, ref.risk_expected) if scored and ref.risk_expected.size else None
    )
    tier_cells = sums.get(TIER, {})
    tier_n = np.array([tier_cells.get(i, (0, 0.0))[0] for i in range(len(ref.tier_names))], float)
    tier_p = np.array([tier_cells.get(i, (0, 0.0))[1] for i in range(len(ref.tier_names))], float)
    tier_total = float(tier_n.sum())
    tier_psi = (
        psi(tier_n / tier_total, ref.tier_expected)
        if tier_total and ref.tier_expected is not None
        else None
    )
    n_days = max(1, len(per_day))
    tiers = [
        {
            "tier": name,
            "share": float(tier_n[i] / tier_total) if tier_total else None,
            "validation_share": (
                float(ref.tier_expected[i]) if ref.tier_expected is not None else None
            ),
            "per_day": float(tier_n[i]) / n_days,
            "per_day_at_validation_share": (
                tier_total / n_days * float(ref.tier_expected[i])
                if ref.tier_expected is not None
                else None
            ),
        }
        for i, name in enumerate(ref.tier_names)
    ]
    daily = [
        {
            "day": day.isoformat(),
            "scored": sum(by_tier.values()),
            "tiers": {ref.tier_names[b]: n for b, n in sorted(by_tier.items())},
        }
        for day, by_tier in sorted(per_day.items())
    ]
    expected = _expected(manifest, sums.get(RISK_LOGIT, {}), tier_n, tier_p, thresholds)
    breaches = sorted(
        [f"feature:{f['feature']}" for f in features if f["status"] == "alert"]
        + (["risk"] if _status(risk_psi, scored, thresholds) == "alert" else [])
        + (["tiers"] if _status(tier_psi, int(tier_total), thresholds) == "alert" else [])
        + (["expected_auroc"] if expected["auroc_breach"] else [])
    )
    return {
        "model": {"name": manifest.name, "version": manifest.version},
        "window": {"first_day": first.isoformat(), "last_day": last.isoformat(), "days": days},
        "thresholds": {
            "psi_warning": thresholds.psi_warn,
            "psi_alert": thresholds.psi_alert,
            "min_rows": thresholds.min_rows,
            "expected_auroc_drop": thresholds.expected_auroc_drop,
        },
        "scored": scored,
        "features": features,
        "predicted_risk": {
            "psi": risk_psi,
            "status": _status(risk_psi, scored, thresholds),
            "bins": [
                {
                    "decile": i + 1,
                    "expected": float(e),
                    "observed": float(o / scored) if scored else 0.0,
                }
                for i, (e, o) in enumerate(zip(ref.risk_expected, risk_counts, strict=True))
            ],
        },
        "tiers": {
            "psi": tier_psi,
            "status": _status(tier_psi, int(tier_total), thresholds),
            "shares": tiers,
            "daily": daily,
        },
        "expected_performance": expected,
        "breaches": breaches,
        "methods": {
            "psi": "sum((a - e) ln(a / e)) over bins, shares floored at 1e-4; see service/drift.py",
            "numeric_bins": (
                "right-closed intervals between the distinct training quantiles p01..p99, "
                "missing as its own bin; at a repeated quantile value the expected share is the "
                "observed one clipped to the range the quantiles allow (a lower bound of PSI)"
            ),
            "categorical_bins": "training category rates, 'other' for unseen values, missing",
            "expected_performance": (
                "assumes calibration (risk p = event probability): expected AUROC = "
                "sum p_i (1 - p_j) [p_i > p_j] / (sum p)(sum (1 - p)) over logit bins of "
                f"{LOGIT_BIN_WIDTH}; expected PPV at a threshold = mean p above it; expected "
                "sensitivity = sum p above it / sum p. Reflects case mix only; outcomes are "
                "needed to see a changed input-outcome relation"
            ),
        },
    }


def _expected(
    manifest: Manifest,
    logit: Mapping[int, tuple[int, float]],
    tier_n: Array,
    tier_p: Array,
    t: Thresholds,
) -> dict[str, Any]:
    test = manifest.validation.test if manifest.validation is not None else None
    order = sorted(logit)
    n = np.array([logit[b][0] for b in order], dtype=np.float64)
    s = np.array([logit[b][1] for b in order], dtype=np.float64)
    total = float(n.sum())
    auc = expected_auroc(n, s) if total else None
    reference_auc = test.auroc if test is not None else None
    breach = (
        auc is not None
        and reference_auc is not None
        and total >= t.min_rows
        and auc < reference_auc - t.expected_auroc_drop
    )
    by_tier = {v.tier: v for v in (manifest.validation.tiers if manifest.validation else [])}
    thresholds = []
    names = [tier.name for tier in manifest.tiers]
    for i, tier in enumerate(manifest.tiers):
        if tier.lower <= 0:
            continue
        flagged, flagged_p, all_p = float(tier_n[i:].sum()), float(tier_p[i:].sum()), tier_p.sum()
        validation = by_tier.get(tier.name)
        thresholds.append(
            {
                "tier": names[i],
                "threshold": tier.lower,
                "expected_ppv": flagged_p / flagged if flagged else None,
                "expected_sensitivity": flagged_p / float(all_p) if all_p else None,
                "validation_ppv": validation.ppv if validation is not None else None,
                "validation_sensitivity": validation.sensitivity
                if validation is not None
                else None,
            }
        )
    return {
        "n": int(total),
        "expected_auroc": auc,
        "validation_auroc": reference_auc,
        "auroc_breach": breach,
        "expected_event_rate": float(s.sum() / total) if total else None,
        "validation_event_rate": test.prevalence if test is not None else None,
        "observed_expected_ratio": (
            "1 by construction without outcomes (the estimate assumes calibration); "
            "see live validation once outcomes are recorded"
        ),
        "tiers": thresholds,
    }


def export(result: dict[str, Any]) -> None:
    """Set the Prometheus gauges from a drift report."""
    model, version = result["model"]["name"], result["model"]["version"]
    for f in result["features"]:
        if f["psi"] is not None:
            PSI.labels(model, version, f["feature"]).set(f["psi"])
    for name, block in (("@risk", result["predicted_risk"]), ("@tier", result["tiers"])):
        if block["psi"] is not None:
            PSI.labels(model, version, name).set(block["psi"])
    breaches = set(result["breaches"])
    checks = [f"feature:{f['feature']}" for f in result["features"]]
    for check in [*checks, "risk", "tiers", "expected_auroc"]:
        BREACH.labels(model, version, check).set(1 if check in breaches else 0)
    expected = result["expected_performance"]
    for metric in (
        "expected_auroc",
        "validation_auroc",
        "expected_event_rate",
        "validation_event_rate",
    ):
        if expected[metric] is not None:
            EXPECTED.labels(model, version, metric).set(expected[metric])
    for tier in result["tiers"]["shares"]:
        if tier["share"] is not None:
            TIER_SHARE.labels(model, version, tier["tier"], "live").set(tier["share"])
        if tier["validation_share"] is not None:
            TIER_SHARE.labels(model, version, tier["tier"], "validation").set(
                tier["validation_share"]
            )


# --- the flusher thread -----------------------------------------------------------------------


class Flusher:
    """Flushes the accumulator every ``every`` seconds and at :meth:`stop`, then refreshes the
    drift and live-validation gauges of the model versions this process has seen (so alerts
    need no one to ask)."""

    def __init__(
        self,
        engine: sa.Engine,
        every: float,
        *,
        days: int = 7,
        thresholds: Thresholds = Thresholds(),
        accumulator: Accumulator | None = None,
    ) -> None:
        self.engine, self.every, self.days, self.thresholds = engine, every, days, thresholds
        self.accumulator = accumulator or accumulator_for(engine)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drift-flusher", daemon=True)

    def start(self) -> Flusher:
        self._thread.start()
        return self

    def run_once(self) -> None:
        try:
            flush(self.engine, self.accumulator)
            with self.engine.connect() as connection:
                for manifest in list(self.accumulator.seen.values()):
                    export(report(connection, manifest, days=self.days, thresholds=self.thresholds))
                    # The live-validation gauges too: an alert rule must not wait for a person
                    # to open the monitoring page.
                    monitoring.export(
                        monitoring.report(
                            connection, manifest, min_group=self.thresholds.live_min_group
                        )
                    )
        except Exception as exc:  # the store may be down: counts stay, next round retries
            log.warning("drift_flush_failed", error=type(exc).__name__)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.run_once()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(RuntimeError):
            self._thread.join()
        self.run_once()
