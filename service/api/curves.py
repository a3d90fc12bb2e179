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
from typing import Literal

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from models import validation
from models.manifest import FeatureSpec, FeatureType
from models.predictor import LoadedModel
from models.validation import ValidatedRow
from service.api.deps import PredictCaller, StateDep, resolve_model
from service.api.predict import PROBLEM_RESPONSES
from service.api.schemas import Measurement, ModelRef
from service.errors import InvalidFeatures, PayloadTooLarge

MAX_POINTS = 101

GridValue = float | str


class _Public(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CurvesRequest(_Public):
    """One patient and the features whose risk curves are wanted."""

    features: dict[str, float | bool | str | Measurement | None]
    features_to_vary: list[str] = Field(
        min_length=1, description="Feature names, each at most once; a curve is returned for each."
    )
    points: int = Field(
        default=25,
        ge=2,
        le=MAX_POINTS,
        description="Grid size for numeric features (categorical and binary use every value).",
    )


class CurvePoint(_Public):
    value: GridValue = Field(description="The varied feature's value (canonical unit or code).")
    label: str = Field(description="The value in plain language, with its unit.")
    probability: float = Field(description="Calibrated probability with this value.")


class RiskCurve(_Public):
    feature: str
    label: str
    type: FeatureType
    unit: str | None
    current_value: GridValue | None = Field(description="The patient's value (None = missing).")
    training_range: tuple[float, float] | None = Field(
        description="Training 1st and 99th percentiles (numeric and ordinal features)."
    )
    points: list[CurvePoint]


class CurvesResponse(_Public):
    model: ModelRef
    probability: float = Field(description="The patient's own calibrated probability.")
    method: Literal["individual_conditional_expectation"] = "individual_conditional_expectation"
    curves: list[RiskCurve]


def training_range(spec: FeatureSpec) -> tuple[float, float] | None:
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
    model: LoadedModel, row: ValidatedRow, names: list[str], points: int
) -> list[RiskCurve]:
    """One curve per feature in ``names``, scored in one matrix by the scoring core."""
    base = np.asarray(row.columns, dtype=np.float64)
    columns = model.manifest.columns
    blocks: list[npt.NDArray[np.float64]] = []
    grids: list[tuple[FeatureSpec, list[GridValue]]] = []
    for name in names:
        spec = model.manifest.feature(name)
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
    probabilities = model.core.score_matrix(np.vstack(blocks)).probability.tolist()
    curves: list[RiskCurve] = []
    offset = 0
    for spec, grid in grids:
        numeric = spec.type in (FeatureType.NUMERIC, FeatureType.ORDINAL)
        curves.append(
            RiskCurve(
                feature=spec.name,
                label=spec.label,
                type=spec.type,
                unit=spec.unit,
                current_value=row.values[spec.name],
                training_range=training_range(spec) if numeric else None,
                points=[
                    CurvePoint(value=v, label=describe_point(spec, v), probability=p)
                    for v, p in zip(grid, probabilities[offset : offset + len(grid)], strict=True)
                ],
            )
        )
        offset += len(grid)
    return curves


def _check_names(model: LoadedModel, names: list[str]) -> list[validation.FieldError]:
    known = [f.name for f in model.specs]
    errors = []
    for index, name in enumerate(names):
        where = f"features_to_vary[{index}]"
        if name not in known:
            errors.append(
                validation.FieldError(
                    where, "unknown feature for this model", name, "one of: " + ", ".join(known)
                )
            )
        elif name in names[:index]:
            errors.append(validation.FieldError(where, "listed twice", name, "each feature once"))
    return errors


def _invalid(model: LoadedModel, errors: list[validation.FieldError]) -> InvalidFeatures:
    return InvalidFeatures(
        f"The curves request does not match model '{model.core.name}' {model.core.version}.",
        errors=[
            {"field": e.field, "message": e.message, "value": e.value, "allowed": e.allowed}
            for e in errors
        ],
    )


def _body_within_limit(request: Request, state: StateDep) -> None:
    declared = request.headers.get("content-length")
    limit = state.settings.max_body_bytes
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body is larger than {limit} bytes.")


router = APIRouter(prefix="/v1/models", tags=["predictions"])


@router.post(
    "/{name}/curves",
    operation_id="compute_risk_curves",
    responses=PROBLEM_RESPONSES,
    dependencies=[Depends(_body_within_limit)],
)
def compute_risk_curves(
    name: str, body: CurvesRequest, state: StateDep, _caller: PredictCaller
) -> CurvesResponse:
    """Risk across each listed feature's range with the patient's other inputs held fixed."""
    model = resolve_model(state, name, None)
    features = {
        key: value.model_dump() if isinstance(value, Measurement) else value
        for key, value in body.features.items()
    }
    name_errors = _check_names(model, body.features_to_vary)
    try:
        row = model.validator.validate(features)
    except validation.InvalidFeatures as exc:
        raise _invalid(model, exc.errors + name_errors) from None
    if name_errors:
        raise _invalid(model, name_errors)
    probability, _, _ = model.core.score_one(row.columns)
    return CurvesResponse(
        model=ModelRef.model_validate(model.ref),
        probability=probability,
        curves=risk_curves(model, row, body.features_to_vary, body.points),
    )
