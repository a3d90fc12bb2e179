"""The FastAPI application factory. Models load in the lifespan, never at import time."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from models.predictor import Predictor
from models.registry import Registry
from service import drift
from service.api import audit as audit_api
from service.api import curves, fhir_out, health, predict
from service.api import lifecycle as lifecycle_api
from service.api import models as models_api
from service.api import monitoring as monitoring_api
from service.api import outcomes as outcomes_api
from service.api.deps import AppState
from service.api.monitoring import drift_thresholds
from service.audit import Pseudonymizer, SqlAuditStore
from service.auth import KeyStore
from service.cds_hooks import router as cds_hooks
from service.cds_hooks.feedback import admin_router as cds_feedback
from service.cds_hooks.security import CdsCors
from service.docs import install_docs
from service.errors import EXCEPTION_HANDLERS
from service.lifecycle import policy_for
from service.limits import RequestLimitsMiddleware
from service.logging import configure_logging
from service.observability import ObservabilityMiddleware
from service.openapi_schema import install_openapi
from service.settings import Settings, get_settings
from service.smart import sessions_for
from service.ui.router import router as ui_router

log = structlog.get_logger("clinrisk")


def _operation_id(route: APIRoute) -> str:
    return route.operation_id or route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        problem = settings.serving_problem()
        if problem is not None:
            raise RuntimeError(problem)
        assert settings.pseudonym_key is not None
        registry: Registry[Predictor] = Registry(Predictor, pinned=settings.default_versions)
        registry.load_dir(settings.models_dir, trust=settings.trust_policy())
        # The store migrates the schema first (every worker does; a lock lets one of them).
        store = SqlAuditStore(settings.database_url, timeout_seconds=settings.audit_timeout_seconds)
        keys = KeyStore.from_file(settings.api_keys_file)  # re-read when the file changes
        sessions = sessions_for(settings)  # the clinician page launched by an EHR (SMART)
        keys.sessions = sessions.authenticate if sessions is not None else None
        app.state.clinrisk = AppState(
            settings=settings,
            registry=registry,
            audit=store,
            keys=keys,
            pseudonymize=Pseudonymizer(settings.pseudonym_key.get_secret_value().encode()),
        )
        # NOTE: the models, tables and framework objects live as long as the process; freezing
        # them keeps the cyclic GC from rescanning them after every request's allocations
        # (about a fifth of a batch call's time, measured).
        gc.collect()
        gc.freeze()
        log.info("ready", models={n: registry.versions(n) for n in registry.names()})
        flusher = drift.Flusher(
            store.engine,
            settings.drift_flush_seconds,
            days=settings.drift_window_days,
            thresholds=drift_thresholds(settings),
        ).start()  # drift counts to the database (issue 13)
        # Which version each model serves by default, and which are retired (issue 13).
        serving = policy_for(store.engine).start()
        yield
        await run_in_threadpool(serving.stop)
        await run_in_threadpool(flusher.stop)
        store.dispose()

    app = FastAPI(
        title="clinrisk",
        version="1.0.0",
        summary="Clinical risk scores with exact explanations, versions and an audit trail.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        exception_handlers=EXCEPTION_HANDLERS,
        # Swagger UI and ReDoc are served from the service's own files (service.docs): hospital
        # networks block CDNs.
        docs_url=None,
        redoc_url=None,
    )
    app.include_router(health.router)
    app.include_router(models_api.router)
    app.include_router(predict.router)
    app.include_router(audit_api.router)
    app.include_router(curves.router)
    app.include_router(outcomes_api.router)
    app.include_router(monitoring_api.router)
    app.include_router(lifecycle_api.router)
    app.include_router(cds_hooks.router)
    app.include_router(cds_feedback)
    app.include_router(fhir_out.router)
    app.include_router(ui_router)
    install_docs(app)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(
        RequestLimitsMiddleware,
        max_header_bytes=settings.max_header_bytes,
        read_timeout=settings.body_read_timeout_seconds,
    )
    app.add_middleware(ObservabilityMiddleware)
    # Outermost: preflights and every /cds-services answer (a 401 too) carry the CORS headers.
    app.add_middleware(CdsCors, origins=settings.cds_cors_origins)
    install_openapi(app)
    return app
