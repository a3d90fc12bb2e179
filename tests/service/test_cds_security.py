"""CDS Hooks 2.0 security on a real server: EHR JWTs (keys made here), jti replay, JWKS, CORS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from service.app import create_app
from service.logging import configure_logging
from service.settings import REPO_ROOT, CdsIssuer, Settings
from tests.conftest import MODELS_DIR, Keys, running_server
from tests.service.test_cds_hooks import bundle_path, hook_request, prefetch

BASE = "https://clinrisk.example.org"
ISS = "https://ehr.example.org"  # keys from a JWKS file
JKU_ISS = "https://other-ehr.example.org"  # keys from its allowlisted jku
URL_ISS = "https://url-ehr.example.org"  # keys from a configured JWKS URL
ORIGIN = "https://ehr.example.org"
DISCOVERY = "/cds-services"
HOOK = "/cds-services/clinrisk-ascvd-risk"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class Signer:
    kid: str
    alg: str
    private: Any

    def public_jwk(self) -> dict[str, Any]:
        algorithm = ECAlgorithm if self.alg.startswith("ES") else RSAAlgorithm
        jwk: dict[str, Any] = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.alg}

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def ec_signer(kid: str) -> Signer:
    return Signer(kid, "ES384", ec.generate_private_key(ec.SECP384R1()))


def rsa_signer(kid: str) -> Signer:
    return Signer(kid, "RS384", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def claims(path: str, *, iss: str = ISS, lifetime: int = 240, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": iss,
        "sub": "client-id-of-the-ehr",
        "aud": BASE + path,
        "iat": now,
        "exp": now + lifetime,
        "jti": str(uuid.uuid4()),
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def mint(signer: Signer, body: dict[str, Any], **header: Any) -> str:
    return jwt.encode(
        body, signer.private, algorithm=signer.alg, headers={"kid": signer.kid, **header}
    )


def raw_token(header: dict[str, Any], body: dict[str, Any], signature: bytes) -> str:
    """A token put together by hand (what PyJWT would refuse to make: none, HMAC on a PEM)."""
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(body).encode())
    return head + "." + b64(signature)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class JwksServer:
    """A real HTTP JWKS endpoint on loopback that counts its fetches."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        self.failing = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                if outer.failing:
                    self.send_error(503)
                    return
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Port:
    """A loopback TCP port that counts the connections made to it (and closes them): stands
    for a FHIR server, to tell whether the service contacted it."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.socket.getsockname()[1]}/fhir"
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return  # closed
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self.socket.close()


@dataclass
class Ehr:
    ec: Signer
    rsa: Signer
    jku_signer: Signer
    jwks: JwksServer
    jwks_file: Path
    settings: Settings
    url: str = ""
    client: httpx.Client = field(default_factory=httpx.Client)

    def discovery(self, token: str, **headers: str) -> httpx.Response:
        return self.client.get(self.url + DISCOVERY, headers={**bearer(token), **headers})

    def hook(self, token: str) -> httpx.Response:
        patient_id, data = prefetch(bundle_path("Lupe_Little"))
        return self.client.post(
            self.url + HOOK, headers=bearer(token), json=hook_request(patient_id, data)
        )


# The FHIR server the issuer ISS is registered with (fhir_servers), and one it is not.
REGISTERED_FHIR, OTHER_FHIR = Port(), Port()


def ehr_settings(tmp_path: Path, keys: Keys, database_url: str, jwks: JwksServer) -> Settings:
    return Settings(
        models_dir=MODELS_DIR,
        database_url=database_url,
        api_keys_file=keys.file,
        pseudonym_key="test-pseudonym-key",  # type: ignore[arg-type]
        cds_issuers={  # type: ignore[arg-type]
            ISS: {
                "jwks_file": str(tmp_path / "ehr.jwks.json"),
                "caller": "test-ehr",
                "fhir_servers": [REGISTERED_FHIR.url + "/"],  # a trailing slash is ignored
            },
            JKU_ISS: {"jku_allowlist": [jwks.url]},
            URL_ISS: {"jwks_url": jwks.url.replace("/jwks.json", "/url.json")},
        },
        cds_base_url=BASE + "/",  # a trailing slash is dropped
        cds_cors_origins=[ORIGIN],
    )


@pytest.fixture
def ehr(tmp_path: Path, keys: Keys) -> Iterator[Ehr]:
    signers = ec_signer("ec-1"), rsa_signer("rsa-1"), ec_signer("jku-1")
    jwks_file = tmp_path / "ehr.jwks.json"
    jwks_file.write_text(json.dumps({"keys": [s.public_jwk() for s in signers[:2]]}))
    jwks = JwksServer()
    jwks.keys = [signers[2].public_jwk()]
    settings = ehr_settings(tmp_path, keys, f"sqlite:///{tmp_path / 'audit.db'}", jwks)
    ehr = Ehr(*signers, jwks=jwks, jwks_file=jwks_file, settings=settings)
    try:
        with running_server(create_app(settings)) as url, ehr.client:
            ehr.url = url
            yield ehr
    finally:
        jwks.close()


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["detail"] == "Authentication failed."  # nothing more to learn


# --- accepted ------------------------------------------------------------------------------


def test_es384_and_rs384_tokens_are_accepted_on_discovery_and_the_hook(
    ehr: Ehr, keys: Keys
) -> None:
    for signer in (ehr.ec, ehr.rsa):
        discovery = ehr.discovery(mint(signer, claims(DISCOVERY)))
        assert discovery.status_code == 200, (signer.alg, discovery.text)
        assert discovery.json()["services"][0]["id"] == "clinrisk-ascvd-risk"

        hook = ehr.hook(mint(signer, claims(HOOK)))
        assert hook.status_code == 200, (signer.alg, hook.text)
        assert hook.json()["cards"][0]["summary"]

    # The audit trail names the EHR as configured; API keys still work on /v1.
    audit = ehr.client.get(ehr.url + "/v1/audit", headers=keys.header("admin")).json()
    assert {r["caller"] for r in audit["records"]} == {"test-ehr"}


def test_a_jku_on_the_issuers_allowlist_is_fetched_and_an_unknown_kid_refreshes_once(
    ehr: Ehr,
) -> None:
    assert ehr.hook(mint(ehr.jku_signer, claims(HOOK, iss=JKU_ISS), jku=ehr.jwks.url)).is_success
    assert ehr.jwks.fetches == 1
    # Cached: a second call does not fetch.
    assert ehr.hook(mint(ehr.jku_signer, claims(HOOK, iss=JKU_ISS), jku=ehr.jwks.url)).is_success
    assert ehr.jwks.fetches == 1

    # The EHR rotates its key: the new kid makes the service fetch the set again, once.
    rotated = ec_signer("jku-2")
    ehr.jwks.keys.append(rotated.public_jwk())
    assert ehr.hook(mint(rotated, claims(HOOK, iss=JKU_ISS), jku=ehr.jwks.url)).is_success
    assert ehr.jwks.fetches == 2

    # Made-up kids right after: no fetch within the refresh interval, refused.
    for n in range(5):
        stranger = Signer(f"made-up-{n}", "ES384", ehr.jku_signer.private)
        assert_refused(ehr.hook(mint(stranger, claims(HOOK, iss=JKU_ISS), jku=ehr.jwks.url)))
    assert ehr.jwks.fetches == 2


def test_a_configured_jwks_url_is_used_without_jku_and_a_failing_one_is_not_hammered(
    ehr: Ehr,
) -> None:
    token = mint(ehr.jku_signer, claims(DISCOVERY, iss=URL_ISS))
    assert ehr.discovery(token).status_code == 200
    assert ehr.jwks.fetches == 1

    ehr.jwks.failing = True
    rotated = ec_signer("url-2")
    for _ in range(3):  # one refresh for the unknown kid, then none within the interval
        assert_refused(ehr.discovery(mint(rotated, claims(DISCOVERY, iss=URL_ISS))))
    assert ehr.jwks.fetches == 2
    # A source never read that fails (the jku issuer's): tried once per interval, not per call.
    for _ in range(3):
        jku_token = mint(ehr.jku_signer, claims(DISCOVERY, iss=JKU_ISS), jku=ehr.jwks.url)
        assert_refused(ehr.discovery(jku_token))
    assert ehr.jwks.fetches == 3


def test_an_unknown_kid_rereads_the_jwks_file(ehr: Ehr) -> None:
    added = ec_signer("ec-2")
    jwks = json.loads(ehr.jwks_file.read_text())
    ehr.jwks_file.write_text(json.dumps({"keys": [*jwks["keys"], added.public_jwk()]}))

    assert ehr.discovery(mint(added, claims(DISCOVERY))).status_code == 200


# --- refused -------------------------------------------------------------------------------


def refused_tokens(ehr: Ehr) -> dict[str, tuple[str, str]]:
    """Tokens to refuse by case, each with the reason the service must log for it."""
    now = int(time.time())
    good = mint(ehr.ec, claims(HOOK))
    head, body, signature = good.split(".")
    forged_body = b64(json.dumps({**claims(HOOK), "sub": "someone-else"}).encode())
    hs_header = {"alg": "HS256", "typ": "JWT", "kid": ehr.rsa.kid}
    hs_signing_input = (
        b64(json.dumps(hs_header).encode()) + "." + b64(json.dumps(claims(HOOK)).encode())
    )
    # HMAC "signed" with the public key's bytes: a verifier that lets the token pick the
    # algorithm would check it with the same public key as the secret.
    hs_signature = hmac.new(ehr.rsa.public_pem(), hs_signing_input.encode(), hashlib.sha256)
    ec_as_es256 = Signer(ehr.ec.kid, "ES256", ec.generate_private_key(ec.SECP256R1()))
    return {
        "expired": (mint(ehr.ec, claims(HOOK, iat=now - 400, exp=now - 100)), "expired"),
        "not yet valid": (
            mint(ehr.ec, claims(HOOK, iat=now + 600, exp=now + 700)),
            "not_yet_valid",
        ),
        "wrong aud (another service)": (
            mint(ehr.ec, claims("/cds-services/other")),
            "wrong_audience",
        ),
        "wrong aud (discovery's)": (mint(ehr.ec, claims(DISCOVERY)), "wrong_audience"),
        "wrong aud (another host)": (
            mint(ehr.ec, claims(HOOK, aud="https://x.example" + HOOK)),
            "wrong_audience",
        ),
        "unknown iss": (
            mint(ehr.ec, claims(HOOK, iss="https://evil.example.org")),
            "unknown_issuer",
        ),
        "jku not allowlisted": (
            mint(ehr.ec, claims(HOOK), jku="https://evil.example.org/jwks"),
            "jku_not_allowed",
        ),
        "jku of another issuer": (mint(ehr.ec, claims(HOOK), jku=ehr.jwks.url), "jku_not_allowed"),
        "alg none": (
            raw_token({"alg": "none", "kid": ehr.ec.kid}, claims(HOOK), b""),
            "algorithm_not_allowed",
        ),
        "HS256 with the public key as secret": (
            hs_signing_input + "." + b64(hs_signature.digest()),
            "algorithm_not_allowed",
        ),
        "tampered payload": (f"{head}.{forged_body}.{signature}", "bad_signature"),
        "tampered signature": (f"{head}.{body}.{signature[:-6]}AAAAAA", "bad_signature"),
        "missing jti": (mint(ehr.ec, claims(HOOK, jti=None)), "missing_claim"),
        "missing exp": (mint(ehr.ec, claims(HOOK, exp=None)), "missing_claim"),
        "missing iat": (mint(ehr.ec, claims(HOOK, iat=None)), "missing_claim"),
        "lifetime over the maximum": (
            mint(ehr.ec, claims(HOOK, lifetime=3600)),
            "lifetime_too_long",
        ),
        "no kid": (jwt.encode(claims(HOOK), ehr.ec.private, algorithm="ES384"), "no_kid"),
        "ES256 on a P-384 kid": (mint(ec_as_es256, claims(HOOK)), "key_not_for_this_algorithm"),
        "RSA key named by an EC token": (
            mint(Signer(ehr.rsa.kid, "ES384", ehr.ec.private), claims(HOOK)),
            "key_not_for_this_algorithm",
        ),
        "not a JWT": ("not-a-token", "malformed"),
    }


def logged_reasons(capsys: pytest.CaptureFixture[str]) -> list[str]:
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    return [line["reason"] for line in lines if line.get("event") == "cds_auth_refused"]


def test_bad_tokens_are_refused_with_a_bare_401_for_the_right_reason(
    ehr: Ehr, keys: Keys, subtests: pytest.Subtests, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO")  # onto this test's captured stderr
    for name, (token, reason) in refused_tokens(ehr).items():
        with subtests.test(name):
            assert_refused(ehr.hook(token))
            assert logged_reasons(capsys) == [reason]
    with subtests.test("no Authorization header"):
        assert_refused(ehr.client.get(ehr.url + DISCOVERY))
        assert logged_reasons(capsys) == ["no_bearer_token"]
    with subtests.test("a clinrisk API key (EHR issuers configured: JWTs only)"):
        assert_refused(ehr.hook(keys.predict))
        assert_refused(ehr.discovery(keys.predict))
        assert logged_reasons(capsys) == ["malformed", "malformed"]


def test_a_replayed_jti_is_refused(ehr: Ehr) -> None:
    token = mint(ehr.ec, claims(HOOK))

    assert ehr.hook(token).status_code == 200
    assert_refused(ehr.hook(token))
    # Another token with the same jti from the same issuer is a replay too.
    same_jti = mint(
        ehr.rsa, claims(HOOK, jti=jwt.decode(token, options={"verify_signature": False})["jti"])
    )
    assert_refused(ehr.hook(same_jti))


def test_a_jti_replayed_to_another_worker_on_the_same_database_is_refused(
    tmp_path: Path, keys: Keys, database_url: str
) -> None:
    signer = ec_signer("ec-1")
    (tmp_path / "ehr.jwks.json").write_text(json.dumps({"keys": [signer.public_jwk()]}))
    jwks = JwksServer()
    settings = ehr_settings(tmp_path, keys, database_url, jwks)
    with ExitStack() as stack:
        stack.callback(jwks.close)
        first = stack.enter_context(running_server(create_app(settings)))
        second = stack.enter_context(running_server(create_app(settings)))
        token = mint(signer, claims(DISCOVERY))

        assert httpx.get(first + DISCOVERY, headers=bearer(token)).status_code == 200
        assert_refused(httpx.get(second + DISCOVERY, headers=bearer(token)))
        fresh = mint(signer, claims(DISCOVERY))
        assert httpx.get(second + DISCOVERY, headers=bearer(fresh)).status_code == 200


def test_tokens_and_claims_never_reach_the_log(
    ehr: Ehr, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO")  # onto this test's captured stderr
    tokens = [token for token, _ in refused_tokens(ehr).values()]
    for token in tokens:
        ehr.hook(token)
    accepted = mint(ehr.ec, claims(HOOK))
    assert ehr.hook(accepted).status_code == 200
    assert_refused(ehr.hook(accepted))

    logged = capsys.readouterr().err
    assert logged.count("cds_auth_refused") == len(tokens) + 1
    for token in [*tokens, accepted]:
        for part in token.split("."):
            if len(part) > 8:
                assert part not in logged
    # Claims other than iss and kid: the subject, the jti, the audience.
    assert "client-id-of-the-ehr" not in logged and "someone-else" not in logged
    assert jwt.decode(accepted, options={"verify_signature": False})["jti"] not in logged
    assert "clinrisk.example.org" not in logged


# --- CORS and the development door ---------------------------------------------------------


def test_cors_preflight_from_the_ehr_origin_only(ehr: Ehr) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    allowed = ehr.client.options(ehr.url + HOOK, headers={"Origin": ORIGIN, **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in allowed.headers

    other = ehr.client.options(
        ehr.url + HOOK, headers={"Origin": "https://evil.example.org", **preflight}
    )
    assert "access-control-allow-origin" not in other.headers

    # The answers themselves (a 401 too) carry the header for the EHR's page to read them.
    answer = ehr.discovery(mint(ehr.ec, claims(DISCOVERY)), Origin=ORIGIN)
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    refused = ehr.client.get(ehr.url + DISCOVERY, headers={"Origin": ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN
    # The rest of the API is not opened to browsers on other origins.
    api = ehr.client.options(ehr.url + "/v1/models", headers={"Origin": ORIGIN, **preflight})
    assert "access-control-allow-origin" not in api.headers


def test_api_keys_on_cds_hooks_only_where_the_setting_allows_them(
    tmp_path: Path, keys: Keys
) -> None:
    jwks = JwksServer()
    (tmp_path / "ehr.jwks.json").write_text(json.dumps({"keys": []}))
    base = ehr_settings(tmp_path, keys, f"sqlite:///{tmp_path / 'audit.db'}", jwks)
    settings = base.model_copy(update={"cds_allow_api_keys": True})
    try:
        with running_server(create_app(settings)) as url:
            assert httpx.get(url + DISCOVERY, headers=keys.header("predict")).status_code == 200
            assert httpx.get(url + DISCOVERY).status_code == 401
    finally:
        jwks.close()
    # The defaults: keys without issuers (make run), JWTs only with them.
    assert base.cds_api_keys_allowed() is False
    assert Settings(models_dir=MODELS_DIR).cds_api_keys_allowed() is True


def test_issuers_without_a_base_url_do_not_serve(tmp_path: Path) -> None:
    jwks_file = tmp_path / "ehr.jwks.json"
    jwks_file.write_text(json.dumps({"keys": []}))
    settings = Settings(
        models_dir=MODELS_DIR,
        pseudonym_key="k",  # type: ignore[arg-type]
        cds_issuers={ISS: {"jwks_file": str(jwks_file)}},  # type: ignore[arg-type]
    )
    problem = settings.serving_problem()
    assert problem is not None and "CLINRISK_CDS_BASE_URL" in problem
    with pytest.raises(ValueError, match="no wildcard"):
        Settings(models_dir=MODELS_DIR, cds_cors_origins=["*"])


def test_the_readme_example_request_gets_a_risk_card(ehr: Ehr) -> None:
    request = json.loads((REPO_ROOT / "examples" / "patient-view-request.json").read_text())

    response = ehr.client.post(
        ehr.url + HOOK, headers=bearer(mint(ehr.ec, claims(HOOK))), json=request
    )

    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    assert card["extension"]["dev.clinrisk.prediction"]["status"] == "scored"


def test_with_an_ehr_configured_a_plain_http_fhir_server_is_refused_even_on_loopback(
    ehr: Ehr,
) -> None:
    patient_id, data = prefetch(bundle_path("Lupe_Little"))
    del data["hdlCholesterol"]
    request = {
        **hook_request(patient_id, data),
        "fhirServer": "http://127.0.0.1:9/fhir",
        "fhirAuthorization": {"access_token": "t", "token_type": "Bearer"},
    }

    response = ehr.client.post(
        ehr.url + HOOK, headers=bearer(mint(ehr.ec, claims(HOOK))), json=request
    )

    assert response.status_code == 412
    assert "must be https" in response.json()["detail"]


def test_a_fhir_server_the_ehr_is_not_registered_with_is_never_contacted(ehr: Ehr) -> None:
    patient_id, data = prefetch(bundle_path("Lupe_Little"))
    del data["hdlCholesterol"]  # one key to fetch
    answers = {}
    for port in (OTHER_FHIR, REGISTERED_FHIR):
        request = {
            **hook_request(patient_id, data),
            "fhirServer": port.url,
            "fhirAuthorization": {"access_token": "t", "token_type": "Bearer"},
        }
        before = port.connections
        response = ehr.client.post(
            ehr.url + HOOK, headers=bearer(mint(ehr.ec, claims(HOOK))), json=request
        )
        answers[port.url] = (response.status_code, response.json()["detail"])
        assert port.connections - before == (1 if port is REGISTERED_FHIR else 0)

    status, detail = answers[OTHER_FHIR.url]
    assert status == 412 and "is not one this EHR is registered with" in detail
    # The registered one is asked (here it answers no TLS, so the key is still missing).
    status, detail = answers[REGISTERED_FHIR.url]
    assert status == 412 and "could not be fetched" in detail


def test_registered_fhir_servers_must_be_https() -> None:
    with pytest.raises(ValueError, match="is not an https URL"):
        CdsIssuer(jwks_url="https://ehr.example.org/jwks", fhir_servers=["http://fhir.example/r4"])
