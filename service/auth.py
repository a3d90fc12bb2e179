"""API keys: ``crk_<key id>_<secret>``, stored only as sha256 hashes with their scopes and models.

Keys are managed with ``clinrisk keys create|list|revoke|rotate`` in the keys file the service
reads (``CLINRISK_API_KEYS_FILE``); a secret is printed once and never stored.

Writes (:func:`create_key`, :func:`revoke_key`, :func:`rotate_key`) hold an exclusive ``flock``
on a sibling ``<file>.lock`` for the whole read-modify-write and replace the file atomically
(private temporary file, fsync, ``os.replace``), so concurrent commands never lose a key and a
reader never sees half a file. Revoked keys stay in the file (``revoked_at``) for the audit trail.

The service's :class:`KeyStore` notices a changed file without a restart: at most once per
second it compares the file's inode, size and mtime (one ``stat``) and re-reads it when they
changed. A file that cannot be read or parsed never locks callers out: the last good keys stay
in force and a warning is logged (never with key material).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

# research: may score a patient outside a model's intended population (issue 14; audited).
# outcomes: records observed outcomes of predictions (issue 13).
SCOPES = ("predict", "batch", "admin", "research", "outcomes")
RELOAD_INTERVAL_SECONDS = 1.0
"""How stale the service's keys may be: a revoked key is refused within about this long."""

log = structlog.get_logger("clinrisk")

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class KeyFileError(Exception):
    """The keys file cannot be read or is not a keys file. Messages never carry key material."""


class UnknownKey(LookupError):
    """No key with that id in the keys file."""


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    sha256: str
    scopes: frozenset[str]
    models: frozenset[str] | None = None
    """The models the key may use; ``None``: every model."""
    created_at: datetime | None = None
    revoked_at: datetime | None = None
    """From then on the key is refused; a time in the future is a rotation's grace period."""
    replaced_by: str | None = None
    """The id of the key a rotation replaced this one with."""

    def is_active(self, now: datetime) -> bool:
        return self.revoked_at is None or now < self.revoked_at

    def allows_model(self, name: str) -> bool:
        return self.models is None or name in self.models


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


# --- reading ---------------------------------------------------------------------------------


def _timestamp(record: dict[str, Any], field: str, where: str) -> datetime | None:
    value = record.get(field)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise KeyFileError(f"{where}: '{field}' is not an ISO 8601 timestamp")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _strings(record: dict[str, Any], field: str, where: str) -> frozenset[str]:
    value = record.get(field)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise KeyFileError(f"{where}: '{field}' is not a list of names")
    return frozenset(value)


def _parse_record(record: Any, index: int) -> ApiKey:
    # NOTE: messages name the record and field only, never a value (it could be a hash).
    where = f"key record {index}"
    if not isinstance(record, dict):
        raise KeyFileError(f"{where} is not an object")
    key_id, name, sha256 = record.get("key_id"), record.get("name"), record.get("sha256")
    if not isinstance(key_id, str) or not key_id:
        raise KeyFileError(f"{where}: 'key_id' is missing")
    if not isinstance(name, str):
        raise KeyFileError(f"{where}: 'name' is missing")
    if not isinstance(sha256, str) or not _SHA256_HEX.fullmatch(sha256):
        raise KeyFileError(f"{where}: 'sha256' is not a sha256 hex digest")
    replaced_by = record.get("replaced_by")
    return ApiKey(
        key_id=key_id,
        name=name,
        sha256=sha256,
        scopes=_strings(record, "scopes", where),
        models=_strings(record, "models", where) if record.get("models") is not None else None,
        created_at=_timestamp(record, "created_at", where),
        revoked_at=_timestamp(record, "revoked_at", where),
        replaced_by=replaced_by if isinstance(replaced_by, str) else None,
    )


def _parse(text: str) -> tuple[dict[str, Any], dict[str, ApiKey]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:  # its message is a position, not the content
        raise KeyFileError(f"not JSON ({exc.msg}, line {exc.lineno})") from None
    except RecursionError:
        raise KeyFileError("not JSON (nested too deeply)") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise KeyFileError("not a keys file: no 'keys' list")
    keys: dict[str, ApiKey] = {}
    for index, record in enumerate(data["keys"]):
        key = _parse_record(record, index)
        if key.key_id in keys:
            raise KeyFileError(f"key record {index}: duplicate 'key_id'")
        keys[key.key_id] = key
    return data, keys


def load_keys(path: Path) -> dict[str, ApiKey]:
    """Every key in the file (revoked ones included), by id; no file: none.

    Raises :class:`KeyFileError` when the file is unreadable or not a keys file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read: {type(exc).__name__}") from None
    return _parse(text)[1]


# --- writing ---------------------------------------------------------------------------------


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` in one step: a reader sees the old or the new file."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file 0600: key hashes are for the service's eyes only.
        with os.fdopen(fd, "w") as tmp:
            json.dump(data, tmp, indent=2)
            tmp.write("\n")
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    # The rename itself is durable only once the directory is synced.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextmanager
def _locked_file(path: Path) -> Iterator[dict[str, Any]]:
    """The keys file's content under an exclusive lock; the caller's changes are written back
    (atomically) when the block ends without an exception."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # NOTE: the lock is a sibling file: the keys file itself is replaced on every write, so a
    # lock on it would be a lock on an inode that is about to go away.
    lock_fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            text = path.read_text()
        except FileNotFoundError:
            data: dict[str, Any] = {"keys": []}
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"cannot read: {type(exc).__name__}") from None
        else:
            # A file that does not parse is never overwritten: that would drop its keys.
            data = _parse(text)[0]
        yield data
        _write_atomically(path, data)
    finally:
        os.close(lock_fd)  # releases the lock


def _check_scopes(scopes: list[str]) -> list[str]:
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ValueError(f"scopes must be a non-empty subset of {', '.join(SCOPES)}")
    return sorted(set(scopes))


def _new_record(
    existing: list[dict[str, Any]], name: str, scopes: list[str], models: list[str] | None
) -> tuple[str, dict[str, Any]]:
    taken = {r.get("key_id") for r in existing if isinstance(r, dict)}
    key_id = secrets.token_hex(6)
    while key_id in taken:
        key_id = secrets.token_hex(6)
    token = f"crk_{key_id}_{secrets.token_urlsafe(32)}"
    record: dict[str, Any] = {
        "key_id": key_id,
        "name": name,
        "sha256": _hash(token),
        "scopes": scopes,
        "created_at": _now().isoformat(),
    }
    if models is not None:
        record["models"] = models
    return token, record


def create_key(path: Path, name: str, scopes: list[str], models: list[str] | None = None) -> str:
    """Add a key to the keys file and return its plaintext (shown once).

    ``models`` restricts the key to those models; ``None`` allows every model."""
    checked = _check_scopes(scopes)
    if models is not None:
        models = sorted({m.strip() for m in models if m.strip()})
        if not models:
            raise ValueError("models must name at least one model (or be left out for all)")
    with _locked_file(path) as data:
        token, record = _new_record(data["keys"], name, checked, models)
        data["keys"].append(record)
    return token


def _find(data: dict[str, Any], key_id: str) -> tuple[dict[str, Any], ApiKey]:
    for index, record in enumerate(data["keys"]):
        if isinstance(record, dict) and record.get("key_id") == key_id:
            return record, _parse_record(record, index)
    raise UnknownKey(f"no key with id '{key_id}'")


def revoke_key(path: Path, key_id: str) -> ApiKey:
    """Refuse the key from now on (a pending grace period ends now); the record is kept."""
    with _locked_file(path) as data:
        record, key = _find(data, key_id)
        now = _now()
        if key.is_active(now):
            record["revoked_at"] = now.isoformat()
        revoked = _parse_record(record, 0)
    return revoked


def rotate_key(path: Path, key_id: str, grace: timedelta = timedelta(0)) -> tuple[str, ApiKey]:
    """A new key with the old one's name, scopes and models; the old one is refused after
    ``grace``. Returns the new key's plaintext (shown once) and its record."""
    if grace < timedelta(0):
        raise ValueError("the grace period cannot be negative")
    with _locked_file(path) as data:
        old_record, old = _find(data, key_id)
        if old.revoked_at is not None:
            raise ValueError(f"key '{key_id}' is already revoked or being rotated")
        models = sorted(old.models) if old.models is not None else None
        token, record = _new_record(data["keys"], old.name, sorted(old.scopes), models)
        data["keys"].append(record)
        old_record["revoked_at"] = (_now() + grace).isoformat()
        old_record["replaced_by"] = record["key_id"]
        new = _parse_record(record, len(data["keys"]) - 1)
    return token, new


# --- the service's view ----------------------------------------------------------------------


class KeyStore:
    """The keys a service process accepts; from a file, kept current without a restart."""

    def __init__(
        self,
        keys: dict[str, ApiKey] | None = None,
        *,
        path: Path | None = None,
        reload_interval: float = RELOAD_INTERVAL_SECONDS,
    ) -> None:
        self._keys = keys or {}
        self._path = path
        self._interval = reload_interval
        self._next_check = 0.0
        self._signature: tuple[int, int, int, int] | None = None
        self._reloading = threading.Lock()
        self.sessions: Callable[[str], ApiKey | None] | None = None
        """Checks a token that is not an API key (the clinician page's SMART launch sessions,
        ``service.smart``); ``None``: only API keys."""

    @classmethod
    def from_file(cls, path: Path, reload_interval: float = RELOAD_INTERVAL_SECONDS) -> KeyStore:
        store = cls(path=path, reload_interval=reload_interval)
        store.refresh(force=True)
        return store

    def refresh(self, *, force: bool = False) -> None:
        """Re-read the file if it changed; at most once per interval unless ``force``."""
        if self._path is None:
            return
        now = time.monotonic()
        if not force and now < self._next_check:
            return
        # One thread reloads; the others go on with the keys they have.
        if not self._reloading.acquire(blocking=False):
            return
        try:
            self._next_check = now + self._interval
            self._reload(self._path)
        finally:
            self._reloading.release()

    def _reload(self, path: Path) -> None:
        try:
            with path.open("rb") as file:
                # fstat of the open file: the signature is the one of the bytes read.
                st = os.fstat(file.fileno())
                signature = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                if signature == self._signature:
                    return
                self._signature = signature
                text = file.read().decode()
            keys = _parse(text)[1]
        except FileNotFoundError:
            # NOTE: writes replace the file atomically, so it is never missing in between; a
            # deleted file is an accident more likely than a way to revoke every key.
            if self._signature is not None or self._keys:
                self._signature = None
                log.warning(
                    "api keys file missing; keeping the previous keys", keys=len(self._keys)
                )
            return
        except (OSError, UnicodeDecodeError, KeyFileError) as exc:
            reason = str(exc) if isinstance(exc, KeyFileError) else type(exc).__name__
            log.warning(
                "api keys file not loaded; keeping the previous keys",
                reason=reason,
                keys=len(self._keys),
            )
            return
        self._keys = keys
        log.info("api keys loaded", keys=len(keys))

    def authenticate(self, token: str) -> ApiKey | None:
        if self.sessions is not None and not token.startswith("crk_"):
            return self.sessions(token)
        self.refresh()
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != "crk":
            return None
        key = self._keys.get(parts[1])
        if key is None or not hmac.compare_digest(key.sha256, _hash(token)):
            return None
        if key.revoked_at is not None and not key.is_active(_now()):
            return None
        return key
