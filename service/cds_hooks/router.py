"""CDS Hooks 2.0 services (HTTP only): discovery, the hook calls and card feedback.

- ``GET  /cds-services``: discovery, the services of :mod:`service.cds_hooks.services`
  (``clinrisk-ascvd-risk`` and ``clinrisk-diabetes-risk`` on ``patient-view``,
  ``clinrisk-readmission-risk`` on ``encounter-discharge``).
- ``POST /cds-services/{id}``: the hook call; ``POST /cds-services/{id}/feedback``: feedback on
  its cards, stored once per card uuid in the audit database (``feedback``).

Authentication (every route, discovery included): the EHR's signed JWT as CDS Hooks 2.0 requires
(``security``); a clinrisk API key with the ``predict`` scope only where allowed.

Data: the prefetch first. A key that is absent or an OperationOutcome is fetched from
``fhirServer`` with ``fhirAuthorization`` (``fhir_client``); ``412 Precondition Failed`` (the
spec's status for data the service cannot obtain) only when there is no ``fhirServer`` to ask or
it did not answer. A key whose value is ``null`` means "the client has no such data".

Who gets which answer:

- **No card** for a patient the model is not for, as the chart states it: deceased, outside the
  model's age range, established ASCVD (cardiovascular), diagnosed diabetes (screening), an
  encounter that is not an inpatient stay, death or hospice at discharge (readmission). Why none
  rather than an informational card: ``patient-view`` fires at every chart opening, and a card
  saying "not for this patient" there gives the clinician nothing to do and teaches them to
  ignore the service's cards; the reason is counted in ``clinrisk_cds_hook_results_total``.
- An **info card** when the risk cannot be computed from the chart (a required value missing,
  a value the model does not accept, a measurement outside the equation's accepted range): the
  clinician can act on it (order the test, correct the value, use the model page).
- Otherwise the **risk card** (``cards``); scoring goes through ``service.api.predict.predict_one``
  (same validator, scoring, audit record as ``POST /v1/models/{name}/predict``), channel
  ``cds-hooks``, with the keyed pseudonym of ``context.patientId``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Request, Response
from prometheus_client import Counter
from starlette.concurrency import run_in_threadpool

from service.api.body import read_json_body
from service.api.deps import StateDep, json_request_body, problem_responses, resolve_model
from service.api.predict import predict_one
from service.auth import ApiKey
from service.cds_hooks import fhir, fhir_client, hook
from service.cds_hooks.cards import Cards
from service.cds_hooks.feedback import FeedbackStore
from service.cds_hooks.security import cds_caller, discovery_caller
from service.cds_hooks.services import SERVICES, HookService
from service.errors import InvalidFeatures, InvalidHookRequest
from service.settings import Settings

CHANNEL = "cds-hooks"
# Applicability facts that put a patient outside the population: no card (see the docstring).
POPULATION_FACTS = ("deceased", "established_ascvd", "diagnosed_diabetes", "discharged_to_hospice")

HOOK_RESULTS = Counter(
    "clinrisk_cds_hook_results_total",
    "CDS Hooks service calls by service and result (scored, not_computed, out_of_range, "
    "no_card_<reason>, missing_prefetch, fetched).",
    ["service", "result"],
)
FEEDBACK = Counter(
    "clinrisk_cds_feedback_total",
    "CDS Hooks card feedback by service and outcome (comments go to the audit database only).",
    ["service", "outcome"],
)

router = APIRouter(prefix="/cds-services", tags=["cds-hooks"])
DiscoveryCaller = Annotated[ApiKey, discovery_caller]


def _json(body: Any) -> Response:
    # Cards describe a patient: no shared cache may keep them.
    return Response(
        orjson.dumps(body), media_type="application/json", headers={"Cache-Control": "no-store"}
    )


async def _read(request: Request, limit: int) -> Any:
    try:
        return await read_json_body(request, limit)
    except InvalidFeatures as exc:  # not JSON: a malformed request in CDS Hooks terms
        raise InvalidHookRequest(exc.detail, errors=exc.errors) from None


# --- discovery ------------------------------------------------------------------------------


def discovery_document() -> dict[str, Any]:
    return {
        "services": [
            {
                "hook": service.hook,
                "id": service.id,
                "title": service.title,
                "description": service.description,
                "prefetch": {key: p.template for key, p in service.prefetch.items()},
                "usageRequirements": (
                    "Sign each call with a JWT as CDS Hooks 2.0 requires (ES384 or RS384; "
                    "issuer and JWKS registered with clinrisk). Send the prefetch, or "
                    "fhirServer and fhirAuthorization (patient read scopes) so the service can "
                    "fetch what is missing."
                ),
            }
            for service in SERVICES.values()
        ]
    }


@router.get("", operation_id="cds_discovery", responses=problem_responses(401))
async def cds_discovery(_caller: DiscoveryCaller) -> Response:
    """CDS Hooks discovery: the services this server offers."""
    return _json(discovery_document())


# --- the hook -------------------------------------------------------------------------------


def _request_schema(service: HookService) -> dict[str, Any]:
    """The request as CDS Hooks 2.0 defines it (hook.py checks the same rules itself, so a
    malformed call is a 400 naming the field)."""
    context_required = ["patientId"]
    if service.hook == "encounter-discharge":
        context_required.append("encounterId")
    return {
        "type": "object",
        "required": ["hook", "hookInstance", "context"],
        "properties": {
            "hook": {"type": "string", "enum": [service.hook]},
            "hookInstance": {"type": "string", "minLength": 1},
            "fhirServer": {"type": "string"},
            "fhirAuthorization": {
                "type": "object",
                "required": ["access_token"],
                "properties": {"access_token": {"type": "string"}},
            },
            "context": {
                "type": "object",
                "required": context_required,
                "properties": {
                    "userId": {"type": "string"},
                    "patientId": {"type": "string", "minLength": 1, "maxLength": 256},
                    "encounterId": {"type": "string", "minLength": 1, "maxLength": 256},
                },
            },
            "prefetch": {"type": ["object", "null"]},
        },
    }


FEEDBACK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["feedback"],
    "properties": {
        "feedback": {
            "type": "array",
            "minItems": 1,
            "maxItems": hook.MAX_FEEDBACK_ITEMS,
            "items": {
                "type": "object",
                "required": ["card", "outcome", "outcomeTimestamp"],
                "properties": {
                    "card": {"type": "string", "minLength": 1, "maxLength": hook.MAX_CARD_ID},
                    "outcome": {"type": "string", "enum": list(hook.FEEDBACK_OUTCOMES)},
                    "outcomeTimestamp": {"type": "string", "format": "date-time"},
                    "overrideReason": {
                        "type": "object",
                        "properties": {
                            "reason": {"type": "object"},
                            "userComment": {"type": "string"},
                        },
                    },
                    "acceptedSuggestions": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["id"],
                            "properties": {"id": {"type": "string"}},
                        },
                    },
                },
            },
        }
    },
}


async def _prefetch(
    service: HookService,
    body: dict[str, Any],
    context: dict[str, Any],
    prefetch: dict[str, Any],
    settings: Settings,
    issuer: str | None,
) -> dict[str, Any]:
    """The prefetch with every key filled: from the request, else from ``fhirServer`` (one
    the calling EHR, ``issuer``, is registered with, when its configuration lists them)."""
    missing = hook.missing_keys(prefetch, service)
    if not missing:
        return prefetch
    server = body.get("fhirServer")
    if server is None:
        HOOK_RESULTS.labels(service.id, "missing_prefetch").inc()
        raise hook.prefetch_missing(
            service,
            missing,
            "The request has no fhirServer to fetch them from: send every prefetch template of "
            "the discovery document, or fhirServer and fhirAuthorization.",
        )
    problem = fhir_client.server_problem(server, allow_loopback_http=not settings.cds_issuers)
    registered = settings.cds_issuers.get(issuer) if issuer is not None else None
    if problem is None and registered is not None and not registered.allows_fhir_server(server):
        problem = "is not one this EHR is registered with"
    if problem is not None:
        HOOK_RESULTS.labels(service.id, "missing_prefetch").inc()
        raise hook.prefetch_missing(
            service, missing, f"fhirServer {problem}: the access token is not sent there."
        )
    try:
        queries = {
            key: fhir_client.render(service.prefetch[key].template, context) for key in missing
        }
    except ValueError as exc:
        raise InvalidHookRequest(
            f"The FHIR queries cannot be built: {exc}.",
            errors=[
                {"field": "context", "message": str(exc), "value": None, "allowed": "FHIR ids"}
            ],
        ) from None
    try:
        fetched = await fhir_client.fetch(server, body.get("fhirAuthorization"), queries)
    except fhir_client.FetchFailed as exc:
        HOOK_RESULTS.labels(service.id, "missing_prefetch").inc()
        raise hook.prefetch_missing(
            service, missing, "They could not be fetched from fhirServer.", {exc.key: exc.reason}
        ) from None
    HOOK_RESULTS.labels(service.id, "fetched").inc()
    return {**prefetch, **fetched}


def _chart(
    service: HookService, prefetch: dict[str, Any], patient_id: str
) -> tuple[fhir.Chart, int]:
    """The chart from every prefetch key (each resource once), and how many resources were
    about another patient (ignored)."""
    patient = hook.patient(prefetch.get("patient"), patient_id)
    by_kind: dict[str, dict[str, Mapping[str, Any]]] = {}
    foreign = 0
    for key, spec in service.prefetch.items():
        if key == "patient":
            continue
        found, other = hook.resources(prefetch, key, spec.resource_type, patient_id)
        foreign += other
        kind = by_kind.setdefault(spec.resource_type, {})
        for resource in found:
            kind.setdefault(str(resource.get("id", len(kind))), resource)

    def of(*kinds: str) -> Sequence[Mapping[str, Any]]:
        return [r for k in kinds for r in by_kind.get(k, {}).values()]

    chart = fhir.Chart(
        patient=patient,
        observations=of("Observation"),
        conditions=of("Condition"),
        medications=of("MedicationRequest", "MedicationStatement"),
        encounters=of("Encounter"),
        procedures=of("Procedure"),
    )
    return chart, foreign


def _hook_date(chart: fhir.Chart, encounter_id: str | None) -> date:
    """The date features are taken at: today; at discharge, the end of the stay being closed
    (the same day in live use; a closed stay of the past is read as it was)."""
    for encounter in chart.encounters:
        if encounter_id is not None and encounter.get("id") == encounter_id:
            period = encounter.get("period")
            end = fhir.parse_datetime(period.get("end")) if isinstance(period, dict) else None
            if end is not None:
                return end.date()
    return datetime.now(UTC).date()


def _outside_population(model: Any, extraction: fhir.Extraction) -> str | None:
    """Why the chart puts the patient outside the model's population (no card), or None."""
    if "not_inpatient" in extraction.facts:
        return "not_inpatient"
    for fact in POPULATION_FACTS:
        if fact in extraction.facts and (fact == "deceased" or fact in model.population.contexts):
            return fact
    numbers = {
        k: v
        for k, v in extraction.features.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    applicability, _ = model.population.check(numbers, {}, research_use=False)
    age_rules = {r.id for r in model.population.rules if r.feature == "age_years"}
    if any(failed["id"] in age_rules for failed in applicability["failed"]):
        return "age"
    return None


def _hook_endpoint(service: HookService) -> Callable[..., Awaitable[Response]]:
    Caller = Annotated[ApiKey, cds_caller(model=service.model)]

    async def endpoint(request: Request, state: StateDep, caller: Caller) -> Response:
        body = await _read(request, state.settings.max_body_bytes)
        context, prefetch = hook.hook_call(body, service)
        patient_id: str = context["patientId"]
        encounter_id: str | None = context.get("encounterId")
        prefetch = await _prefetch(
            service,
            body,
            context,
            prefetch,
            state.settings,
            getattr(request.state, "cds_issuer", None),
        )
        chart, foreign = _chart(service, prefetch, patient_id)
        model = resolve_model(state, service.model, None, scoring=True)
        extraction = fhir.chart_features(
            model.specs, chart, on=_hook_date(chart, encounter_id), encounter_id=encounter_id
        )
        for fact, note in service.notes.items():
            if fact in extraction.facts:
                extraction.warnings.append(note.format(extraction.facts[fact]))
        if foreign:
            extraction.warnings.append(
                f"{foreign} resources were about another patient and were ignored."
            )
        outside = _outside_population(model, extraction)
        if outside is not None:
            HOOK_RESULTS.labels(service.id, f"no_card_{outside}").inc()
            return _json({"cards": []})
        page = f"{request.base_url}ui#model/{model.core.name}"
        subject = f"Patient/{patient_id}" if fhir_client.FHIR_ID.match(patient_id) else None
        encounter = (
            f"Encounter/{encounter_id}"
            if encounter_id is not None and fhir_client.FHIR_ID.match(encounter_id)
            else None
        )
        cards = Cards(
            model,
            extraction,
            page,
            outcome=service.outcome,
            subject=subject,
            encounter=encounter,
            launch=f"{request.base_url}ui",
        )
        if extraction.missing_required:
            HOOK_RESULTS.labels(service.id, "not_computed").inc()
            return _json({"cards": [cards.not_computed(missing=extraction.missing_required)]})
        # Applicability facts the chart states; what it does not state stays unstated and the
        # result says it was assumed. A living patient with a Patient resource is stated alive.
        stated: dict[str, bool] = {
            fact: True for fact in extraction.facts if fact in model.population.contexts
        }
        if chart.patient is not None and "deceased" in model.population.contexts:
            stated.setdefault("deceased", False)
        for fact in extraction.denied & model.population.contexts:
            stated.setdefault(fact, False)
        try:
            scored = await predict_one(
                state,
                model,
                {"patient_id": patient_id, "features": extraction.features, "context": stated},
                caller,
                channel=CHANNEL,
            )
        except InvalidFeatures as exc:
            HOOK_RESULTS.labels(service.id, "not_computed").inc()
            return _json({"cards": [cards.not_computed(invalid=exc.errors)]})
        if scored.result["status"] == "not_applicable":
            HOOK_RESULTS.labels(service.id, "out_of_range").inc()
            return _json({"cards": [cards.not_applicable(dict(scored.result))]})
        HOOK_RESULTS.labels(service.id, "scored").inc()
        return _json({"cards": [cards.risk(dict(scored.result))]})

    # The caller's dependency is made per service: FastAPI reads the real object, not the
    # string the postponed annotation left.
    endpoint.__annotations__["caller"] = Caller
    endpoint.__doc__ = f"The {service.hook} hook of {service.id}: {service.title}."
    return endpoint


def _feedback_endpoint(service: HookService) -> Callable[..., Awaitable[Response]]:
    Caller = Annotated[ApiKey, cds_caller(model=service.model)]

    async def endpoint(request: Request, state: StateDep, caller: Caller) -> Response:
        body = await _read(request, state.settings.max_body_bytes)
        items = hook.feedback_items(body)
        store = FeedbackStore(state.audit.engine)
        stored = await run_in_threadpool(store.add, service.id, items, caller.key_id)
        for item in items:
            if item.card in stored:  # a repeat (an EHR retrying) is not counted twice
                FEEDBACK.labels(service.id, item.outcome).inc()
        return _json({"received": len(items), "stored": len(stored)})

    endpoint.__annotations__["caller"] = Caller
    endpoint.__doc__ = (
        f"Feedback on {service.id}'s cards: stored once per card uuid (accepted or overridden, "
        "with the reason and comment)."
    )
    return endpoint


for _service in SERVICES.values():
    _suffix = _service.id.removeprefix("clinrisk-").replace("-", "_")
    router.add_api_route(
        f"/{_service.id}",
        _hook_endpoint(_service),
        methods=["POST"],
        operation_id=f"cds_{_suffix}",
        summary=f"CDS Hooks {_service.hook}: {_service.title}",
        responses=problem_responses(400, 401, 403, 412, 413, 503),
        openapi_extra=json_request_body(_request_schema(_service)),
    )
    router.add_api_route(
        f"/{_service.id}/feedback",
        _feedback_endpoint(_service),
        methods=["POST"],
        operation_id=f"cds_{_suffix}_feedback",
        summary=f"CDS Hooks feedback on {_service.id} cards",
        responses=problem_responses(400, 401, 403, 413, 503),
        openapi_extra=json_request_body(FEEDBACK_SCHEMA),
    )
