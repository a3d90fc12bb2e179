"""Prediction ids are RFC 9562 version-7 UUIDs: unique, and ordered by time across milliseconds."""

from __future__ import annotations

import time
import uuid

import pytest

from models.predictor import prediction_id, prediction_ids


def test_prediction_ids_are_version_7_uuids_ordered_by_time() -> None:
    first = [prediction_id() for _ in range(1000)]
    time.sleep(0.002)
    later = prediction_id()

    parsed = [uuid.UUID(i) for i in first]
    assert {u.version for u in parsed} == {7}
    assert {u.variant for u in parsed} == {uuid.RFC_4122}
    assert len(set(first)) == len(first)
    assert all(str(u) == i for u, i in zip(parsed, first, strict=True))
    assert max(first) < later
    assert abs((uuid.UUID(later).int >> 80) - time.time_ns() // 1_000_000) < 1000


@pytest.mark.parametrize("n", [5, 5000])  # formatted in Python below 16, by numpy above
def test_a_batch_of_ids_is_as_valid_as_single_ones(n: int) -> None:
    batch = prediction_ids(n)
    parsed = [uuid.UUID(i) for i in batch]
    assert {u.version for u in parsed} == {7}
    assert {u.variant for u in parsed} == {uuid.RFC_4122}
    assert len(set(batch)) == len(batch)
    assert all(str(u) == i for u, i in zip(parsed, batch, strict=True))
    # One clock reading: every id of the batch carries the same millisecond.
    assert len({u.int >> 80 for u in parsed}) == 1
    assert prediction_ids(0) == []
