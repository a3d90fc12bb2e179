"""A test EHR for the SMART launch tests: an OAuth 2.0 authorization server built on Authlib
(authorization code grant, PKCE required for public clients) and a FHIR R4 server serving one
Synthea patient with the search parameters a SMART app uses. Both are FastAPI apps the tests run
on real uvicorn servers (``tests.conftest.running_server``).

Authlib's server core is framework-agnostic: ``_oauth_request`` hands it a request built from
the HTTP request (query and form), and its responses become Starlette responses. The EHR signs
the user in and approves the launch by itself (a real EHR shows its own login and consent); a
launch id names the patient whose chart is open, as an EHR's launch context does.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from authlib.oauth2 import AuthorizationServer, OAuth2Error, OAuth2Request
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7636 import CodeChallenge
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from service.settings import REPO_ROOT

SYNTHEA = REPO_ROOT.parent / "shared" / "data" / "synthea_fhir_r4"
CLIENT_ID = "clinrisk-ui"
USER = "Practitioner/dr-test"
CODE_LIFETIME_SECONDS = 60
TOKEN_LIFETIME_SECONDS = 3600
TAMPER_STATE_LAUNCH = "launch-tamper-state"
"""A launch the test EHR answers with another ``state`` (as an attacker's forged answer would)."""


# --- Authlib models --------------------------------------------------------------------------


@dataclass
class Client:
    client_id: str
    redirect_uris: list[str]
    scope: str

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        allowed = set(self.scope.split())
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:  # noqa: ARG002
        return False  # a public client has none

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:  # noqa: ARG002
        return method == "none"  # a public client: PKCE instead of a secret

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class AuthorizationCode:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: str
    patient: str
    app_context: str | None
    encounter: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    issued_at: float = field(default_factory=time.time)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def is_expired(self) -> bool:
        return time.time() > self.issued_at + CODE_LIFETIME_SECONDS


@dataclass
class IssuedToken:
    patient: str
    scope: frozenset[str]
    expires_at: float


@dataclass
class EhrState:
    """What both servers share, and what the tests look at afterwards."""

    patient_id: str
    resources: dict[str, list[dict[str, Any]]]
    launches: dict[str, str] = field(default_factory=dict)
    app_contexts: dict[str, str] = field(default_factory=dict)
    encounters: dict[str, str] = field(default_factory=dict)
    """Launch -> the encounter in context (the token answer's ``encounter``)."""
    """Launch -> the ``appContext`` the token answer carries (a CDS Hooks card's SMART link)."""
    codes: dict[str, AuthorizationCode] = field(default_factory=dict)
    tokens: dict[str, IssuedToken] = field(default_factory=dict)
    token_requests: int = 0
    fhir_requests: list[str] = field(default_factory=list)
    fhir_url: str = ""
    auth_url: str = ""
    client: Client | None = None

    def new_launch(self, app_context: str | None = None, encounter: str | None = None) -> str:
        launch = secrets.token_urlsafe(12)
        self.launches[launch] = self.patient_id
        if app_context is not None:
            self.app_contexts[launch] = app_context
        if encounter is not None:
            self.encounters[launch] = encounter
        return launch


def load_patient(name_prefix: str) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """A Synthea bundle as a FHIR server holds it: resources by type, subject and encounter
    references rewritten from the transaction's ``urn:uuid:`` to ``Patient/<id>`` and
    ``Encounter/<id>``."""
    path = next(SYNTHEA.glob(f"{name_prefix}*.json"))
    entries = [e["resource"] for e in json.loads(path.read_text())["entry"]]
    patient = next(r for r in entries if r["resourceType"] == "Patient")
    pid = patient["id"]
    encounters = {r["id"] for r in entries if r["resourceType"] == "Encounter"}
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in entries:
        for key in ("subject", "patient"):
            ref = resource.get(key)
            if isinstance(ref, dict) and ref.get("reference") == f"urn:uuid:{pid}":
                resource[key] = {"reference": f"Patient/{pid}"}
        ref = resource.get("encounter")
        if isinstance(ref, dict) and ref.get("reference", "")[9:] in encounters:
            resource["encounter"] = {"reference": f"Encounter/{ref['reference'][9:]}"}
        by_type.setdefault(resource["resourceType"], []).append(resource)
    return pid, by_type


# --- the authorization server ----------------------------------------------------------------


class _Request(OAuth2Request):  # type: ignore[misc]
    def __init__(self, method: str, uri: str, headers: Any, data: dict[str, str]) -> None:
        super().__init__(method, uri, headers=headers)
        self.payload = BasicOAuth2Payload(data)
        self._data = data

    @property
    def args(self) -> dict[str, str]:
        return self._data

    @property
    def form(self) -> dict[str, str]:
        return self._data


async def _oauth_request(request: Request) -> _Request:
    data = dict(request.query_params)
    if request.method == "POST":
        # application/x-www-form-urlencoded (RFC 6749 §4.1.3), parsed without python-multipart
        data.update(parse_qsl((await request.body()).decode(), keep_blank_values=True))
    return _Request(request.method, str(request.url), dict(request.headers), data)


class _Server(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, ehr: EhrState) -> None:
        super().__init__(scopes_supported=None)
        self.ehr = ehr

    def create_oauth2_request(self, request: _Request) -> _Request:
        return request  # built from the Starlette request by _oauth_request

    def query_client(self, client_id: str) -> Client | None:
        client = self.ehr.client
        return client if client is not None and client.client_id == client_id else None

    def save_token(self, token: dict[str, Any], request: _Request) -> None:
        code: AuthorizationCode = request.authorization_code
        self.ehr.tokens[token["access_token"]] = IssuedToken(
            patient=code.patient,
            scope=frozenset(code.scope.split()),
            expires_at=time.time() + token["expires_in"],
        )

    def handle_response(self, status: int, body: Any, headers: Any) -> Response:
        headers = dict(headers)
        if status in (301, 302, 303, 307):
            return RedirectResponse(headers["Location"], status_code=302)
        return JSONResponse(body, status_code=status, headers=headers)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass


class _CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["none"]  # a public client

    def save_authorization_code(self, code: str, request: _Request) -> None:
        ehr: EhrState = self.server.ehr
        data = request.payload.data
        ehr.codes[code] = AuthorizationCode(
            code=code,
            client_id=request.client.client_id,
            redirect_uri=data.get("redirect_uri", ""),
            scope=request.client.get_allowed_scope(data.get("scope", "")),
            user=request.user,
            patient=ehr.launches[data["launch"]],
            app_context=ehr.app_contexts.get(data["launch"]),
            encounter=ehr.encounters.get(data["launch"]),
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
        )

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
        found: AuthorizationCode | None = self.server.ehr.codes.get(code)
        if found is None or found.client_id != client.client_id or found.is_expired():
            return None
        return found

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        self.server.ehr.codes.pop(authorization_code.code, None)  # single use

    def authenticate_user(self, authorization_code: AuthorizationCode) -> str:
        return authorization_code.user


class LaunchContext:
    """An Authlib grant extension (as ``CodeChallenge`` is one): SMART's token answer names the
    launch patient, and carries the launch's ``appContext`` when it has one."""

    def __call__(self, grant: _CodeGrant) -> None:
        grant.register_hook("after_create_token_response", self.add_patient)

    def add_patient(self, grant: _CodeGrant, result: tuple[int, dict[str, Any], Any]) -> None:
        status, token, _headers = result
        code: AuthorizationCode = grant.request.authorization_code
        if status == 200:
            token["patient"] = code.patient
            if code.app_context is not None:
                token["appContext"] = code.app_context
            if code.encounter is not None:
                token["encounter"] = code.encounter


def authorization_app(ehr: EhrState) -> FastAPI:
    server = _Server(ehr)
    server.register_token_generator(
        "default",
        BearerTokenGenerator(
            lambda **_: secrets.token_urlsafe(32),
            expires_generator=lambda *_: TOKEN_LIFETIME_SECONDS,
        ),
    )
    server.register_grant(_CodeGrant, [CodeChallenge(required=True), LaunchContext()])
    app = FastAPI()

    @app.get("/authorize")
    async def authorize(request: Request) -> Response:
        oauth = await _oauth_request(request)
        launch = oauth.payload.data.get("launch")
        if launch not in ehr.launches:
            return JSONResponse({"error": "invalid_request", "detail": "unknown launch"}, 400)
        try:
            grant = server.get_consent_grant(oauth, end_user=USER)
        except OAuth2Error as error:
            return server.handle_error_response(oauth, error)  # type: ignore[no-any-return]
        response = server.create_authorization_response(oauth, grant_user=USER, grant=grant)
        if launch == TAMPER_STATE_LAUNCH and isinstance(response, RedirectResponse):
            parts = urlsplit(response.headers["location"])
            query = dict(parse_qsl(parts.query))
            query["state"] = "forged-" + query.get("state", "")
            response = RedirectResponse(urlunsplit(parts._replace(query=urlencode(query))), 302)
        return response  # type: ignore[no-any-return]

    @app.post("/token")
    async def token(request: Request) -> Response:
        ehr.token_requests += 1
        return server.create_token_response(await _oauth_request(request))  # type: ignore[no-any-return]

    return app


# --- the FHIR server -------------------------------------------------------------------------

SCOPE_FOR = {
    "Patient": "patient/Patient.read",
    "Observation": "patient/Observation.read",
    "Condition": "patient/Condition.read",
    "MedicationRequest": "patient/MedicationRequest.read",
    "Encounter": "patient/Encounter.read",
    "Procedure": "patient/Procedure.read",
}


def _date_of(resource: dict[str, Any]) -> str:
    return str(
        resource.get("effectiveDateTime")
        or resource.get("issued")
        or resource.get("recordedDate")
        or resource.get("authoredOn")
        or ""
    )


def _codes(resource: dict[str, Any]) -> set[str]:
    concept = resource.get("code") or {}
    return {f"{c.get('system')}|{c.get('code')}" for c in concept.get("coding") or []}


def fhir_app(ehr: EhrState) -> FastAPI:
    """Read and search as a SMART app uses them: ``Patient/{id}``; ``Observation``,
    ``Condition``, ``MedicationRequest``, ``Encounter`` and ``Procedure`` by ``patient`` (+
    ``encounter``, ``code`` as system|code lists, ``status``,
    ``_sort=-date``, ``_count`` with ``next`` pages). Every call needs a token the authorization
    server issued, for this patient and with the resource's scope."""
    app = FastAPI()

    @app.middleware("http")
    async def log_requests(request: Request, call_next: Any) -> Response:
        ehr.fhir_requests.append(request.url.path)  # paths only: the tests count them
        response: Response = await call_next(request)
        return response

    @app.get("/.well-known/smart-configuration")
    async def smart_configuration() -> Response:
        return JSONResponse(
            {
                "authorization_endpoint": f"{ehr.auth_url}/authorize",
                "token_endpoint": f"{ehr.auth_url}/token",
                "capabilities": [
                    "launch-ehr",
                    "client-public",
                    "context-ehr-patient",
                    "permission-patient",
                    "permission-v1",
                ],
                "code_challenge_methods_supported": ["S256"],
                "grant_types_supported": ["authorization_code"],
                "scopes_supported": ["launch", *SCOPE_FOR.values()],
            }
        )

    def granted(request: Request, resource_type: str, patient: str) -> Response | None:
        header = request.headers.get("authorization", "")
        token = ehr.tokens.get(header[7:]) if header.lower().startswith("bearer ") else None
        if token is None or token.expires_at < time.time():
            return JSONResponse({"resourceType": "OperationOutcome"}, 401)
        if token.patient != patient or SCOPE_FOR[resource_type] not in token.scope:
            return JSONResponse({"resourceType": "OperationOutcome"}, 403)
        return None

    @app.get("/Patient/{pid}")
    async def read_patient(pid: str, request: Request) -> Response:
        refused = granted(request, "Patient", pid)
        if refused is not None:
            return refused
        if pid != ehr.patient_id:
            return JSONResponse({"resourceType": "OperationOutcome"}, 404)
        return JSONResponse(ehr.resources["Patient"][0], media_type="application/fhir+json")

    @app.get("/{resource_type}")
    async def search(resource_type: str, request: Request) -> Response:
        if resource_type not in SCOPE_FOR or resource_type == "Patient":
            return JSONResponse({"resourceType": "OperationOutcome"}, 404)
        q = request.query_params
        patient = q.get("patient", "")
        refused = granted(request, resource_type, patient)
        if refused is not None:
            return refused
        found = ehr.resources.get(resource_type, []) if patient == ehr.patient_id else []
        if "code" in q:
            wanted = set(q["code"].split(","))
            found = [r for r in found if _codes(r) & wanted]
        if "encounter" in q:
            linked = {"reference": f"Encounter/{q['encounter']}"}
            found = [r for r in found if r.get("encounter") == linked]
        if "status" in q:
            found = [r for r in found if r.get("status") in q["status"].split(",")]
        if q.get("_sort") == "-date":
            found = sorted(found, key=_date_of, reverse=True)
        count, offset = int(q.get("_count", "50")), int(q.get("_offset", "0"))
        page = found[offset : offset + count]
        links = [{"relation": "self", "url": str(request.url)}]
        if offset + count < len(found):
            following = dict(q) | {"_offset": str(offset + count)}
            links.append(
                {
                    "relation": "next",
                    "url": f"{ehr.fhir_url}/{resource_type}?{urlencode(following)}",
                }
            )
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "link": links,
            "entry": [
                {
                    "fullUrl": f"{ehr.fhir_url}/{resource_type}/{r['id']}",
                    "resource": r,
                    "search": {"mode": "match"},
                }
                for r in page
            ],
        }
        return JSONResponse(bundle, media_type="application/fhir+json")

    return app
