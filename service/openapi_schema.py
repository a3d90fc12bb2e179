"""OpenAPI: each model's feature object as its own schema, with real examples.

The predict bodies are validated by the models' own rules (see ``service.api.predict``), so the
per-model schemas are added here from the manifests of the loaded registry. Examples are scored
by the committed models themselves (only ``prediction_id`` and ``elapsed_ms`` are fixed so the
document is reproducible).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from models.manifest import FeatureSpec, FeatureType, Manifest
from models.predictor import LoadedModel
from service.errors import PROBLEM_JSON

EXAMPLE_ID = "00000000-0000-4000-8000-000000000000"
PREDICT_OPERATIONS = {
    "/v1/models/{name}/predict": "single",
    "/v1/models/{name}/versions/{version}/predict": "single",
    "/v1/models/{name}/predict/batch": "batch",
    "/v1/models/{name}/versions/{version}/predict/batch": "batch",
}


def schema_prefix(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", "_").split("_"))


def feature_schema(spec: FeatureSpec) -> dict[str, Any]:
    base: dict[str, Any] = {"title": spec.label, "description": spec.description}
    if spec.type is FeatureType.CATEGORICAL:
        codes = [c.code for c in spec.categories]
        labels = "; ".join(f"{c.code} = {c.label}" for c in spec.categories)
        return {
            **base,
            "type": "string",
            "enum": codes,
            "description": f"{spec.description} ({labels})",
        }
    if spec.type is FeatureType.BINARY:
        return {**base, "anyOf": [{"type": "integer", "enum": [0, 1]}, {"type": "boolean"}]}
    number: dict[str, Any] = {"type": "integer" if spec.type is FeatureType.ORDINAL else "number"}
    if spec.minimum is not None:
        number["minimum"] = spec.minimum
    if spec.maximum is not None:
        number["maximum"] = spec.maximum
    if spec.unit:
        base["description"] = f"{spec.description} Canonical unit: {spec.unit}."
        base["x-unit"] = spec.unit
    if spec.loinc:
        base["x-loinc"] = spec.loinc
    if not spec.alternative_units:
        return {**base, **number}
    units = [spec.unit, *(u.unit for u in spec.alternative_units)]
    measurement = {
        "type": "object",
        "properties": {"value": {"type": "number"}, "unit": {"type": "string", "enum": units}},
        "required": ["value"],
        "additionalProperties": False,
    }
    return {**base, "anyOf": [number, measurement]}


def example_features(manifest: Manifest) -> dict[str, Any]:
    """A typical patient: each feature's training median (or most common category)."""
    example: dict[str, Any] = {}
    for spec in manifest.features:
        dist = spec.distribution
        if dist is None:
            continue
        if spec.type is FeatureType.CATEGORICAL:
            example[spec.name] = max(dist.category_rates, key=lambda k: dist.category_rates[k])
        elif spec.type is FeatureType.BINARY:
            example[spec.name] = int(
                max(dist.category_rates, key=lambda k: dist.category_rates[k]) in ("1.0", "1")
            )
        else:
            example[spec.name] = round(dist.quantiles.get("p50", 0.0), 1)
            if spec.type is FeatureType.ORDINAL:
                example[spec.name] = int(example[spec.name])
    return example


def model_schemas(model: LoadedModel) -> tuple[dict[str, Any], dict[str, Any]]:
    """Components for one model and a real request/response example."""
    manifest = model.manifest
    prefix = schema_prefix(manifest.name)
    features = {
        "title": f"{prefix}Features",
        "description": f"Inputs of model '{manifest.name}': {manifest.title}.",
        "type": "object",
        "properties": {spec.name: feature_schema(spec) for spec in manifest.features},
        "required": [spec.name for spec in manifest.features if spec.required],
        "additionalProperties": False,
    }
    request = {
        "title": f"{prefix}PredictRequest",
        "type": "object",
        "properties": {
            "patient_id": {"type": "string", "maxLength": 256},
            "features": {"$ref": f"#/components/schemas/{prefix}Features"},
            "top_k": {"type": "integer", "minimum": 1},
        },
        "required": ["features"],
        "additionalProperties": False,
    }
    example = example_features(manifest)
    body = {"patient_id": "MRN-0001", "features": example, "top_k": 5}
    scored: Any = model.predict(example, top_k=5)
    # NOTE: ``predict`` answers a ``Scored(result, values)`` pair (a bare result before it).
    response = dict(getattr(scored, "result", scored))
    response["prediction_id"] = EXAMPLE_ID
    response["elapsed_ms"] = 0.0
    components = {f"{prefix}Features": features, f"{prefix}PredictRequest": request}
    return components, {"request": body, "response": response}


def _problems_as_problem_json(schema: dict[str, Any]) -> None:
    """Every error answer is described as what the service sends: a Problem, problem+json.

    FastAPI describes a ``responses`` model under ``application/json`` and adds its own 422
    (``HTTPValidationError``) to every operation with parameters; the service renders all of
    them through one renderer (``service.errors``) as ``application/problem+json``.
    """
    problem = {"schema": {"$ref": "#/components/schemas/Problem"}}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                content = str(response.get("content", {}))
                # NOTE: an error answer with its own schema (readiness's 503 Health) stays as is.
                if int(status) >= 400 and (
                    not content or PROBLEM_JSON in content or "ValidationError" in content
                ):
                    response["content"] = {PROBLEM_JSON: problem}
                    response["description"] = HTTPStatus(int(status)).phrase
    components = schema.get("components", {}).get("schemas", {})
    text = str(schema.get("paths"))
    for name in ("HTTPValidationError", "ValidationError"):
        if f"/{name}'" not in text:
            components.pop(name, None)
    if "ValidationError" in components and "HTTPValidationError" not in components:
        components.pop("ValidationError")


def install_openapi(app: FastAPI) -> None:
    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            routes=app.routes,
        )
        _problems_as_problem_json(schema)
        state = getattr(app.state, "clinrisk", None)
        if state is None:  # outside the lifespan: no models, generic schema only
            return schema
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        requests, examples = [], {}
        for name in state.registry.names():
            model = state.registry.get(name)
            model_components, example = model_schemas(model)
            components.update(model_components)
            requests.append({"$ref": f"#/components/schemas/{schema_prefix(name)}PredictRequest"})
            examples[name] = example
        for path, kind in PREDICT_OPERATIONS.items():
            operation = schema["paths"][path]["post"]
            if kind == "single":
                body_schema: dict[str, Any] = {"oneOf": requests}
                request_examples = {
                    n: {"summary": f"{n} (one patient)", "value": e["request"]}
                    for n, e in examples.items()
                }
                response_examples = {
                    n: {"summary": n, "value": e["response"]} for n, e in examples.items()
                }
                operation["responses"]["200"]["content"]["application/json"]["examples"] = (
                    response_examples
                )
            else:
                body_schema = {
                    "type": "object",
                    "properties": {
                        "items": {"type": "array", "items": {"oneOf": requests}},
                        "top_k": {"type": "integer", "minimum": 1},
                    },
                    "required": ["items"],
                    "additionalProperties": False,
                }
                request_examples = {
                    n: {
                        "summary": f"{n} (two patients)",
                        "value": {"items": [e["request"], e["request"]]},
                    }
                    for n, e in examples.items()
                }
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": body_schema, "examples": request_examples}
                },
            }
        app.openapi_schema = schema
        return schema

    app.openapi = build  # type: ignore[method-assign]
