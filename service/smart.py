"""SMART App Launch (2.x) of the clinician page: the EHR side of the launch, done server-side.

The page (``service/ui/static/app.js``) runs the browser half: it receives ``iss`` + ``launch``,
sends the user to the EHR's authorization endpoint with PKCE (S256) and a ``state``, and checks
``state`` when it comes back with a ``code``. Everything that talks to the EHR is here, for four
reasons:

- **Allowlist first** (:func:`ehr_for`): an ``iss`` that is not in ``CLINRISK_SMART_EHRS`` is
  refused before any request is sent to it; otherwise a link could make the page (or this
  service) talk to any server (open redirect / SSRF). Every URL called afterwards is the
  allowlisted base, or an endpoint from that EHR's own ``.well-known/smart-configuration``,
  whose scheme must match the base's.
- **The access token never reaches the browser**: this service redeems the code (with the
  page's PKCE verifier) at the EHR's token endpoint and reads the chart with the token in the
  same request; the token is then dropped. Nothing stores or logs it (OAuth 2.0 for
  Browser-Based Apps: a backend keeps tokens out of the page).
- **The same mapping as CDS Hooks**: the chart becomes each model's features through
  ``service.cds_hooks.fhir`` (:func:`extract_for`), with where each value came from.
- **The page's calls to clinrisk** carry a short-lived clinrisk session token instead of an API
  key (:class:`SmartSessions`): an HS256 JWT with this service's own key, for one allowlisted
  EHR, scope ``predict``, checked by ``KeyStore.authenticate`` on every call. The page keeps it
  in memory only. Redeeming the code proves the launch: the EHR answered over TLS to the
  allowlisted endpoint, so no token signature needs checking (OpenID Connect Core 3.1.3.7).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import orjson
import structlog

from models.predictor import Predictor
from service.auth import ApiKey
from service.cds_hooks import fhir
from service.errors import ServiceError
from service.settings import Settings, SmartEhr

log = structlog.get_logger("clinrisk")

SESSION_PREFIX = "crs_"
"""A clinrisk session token: ``crs_`` + a JWT (API keys start ``crk_``)."""
SESSION_ISSUER = "clinrisk"
SESSION_AUDIENCE = "clinrisk-ui-session"
_SESSION_KEY_LABEL = b"clinrisk smart session v1"

DISCOVERY_TTL_SECONDS = 300.0
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
MAX_PAGES = 5
"""Search result pages followed per query (``_sort=-date`` puts the latest first)."""
PAGE_SIZE = 200
STAY_FEATURE = "time_in_hospital_days"
"""A model with this feature scores a hospital stay: the launch's encounter is read for it."""
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 §4.1
_FHIR_ID = re.compile(r"[A-Za-z0-9.-]{1,64}")  # FHIR R4 id datatype


class SmartRefused(ServiceError):
    status = 400
    title = "SMART launch refused"


class EhrUnavailable(ServiceError):
    status = 502
    title = "EHR unavailable"


# --- the allowlist ---------------------------------------------------------------------------


def ehr_for(ehrs: Mapping[str, SmartEhr], iss: Any) -> tuple[str, SmartEhr]:
    """The allowlisted EHR for a launch's ``iss`` (trailing '/' ignored), or a 400 naming it."""
    base = iss.rstrip("/") if isinstance(iss, str) else None
    ehr = ehrs.get(base) if base else None
    if base is None or ehr is None:
        shown = iss[:200] if isinstance(iss, str) else type(iss).__name__
        raise SmartRefused(
            "The page was launched by a server this service is not configured for; nothing "
            "was sent to it.",
            errors=[
                {
                    "field": "iss",
                    "message": "not an EHR FHIR server this service trusts",
                    "value": shown,
                    "allowed": "a FHIR base URL listed in CLINRISK_SMART_EHRS",
                }
            ],
        )
    return base, ehr


def _same_scheme(base: str, url: Any, name: str) -> str:
    """An endpoint URL from the EHR's configuration: http(s), and https when the base is."""
    scheme = base.split("://", 1)[0]
    if not isinstance(url, str) or not url.startswith(f"{scheme}://") or len(url) > 2048:
        raise EhrUnavailable(f"The EHR's SMART configuration has no usable '{name}'.")
    return url


# --- talking to the EHR ----------------------------------------------------------------------


@dataclass(frozen=True)
class SmartConfiguration:
    authorization_endpoint: str
    token_endpoint: str


@dataclass(frozen=True)
class Launched:
    """The launch patient's chart as read from the EHR (dropped after the request)."""

    patient_id: str
    chart: fhir.Chart
    encounter_id: str | None = None
    """The launch's encounter, when a stay model's resources were read for it."""
    notes: list[str] = field(default_factory=list)
    """What could not be read (search pages left over): shown with every model's values."""


_DISCOVERY: dict[str, tuple[float, SmartConfiguration]] = {}
"""Per process: FHIR base -> (expiry on the monotonic clock, configuration)."""


async def _get_json(
    client: httpx.AsyncClient, url: str, what: str, headers: Mapping[str, str] | None = None
) -> Any:
    # NOTE: messages name what was asked for and the HTTP status, never a URL with a patient id.
    try:
        async with client.stream("GET", url, headers=headers) as response:
            if response.status_code in (401, 403):
                # NOTE: never fill the form from part of the chart: a problem list that could
                # not be read would look like one without diabetes or hypertension.
                raise EhrUnavailable(
                    f"The EHR did not let this page read {what} ({response.status_code}): the "
                    "form is not filled from an incomplete chart. The page needs the scopes "
                    "configured for this EHR (CLINRISK_SMART_EHRS)."
                )
            if response.status_code != 200:
                raise EhrUnavailable(f"The EHR answered {response.status_code} for {what}.")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    raise EhrUnavailable(f"The EHR's answer for {what} is too large.")
    except httpx.HTTPError as exc:
        raise EhrUnavailable(
            f"The EHR could not be reached for {what} ({type(exc).__name__})."
        ) from None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise EhrUnavailable(f"The EHR's answer for {what} is not JSON.") from None


def _client(timeout: float) -> httpx.AsyncClient:
    # No redirects: a redirect could lead anywhere, away from the allowlisted server.
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False)


async def discover(base: str, timeout: float) -> SmartConfiguration:
    """``{base}/.well-known/smart-configuration`` (cached for 5 minutes per process)."""
    cached = _DISCOVERY.get(base)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    async with _client(timeout) as client:
        document = await _get_json(
            client,
            f"{base}/.well-known/smart-configuration",
            "its SMART configuration",
            {"Accept": "application/json"},
        )
    if not isinstance(document, dict):
        raise EhrUnavailable("The EHR's SMART configuration is not a JSON object.")
    methods = document.get("code_challenge_methods_supported")
    # SMART 2.0 requires S256; an EHR that lists methods without it cannot do this launch.
    if isinstance(methods, list) and "S256" not in methods:
        raise EhrUnavailable("The EHR does not support PKCE with S256.")
    configuration = SmartConfiguration(
        authorization_endpoint=_same_scheme(
            base, document.get("authorization_endpoint"), "authorization_endpoint"
        ),
        token_endpoint=_same_scheme(base, document.get("token_endpoint"), "token_endpoint"),
    )
    _DISCOVERY[base] = (time.monotonic() + DISCOVERY_TTL_SECONDS, configuration)
    return configuration


@dataclass(frozen=True)
class Grant:
    access_token: str = field(repr=False)
    patient_id: str
    encounter_id: str | None = None
    """The launch's encounter context (SMART ``encounter``), e.g. the stay being discharged."""
    model: str | None = None
    """The model the launch asks for: ``{"model": NAME}`` in the token answer's ``appContext``
    (what a CDS Hooks card's SMART link carries, CDS Hooks 2.0 §Link)."""


def check_redemption(code: Any, verifier: Any, redirect_uri: Any) -> tuple[str, str, str]:
    """The page's code, PKCE verifier and redirect URI, or a 400 naming the field."""
    problems = []
    if not isinstance(code, str) or not 0 < len(code) <= 2048:
        problems.append({"field": "code", "message": "must be the authorization code (1-2048)"})
    if not isinstance(verifier, str) or not _VERIFIER.fullmatch(verifier):
        problems.append(
            {
                "field": "code_verifier",
                "message": "must be a PKCE verifier",
                "allowed": "43-128 characters A-Z a-z 0-9 - . _ ~",
            }
        )
    if not isinstance(redirect_uri, str) or not re.fullmatch(r"https?://[^\s?#]+/ui", redirect_uri):
        problems.append(
            {
                "field": "redirect_uri",
                "message": "must be this page's address",
                "allowed": "http(s)://<host>/ui",
            }
        )
    if problems:
        raise SmartRefused("The sign-in answer cannot be used.", errors=problems)
    assert isinstance(code, str) and isinstance(verifier, str) and isinstance(redirect_uri, str)
    return code, verifier, redirect_uri


async def redeem(
    configuration: SmartConfiguration,
    ehr: SmartEhr,
    code: str,
    verifier: str,
    redirect_uri: str,
    timeout: float,
) -> Grant:
    """The authorization code for an access token and the launch patient (RFC 6749 §4.1.3)."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "client_id": ehr.client_id,
        "code_verifier": verifier,
    }
    try:
        async with _client(timeout) as client:
            response = await client.post(
                configuration.token_endpoint, data=form, headers={"Accept": "application/json"}
            )
    except httpx.HTTPError as exc:
        raise EhrUnavailable(
            f"The EHR's token endpoint could not be reached ({type(exc).__name__})."
        ) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code in (400, 401):
        error = body.get("error") if isinstance(body, dict) else None
        shown = error if isinstance(error, str) and re.fullmatch(r"[a-z_]{1,40}", error) else None
        log.info("smart sign-in refused by the EHR", ehr=ehr.name, error=shown)
        raise SmartRefused(
            "The EHR did not accept the sign-in (the code may be used, expired or not for this "
            "page). Launch the page again from the EHR.",
            errors=[{"field": "code", "message": f"refused by the EHR ({shown or 'no reason'})"}],
        )
    if response.status_code != 200 or not isinstance(body, dict):
        raise EhrUnavailable(f"The EHR's token endpoint answered {response.status_code}.")
    token, token_type, patient = (
        body.get("access_token"),
        body.get("token_type"),
        body.get("patient"),
    )
    if not isinstance(token, str) or not token or str(token_type).lower() != "bearer":
        raise EhrUnavailable("The EHR's token answer has no bearer access token.")
    if not isinstance(patient, str) or not _FHIR_ID.fullmatch(patient):
        raise SmartRefused(
            "The EHR granted no patient context: launch the page from a patient's chart.",
            errors=[{"field": "patient", "message": "missing from the EHR's token answer"}],
        )
    encounter = body.get("encounter")
    return Grant(
        access_token=token,
        patient_id=patient,
        encounter_id=encounter
        if isinstance(encounter, str) and _FHIR_ID.fullmatch(encounter)
        else None,
        model=_app_context_model(body),
    )


def _app_context_model(body: Mapping[str, Any]) -> str | None:
    """The model named in ``appContext`` (a JSON object as a string), else None: anything else
    in it is ignored, and an unknown name is dropped by the caller."""
    raw = body.get("appContext")
    if not isinstance(raw, str) or len(raw) > 1024:
        return None
    try:
        context = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    model = context.get("model") if isinstance(context, dict) else None
    return model if isinstance(model, str) else None


def observation_codes(models: Sequence[Predictor]) -> list[str]:
    """Every LOINC code a model's features are read from (the mapping's own list per model)."""
    codes: dict[str, None] = {}
    for model in models:
        codes.update(dict.fromkeys(fhir.observation_codes(model.specs)))
    return list(codes)


async def _search(
    client: httpx.AsyncClient,
    base: str,
    query: str,
    resource_type: str,
    patient_id: str,
    headers: Mapping[str, str],
    notes: list[str],
) -> list[Mapping[str, Any]]:
    """Every page of a search (at most ``MAX_PAGES``); what was left unread goes to ``notes``,
    which the page shows with the values."""
    url: str | None = f"{base}/{resource_type}?{query}"
    found: list[Mapping[str, Any]] = []
    for page in range(MAX_PAGES + 1):
        if url is None:
            break
        if page == MAX_PAGES:
            notes.append(
                f"Only the first {len(found)} {resource_type} resources were read: values from "
                "older ones may be missing."
            )
            break
        bundle = await _get_json(client, url, f"the patient's {resource_type} resources", headers)
        try:
            kept, _other = fhir.bundle_resources(bundle, resource_type, patient_id)
        except ValueError:
            raise EhrUnavailable(f"The EHR's {resource_type} search is not a Bundle.") from None
        found.extend(kept)
        links = bundle.get("link") if isinstance(bundle, dict) else None
        url = next(
            (
                link.get("url")
                for link in links or []
                if isinstance(link, dict) and link.get("relation") == "next"
            ),
            None,
        )
        # Only pages of the same server: a next link elsewhere would take the token with it.
        if url is not None and (not isinstance(url, str) or not url.startswith(f"{base}/")):
            notes.append(
                f"The EHR's next page of {resource_type} resources is on another server and was "
                "not read: values from it may be missing."
            )
            url = None
    return found


async def read_chart(
    base: str, grant: Grant, models: Sequence[Predictor], timeout: float
) -> Launched:
    """The launch patient's Patient, Observations (the codes the models read, latest first),
    Conditions and current (active, on-hold) MedicationRequests, read with the granted token;
    with an encounter context, also the stay's resources (see below)."""
    headers = {"Authorization": f"Bearer {grant.access_token}", "Accept": "application/fhir+json"}
    pid = quote(grant.patient_id, safe="")
    notes: list[str] = []
    codes = ",".join(f"{fhir.LOINC}|{code}" for code in observation_codes(models))
    async with _client(timeout) as client:
        patient = await _get_json(client, f"{base}/Patient/{pid}", "the patient", headers)
        if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
            raise EhrUnavailable("The EHR's answer for the patient is not a Patient.")
        observations = await _search(
            client,
            base,
            f"patient={pid}&code={quote(codes, safe=',|:/')}&_sort=-date&_count={PAGE_SIZE}",
            "Observation",
            grant.patient_id,
            headers,
            notes,
        )
        # Every clinical status: history features (stroke, established ASCVD) count resolved ones.
        conditions = await _search(
            client,
            base,
            f"patient={pid}&_count={PAGE_SIZE}",
            "Condition",
            grant.patient_id,
            headers,
            notes,
        )
        medications = await _search(
            client,
            base,
            f"patient={pid}&status=active,on-hold&_count={PAGE_SIZE}",
            "MedicationRequest",
            grant.patient_id,
            headers,
            notes,
        )
        encounters: list[Mapping[str, Any]] = []
        procedures: list[Mapping[str, Any]] = []
        stay = grant.encounter_id is not None and any(
            spec.name == STAY_FEATURE for model in models for spec in model.specs
        )
        if stay:
            # A stay model (readmission) counts what happened in the launch's encounter: every
            # observation, procedure and order linked to it, and the earlier encounters.
            eid = quote(str(grant.encounter_id), safe="")
            encounters = await _search(
                client,
                base,
                f"patient={pid}&_sort=-date&_count={PAGE_SIZE}",
                "Encounter",
                grant.patient_id,
                headers,
                notes,
            )
            linked = f"patient={pid}&encounter={eid}&_count={PAGE_SIZE}"
            observations += await _search(
                client, base, linked, "Observation", grant.patient_id, headers, notes
            )
            procedures = await _search(
                client, base, linked, "Procedure", grant.patient_id, headers, notes
            )
            medications += await _search(
                client, base, linked, "MedicationRequest", grant.patient_id, headers, notes
            )
    chart = fhir.Chart(
        patient=patient,
        observations=_unique(observations),
        conditions=conditions,
        medications=_unique(medications),
        encounters=encounters,
        procedures=procedures,
    )
    return Launched(grant.patient_id, chart, grant.encounter_id if stay else None, notes)


def _unique(resources: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Each resource once (two searches may both return it), by id; resources without one kept."""
    seen: set[str] = set()
    kept = []
    for resource in resources:
        rid = resource.get("id")
        if isinstance(rid, str):
            if rid in seen:
                continue
            seen.add(rid)
        kept.append(resource)
    return kept


# --- chart -> features (the CDS Hooks mapping) ----------------------------------------------


def extract_for(model: Predictor, launched: Launched, today: date) -> dict[str, Any]:
    """One model's form values from the chart through the CDS Hooks mapping
    (``fhir.chart_features``): features, where each came from (text, resource, date), warnings,
    and the applicability facts the chart states (sent as the request's ``context``)."""
    extraction = fhir.chart_features(
        model.specs, launched.chart, on=today, encounter_id=launched.encounter_id
    )
    extraction.warnings.extend(launched.notes)
    contexts = model.population.contexts
    context: dict[str, bool] = {}
    if extraction.deceased and "deceased" in contexts:
        context["deceased"] = True
    for name, code in extraction.facts.items():
        if name in contexts and name != "deceased":
            context[name] = True
            extraction.warnings.append(
                f"The chart records {name.replace('_', ' ')} ({code}): the model may not apply."
            )
    return {
        "features": extraction.features,
        "sources": [
            {
                "feature": s.feature,
                "text": s.text,
                "date": s.when.isoformat() if s.when else None,
                "reference": s.reference,  # e.g. "Observation/<id>", when known
            }
            for s in extraction.sources
        ],
        "warnings": extraction.warnings,
        "missing_required": extraction.missing_required,
        "context": context,
    }


def patient_summary(launched: Launched) -> dict[str, Any]:
    """What the page shows about whom it is scoring (kept in the page's memory only)."""
    patient = launched.chart.patient or {}
    names = patient.get("name")
    shown = ""
    for name in names if isinstance(names, list) else []:
        if not isinstance(name, dict):
            continue
        if isinstance(name.get("text"), str):
            shown = name["text"]
        else:
            parts = [*(name.get("given") or []), name.get("family")]
            shown = " ".join(p for p in parts if isinstance(p, str)).strip()
        if shown:
            break
    return {"id": launched.patient_id, "name": shown[:120]}


# --- clinrisk sessions -----------------------------------------------------------------------


class SmartSessions:
    """Short-lived clinrisk session tokens for launched pages: issued here, checked by
    ``KeyStore.authenticate`` as a caller with the ``predict`` scope.

    Stateless (an HS256 JWT), so every worker accepts them; the key is derived from the
    pseudonymisation secret with a label of its own (one secret to provision; a session key that
    leaked would not reveal it). A session names its EHR: removing the EHR from the settings
    ends its sessions at the next restart."""

    def __init__(self, secret: bytes, ehrs: Mapping[str, SmartEhr], minutes: int) -> None:
        self._key = hmac.new(secret, _SESSION_KEY_LABEL, hashlib.sha256).digest()
        self._ehrs = dict(ehrs)
        self._lifetime = timedelta(minutes=minutes)

    def issue(self, base: str, now: datetime | None = None) -> tuple[str, datetime]:
        now = now or datetime.now(UTC)
        expires = now + self._lifetime
        claims = {
            "iss": SESSION_ISSUER,
            "aud": SESSION_AUDIENCE,
            "sub": base,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": secrets.token_urlsafe(12),
        }
        return SESSION_PREFIX + jwt.encode(claims, self._key, algorithm="HS256"), expires

    def authenticate(self, token: str) -> ApiKey | None:
        if not token.startswith(SESSION_PREFIX):
            return None
        try:
            claims = jwt.decode(
                token[len(SESSION_PREFIX) :],
                self._key,
                algorithms=["HS256"],
                audience=SESSION_AUDIENCE,
                issuer=SESSION_ISSUER,
                options={"require": ["exp", "iat", "sub"]},
            )
        except jwt.PyJWTError as exc:
            log.info("smart session refused", reason=type(exc).__name__)
            return None
        base = claims.get("sub")
        ehr = self._ehrs.get(base) if isinstance(base, str) else None
        if ehr is None:
            log.info("smart session refused", reason="EHR no longer configured")
            return None
        assert isinstance(base, str)
        return session_caller(base, ehr)


def session_caller(base: str, ehr: SmartEhr) -> ApiKey:
    """The caller a session of this EHR acts as (its id is the one in audit records)."""
    return ApiKey(
        key_id="smart-" + hashlib.sha256(base.encode()).hexdigest()[:12],
        name=f"smart:{ehr.name}",
        sha256="",
        scopes=frozenset({"predict"}),
        models=frozenset(ehr.models) if ehr.models is not None else None,
    )


def sessions_for(settings: Settings) -> SmartSessions | None:
    """The sessions of this service's launches; ``None`` when no EHR may launch the page."""
    if not settings.smart_ehrs or settings.pseudonym_key is None:
        return None
    secret = settings.pseudonym_key.get_secret_value().encode()
    return SmartSessions(secret, settings.smart_ehrs, settings.smart_session_minutes)
