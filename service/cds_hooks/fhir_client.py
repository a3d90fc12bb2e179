"""Fetch a prefetch key the EHR did not fill from its ``fhirServer`` (CDS Hooks 2.0, "FHIR
resource access"), with the ``fhirAuthorization`` access token it sent.

- The query is the key's prefetch template with ``{{context.patientId}}`` /
  ``{{context.encounterId}}`` filled in; those ids must be FHIR ids (``[A-Za-z0-9.-]{1,64}``),
  so nothing else can be spliced into the URL. The answer's first page is used, as a prefetch
  would hold it (the templates' ``_count`` is the limit, not a page size to walk past).
- ``fhirServer`` must be https (http only on a loopback address, and only in development, when
  no EHR issuer is configured): the access token is never sent in clear over a network, and an
  EHR's call cannot point the service at its own host's plain-HTTP ports. Redirects are not
  followed, so the token never goes elsewhere.
- Bounded: a 2 s connect and 5 s read timeout and ``MAX_BYTES`` per answer; all keys are
  fetched concurrently.
- The access token, the URL (it holds the patient id) and the answer are never logged: a failure
  is logged with the key name, the server's host and the HTTP status or error type only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import structlog

log = structlog.get_logger("clinrisk")

FHIR_ID = re.compile(r"^[A-Za-z0-9.\-]{1,64}$")
TIMEOUT = httpx.Timeout(5.0, connect=2.0)
MAX_BYTES = 8 * 1024 * 1024
ACCEPT = "application/fhir+json, application/json;q=0.9"


class FetchFailed(Exception):
    """A key could not be fetched; ``reason`` is safe to show (no token, no URL)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def server_problem(server: Any, *, allow_loopback_http: bool) -> str | None:
    """Why ``server`` may not be used as a ``fhirServer``, or None. ``allow_loopback_http``:
    development (no EHR issuer configured); an EHR deployment needs https."""
    if not isinstance(server, str) or not server:
        return "must be a URL"
    parts = urlsplit(server)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname:
        host = parts.hostname
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if loopback and allow_loopback_http:
            return None
        return "must be https (http only on a loopback address, in development)"
    return "must be an https URL"


def render(template: str, context: Mapping[str, Any]) -> str:
    """The query of a template for this call's context (ids checked; raises ValueError)."""
    out = template
    for name in ("patientId", "encounterId"):
        token = "{{context." + name + "}}"
        if token in out:
            value = context.get(name)
            if not isinstance(value, str) or not FHIR_ID.match(value):
                raise ValueError(f"context.{name} is not a FHIR id")
            out = out.replace(token, value)
    return out


async def _get(client: httpx.AsyncClient, url: str, key: str, host: str) -> Any:
    try:
        response = await client.get(url)
    except httpx.HTTPError as exc:
        log.warning("cds_fhir_fetch_failed", key=key, host=host, error=type(exc).__name__)
        raise FetchFailed(key, f"the FHIR server did not answer ({type(exc).__name__})") from None
    if response.status_code != 200:
        log.warning("cds_fhir_fetch_failed", key=key, host=host, status=response.status_code)
        raise FetchFailed(key, f"the FHIR server answered HTTP {response.status_code}")
    if len(response.content) > MAX_BYTES:
        raise FetchFailed(key, "the FHIR server's answer is too large")
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise FetchFailed(key, "the FHIR server's answer is not JSON") from None
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        raise FetchFailed(key, "the FHIR server answered with an OperationOutcome")
    return body


async def fetch(
    server: str,
    authorization: Mapping[str, Any] | None,
    queries: Mapping[str, str],
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, Any]:
    """Each key's query answered by ``server``: key -> the resource or searchset Bundle.
    Raises :class:`FetchFailed` for the first key that cannot be fetched."""
    headers = {"Accept": ACCEPT}
    token = authorization.get("access_token") if authorization else None
    if isinstance(token, str) and token:
        headers["Authorization"] = f"Bearer {token}"
    host = urlsplit(server).hostname or "?"
    async with httpx.AsyncClient(
        timeout=TIMEOUT, headers=headers, follow_redirects=False, transport=transport
    ) as client:
        keys = list(queries)
        answers = await asyncio.gather(
            *(_get(client, f"{server.rstrip('/')}/{queries[key]}", key, host) for key in keys)
        )
    return dict(zip(keys, answers, strict=True))
