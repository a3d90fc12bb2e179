"""Ed25519 signatures that pin an artifact's ``manifest.json``, and who is trusted to sign.

The manifest pins every other file by sha256, so one signature over its exact bytes covers the
whole artifact. It lives beside it as ``manifest.sig`` (JSON: algorithm, key id, base64
signature); signing never changes ``manifest.json``, so an artifact's identity (the manifest's
sha256) is the same signed or not, and re-signing with a new key keeps it.

A :class:`TrustPolicy` is the set of public keys allowed to sign, by key id, plus whether an
unsigned artifact may load (development only). A signature that does not verify is refused
whatever the policy says. :func:`default_policy` reads ``CLINRISK_TRUSTED_KEYS`` and
``CLINRISK_ALLOW_UNSIGNED_MODELS`` and falls back to the public keys committed in
``models/trusted_keys/``, so every process that loads artifacts (service, ``clinrisk score``,
Spark executors) verifies without being handed a policy.

Private keys never belong in the repository: ``.gitignore`` keeps ``*.pem`` out, and in
production the signing key lives in an HSM or secret store.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from models.errors import ArtifactError

SIGNATURE_FILE = "manifest.sig"
ALGORITHM = "Ed25519"
DEFAULT_TRUSTED_KEYS = Path(__file__).resolve().parent / "trusted_keys"
"""Public keys trusted when nothing is configured: the release key(s) of this repository."""
PUBLIC_KEY_SUFFIX = ".pub"
TRUSTED_KEYS_ENV = "CLINRISK_TRUSTED_KEYS"
ALLOW_UNSIGNED_ENV = "CLINRISK_ALLOW_UNSIGNED_MODELS"
SIGNING_KEY_ENV = "CLINRISK_SIGNING_KEY_FILE"
# The spellings pydantic accepts for a bool, so the service settings and this module agree.
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"", "0", "off", "f", "false", "n", "no"})


class KeyFileError(ValueError):
    """A key file (or trust setting) cannot be used; ``path`` names it, ``reason`` says why."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: derived from the key, so it cannot be mislabelled.

    It only selects the key; verification always uses the full trusted key.
    """
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_key_pair(key: Ed25519PrivateKey, private_path: Path, public_path: Path) -> str:
    """Write a private key (PKCS#8 PEM, mode 600, never overwriting) and its public key.

    Returns the key id. The private file is created exclusively with its final permissions, so
    it is never readable by others, not even briefly.
    """
    for path in (private_path, public_path):
        if path.exists():
            raise KeyFileError(path, "exists already; refusing to overwrite a key")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.write_bytes(public_pem(key.public_key()))
    return key_id(key.public_key())


def load_private_key(path: Path) -> Ed25519PrivateKey:
    if not path.is_file():
        raise KeyFileError(path, "signing key file does not exist")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(path, f"not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(path, f"is a {type(key).__name__}; artifacts are signed with Ed25519")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        # Refused loudly: a private key configured as trusted is a private key in the wrong place.
        raise KeyFileError(path, "holds a PRIVATE key; trust only public keys (clinrisk signing)")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyFileError(path, f"not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(path, f"is a {type(key).__name__} key; only Ed25519 keys are trusted")
    return key


def load_public_keys(sources: Iterable[Path]) -> dict[str, Ed25519PublicKey]:
    """Public keys by key id from files, or from every ``*.pub`` in a folder."""
    keys: dict[str, Ed25519PublicKey] = {}
    for source in sources:
        if source.is_dir():
            files = sorted(source.glob(f"*{PUBLIC_KEY_SUFFIX}"))
        elif source.is_file():
            files = [source]
        else:
            raise KeyFileError(source, "trusted key file or folder does not exist")
        for path in files:
            key = load_public_key(path)
            keys[key_id(key)] = key
    return keys


def parse_key_paths(value: str) -> list[Path]:
    """``CLINRISK_TRUSTED_KEYS``: paths separated by ``os.pathsep`` (``:`` on Linux)."""
    return [Path(part).expanduser() for part in value.split(os.pathsep) if part.strip()]


def parse_flag(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise KeyFileError(name, f"'{value}' is not a boolean; use true or false")


@dataclass(frozen=True)
class TrustPolicy:
    """Which keys may sign artifacts, and whether unsigned artifacts may load (development)."""

    keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)
    allow_unsigned: bool = False

    @classmethod
    def trusting(cls, *keys: Ed25519PublicKey, allow_unsigned: bool = False) -> TrustPolicy:
        return cls({key_id(k): k for k in keys}, allow_unsigned)

    @classmethod
    def from_paths(cls, paths: Sequence[Path], *, allow_unsigned: bool = False) -> TrustPolicy:
        return cls(load_public_keys(paths), allow_unsigned)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrustPolicy:
        """``CLINRISK_TRUSTED_KEYS`` (default: ``models/trusted_keys/``) and
        ``CLINRISK_ALLOW_UNSIGNED_MODELS`` (default: false)."""
        env = os.environ if environ is None else environ
        configured = env.get(TRUSTED_KEYS_ENV, "").strip()
        paths = parse_key_paths(configured) if configured else [DEFAULT_TRUSTED_KEYS]
        allow = parse_flag(ALLOW_UNSIGNED_ENV, env.get(ALLOW_UNSIGNED_ENV, ""))
        return cls.from_paths(paths, allow_unsigned=allow)

    @property
    def fingerprint(self) -> tuple[tuple[str, ...], bool]:
        """Equal for policies that accept exactly the same artifacts (a cache key)."""
        return tuple(sorted(self.keys)), self.allow_unsigned

    def verify(self, manifest_path: Path, manifest_bytes: bytes) -> str | None:
        """The id of the trusted key that signed these manifest bytes, or ``None`` when the
        artifact is unsigned and the policy allows that; otherwise :class:`ArtifactError`."""
        sig_path = manifest_path.with_name(SIGNATURE_FILE)
        if not sig_path.is_file():
            if self.allow_unsigned:
                return None
            raise ArtifactError(
                sig_path,
                "missing: the artifact is unsigned, and only artifacts signed by a trusted key "
                "load (sign it with `clinrisk signing sign`; for development only, "
                f"{ALLOW_UNSIGNED_ENV}=true loads unsigned artifacts)",
            )
        signer, signature = read_signature(sig_path)
        key = self.keys.get(signer)
        if key is None:
            trusted = ", ".join(sorted(self.keys)) or "none configured"
            raise ArtifactError(
                sig_path, f"signed by key '{signer}', which is not trusted (trusted: {trusted})"
            )
        try:
            key.verify(signature, manifest_bytes)
        except InvalidSignature:
            raise ArtifactError(
                sig_path,
                f"signature by trusted key '{signer}' does not verify: manifest.json (or the "
                "signature) was changed after signing",
            ) from None
        return signer


def signature_document(key: Ed25519PrivateKey, manifest_bytes: bytes) -> bytes:
    """The ``manifest.sig`` content for these exact manifest bytes."""
    document = {
        "algorithm": ALGORITHM,
        "key_id": key_id(key.public_key()),
        "signature": base64.b64encode(key.sign(manifest_bytes)).decode(),
    }
    return (json.dumps(document, indent=2) + "\n").encode()


def read_signature(path: Path) -> tuple[str, bytes]:
    """(key id, raw signature) from a ``manifest.sig``, or :class:`ArtifactError` saying why."""
    try:
        document = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(path, f"is not a JSON signature document ({exc})") from None
    expected = {"algorithm", "key_id", "signature"}
    if not isinstance(document, dict) or set(document) != expected:
        raise ArtifactError(path, f"must be a JSON object with exactly {sorted(expected)}")
    if document["algorithm"] != ALGORITHM:
        raise ArtifactError(
            path, f"algorithm '{document['algorithm']}' is not accepted; only {ALGORITHM} is"
        )
    signer, encoded = document["key_id"], document["signature"]
    if not isinstance(signer, str) or not isinstance(encoded, str):
        raise ArtifactError(path, "key_id and signature must be strings")
    try:
        signature = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ArtifactError(path, "signature is not base64") from None
    if len(signature) != 64:
        raise ArtifactError(path, f"an {ALGORITHM} signature has 64 bytes, not {len(signature)}")
    return signer, signature


def default_policy() -> TrustPolicy:
    """The policy of this process's environment (see :meth:`TrustPolicy.from_env`), cached per
    setting so loading many artifacts reads the key files once."""
    return _policy_for(os.environ.get(TRUSTED_KEYS_ENV), os.environ.get(ALLOW_UNSIGNED_ENV))


@lru_cache(maxsize=8)
def _policy_for(trusted: str | None, allow: str | None) -> TrustPolicy:
    env = {k: v for k, v in ((TRUSTED_KEYS_ENV, trusted), (ALLOW_UNSIGNED_ENV, allow)) if v}
    return TrustPolicy.from_env(env)
