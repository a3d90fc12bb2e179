"""A JSON batch answers exactly what one-patient calls answer: the batch path builds results
column-wise (applicability, warnings, uncertainty, explanations by pattern and by column), the
single path row by row; on real patients, with and without top_k, both give the same result
(ids and timings aside)."""

from __future__ import annotations

from typing import Any

import pytest

from models.predictor import Scored, load_predictor
from models.registry import artifact_folder
from tests.conftest import MODELS_DIR
from training.config import load_config
from training.datasets import LOADERS, SHARED_DATA

VOLATILE = ("prediction_id", "elapsed_ms")


def _payloads(name: str, n: int) -> list[dict[str, Any]]:
    config = load_config(name)
    frame = LOADERS[config.loader](SHARED_DATA / config.default_data).features
    rows = frame.sample(n=n, random_state=1).to_dict("records")
    return [{k: v for k, v in row.items() if v == v and v is not None} for row in rows]


def _stable(result: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(result).items() if k not in VOLATILE}


def _same(a: Any, b: Any) -> bool:
    """Equal, floats to 1e-12 (the matrix and the one-row kernels sum in different orders)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-12, abs=1e-15)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.parametrize("name", ["diabetes", "readmission", "cvd"])
def test_a_batch_answers_what_single_calls_answer(name: str) -> None:
    model = load_predictor(artifact_folder(MODELS_DIR, name))
    payloads = _payloads(name, 400)
    top_k = [None if i % 3 else 1 + i % 5 for i in range(len(payloads))]

    batch = model.predict_many(payloads, top_k=top_k)

    scored = not_applicable = 0
    for payload, k, answer in zip(payloads, top_k, batch, strict=True):
        assert isinstance(answer, Scored), answer
        single = model.predict(payload, top_k=k)
        assert _same(_stable(answer.result), _stable(single.result)), (answer, single)
        assert answer.values == single.values
        assert answer.subgroups == single.subgroups
        scored += answer.result["status"] == "scored"
        not_applicable += answer.result["status"] == "not_applicable"
    assert scored > 100  # the comparison covered real scores (and whatever was withheld)
