"""Risk curves: how one patient's risk changes as one input moves across its training range.

For each requested feature the patient's other inputs stay fixed and the varied feature takes
each value of a grid (its training 1st-99th percentile range, every category, or 0/1): the
individual conditional expectation. For depth-1 forests and logistic models this is exactly the
model's shape function for that feature, shifted by the patient's other contributions. The
patient's own value is always on the grid, so a curve passes through the patient's own risk.
Nothing here is audited: these are hypothetical values, not a prediction for the patient.
"""

from __future__ import annotations

import math
from typing import TypedDict

import numpy as np
import numpy.typing as npt

from models.manifest import FeatureSpec, FeatureType
from models.scoring import ScoringModel
from models.validation import ValidatedRow

GridValue = float | str


class CurvePoint(TypedDict):
    value: GridValue
    label: str
    probability: float


class RiskCurve(TypedDict):
    feature: str
    label: str
    type: FeatureType
    unit: str | None
    current_value: GridValue | None
    training_range: tuple[float, float] | None
    points: list[CurvePoint]


def training_range(spec: FeatureSpec) -> tuple[float, float] | None:
    """The training p01..p99, or the plausible range when the manifest has no quantiles."""
    quantiles = spec.distribution.quantiles if spec.distribution else {}
    if "p01" in quantiles and "p99" in quantiles:
        return quantiles["p01"], quantiles["p99"]
    if spec.minimum is not None and spec.maximum is not None:
        return spec.minimum, spec.maximum
    return None


def feature_grid(spec: FeatureSpec, current: GridValue | None, points: int) -> list[GridValue]:
    """Values to try: every category, 0/1, or ``points`` values across the training range."""
    if spec.type is FeatureType.CATEGORICAL:
        return [c.code for c in spec.categories]
    if spec.type is FeatureType.BINARY:
        return [0.0, 1.0]
    bounds = training_range(spec)
    values: set[float] = set()
    if bounds is not None:
        low, high = bounds
        integral = spec.type is FeatureType.ORDINAL or spec.unit == "count"
        if integral and math.ceil(low) <= math.floor(high):
            integers = np.arange(math.ceil(low), math.floor(high) + 1, dtype=np.float64)
            if len(integers) > points:
                integers = np.unique(np.round(np.linspace(integers[0], integers[-1], points)))
            values.update(integers.tolist())
        else:
            values.update(np.linspace(low, high, points).tolist())
    if isinstance(current, float):
        values.add(current)
    return sorted(values)


def describe_point(spec: FeatureSpec, value: GridValue) -> str:
    if spec.type is FeatureType.CATEGORICAL:
        return next((c.label for c in spec.categories if c.code == value), str(value))
    if spec.type is FeatureType.BINARY:
        return "yes" if value == 1.0 else "no"
    unit = f" {spec.unit}" if spec.unit and spec.unit != "count" else ""
    return f"{float(value):.4g}{unit}"


def risk_curves(
    core: ScoringModel, row: ValidatedRow, names: list[str], points: int
) -> list[RiskCurve]:
    """One curve per feature in ``names``, scored in one matrix by the scoring core."""
    manifest = core.manifest
    base = np.asarray(row.columns, dtype=np.float64)
    columns = manifest.columns
    blocks: list[npt.NDArray[np.float64]] = []
    grids: list[tuple[FeatureSpec, list[GridValue]]] = []
    for name in names:
        spec = manifest.feature(name)
        grid = feature_grid(spec, row.values[name], points)
        block = np.tile(base, (len(grid), 1))
        for j, column in enumerate(columns):
            if column.feature != name:
                continue
            if column.category is None:
                block[:, j] = np.asarray(grid, dtype=np.float64)
            else:
                block[:, j] = [1.0 if code == column.category else 0.0 for code in grid]
        blocks.append(block)
        grids.append((spec, grid))
    probabilities = core.score_matrix(np.vstack(blocks)).probability.tolist()
    curves: list[RiskCurve] = []
    offset = 0
    for spec, grid in grids:
        numeric = spec.type in (FeatureType.NUMERIC, FeatureType.ORDINAL)
        curves.append(
            {
                "feature": spec.name,
                "label": spec.label,
                "type": spec.type,
                "unit": spec.unit,
                "current_value": row.values[spec.name],
                "training_range": training_range(spec) if numeric else None,
                "points": [
                    {"value": v, "label": describe_point(spec, v), "probability": p}
                    for v, p in zip(grid, probabilities[offset : offset + len(grid)], strict=True)
                ],
            }
        )
        offset += len(grid)
    return curves
