"""CDS Hooks 2.0 security: the EHR's signed JWT on every call, and CORS for its browser clients.

What the specification requires (cds-hooks.hl7.org, "Trusting CDS Clients"), as checked here:

- ``Authorization: Bearer <JWT>`` on every request, discovery included.
- Signed with an asymmetric algorithm (ES/RS/PS 256/384/512); ``none`` and every HMAC algorithm
  are refused before any key is looked at, and the key's type and curve must match the algorithm
  (the classic confusion attack: HS256 "signed" with the public key as secret).
- ``iss`` must be a configured issuer (``CLINRISK_CDS_ISSUERS``); its keys come from its JWKS
  file or URL, or from the token's ``jku`` header only when that URL is on the issuer's
  allowlist. Key sets are cached; an unknown ``kid`` re-reads them at most once per
  ``CLINRISK_CDS_JWKS_REFRESH_SECONDS`` per issuer (a stream of made-up kids cannot make the
  service hammer the EHR), with bounded waits (httpx timeouts, a size cap).
- ``aud`` must be the exact URL called: ``CLINRISK_CDS_BASE_URL`` + the request path.
- ``exp``, ``iat`` and ``jti`` are required; ``iat`` may be at most the clock skew in the future
  and ``exp - iat`` at most ``CLINRISK_CDS_MAX_TOKEN_LIFETIME_SECONDS``.
- A ``jti`` is accepted once per issuer: it is recorded in the audit database (table
  ``cds_jwt_ids``, migration 0004) until the token expires, so every worker refuses a replay.

Every refusal is the same bare 401 (``WWW-Authenticate: Bearer``; the body says nothing that
helps an attacker) and one log line with the reason, the issuer and the ``kid``: never the
token, never another claim.

The clinrisk API key stays accepted when ``Settings.cds_api_keys_allowed()`` (by default only
when no issuer is configured: a developer's ``make run``); the key path is ``service.api.deps``'s
own, so scopes and model restrictions are unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import jwt
import sqlalchemy as sa
import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.deps import AppState, Credentials, StateDep, require
from service.auth import ApiKey
from service.errors import AuditUnavailable, NotAuthenticated
from service.settings import CdsIssuer, Settings

log = structlog.get_logger("clinrisk")

PATH_PREFIX = "/cds-services"
# NOTE: HMAC ("HS*") and "none" are absent on purpose: a CDS service must never accept a token
# it could have forged itself, nor an unsigned one.
ALGORITHMS = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
MIN_RSA_BITS = 2048
MAX_TOKEN_BYTES = 8 * 1024
MAX_JTI_CHARS = 256
MAX_JWKS_BYTES = 256 * 1024
PURGE_EVERY_SECONDS = 60.0
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="clinrisk", error="invalid_token"'}


class Refused(Exception):
    """A token that is not accepted; ``reason`` is for the log only (never sent back)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class CdsClient:
    """A verified CDS Hooks call: who sent it (the EHR's ``iss`` and ``sub``)."""

    issuer: str
    subject: str | None
    caller: ApiKey


# --- key sets -------------------------------------------------------------------------------


def parse_jwks(data: Any) -> dict[str, dict[str, Any]]:
    """A JWKS's keys by ``kid`` (keys without one cannot be chosen by a token: skipped)."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError("not a JWKS: no 'keys' list")
    return {
        key["kid"]: key
        for key in data["keys"]
        if isinstance(key, dict) and isinstance(key.get("kid"), str)
    }


@dataclass
class KeySets:
    """JWKS per source (a file path or URL), cached; refreshes bounded per issuer."""

    refresh_seconds: float
    timeout_seconds: float
    _sets: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    _refreshed: dict[str, float] = field(default_factory=dict)
    _failed: dict[str, float] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def key(self, issuer: str, source: str, kid: str) -> dict[str, Any] | None:
        keys = self._sets.get(source)
        if keys is not None and kid in keys:
            return keys[kid]
        lock = self._locks.setdefault(issuer, asyncio.Lock())
        async with lock:  # concurrent calls with the same new kid share one fetch
            keys = self._sets.get(source)
            if keys is not None and kid in keys:
                return keys[kid]
            # A source never read is read (sources are bounded by the configuration), and tried
            # again at most once per interval while it fails; a kid missing from a source
            # already read re-reads it at most once per interval.
            failed = self._failed.get(source)
            if keys is None and failed is not None:
                if time.monotonic() - failed < self.refresh_seconds:
                    return None
            if keys is not None:
                last = self._refreshed.get(issuer)
                if last is not None and time.monotonic() - last < self.refresh_seconds:
                    return None
                self._refreshed[issuer] = time.monotonic()
            try:
                keys = await self._load(source)
            except (OSError, ValueError, RecursionError, httpx.HTTPError) as exc:
                self._failed[source] = time.monotonic()
                log.warning("cds_jwks_unavailable", iss=issuer[:256], error=type(exc).__name__)
                return None
            self._failed.pop(source, None)
            self._sets[source] = keys
            return keys.get(kid)

    async def _load(self, source: str) -> dict[str, dict[str, Any]]:
        if not source.startswith(("https://", "http://")):
            return parse_jwks(json.loads(Path(source).read_bytes()))
        timeout = httpx.Timeout(self.timeout_seconds)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            async with client.stream("GET", source) as response:
                if response.status_code != 200:
                    raise ValueError(f"JWKS answered {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise ValueError("JWKS too large")
        return parse_jwks(json.loads(bytes(body)))


# --- replay ---------------------------------------------------------------------------------


class JtiStore:
    """``jti``s seen, in the audit database, shared by every worker (and every instance)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._purged = 0.0
        # The upsert takes over a row whose token has expired (purge not yet run): rowcount is
        # 1 for a new or expired key, 0 for a live one, i.e. a replay. SQLite and PostgreSQL.
        self._claim = sa.text(
            "INSERT INTO cds_jwt_ids (token_key, expires_at) VALUES (:key, :expires) "
            "ON CONFLICT (token_key) DO UPDATE SET expires_at = excluded.expires_at "
            "WHERE cds_jwt_ids.expires_at < :now"
        )
        self._purge = sa.text("DELETE FROM cds_jwt_ids WHERE expires_at < :now")

    def claim(self, issuer: str, jti: str, expires_at: int) -> bool:
        """Record the token id; False when it is already recorded and live. Blocking."""
        key = hashlib.sha256(f"{issuer}\n{jti}".encode()).hexdigest()
        now = int(time.time())
        try:
            with self._engine.begin() as connection:
                if time.monotonic() - self._purged > PURGE_EVERY_SECONDS:
                    connection.execute(self._purge, {"now": now})
                    self._purged = time.monotonic()
                result = connection.execute(
                    self._claim, {"key": key, "expires": expires_at, "now": now}
                )
                return bool(result.rowcount == 1)
        except SQLAlchemyError as exc:
            # Without the record a replay could not be refused: no token is accepted then.
            log.warning("cds_jti_store_failed", error=type(exc).__name__)
            raise AuditUnavailable(
                "The audit store is unavailable; CDS Hooks calls cannot be verified now."
            ) from None


# --- verification ---------------------------------------------------------------------------


def _check_key(jwk: dict[str, Any], alg: str) -> Any:
    """The public key of ``jwk`` for ``alg``: type, curve and size must fit the algorithm."""
    if jwk.get("use", "sig") != "sig" or jwk.get("alg", alg) != alg:
        raise Refused("key_not_for_this_algorithm")
    if "d" in jwk:  # a private key published by mistake is not trusted either
        raise Refused("private_key_in_jwks")
    expected_type = "EC" if alg.startswith("ES") else "RSA"
    if jwk.get("kty") != expected_type or (
        expected_type == "EC" and jwk.get("crv") != EC_CURVES[alg]
    ):
        raise Refused("key_not_for_this_algorithm")
    try:
        key = jwt.PyJWK(jwk, algorithm=alg).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):  # a malformed JWK member
        raise Refused("bad_key") from None
    if expected_type == "RSA" and key.key_size < MIN_RSA_BITS:
        raise Refused("rsa_key_too_small")
    return key


def _caller_for(issuer: str, config: CdsIssuer) -> ApiKey:
    key_id = config.caller or "ehr-" + hashlib.sha256(issuer.encode()).hexdigest()[:12]
    return ApiKey(key_id=key_id, name=issuer, sha256="", scopes=frozenset({"predict"}))


class Verifier:
    """Checks CDS Hooks bearer JWTs against one service's settings."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.keys = KeySets(settings.cds_jwks_refresh_seconds, settings.cds_jwks_timeout_seconds)
        self.jtis = JtiStore(engine)

    async def verify(self, token: str, audience: str) -> CdsClient:
        """The verified client, or :class:`Refused` (or 503 when the replay store is down)."""
        settings = self.settings
        if len(token) > MAX_TOKEN_BYTES:
            raise Refused("token_too_large")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise Refused("malformed") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise Refused("algorithm_not_allowed")
        if not isinstance(kid, str) or not kid:
            raise Refused("no_kid")
        issuer = unverified.get("iss")
        config = settings.cds_issuers.get(issuer) if isinstance(issuer, str) else None
        if config is None or not isinstance(issuer, str):
            raise Refused("unknown_issuer")
        jku = header.get("jku")
        if jku is not None:
            if jku not in config.jku_allowlist:
                raise Refused("jku_not_allowed")
            source: str | None = jku
        elif config.jwks_url is not None:
            source = config.jwks_url
        else:
            source = str(config.jwks_file) if config.jwks_file is not None else None
        if source is None:
            raise Refused("no_key_source")  # an issuer known only by jku sent none
        jwk = await self.keys.key(issuer, source, kid)
        if jwk is None:
            raise Refused("unknown_kid")
        key = _check_key(jwk, alg)
        skew = settings.cds_clock_skew_seconds
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=audience,
                issuer=issuer,
                leeway=skew,
                options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise Refused("expired") from None
        except jwt.ImmatureSignatureError:
            raise Refused("not_yet_valid") from None
        except jwt.InvalidAudienceError:
            raise Refused("wrong_audience") from None
        except jwt.MissingRequiredClaimError:
            raise Refused("missing_claim") from None
        except jwt.InvalidSignatureError:
            raise Refused("bad_signature") from None
        except jwt.PyJWTError:
            raise Refused("invalid_claims") from None
        exp, iat, jti = claims["exp"], claims["iat"], claims["jti"]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (exp, iat)):
            raise Refused("invalid_claims")  # PyJWT also takes numeric strings
        if exp - iat > settings.cds_max_token_lifetime_seconds:
            raise Refused("lifetime_too_long")
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_CHARS:
            raise Refused("bad_jti")
        # Remembered for as long as the token could still pass the checks above.
        if not await run_in_threadpool(self.jtis.claim, issuer, jti, int(exp) + skew):
            raise Refused("replayed")
        subject = claims.get("sub")
        return CdsClient(
            issuer=issuer,
            subject=subject if isinstance(subject, str) else None,
            caller=_caller_for(issuer, config),
        )


def _verifier(request: Request, state: AppState) -> Verifier:
    # One per application, made on first use (the routes' state is ready by then).
    verifier: Verifier | None = getattr(request.app.state, "cds_verifier", None)
    if verifier is None:
        verifier = Verifier(state.settings, state.audit.engine)
        request.app.state.cds_verifier = verifier
    return verifier


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _refuse(request: Request, reason: str, token: str | None) -> NotAuthenticated:
    iss = kid = None
    if token is not None:
        # Only the issuer and key id are logged (to find a misconfigured EHR), never the token.
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            iss = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            pass
    log.warning(
        "cds_auth_refused",
        reason=reason,
        path=request.url.path,
        iss=iss[:256] if isinstance(iss, str) else None,
        kid=kid[:128] if isinstance(kid, str) else None,
    )
    return NotAuthenticated("Authentication failed.", headers=CHALLENGE)


async def authenticate(
    request: Request,
    state: AppState,
    api_key: Callable[[str], Awaitable[ApiKey]] | None,
) -> ApiKey:
    """The caller of a CDS Hooks route: a verified EHR token, or (when allowed) an API key."""
    settings = state.settings
    token = _bearer(request)
    if token is None:
        raise _refuse(request, "no_bearer_token", None)
    if token.startswith("crk_") and settings.cds_api_keys_allowed():
        if api_key is not None:
            return await api_key(token)
        key = state.keys.authenticate(token)  # discovery: any valid key
        if key is None:
            raise _refuse(request, "bad_api_key", None)
        return key
    if not settings.cds_issuers or settings.cds_base_url is None:
        raise _refuse(request, "no_issuer_configured", None)
    audience = settings.cds_base_url + request.url.path
    try:
        client = await _verifier(request, state).verify(token, audience)
    except Refused as exc:
        raise _refuse(request, exc.reason, token) from None
    # The hook reads it to hold the call's fhirServer to this EHR's registered ones.
    request.state.cds_issuer = client.issuer
    return client.caller


# The EHR's signed JWT as an OpenAPI security scheme, so the contract and /docs show what an
# EHR sends; the token itself is read and verified by :func:`authenticate`.
ehr_jwt = HTTPBearer(
    scheme_name="ehrJwt",
    bearerFormat="JWT",
    description="CDS Hooks 2.0: a JWT the EHR signs for every call (ES384/RS384 and stronger; "
    "iss and jku allowlisted, aud = the exact service URL, exp, iat, jti used once). The "
    "clinrisk API key is accepted instead only where the configuration allows it.",
    auto_error=False,
)
EhrJwt = Annotated[HTTPAuthorizationCredentials | None, Depends(ehr_jwt)]


def cds_caller(*, model: str) -> Any:
    """``Depends`` for a hook or feedback route of the service scoring ``model``.

    NOTE: it takes ``Credentials`` (the API-key scheme of ``service.api.deps``) and ``EhrJwt``
    so the OpenAPI document lists both as alternatives; the header is read again here.
    """
    key_dependency = require("predict", model=model).dependency

    async def dependency(
        request: Request, state: StateDep, credentials: Credentials, _jwt: EhrJwt
    ) -> ApiKey:
        async def api_key(_token: str) -> ApiKey:
            key: ApiKey = await key_dependency(request, state, credentials)
            return key

        return await authenticate(request, state, api_key)

    return Depends(dependency)


async def _discovery_caller(
    request: Request, state: StateDep, _key: Credentials, _jwt: EhrJwt
) -> ApiKey:
    return await authenticate(request, state, None)


discovery_caller: Any = Depends(_discovery_caller)
"""``Depends`` for ``GET /cds-services``: authenticated like a hook call (any valid API key)."""


# --- CORS -----------------------------------------------------------------------------------


class CdsCors:
    """Starlette's CORS middleware on /cds-services only, for the configured EHR origins.

    Explicit origins and no credentials (the token travels in a header, not a cookie), so a
    preflight from any other origin gets no CORS headers and the browser blocks the call.
    The rest of the API is not meant for browsers on other origins and gets no CORS at all.
    """

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self.app = app
        self.cors: ASGIApp | None = None
        if origins:
            self.cors = CORSMiddleware(
                app,
                allow_origins=origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
                allow_credentials=False,
                max_age=600,
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            self.cors is not None
            and scope["type"] == "http"
            and (path == PATH_PREFIX or path.startswith(PATH_PREFIX + "/"))
        ):
            await self.cors(scope, receive, send)
            return
        await self.app(scope, receive, send)
