"""read_json_body against a real uvicorn server: bounded while streaming, chunked bodies too."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request, Response
from starlette.types import Message, Receive, Scope, Send

from service.api.body import read_json_body
from service.errors import PROBLEM_JSON, ServiceError
from tests.conftest import running_server

LIMIT = 1000


class _CountingApp:
    """Counts the body bytes the app pulled from the server (what it could have buffered)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.pulled = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counting() -> Message:
            message = await receive()
            self.pulled += len(message.get("body", b""))
            return message

        await self.app(scope, counting, send)


def _app() -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> Any:
        return {"received": await read_json_body(request, LIMIT)}

    @app.exception_handler(ServiceError)
    async def problem(request: Request, exc: ServiceError) -> Response:
        body = orjson.dumps(exc.problem(instance=request.url.path))
        return Response(body, status_code=exc.status, media_type=PROBLEM_JSON)

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, _CountingApp]]:
    app = _CountingApp(_app())
    with running_server(app) as url:
        yield int(url.rsplit(":", 1)[1]), app


def _status_and_body(raw: bytes) -> tuple[int, Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        size, _, rest = body.partition(b"\r\n")
        body = rest[: int(size, 16)]
    return status, orjson.loads(body)


def _read_response(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    raw = b""
    while b"\r\n\r\n" not in raw or not raw.rstrip().endswith((b"}", b"0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        raw += chunk
    return raw


def test_small_json_body_is_parsed(server: tuple[int, _CountingApp]) -> None:
    port, _ = server
    response = httpx.post(f"http://127.0.0.1:{port}/echo", json={"a": [1, 2]})
    assert response.status_code == 200
    assert response.json() == {"received": {"a": [1, 2]}}


def test_declared_length_over_the_limit_is_413_before_reading(
    server: tuple[int, _CountingApp],
) -> None:
    port, app = server
    app.pulled = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        # Announce a huge body, send none of it: the answer must not wait for it.
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n"
        )
        status, body = _status_and_body(_read_response(sock))
    assert status == 413
    assert body["title"] == "Payload too large"
    assert app.pulled == 0


def test_chunked_body_over_the_limit_is_413_without_waiting_for_its_end(
    server: tuple[int, _CountingApp],
) -> None:
    port, app = server
    app.pulled = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"[" + b"1," * 199  # 399 bytes
        for _ in range(3):  # 1197 bytes > LIMIT, and the body never ends (no final chunk)
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        status, body = _status_and_body(_read_response(sock))
    assert status == 413
    assert body["status"] == 413
    assert app.pulled <= LIMIT + len(chunk)


def test_chunked_body_within_the_limit_is_parsed(server: tuple[int, _CountingApp]) -> None:
    port, _ = server

    def pieces() -> Iterator[bytes]:
        yield b'{"items": ['
        yield b"1, 2, 3"
        yield b"]}"

    response = httpx.post(f"http://127.0.0.1:{port}/echo", content=pieces())
    assert response.status_code == 200
    assert response.json() == {"received": {"items": [1, 2, 3]}}


def test_invalid_json_is_a_422_naming_the_body(server: tuple[int, _CountingApp]) -> None:
    port, _ = server
    response = httpx.post(f"http://127.0.0.1:{port}/echo", content=b"{not json")
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON
    [error] = response.json()["errors"]
    assert error["field"] == "body"
    assert error["allowed"] == "JSON"
    assert error["value"] is None
