"""The one way a route reads a JSON body: streamed, bounded, parsed once with orjson.

Call it inside the handler, after the authentication dependency has run: an unauthenticated
caller must not be able to make the service read (let alone buffer) its body.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from service.errors import InvalidFeatures, PayloadTooLarge


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body is larger than {limit} bytes.")


async def read_json_body(request: Request, limit: int) -> Any:
    """The parsed JSON body; 413 once it exceeds ``limit`` bytes, 422 when it is not JSON.

    The declared ``Content-Length`` is checked before anything is read, and the bytes received
    are counted chunk by chunk, so a chunked upload without a length is refused as soon as it
    passes the limit: at most ``limit`` bytes (plus one chunk) are ever held.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise _too_large(limit)
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            raise _too_large(limit)
    try:
        return orjson.loads(received)
    except orjson.JSONDecodeError as exc:
        raise InvalidFeatures(
            "The body is not valid JSON.",
            errors=[{"field": "body", "message": str(exc), "value": None, "allowed": "JSON"}],
        ) from None
