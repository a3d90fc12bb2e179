"""A signing key for tests that edit artifact copies: after an edit, the copy is re-signed with it
so the later checks (schema, hashes, model parse) are what the test exercises."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from models.signing import SIGNATURE_FILE, TrustPolicy, generate_private_key, signature_document


@dataclass(frozen=True)
class Signer:
    key: Ed25519PrivateKey
    trust: TrustPolicy
    """Trusts only this test key (not the release key)."""

    def resign(self, folder: Path) -> None:
        """Sign the folder's manifest.json as it now is, without any other check (as a signing
        pipeline that trusts its input would): the loader's own checks must still hold."""
        manifest = (folder / "manifest.json").read_bytes()
        (folder / SIGNATURE_FILE).write_bytes(signature_document(self.key, manifest))


@pytest.fixture(scope="session")
def signer() -> Signer:
    key = generate_private_key()
    return Signer(key, TrustPolicy.trusting(key.public_key()))
