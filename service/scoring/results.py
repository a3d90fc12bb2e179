"""Turn a scored row into the public result: probability, tier, labelled contributions, flags.

Results are plain dicts (serialised once with orjson) whose shape is ``PredictResponse``.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import asdict
from typing import Any

import numpy as np
import numpy.typing as npt

from models.loader import Artifact
from models.manifest import FeatureSpec, FeatureType
from service.scoring.engine import ScoringModel
from service.scoring.validation import DataQuality, RowValidator, ValidatedRow

NO_EFFECT = 1e-12


def _direction(contribution: float) -> str:
    if contribution > NO_EFFECT:
        return "raised"
    if contribution < -NO_EFFECT:
        return "lowered"
    return "no effect"


def describe_value(spec: FeatureSpec, value: float | str | None) -> str:
    if value is None:
        return f"{spec.label} missing"
    if spec.type is FeatureType.BINARY:
        return f"{spec.label}: {'yes' if value == 1.0 else 'no'}"
    if spec.type is FeatureType.CATEGORICAL:
        label = next((c.label for c in spec.categories if c.code == value), str(value))
        return f"{spec.label}: {label}"
    unit = f" {spec.unit}" if spec.unit and spec.unit not in ("count",) else ""
    return f"{spec.label} {float(value):g}{unit}"


class LoadedModel:
    """What the service holds per (name, version): scoring core, validator, public metadata."""

    def __init__(self, artifact: Artifact) -> None:
        self.core = ScoringModel(artifact)
        self.manifest = artifact.manifest
        self.validator = RowValidator(artifact.manifest)
        self.specs = list(artifact.manifest.features)
        self.ref = {
            "name": self.core.name,
            "version": self.core.version,
            "sha256": self.core.sha256,
        }
        self.tiers = [t.model_dump() for t in self.core.tiers]
        self.base_probability = 1.0 / (1.0 + math.exp(-self.core.base_log_odds))
        self.card_markdown = artifact.card_markdown

    def explain(
        self,
        values: dict[str, float | str | None],
        contributions: npt.NDArray[np.float64],
        top_k: int | None,
    ) -> list[dict[str, Any]]:
        items = []
        for spec, contribution in zip(self.specs, contributions.tolist(), strict=True):
            value = values.get(spec.name)
            direction = _direction(contribution)
            described = describe_value(spec, value)
            text = (
                f"{described} {direction} the risk"
                if direction != "no effect"
                else f"{described}: no effect on the risk"
            )
            items.append(
                {
                    "feature": spec.name,
                    "label": spec.label,
                    "value": value,
                    "unit": spec.unit,
                    "contribution": contribution,
                    "direction": direction,
                    "text": text,
                }
            )
        items.sort(key=lambda item: -abs(item["contribution"]))
        if top_k is not None and top_k < len(items):
            rest = sum(item["contribution"] for item in items[top_k:])
            n_rest = len(items) - top_k
            items = items[:top_k]
            items.append(
                {
                    "feature": "other_features",
                    "label": f"{n_rest} other features",
                    "value": None,
                    "unit": None,
                    "contribution": rest,
                    "direction": _direction(rest),
                    "text": f"{n_rest} other features together {_direction(rest)} the risk",
                }
            )
        return items

    def result(
        self,
        row: ValidatedRow,
        probability: float,
        contributions: npt.NDArray[np.float64],
        tier_index: int,
        *,
        top_k: int | None,
        started: float,
    ) -> dict[str, Any]:
        return {
            "prediction_id": str(uuid.uuid4()),
            "model": self.ref,
            "probability": probability,
            "tier": self.tiers[tier_index],
            "explanation": {
                "method": self.core.method,
                "base_log_odds": self.core.base_log_odds,
                "base_probability": self.base_probability,
                "contributions": self.explain(row.values, contributions, top_k),
            },
            "data_quality": quality_dict(row.quality),
            "elapsed_ms": (time.perf_counter() - started) * 1000.0,
        }

    def predict(self, features: dict[str, Any], *, top_k: int | None = None) -> dict[str, Any]:
        """Validate, score and explain one payload (raises ``InvalidFeatures``)."""
        started = time.perf_counter()
        row = self.validator.validate(features)
        probability, contributions, tier = self.core.score_one(row.columns)
        return self.result(row, probability, contributions, tier, top_k=top_k, started=started)


def quality_dict(quality: DataQuality) -> dict[str, Any]:
    return {
        "missing": [asdict(m) for m in quality.missing],
        "out_of_training_range": [asdict(o) for o in quality.out_of_training_range],
        "unit_conversions": [asdict(u) for u in quality.unit_conversions],
        "trustworthy": not (quality.missing or quality.out_of_training_range),
    }
