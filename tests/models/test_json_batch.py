"""The column executor on JSON batches decides exactly as the row executor on each payload.

Both run the same feature rules (``models.validation.FeatureRule``) and report through the same
``FeatureRule.error``; this checks the two executors on the cases where JSON differs from a
table (typed values, measurement objects, empty text, unknown keys), real manifests.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict
from typing import Any

import numpy as np
import pytest

from models.manifest import FeatureSpec, FeatureType, Manifest
from models.registry import discover
from models.tables import FrameValidator
from models.validation import InvalidFeatures, RowValidator
from tests.batch.conftest import random_rows
from tests.conftest import MODEL_NAMES, MODELS_DIR


def _manifest(name: str) -> Manifest:
    folder = [p for p in discover(MODELS_DIR) if p.parent.name == name][-1]
    return Manifest.model_validate_json((folder / "manifest.json").read_bytes())


def _json_only_bad_value(spec: FeatureSpec, rng: random.Random) -> Any:
    """Values a table cannot hold but a JSON payload can."""
    numeric = spec.type in (FeatureType.NUMERIC, FeatureType.ORDINAL)
    choices: list[Any] = ["", "7.5", "true", [1], {"a": 1}, 10**30]
    if numeric:
        choices += [
            {"value": 5},
            {"value": None},
            {"unit": spec.unit},
            {"value": 5, "unit": 3},
            {"value": 5, "unit": ""},
            {"value": "5", "unit": spec.unit},
            {"value": True},
            {"value": 5, "unit": spec.unit, "extra": 1},
        ]
        if spec.alternative_units:
            choices.append({"value": 4.2, "unit": spec.alternative_units[0].unit})
    return rng.choice(choices)


def _payloads(manifest: Manifest, n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = random_rows(manifest, n, seed=seed)
    for row in rows:
        if rng.random() < 0.3:
            spec = rng.choice(manifest.features)
            row[spec.name] = _json_only_bad_value(spec, rng)
        if rng.random() < 0.05:
            row[rng.choice(["bmi", "zzz", "Age_years"])] = 1
    # what the service sees: the payload after a JSON round trip (JSON has no NaN or infinity)
    return [json.loads(json.dumps(_finite(r))) for r in rows]


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_json_batch_executor_agrees_with_the_row_executor(name: str) -> None:
    manifest = _manifest(name)
    payloads = _payloads(manifest, 2000, seed=MODEL_NAMES.index(name))
    rows = RowValidator(manifest)
    frames = FrameValidator(manifest.features, manifest.columns)

    frame = frames.validate_json(payloads)

    accepted = []
    for i, payload in enumerate(payloads):
        try:
            row = rows.validate(payload)
        except InvalidFeatures as exc:
            assert not frame.accepted[i], payload
            assert [asdict(e) for e in frame.errors[i]] == [asdict(e) for e in exc.errors], payload
            continue
        assert frame.accepted[i], (payload, frame.errors.get(i))
        assert asdict(frames.quality(frame, i)) == asdict(row.quality), payload
        position = len(accepted)
        accepted.append(i)
        assert np.array_equal(frame.matrix[position], np.array(row.columns), equal_nan=True)
        for feature, value in row.values.items():
            cell = frame.values[feature][i]
            if value is None:
                assert cell is None or (isinstance(cell, float) and math.isnan(cell))
            else:
                assert cell == value
    assert 0.2 * len(payloads) < len(accepted) < 0.8 * len(payloads)


def test_a_conversion_that_overflows_is_out_of_range_in_both_executors() -> None:
    manifest = _manifest("cvd")
    spec = next(f for f in manifest.features if f.alternative_units)
    payload = {spec.name: {"value": 1.7976931348623157e308, "unit": spec.alternative_units[0].unit}}
    with pytest.raises(InvalidFeatures) as row_errors:
        RowValidator(manifest).validate(payload)

    frame = FrameValidator(manifest.features, manifest.columns).validate_json([payload])

    mine = [e for e in frame.errors[0] if e.field == f"features.{spec.name}"]
    theirs = [e for e in row_errors.value.errors if e.field == f"features.{spec.name}"]
    assert [e.code for e in mine] == [e.code for e in theirs] == ["out_of_range"]
