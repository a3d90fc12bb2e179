"""Limits on what a client can make a worker hold or wait for, as a pure ASGI middleware.

The body-size limit lives where bodies are read (``service.api.body``), after authentication;
this layer bounds what comes before and around it: the size of the headers (431) and how long a
client may pause while sending its body (408), so a slow client cannot pin a request forever.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import RequestTimeout, problem_response


class RequestLimitsMiddleware:
    def __init__(self, app: ASGIApp, *, max_header_bytes: int, read_timeout: float) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size = sum(len(name) + len(value) for name, value in scope["headers"])
        if size > self.max_header_bytes:
            response = problem_response(
                431,
                "Request header fields too large",
                f"The request's headers are larger than {self.max_header_bytes} bytes.",
                instance=scope["path"],
            )
            await response(scope, receive, send)
            return
        body_done = False

        async def receive_in_time() -> Message:
            nonlocal body_done
            if body_done:  # after the body, receive() waits for a disconnect: no limit
                return await receive()
            try:
                async with asyncio.timeout(self.read_timeout):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(
                    f"No part of the request body arrived for {self.read_timeout:g} seconds."
                ) from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, receive_in_time, send)
