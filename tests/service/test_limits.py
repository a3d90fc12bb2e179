"""What a client can make a worker hold or wait for, on a real server: header size, slow
bodies; and what a client can make the service log (request ids)."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.conftest import Keys, running_server


def _exchange(url: str, request: bytes, pause_after: float = 0.0) -> bytes:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        time.sleep(pause_after)
        return sock.recv(65536)


def test_oversized_headers_are_431(settings: Settings) -> None:
    with running_server(create_app(settings)) as url:
        response = httpx.get(f"{url}/health/live", headers={"X-Padding": "a" * 20_000})
        small = httpx.get(f"{url}/health/live", headers={"X-Padding": "a" * 2_000})
    assert response.status_code == 431
    assert response.headers["content-type"] == "application/problem+json"
    assert small.status_code == 200


def test_a_client_that_stalls_mid_body_gets_408(settings: Settings, keys: Keys) -> None:
    settings = settings.model_copy(update={"body_read_timeout_seconds": 0.5})
    head = (
        "POST /v1/models/cvd/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {keys.predict}\r\nContent-Length: 100\r\n\r\n"
    )
    with running_server(create_app(settings)) as url:
        started = time.monotonic()
        answer = _exchange(url, head.encode() + b'{"features": {', pause_after=0.1)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert waited < 5


@pytest.mark.parametrize(
    ("given", "kept"),
    [("a1b2-c3.d4:e5_f6", True), ("patient Jane Doe 1961-02-03", False), ("x" * 65, False)],
)
def test_only_id_shaped_request_ids_are_echoed_and_logged(
    client: TestClient, given: str, kept: bool
) -> None:
    response = client.get("/health/live", headers={"X-Request-ID": given})
    assert (response.headers["x-request-id"] == given) is kept


@pytest.mark.parametrize("path", ["/v1/models/diabetes/curves", "/v1/models/diabetes/predict"])
def test_an_unauthenticated_chunked_body_is_refused_before_it_is_read(
    settings: Settings, path: str
) -> None:
    """On main, a 500 MB chunked body without a key was read in full before the 401 (277 MB ->
    1.7 GB). The answer must come after the first chunk, with the rest never sent."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"a" * (1 << 20)
    with running_server(create_app(settings)) as url:
        answer = _exchange(url, head.encode() + b"%x\r\n" % len(chunk) + chunk + b"\r\n", 0.2)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
