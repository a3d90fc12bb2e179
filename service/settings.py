"""Service configuration: one pydantic-settings class, ``CLINRISK_`` environment prefix."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.signing import DEFAULT_TRUSTED_KEYS, TrustPolicy, load_public_keys, parse_key_paths

REPO_ROOT = Path(__file__).resolve().parents[1]


class CdsIssuer(BaseModel):
    """One EHR allowed to call the CDS Hooks services: where its JWT signing keys are."""

    model_config = {"extra": "forbid"}

    jwks_file: Path | None = None
    """A JWKS (JSON Web Key Set) file with the EHR's public keys: read at start-up, re-read on an
    unknown ``kid`` (bounded)."""
    jwks_url: str | None = None
    """A JWKS URL fetched (and cached) when a token has no ``jku`` header."""
    jku_allowlist: list[str] = Field(default_factory=list)
    """The ``jku`` header URLs accepted from this issuer (exact match); any other is refused."""
    caller: str | None = Field(default=None, min_length=1, max_length=64)
    """The caller name in audit records; default ``ehr-`` and a hash of the issuer."""
    fhir_servers: list[str] = Field(default_factory=list)
    """The ``fhirServer`` base URLs this EHR's calls may name (https; a trailing ``/`` is
    ignored). A call naming another is never fetched from, so a token holder cannot point the
    service, and the access token, at any other host. Empty: any https URL (CDS Hooks' own
    rule); list them in production."""

    @model_validator(mode="after")
    def _has_a_key_source(self) -> CdsIssuer:
        if self.jwks_file is None and self.jwks_url is None and not self.jku_allowlist:
            raise ValueError("an issuer needs jwks_file, jwks_url or jku_allowlist")
        if self.jwks_file is not None and not self.jwks_file.is_file():
            raise ValueError(f"jwks_file '{self.jwks_file}' does not exist")
        for url in [self.jwks_url, *self.jku_allowlist]:
            if url is not None and not url.startswith(("https://", "http://")):
                raise ValueError(f"'{url}' is not an http(s) URL")
        for url in self.fhir_servers:
            if not url.startswith("https://"):
                raise ValueError(f"fhir_servers: '{url}' is not an https URL")
        return self

    def allows_fhir_server(self, server: str) -> bool:
        """Whether a call may name ``server`` as its ``fhirServer`` (see ``fhir_servers``)."""
        if not self.fhir_servers:
            return True
        return server.rstrip("/") in {url.rstrip("/") for url in self.fhir_servers}


# Least privilege for the clinician page (issue 12): read the launch patient's chart, nothing
# else (Encounter and Procedure: the readmission model's stay, with an encounter context). No
# ``openid fhirUser``: clinrisk keeps no clinician identity (the audit names the EHR).
SMART_DEFAULT_SCOPE = (
    "launch patient/Patient.read patient/Observation.read patient/Condition.read "
    "patient/MedicationRequest.read patient/Encounter.read patient/Procedure.read"
)


class SmartEhr(BaseModel):
    """One EHR allowed to launch the clinician page (SMART App Launch), keyed by its FHIR base
    URL (the launch's ``iss``): the client clinrisk is registered as there."""

    model_config = {"extra": "forbid"}

    client_id: str = Field(min_length=1, max_length=256)
    """The client id the EHR registered for the clinician page (a public client with PKCE)."""
    name: str = Field(default="EHR", min_length=1, max_length=64)
    """Shown on the page ("Launched from …") and the caller name in audit records."""
    scope: str = SMART_DEFAULT_SCOPE
    """The scopes requested at authorisation."""
    models: list[str] | None = None
    """The models a session from this EHR may score; ``None``: every model."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLINRISK_", extra="ignore")

    models_dir: Path = REPO_ROOT / "models"
    """Registry folder: ``<name>/<version>/manifest.json`` per artifact."""

    default_versions: dict[str, str] = Field(default_factory=dict)
    """Pinned default version per model name (JSON), e.g. {"cvd": "1.1.0"}; else the highest."""

    trusted_keys: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [DEFAULT_TRUSTED_KEYS]
    )
    """Ed25519 public keys (PEM) trusted to sign model artifacts: files, or folders of ``*.pub``;
    in the environment, paths separated by ':'. Default: the release key(s) committed in
    models/trusted_keys/. An artifact whose manifest.sig does not verify never loads."""

    allow_unsigned_models: bool = False
    """Development only: also load artifacts that have no manifest.sig (logged as a warning)."""

    database_url: str = f"sqlite:///{REPO_ROOT / 'var' / 'clinrisk.db'}"
    """Audit store: an SQLite file (default) or postgresql://… ."""

    api_keys_file: Path = REPO_ROOT / "var" / "api_keys.json"
    """Where `clinrisk keys create` stores key hashes and the service reads them."""

    pseudonym_key: SecretStr | None = None
    """HMAC key for pseudonymising patient ids in audit records. Required to serve."""

    max_batch_size: int = 1000
    """Most patients accepted in one batch call."""

    max_body_bytes: int = 8 * 1024 * 1024
    """Larger request bodies are refused with 413."""

    audit_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    """Longest wait on the audit store (lock, connection, statement): then 503, never a hang."""

    max_header_bytes: int = 16 * 1024
    """Requests whose headers are larger are refused with 431."""

    body_read_timeout_seconds: float = Field(default=30.0, gt=0)
    """A client that sends no part of its body for this long gets 408 (slow clients)."""

    monitoring_min_group: int = Field(default=50, ge=1)
    """Live validation (issue 13): groups with fewer known outcomes are shown as suppressed."""

    drift_window_days: int = Field(default=7, ge=1, le=366)
    """Drift (issue 13, service/drift.py): days of scored inputs compared with training."""

    drift_psi_warning: float = Field(default=0.1, gt=0)
    """PSI at or above this is shown as a warning (0.1: the customary "moderate shift")."""

    drift_psi_alert: float = Field(default=0.25, gt=0)
    """PSI at or above this is a breach: Prometheus alert and page (0.25: "major shift")."""

    drift_min_rows: int = Field(default=500, ge=1)
    """Fewer scored rows in the window: no drift judgement (PSI's noise is ~bins/rows)."""

    drift_expected_auroc_drop: float = Field(default=0.05, gt=0, lt=1)
    """A breach when the AUROC expected from today's risks is this far below validation's."""

    drift_flush_seconds: float = Field(default=60.0, gt=0)
    """How often each worker adds its drift counts to the audit database."""

    log_level: str = "INFO"
    """Root log level."""

    # --- CDS Hooks security (issue 12; service/cds_hooks/security.py) ---
    cds_issuers: dict[str, CdsIssuer] = Field(default_factory=dict)
    """EHRs allowed to call /cds-services, by JWT ``iss`` (JSON), e.g.
    {"https://ehr.example.org": {"jwks_file": "ehr.jwks.json"}}. Empty: no JWT is accepted."""

    cds_base_url: str | None = None
    """The service's external base URL as the EHR calls it (e.g. https://clinrisk.example.org):
    a token's ``aud`` must be this plus the path called. Required with ``cds_issuers``."""

    cds_allow_api_keys: bool | None = None
    """Also accept clinrisk API keys on /cds-services. Default: only when no issuer is
    configured (a developer's `make run`); an EHR deployment accepts JWTs only."""

    cds_cors_origins: list[str] = Field(default_factory=list)
    """Browser origins (JSON list, e.g. ["https://ehr.example.org"]) allowed to call
    /cds-services cross-origin. Explicit origins only: no '*'."""

    cds_max_token_lifetime_seconds: int = Field(default=300, gt=0, le=3600)
    """Tokens whose ``exp - iat`` is longer are refused (the spec wants short-lived tokens)."""

    cds_clock_skew_seconds: int = Field(default=60, ge=0, le=300)
    """Allowed clock difference with the EHR for ``exp`` and ``iat``."""

    cds_jwks_refresh_seconds: float = Field(default=60.0, gt=0)
    """An unknown ``kid`` re-reads the issuer's keys at most once per this many seconds."""

    cds_jwks_timeout_seconds: float = Field(default=5.0, gt=0, le=30)
    """Longest wait for a JWKS URL."""

    # --- SMART App Launch of the clinician page (issue 12; service/smart.py) ---
    smart_ehrs: dict[str, SmartEhr] = Field(default_factory=dict)
    """EHRs that may launch /ui, by FHIR base URL (JSON), e.g. {"https://ehr.example.org/fhir":
    {"client_id": "clinrisk-ui", "name": "Example EHR"}}. Any other ``iss`` is refused before a
    request is sent to it (an open redirect / SSRF otherwise)."""

    smart_session_minutes: int = Field(default=60, gt=0, le=720)
    """Lifetime of the clinrisk session a launch gives the page (then: launch again)."""

    smart_timeout_seconds: float = Field(default=5.0, gt=0, le=30)
    """Longest wait for each call to an EHR (discovery, token, FHIR reads)."""

    smart_frame_ancestors: list[str] = Field(default_factory=list)
    """EHR web origins (JSON list) that may show the clinician page in a frame (an embedded
    SMART launch); none: the page refuses to be framed (clickjacking)."""

    @field_validator("smart_ehrs")
    @classmethod
    def _smart_ehrs(cls, value: dict[str, SmartEhr]) -> dict[str, SmartEhr]:
        for url in value:
            if not url.startswith(("https://", "http://")) or url != url.rstrip("/"):
                raise ValueError(f"'{url}' is not an http(s) FHIR base URL without trailing '/'")
        return value

    @field_validator("trusted_keys", mode="before")
    @classmethod
    def _split_key_paths(cls, value: object) -> object:
        return parse_key_paths(value) if isinstance(value, str) else value

    @field_validator("trusted_keys")
    @classmethod
    def _keys_load(cls, value: list[Path]) -> list[Path]:
        load_public_keys(value)  # a missing or wrong key file stops startup, naming the file
        return value

    def trust_policy(self) -> TrustPolicy:
        """Who may sign the artifacts this service loads."""
        return TrustPolicy.from_paths(self.trusted_keys, allow_unsigned=self.allow_unsigned_models)

    @field_validator("cds_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"'{value}' is not an http(s) URL")
        return value.rstrip("/")

    @field_validator("cds_cors_origins", "smart_frame_ancestors")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            # An origin is scheme://host[:port]; '*' would let any web page call with a token.
            scheme, _, rest = origin.partition("://")
            if scheme not in ("https", "http") or not rest or "/" in rest or "*" in origin:
                raise ValueError(
                    f"'{origin}' is not an origin (scheme://host[:port], no path, no wildcard)"
                )
        return value

    def cds_api_keys_allowed(self) -> bool:
        """Whether /cds-services accepts clinrisk API keys (see ``cds_allow_api_keys``)."""
        if self.cds_allow_api_keys is not None:
            return self.cds_allow_api_keys
        return not self.cds_issuers

    @field_validator("models_dir")
    @classmethod
    def _models_dir_exists(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"CLINRISK_MODELS_DIR points to '{value}', which does not exist")
        return value

    def serving_problem(self) -> str | None:
        """Why the service cannot serve with these settings, in one line (None: it can)."""
        if self.pseudonym_key is None:
            return (
                "CLINRISK_PSEUDONYM_KEY is not set: the audit trail needs a secret key to "
                "pseudonymise patient ids (`make run` generates a local one)."
            )
        if self.cds_issuers and self.cds_base_url is None:
            return (
                "CLINRISK_CDS_BASE_URL is not set: CDS Hooks tokens are checked against the "
                "service's external URL (their 'aud'), e.g. https://clinrisk.example.org."
            )
        return None


def settings_for_serving() -> Settings:
    """The environment's settings, or exit with one clear line (never a traceback): what
    ``clinrisk serve`` and ``uvicorn service.main:app`` start with."""
    try:
        settings = get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"CLINRISK_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise SystemExit(f"clinrisk: invalid configuration: {problems}") from None
    problem = settings.serving_problem()
    if problem is not None:
        raise SystemExit(f"clinrisk: {problem}")
    return settings


@lru_cache
def get_settings() -> Settings:
    return Settings()
