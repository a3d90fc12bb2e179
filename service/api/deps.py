"""Request dependencies as ``Annotated`` aliases: settings, registry, audit store, caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from models.predictor import LoadedModel
from models.registry import Registry, UnknownModel
from service.audit import Pseudonymizer, SqlAuditStore
from service.auth import ApiKey, KeyStore
from service.errors import Forbidden, ModelNotFound, NotAuthenticated
from service.settings import Settings


@dataclass
class AppState:
    settings: Settings
    registry: Registry[LoadedModel]
    audit: SqlAuditStore
    keys: KeyStore
    pseudonymize: Pseudonymizer


# NOTE: dependencies are `async def` on purpose: they do no I/O, and FastAPI runs every plain
# `def` dependency in the threadpool, which costs more than the scoring itself.
async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.clinrisk
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def resolve_model(state: AppState, name: str, version: str | None) -> LoadedModel:
    try:
        return state.registry.get(name, version)
    except UnknownModel as exc:
        raise ModelNotFound(str(exc)) from None


def _caller(request: Request, state: AppState) -> ApiKey:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise NotAuthenticated("Send an API key as 'Authorization: Bearer <key>'.")
    key = state.keys.authenticate(token.strip())
    if key is None:
        raise NotAuthenticated("The API key is not valid.")
    return key


async def _any_key(request: Request, state: StateDep) -> ApiKey:
    return _caller(request, state)


def require(scope: str) -> Any:
    async def dependency(request: Request, state: StateDep) -> ApiKey:
        key = _caller(request, state)
        if scope not in key.scopes:
            raise Forbidden(
                f"The API key '{key.name}' lacks the '{scope}' scope "
                f"(it has: {', '.join(sorted(key.scopes))})."
            )
        return key

    return Depends(dependency)


AnyCaller = Annotated[ApiKey, Depends(_any_key)]
PredictCaller = Annotated[ApiKey, require("predict")]
BatchCaller = Annotated[ApiKey, require("batch")]
AdminCaller = Annotated[ApiKey, require("admin")]
