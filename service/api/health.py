"""Liveness and readiness (open: orchestrators call them without a key)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.api.deps import StateDep
from service.api.schemas import Health

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", operation_id="read_liveness")
def live() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/ready", operation_id="read_readiness", responses={503: {"model": Health}})
def ready(state: StateDep, response: Response) -> Health:
    """Every default model loaded and verified, and the audit store accepting writes (a
    predict would succeed): a read-only, locked or unreachable store is not ready."""
    registry = state.registry
    models = {name: registry.default_version(name) for name in registry.names()}
    audit_ok = state.audit.accepts_writes()
    ok = registry.ready and audit_ok
    if not ok:
        response.status_code = 503
    return Health(status="ok" if ok else "unavailable", models=models, audit_store=audit_ok)
