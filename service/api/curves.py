"""Risk curves endpoint: HTTP only; the curves themselves come from the model's facade
(:meth:`models.predictor.Predictor.curves`, computed in :mod:`models.curves`)."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.curves import GridValue
from models.manifest import FeatureType
from models.validation import InvalidFeatures
from service.api.body import read_json_body
from service.api.deps import (
    PredictCaller,
    StateDep,
    json_request_body,
    problem_responses,
    resolve_model,
)
from service.api.schemas import Measurement, ModelRef
from service.errors import InvalidFeatures as InvalidRequest

MAX_POINTS = 101


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


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` inlined (an OpenAPI request body)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(definitions[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


router = APIRouter(prefix="/v1/models", tags=["predictions"])


@router.post(
    "/{name}/curves",
    operation_id="compute_risk_curves",
    response_model=CurvesResponse,
    responses=problem_responses(401, 403, 404, 410, 413, 422),
    openapi_extra=json_request_body(_inline_schema(CurvesRequest)),
)
async def compute_risk_curves(
    request: Request, name: str, _caller: PredictCaller, state: StateDep
) -> Response:
    """Risk across each listed feature's range with the patient's other inputs held fixed."""
    model = resolve_model(state, name, None, scoring=True)
    body = await read_json_body(request, state.settings.max_body_bytes)
    try:
        parsed = CurvesRequest.model_validate(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    features = {
        key: value.model_dump() if isinstance(value, Measurement) else value
        for key, value in parsed.features.items()
    }
    try:
        curves = model.curves(features, parsed.features_to_vary, parsed.points)
    except InvalidFeatures as exc:
        raise InvalidRequest(
            f"The curves request does not match model '{model.name}' {model.version}.",
            errors=[dataclasses.asdict(e) for e in exc.errors],
        ) from None
    return Response(orjson.dumps(curves), media_type="application/json")
