"""Request dependencies as ``Annotated`` aliases: settings, registry, audit store, caller."""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Annotated, Any

import anyio
from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from models.predictor import Predictor
from models.registry import Registry, UnknownModel
from service.api.schemas import Problem
from service.audit import Pseudonymizer, SqlAuditStore
from service.auth import ApiKey, KeyStore
from service.errors import PROBLEM_JSON, Forbidden, ModelNotFound, NotAuthenticated
from service.lifecycle import policy_for
from service.settings import Settings


@dataclass
class AppState:
    settings: Settings
    registry: Registry[Predictor]
    audit: SqlAuditStore
    keys: KeyStore
    pseudonymize: Pseudonymizer
    batches: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(1))
    """Batch calls score one at a time per process: they hold the GIL, so a second one at once
    only interleaves with the first (measured: two connections got 15% fewer patients/s than
    one) and doubles the memory of results in flight."""


# NOTE: dependencies are `async def` on purpose: they do no I/O, and FastAPI runs every plain
# `def` dependency in the threadpool, which costs more than the scoring itself.
async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.clinrisk
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def default_version(state: AppState, name: str) -> str:
    """The version the unversioned routes serve: the approved one (issue 13: the default
    changes only by a recorded approval), else the registry's default (newest or pinned)."""
    loaded = state.registry.versions(name)
    approved = policy_for(state.audit.engine).version_to_score(name, None, loaded)
    return approved if approved is not None else state.registry.default_version(name)


def resolve_model(
    state: AppState, name: str, version: str | None, *, scoring: bool = False
) -> Predictor:
    """The model to answer with. Routes that score refuse a retired version (410); routes that
    describe a version (detail, monitoring, lifecycle) still read it."""
    try:
        if version is None:
            version = default_version(state, name)
        if scoring:  # a retired default too: no approved version left to fall back on
            policy_for(state.audit.engine).version_to_score(name, version, [])
        return state.registry.get(name, version)
    except UnknownModel as exc:
        raise ModelNotFound(str(exc)) from None


async def _model(request: Request, name: str, state: StateDep) -> Predictor:
    """The model named in the path, at the path's version when the route has one."""
    return resolve_model(state, name, request.path_params.get("version"))


async def _scoring_model(request: Request, name: str, state: StateDep) -> Predictor:
    """:func:`_model` for a route that scores: a retired version is refused."""
    return resolve_model(state, name, request.path_params.get("version"), scoring=True)


async def declare_version(
    version: Annotated[str, Path(description="A semantic version, e.g. 1.1.0.")],
) -> None:
    """Declares a versioned route's ``{version}`` for the OpenAPI document (``ModelDep`` reads
    it), so one endpoint serves the unversioned and the versioned path."""


ModelDep = Annotated[Predictor, Depends(_model)]
ScoringModelDep = Annotated[Predictor, Depends(_scoring_model)]


# NOTE: declared through fastapi.security so the OpenAPI document carries the scheme (generated
# clients and the Authorize button of /docs know it); ``auto_error=False`` because a missing or
# wrong key is answered by our own 401 problem, with ``WWW-Authenticate``.
bearer = HTTPBearer(
    scheme_name="apiKey",
    bearerFormat="crk_<key id>_<secret>",
    description="An API key from `clinrisk keys create`, sent as `Authorization: Bearer <key>`.",
    auto_error=False,
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _caller(state: AppState, credentials: HTTPAuthorizationCredentials | None) -> ApiKey:
    if credentials is None:
        raise NotAuthenticated("Send an API key as 'Authorization: Bearer <key>'.")
    key = state.keys.authenticate(credentials.credentials.strip())
    if key is None:
        raise NotAuthenticated(
            "The API key is not valid.",
            headers={"WWW-Authenticate": 'Bearer realm="clinrisk", error="invalid_token"'},
        )
    return key


async def _any_key(state: StateDep, credentials: Credentials) -> ApiKey:
    return _caller(state, credentials)


def _check_model_access(key: ApiKey, name: str) -> None:
    if key.allows_model(name):
        return
    allowed = ", ".join(sorted(key.models or ()))
    raise Forbidden(
        f"The API key '{key.name}' may not use model '{name}' (it allows: {allowed}).",
        errors=[
            {
                "field": "name",
                "message": "this API key is restricted to other models",
                "value": name,
                "allowed": allowed,
            }
        ],
    )


def require(scope: str, *, model: str | None = None) -> Any:
    """A caller whose key has ``scope`` and may use the route's model: the path's ``{name}``,
    or ``model`` for a route that serves one fixed model (a CDS Hooks service).

    NOTE: this is the one place a key's model restriction is enforced; every scoring door
    (predict, batch, curves, CDS Hooks) takes its caller from here. It runs before the model is
    looked up, so a restricted key learns nothing about models outside its list. Reading model
    metadata (``AnyCaller``) is not restricted: manifests and cards are not patient data.
    """

    async def dependency(request: Request, state: StateDep, credentials: Credentials) -> ApiKey:
        key = _caller(state, credentials)
        if scope not in key.scopes:
            raise Forbidden(
                f"The API key '{key.name}' lacks the '{scope}' scope "
                f"(it has: {', '.join(sorted(key.scopes))})."
            )
        name = model if model is not None else request.path_params.get("name")
        if name is not None:
            _check_model_access(key, name)
        return key

    return Depends(dependency)


AnyCaller = Annotated[ApiKey, Depends(_any_key)]
PredictCaller = Annotated[ApiKey, require("predict")]
BatchCaller = Annotated[ApiKey, require("batch")]
AdminCaller = Annotated[ApiKey, require("admin")]


def json_request_body(schema: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` documenting the JSON body of a route that reads it by hand (one
    bounded read, problems naming the field) instead of through a pydantic parameter."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error statuses a route can answer, as problem+json."""
    return {
        status: {
            "model": Problem,
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_JSON: {}},
        }
        for status in statuses
    }
