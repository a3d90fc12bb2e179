"""What CDS Hooks JWT verification costs per call (issue 12), against a floor in the same run.

    .venv/bin/python bench/cds_auth.py [--calls 300] [--database-url URL]

Starts ``uvicorn service.main:app`` (one worker) with an EHR issuer whose ES384 key is made here,
then times, one call at a time over one keep-alive connection:

- ``GET /cds-services`` with a fresh token per call (signature, claims, the ``jti`` insert into
  the audit database): tokens are minted before the timing starts;
- ``GET /health/live`` without authentication: the floor (HTTP, framework, middleware).

Prints p50 and p99 in milliseconds. Figures only; nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

ROOT = Path(__file__).resolve().parents[1]
ISSUER = "https://ehr.example.org"
KID = "bench-1"
UVICORN = [sys.executable, "-m", "uvicorn", "service.main:app", "--log-level", "warning"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _percentiles(ms: list[float]) -> str:
    ms = sorted(ms)
    return f"p50 {ms[len(ms) // 2]:.2f} ms, p99 {ms[min(len(ms) - 1, int(len(ms) * 0.99))]:.2f} ms"


def _timed(client: httpx.Client, url: str, headers: list[dict[str, str]]) -> list[float]:
    times = []
    for header in headers:
        start = time.perf_counter()
        response = client.get(url, headers=header)
        times.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
    return times


class EhrService:
    """A running clinrisk (one uvicorn worker) that trusts one EHR issuer whose ES384 key is
    made here, and a keep-alive client to it."""

    def __init__(self, base: str, private: ec.EllipticCurvePrivateKey, client: httpx.Client):
        self.base, self.client, self._private = base, client, private

    def tokens(self, path: str, n: int) -> list[str]:
        """``n`` fresh tokens for calls to ``path`` (the EHR signs every request)."""
        now = int(time.time())
        return [
            jwt.encode(
                {
                    "iss": ISSUER,
                    "aud": self.base + path,
                    "iat": now,
                    "exp": now + 300,
                    "jti": str(uuid.uuid4()),
                },
                self._private,
                algorithm="ES384",
                headers={"kid": KID},
            )
            for _ in range(n)
        ]


@contextmanager
def ehr_service(database_url: str | None) -> Iterator[EhrService]:
    """Start the service with the EHR's JWKS configured; stop it on exit."""
    private = ec.generate_private_key(ec.SECP384R1())
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        jwks = Path(tmp) / "ehr.jwks.json"
        jwks.write_text(json.dumps({"keys": [{**jwk, "kid": KID, "alg": "ES384"}]}))
        env = {
            **os.environ,
            "CLINRISK_PSEUDONYM_KEY": "bench",
            "CLINRISK_DATABASE_URL": database_url or f"sqlite:///{tmp}/audit.db",
            "CLINRISK_API_KEYS_FILE": f"{tmp}/keys.json",
            "CLINRISK_CDS_ISSUERS": json.dumps({ISSUER: {"jwks_file": str(jwks)}}),
            "CLINRISK_CDS_BASE_URL": base,
        }
        server = subprocess.Popen(
            [*UVICORN, "--port", str(port)], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
        )
        try:
            with httpx.Client(timeout=30) as client:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if client.get(base + "/health/live").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("the service did not start")
                    time.sleep(0.2)
                yield EhrService(base, private, client)
        finally:
            server.terminate()
            server.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with ehr_service(args.database_url) as service:
        tokens = service.tokens("/cds-services", args.calls + 20)
        headers = [{"Authorization": f"Bearer {t}"} for t in tokens]
        url = service.base + "/cds-services"
        _timed(service.client, url, headers[:20])  # warm-up
        signed = _timed(service.client, url, headers[20:])
        floor = _timed(service.client, service.base + "/health/live", [{}] * args.calls)
    print(f"GET /cds-services with a fresh ES384 JWT ({args.calls} calls): {_percentiles(signed)}")
    print(f"GET /health/live, no authentication (floor):        {_percentiles(floor)}")


if __name__ == "__main__":
    main()
