"""Each contribution says in data how to read it (issue 14): ``basis`` follows the input's
declared clinical direction and whether its value was known, and agrees with the words."""

from __future__ import annotations

import random
from typing import Any

import pytest

from models.predictor import load_predictor
from models.registry import artifact_folder
from tests.conftest import MODELS_DIR
from training.config import load_config
from training.datasets import LOADERS, SHARED_DATA


def _payloads(name: str, n: int) -> list[dict[str, Any]]:
    config = load_config(name)
    frame = LOADERS[config.loader](SHARED_DATA / config.default_data).features
    rows = frame.sample(n=n, random_state=2).to_dict("records")
    return [{k: v for k, v in row.items() if v == v and v is not None} for row in rows]


@pytest.mark.parametrize("name", ["diabetes", "readmission", "cvd"])
def test_the_basis_follows_the_declared_direction_and_the_words(name: str) -> None:
    model = load_predictor(artifact_folder(MODELS_DIR, name))
    specs = {s.name: s for s in model.specs}
    payloads = _payloads(name, 300)
    # Leave optional inputs out of some patients, so unknown values are read too.
    chooser = random.Random(3)
    for payload in payloads[::3]:
        for spec in model.specs:
            if not spec.required and chooser.random() < 0.5:
                payload.pop(spec.name, None)
    seen = set()
    for outcome in model.predict_many(payloads, top_k=[None] * 150 + [3] * 150):
        assert not isinstance(outcome, list), outcome
        explanation = outcome.result["explanation"]
        if explanation is None:
            continue  # not applicable: no explanation at all
        for item in explanation["contributions"]:
            basis = item["basis"]
            seen.add(basis)
            if item["feature"] == "other_features":
                assert basis == "combined"
                continue
            spec = specs[item["feature"]]
            if item["value"] is None:
                assert basis == "value_unknown"
                assert "not known" in item["text"] or item["direction"] == "no effect"
            elif spec.direction == 0:
                assert basis == "association"
                if item["direction"] != "no effect":
                    assert "associated with" in item["text"]
            else:
                assert basis == "declared_direction"
                assert "associated" not in item["text"]
    assert {"declared_direction", "combined"} <= seen
    if any(s.direction == 0 for s in model.specs):
        assert "association" in seen
