"""Service configuration: one pydantic-settings class, ``CLINRISK_`` environment prefix."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.signing import DEFAULT_TRUSTED_KEYS, TrustPolicy, load_public_keys, parse_key_paths

REPO_ROOT = Path(__file__).resolve().parents[1]


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

    log_level: str = "INFO"
    """Root log level."""

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
