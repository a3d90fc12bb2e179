"""observe_many equals one observe per value, bucket by bucket and in the sum."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from service.histograms import observe_many


def _samples(histogram: Histogram) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for metric in histogram.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def test_a_batch_counts_like_one_observe_per_value() -> None:
    registry = CollectorRegistry()
    buckets = (0.01, 0.05, 0.1, 0.5, 1.0)
    one = Histogram("one", "per value", ["m"], buckets=buckets, registry=registry)
    many = Histogram("many", "batch", ["m"], buckets=buckets, registry=registry)
    rng = np.random.default_rng(7)
    # Values on the bounds themselves (observe() counts v <= bound), beyond the last bound
    # (+Inf only) and random ones.
    values = np.concatenate([np.array(buckets), [0.0, 1.5, 2.0], rng.random(500)])
    for value in values.tolist():
        one.labels("x").observe(value)
    observe_many(many.labels("x"), values)
    observe_many(many.labels("x"), np.array([]))
    # A few values (a single prediction) take the plain path: counted the same.
    for value in (0.05, 3.0):
        one.labels("x").observe(value)
    observe_many(many.labels("x"), [0.05, 3.0])
    expected = {(n.replace("one", "many"), le): v for (n, le), v in _samples(one).items()}
    got = _samples(many)
    # The sum is added in another order (numpy's pairwise sum): equal to rounding.
    assert got.pop(("many_sum", "")) == pytest.approx(expected.pop(("many_sum", "")), rel=1e-12)
    assert got == expected
    assert expected[("many_count", "")] == len(values) + 2
