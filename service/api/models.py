"""Model metadata endpoints: what exists, what each model is for and how well it validated."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from models.predictor import Predictor
from service.api.deps import (
    AnyCaller,
    ModelDep,
    StateDep,
    declare_version,
    default_version,
    problem_responses,
)
from service.api.schemas import ModelDetail, ModelSummary

router = APIRouter(prefix="/v1/models", tags=["models"])


def model_detail(model: Predictor) -> dict[str, Any]:
    m = model.manifest
    return {
        "name": m.name,
        "version": m.version,
        "sha256": model.core.sha256,
        "clinical_use": model.clinical_use,
        "title": m.title,
        "summary": m.summary,
        "kind": m.kind,
        "created_at": m.created_at,
        "intended_use": m.intended_use,
        "out_of_scope": m.out_of_scope,
        "applicability": m.applicability,
        "features": m.features,
        "tiers": m.tiers,
        "tiers_borrowed_from": m.tiers_borrowed_from,
        "calibration": m.calibration,
        "validation": m.validation.model_dump() if m.validation is not None else None,
        "caveats": m.caveats,
        "missing_data_policy": m.missing_data_policy,
        "published_validation": m.published_validation,
        "published_validation_missing": m.published_validation_missing,
        "card_markdown": model.card_markdown,
        "explanation_method": model.core.method,
    }


@router.get("", operation_id="list_models", responses=problem_responses(401))
def list_models(state: StateDep, _caller: AnyCaller) -> list[ModelSummary]:
    """Every model with its versions, default version, intended use and test AUROC."""
    registry = state.registry
    out = []
    for name in registry.names():
        served = registry.get(name, default_version(state, name))
        m = served.manifest
        test = m.validation.test if m.validation is not None else None
        out.append(
            ModelSummary(
                name=name,
                title=m.title,
                versions=registry.versions(name),
                default_version=served.version,
                intended_use=m.intended_use,
                kind=m.kind,
                clinical_use=served.clinical_use,
                test_auroc=test.auroc if test is not None else None,
                test_auroc_ci=(test.auroc_ci_low, test.auroc_ci_high) if test is not None else None,
            )
        )
    return out


async def read_model(_caller: AnyCaller, model: ModelDep) -> ModelDetail:
    """A version's public manifest (features, tiers, validation) and model card."""
    return ModelDetail.model_validate(model_detail(model))


# One endpoint on the unversioned (default version) and the versioned path.
router.add_api_route(
    "/{name}",
    read_model,
    methods=["GET"],
    operation_id="read_model",
    responses=problem_responses(401, 404),
)
router.add_api_route(
    "/{name}/versions/{version}",
    read_model,
    methods=["GET"],
    operation_id="read_model_version",
    responses=problem_responses(401, 404),
    dependencies=[Depends(declare_version)],
)
