"""API keys: ``crk_<key id>_<secret>``, stored only as sha256 hashes with their scopes.

Keys are created by ``clinrisk keys create`` into the keys file the service reads
(``CLINRISK_API_KEYS_FILE``); the secret is printed once and never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

SCOPES = ("predict", "batch", "admin")


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    sha256: str
    scopes: frozenset[str]


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def load_keys(path: Path) -> dict[str, ApiKey]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {
        k["key_id"]: ApiKey(k["key_id"], k["name"], k["sha256"], frozenset(k["scopes"]))
        for k in data.get("keys", [])
    }


def create_key(path: Path, name: str, scopes: list[str]) -> str:
    """Add a key to the keys file and return its plaintext (shown once)."""
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ValueError(f"scopes must be a non-empty subset of {', '.join(SCOPES)}")
    key_id = secrets.token_hex(6)
    token = f"crk_{key_id}_{secrets.token_urlsafe(32)}"
    data = json.loads(path.read_text()) if path.is_file() else {"keys": []}
    data["keys"].append(
        {
            "key_id": key_id,
            "name": name,
            "sha256": _hash(token),
            "scopes": sorted(scopes),
            "created_at": datetime.now(UTC).isoformat(),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)
    return token


class KeyStore:
    def __init__(self, keys: dict[str, ApiKey]) -> None:
        self._keys = keys

    def authenticate(self, token: str) -> ApiKey | None:
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != "crk":
            return None
        key = self._keys.get(parts[1])
        if key is None or not hmac.compare_digest(key.sha256, _hash(token)):
            return None
        return key
