"""Turn a scored row into the public result: probability, tier, labelled contributions, flags.

Results are plain dicts (serialised once with orjson) whose shape is ``PredictResponse``.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

import numpy as np
import numpy.typing as npt

from models.loader import Artifact
from models.manifest import FeatureSpec, FeatureType
from models.scoring import ScoringModel
from models.validation import DataQuality, RowValidator, ValidatedRow

NO_EFFECT = 1e-12


def _direction(contribution: float) -> str:
    if contribution > NO_EFFECT:
        return "raised"
    if contribution < -NO_EFFECT:
        return "lowered"
    return "no effect"


class ValueDescriber:
    """Plain-language description of one feature's value ("Systolic BP 168 mmHg")."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.label = spec.label
        self.kind = spec.type
        self.categories = {c.code: c.label for c in spec.categories}
        self.unit = f" {spec.unit}" if spec.unit and spec.unit != "count" else ""
        # Chart values repeat (yes/no, integer BMI, ages): remember a bounded number of texts.
        self._cache: dict[float | str | None, str] = {}
        self._sentences: dict[tuple[float | str | None, str], str] = {}

    def __call__(self, value: float | str | None) -> str:
        text = self._cache.get(value)
        if text is None:
            text = self._describe(value)
            if len(self._cache) < 4096:
                self._cache[value] = text
        return text

    def sentence(self, value: float | str | None, direction: str) -> str:
        """ "Systolic BP 168 mmHg raised the risk" (remembered like the descriptions)."""
        key = (value, direction)
        text = self._sentences.get(key)
        if text is None:
            described = self(value)
            text = (
                f"{described} {direction} the risk"
                if direction != "no effect"
                else f"{described}: no effect on the risk"
            )
            if len(self._sentences) < 4096:
                self._sentences[key] = text
        return text

    def _describe(self, value: float | str | None) -> str:
        if value is None:
            return f"{self.label} missing"
        if self.kind is FeatureType.BINARY:
            return f"{self.label}: {'yes' if value == 1.0 else 'no'}"
        if self.kind is FeatureType.CATEGORICAL:
            return f"{self.label}: {self.categories.get(str(value), str(value))}"
        return f"{self.label} {float(value):g}{self.unit}"


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
        self._features = [(f.name, f.label, f.unit, ValueDescriber(f)) for f in self.specs]

    def explain(
        self,
        values: dict[str, float | str | None],
        contributions: npt.NDArray[np.float64],
        top_k: int | None,
    ) -> list[dict[str, Any]]:
        """Labelled contributions, largest magnitude first (hot path: one dict per feature)."""
        order = np.argsort(-np.abs(contributions), kind="stable").tolist()
        amounts = contributions.tolist()
        shown = order if top_k is None else order[:top_k]
        items = []
        for i in shown:
            name, label, unit, describe = self._features[i]
            value = values.get(name)
            contribution = amounts[i]
            direction = _direction(contribution)
            text = describe.sentence(value, direction)
            items.append(
                {
                    "feature": name,
                    "label": label,
                    "value": value,
                    "unit": unit,
                    "contribution": contribution,
                    "direction": direction,
                    "text": text,
                }
            )
        if len(shown) < len(order):
            rest = math.fsum(amounts[i] for i in order[len(shown) :])
            n_rest = len(order) - len(shown)
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
    # vars() of these flat dataclasses, not dataclasses.asdict, which deep-copies recursively.
    return {
        "missing": [dict(vars(m)) for m in quality.missing],
        "out_of_training_range": [dict(vars(o)) for o in quality.out_of_training_range],
        "unit_conversions": [dict(vars(u)) for u in quality.unit_conversions],
        "trustworthy": not (quality.missing or quality.out_of_training_range),
    }
