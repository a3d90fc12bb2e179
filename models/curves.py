"""Risk curves: how one patient's risk changes as one input moves across its training range.

For each requested feature the patient's other inputs stay fixed and the varied feature takes
each value of a grid (its training 1st-99th percentile range, every category, or 0/1): the
individual conditional expectation. For depth-1 forests and logistic models this is exactly the
model's shape function for that feature, shifted by the patient's other contributions. The
patient's own value is always on the grid, so a curve passes through the patient's own risk.
Nothing here is audited: these are hypothetical values, not a prediction for the patient.

What-if is offered only for features the manifest marks ``modifiable`` (a patient cannot change
their age or sex, and varying a marker of care invites a causal reading), and a value that fixes
related inputs (``implies``: a non-smoker smokes 0 cigarettes per day) sets them too, so a curve
never scores an impossible patient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypedDict

import numpy as np
import numpy.typing as npt

from models import describe
from models.manifest import FeatureSpec, FeatureType, Manifest
from models.scoring import ScoringModel
from models.validation import FieldError, ValidatedRow, unknown_feature

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


def what_if_errors(specs: Sequence[FeatureSpec], names: Sequence[str]) -> list[FieldError]:
    """``features_to_vary`` problems: unknown, listed twice, or not modifiable (each names the
    entry and what is allowed)."""
    known = [s.name for s in specs]
    modifiable = [s.name for s in specs if s.modifiable]
    allowed = "one of: " + ", ".join(modifiable) if modifiable else "none (no input is modifiable)"
    errors = []
    for index, name in enumerate(names):
        where = f"features_to_vary[{index}]"
        if name not in known:
            errors.append(unknown_feature(name, known, field=where))
        elif name in names[:index]:
            errors.append(FieldError(where, "listed twice", name, "each feature once", "duplicate"))
        elif name not in modifiable:
            errors.append(
                FieldError(
                    where,
                    "what-if is offered only for inputs a patient or clinician can change",
                    name,
                    allowed,
                    "not_modifiable",
                )
            )
    return errors


def describe_point(manifest: Manifest, spec: FeatureSpec, value: GridValue) -> str:
    """The grid value in clinical words, with the related inputs it fixes ("Non-smoker,
    0 cigarettes per day")."""
    implied = [
        describe.describe_value(manifest.feature(name), fixed)
        for name, fixed in implied_values(spec, value).items()
    ]
    return ", ".join([describe.value_text(spec, value), *implied])


def implied_values(spec: FeatureSpec, value: GridValue) -> dict[str, float]:
    """The related inputs this value fixes (``implies`` in the manifest)."""
    return spec.implies.get(describe.value_key(value), {})


def _set_implied(
    block: npt.NDArray[np.float64],
    manifest: Manifest,
    spec: FeatureSpec,
    grid: list[GridValue],
) -> None:
    """Overwrite, row by row, the columns of inputs a grid value fixes."""
    for i, value in enumerate(grid):
        for name, fixed in implied_values(spec, value).items():
            for j, column in enumerate(manifest.columns):
                if column.feature == name and column.category is None:
                    block[i, j] = fixed


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
        _set_implied(block, manifest, spec, grid)
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
                    {
                        "value": v,
                        "label": describe_point(manifest, spec, v),
                        "probability": p,
                    }
                    for v, p in zip(grid, probabilities[offset : offset + len(grid)], strict=True)
                ],
            }
        )
        offset += len(grid)
    return curves
