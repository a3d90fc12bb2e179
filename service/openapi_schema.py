"""OpenAPI: each model's feature object as its own schema, with real examples.

The predict bodies are validated by the models' own rules (see ``service.api.predict``), so the
per-model schemas are added here from the manifests of the loaded registry. Examples are scored
by the committed models themselves (only ``prediction_id`` and ``elapsed_ms`` are fixed so the
document is reproducible).
"""

from __future__ import annotations

import copy
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from models.equations import reference_features
from models.manifest import FeatureSpec, FeatureType, Manifest
from models.predictor import Predictor
from models.registry import Registry
from service.errors import PROBLEM_JSON

EXAMPLE_ID = "00000000-0000-4000-8000-000000000000"
PREDICT_OPERATIONS = {
    "/v1/models/{name}/predict": "single",
    "/v1/models/{name}/versions/{version}/predict": "single",
    "/v1/models/{name}/predict/batch": "batch",
    "/v1/models/{name}/versions/{version}/predict/batch": "batch",
}

CURVES_OPERATION = "/v1/models/{name}/curves"
TOP_K = {
    "type": ["integer", "null"],
    "minimum": 1,
    "description": "How many contributions to list (all when absent or null).",
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


_ANNOTATIONS = ("title", "description", "x-unit", "x-loinc")


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional feature may be sent as null: missing, handled as the model was trained."""
    annotations = {k: schema[k] for k in _ANNOTATIONS if k in schema}
    core = {k: v for k, v in schema.items() if k not in annotations}
    choices = core["anyOf"] if set(core) == {"anyOf"} else [core]
    return {**annotations, "anyOf": [*choices, {"type": "null"}]}


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


def model_schemas(model: Predictor) -> tuple[dict[str, Any], dict[str, Any]]:
    """Components for one model and a real request/response example."""
    manifest = model.manifest
    prefix = schema_prefix(manifest.name)
    features = {
        "title": f"{prefix}Features",
        "description": f"Inputs of model '{manifest.name}': {manifest.title}.",
        "type": "object",
        "properties": {
            spec.name: feature_schema(spec) if spec.required else _nullable(feature_schema(spec))
            for spec in manifest.features
        },
        "required": [spec.name for spec in manifest.features if spec.required],
        "additionalProperties": False,
    }
    request = {
        "title": f"{prefix}PredictRequest",
        "type": "object",
        "properties": {
            # NOTE: null is accepted for the optional fields, and means "not given".
            "patient_id": {"type": ["string", "null"], "maxLength": 256},
            "features": {"$ref": f"#/components/schemas/{prefix}Features"},
            "top_k": TOP_K,
        },
        "required": ["features"],
        "additionalProperties": False,
    }
    example = example_features(manifest)
    equation = model.core.artifact.equation
    if equation is not None:  # a published equation: its reference patient (no training data)
        columns = [(c.name, c.feature, c.category) for c in manifest.columns]
        example = reference_features(equation, columns) | example
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

    An operation with a security requirement lists 401 whether or not its route says so: the
    bearer dependency (``service.api.deps``) answers it before the route runs.

    FastAPI describes a ``responses`` model under ``application/json`` and adds its own 422
    (``HTTPValidationError``) to every operation with parameters; the service renders all of
    them through one renderer (``service.errors``) as ``application/problem+json``.
    """
    problem = {"schema": {"$ref": "#/components/schemas/Problem"}}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if operation.get("security"):  # every secured operation answers 401 without a key
                operation.setdefault("responses", {}).setdefault("401", {})
            for status, response in operation.get("responses", {}).items():
                content = str(response.get("content") or "")
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


def _curves_body(
    schema: dict[str, Any], registry: Registry[Predictor], examples: dict[str, Any]
) -> None:
    """The curves body per model: its own Features, and only its feature names to vary."""
    operation = schema["paths"].get(CURVES_OPERATION, {}).get("post")
    if operation is None:
        return
    content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    base = content.get("schema")
    if not isinstance(base, dict) or "features_to_vary" not in base.get("properties", {}):
        return
    components = schema["components"]["schemas"]
    variants, request_examples = [], {}
    for name in registry.names():
        manifest = registry.get(name).manifest
        prefix = schema_prefix(name)
        variant = copy.deepcopy(base)
        variant["title"] = f"{prefix}CurvesRequest"
        variant["properties"]["features"] = {"$ref": f"#/components/schemas/{prefix}Features"}
        variant["properties"]["features_to_vary"]["items"] = {
            "type": "string",
            "enum": [spec.name for spec in manifest.features],
        }
        variant["properties"]["features_to_vary"]["uniqueItems"] = True
        components[f"{prefix}CurvesRequest"] = variant
        variants.append({"$ref": f"#/components/schemas/{prefix}CurvesRequest"})
        request_examples[name] = {
            "summary": f"{name} (one patient, one feature varied)",
            "value": {
                "features": examples[name]["request"]["features"],
                "features_to_vary": [manifest.features[0].name],
            },
        }
    content["schema"] = {"oneOf": variants}
    content["examples"] = request_examples


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
                        "top_k": TOP_K,
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
        _curves_body(schema, state.registry, examples)
        app.openapi_schema = schema
        return schema

    app.openapi = build  # type: ignore[method-assign]
