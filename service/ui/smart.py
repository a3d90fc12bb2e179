"""The two calls a SMART launch of the clinician page makes to this service (``service.smart``
does the work; these routes only do HTTP). Neither needs an API key: the first reveals only an
allowlisted EHR's public endpoints, the second proves the launch by redeeming its code.

- ``POST /ui/smart/launch`` ``{"iss"}``: for an allowlisted EHR, where to send the user
  (authorization endpoint, client id, scopes); any other ``iss`` is a 400 and is never contacted.
- ``POST /ui/smart/session`` ``{"iss", "code", "code_verifier", "redirect_uri"}``: redeems the
  code at the EHR, reads the launch patient's chart with the token, and answers each model's
  form values with their sources, plus a clinrisk session token for the page's API calls.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson
import structlog
from fastapi import APIRouter, Request, Response

from service import smart
from service.api.body import read_json_body
from service.api.deps import StateDep
from service.errors import InvalidFeatures

log = structlog.get_logger("clinrisk")

router = APIRouter(prefix="/smart", include_in_schema=False)

MAX_BODY_BYTES = 16 * 1024


def _json(body: Any) -> Response:
    # A patient's chart and a session token: no cache may keep them.
    return Response(
        orjson.dumps(body), media_type="application/json", headers={"Cache-Control": "no-store"}
    )


async def _object(request: Request) -> dict[str, Any]:
    body = await read_json_body(request, MAX_BODY_BYTES)
    if not isinstance(body, dict):
        raise InvalidFeatures("The body must be a JSON object.")
    return body


@router.post("/launch", operation_id="smart_launch")
async def smart_launch(request: Request, state: StateDep) -> Response:
    """Where the page sends the user to authorise the launch (allowlisted EHRs only)."""
    body = await _object(request)
    base, ehr = smart.ehr_for(state.settings.smart_ehrs, body.get("iss"))
    configuration = await smart.discover(base, state.settings.smart_timeout_seconds)
    log.info("smart launch", ehr=ehr.name)
    return _json(
        {
            "ehr": ehr.name,
            "authorization_endpoint": configuration.authorization_endpoint,
            "client_id": ehr.client_id,
            "scope": ehr.scope,
            "aud": base,
        }
    )


@router.post("/session", operation_id="smart_session")
async def smart_session(request: Request, state: StateDep) -> Response:
    """The launch's code -> the patient's chart as form values, and a clinrisk session."""
    settings = state.settings
    body = await _object(request)
    base, ehr = smart.ehr_for(settings.smart_ehrs, body.get("iss"))
    code, verifier, redirect_uri = smart.check_redemption(
        body.get("code"), body.get("code_verifier"), body.get("redirect_uri")
    )
    sessions = smart.sessions_for(settings)
    assert sessions is not None  # an allowlisted EHR exists, and serving needs the secret
    configuration = await smart.discover(base, settings.smart_timeout_seconds)
    grant = await smart.redeem(
        configuration, ehr, code, verifier, redirect_uri, settings.smart_timeout_seconds
    )
    names = [name for name in state.registry.names() if ehr.models is None or name in ehr.models]
    models = [state.registry.get(name) for name in names]
    launched = await smart.read_chart(base, grant, models, settings.smart_timeout_seconds)
    model_asked = grant.model if grant.model in names else None
    del grant  # the EHR's token is not kept past this request
    today = date.today()
    token, expires = sessions.issue(base)
    log.info("smart session started", ehr=ehr.name, models=len(models))
    return _json(
        {
            "session": {"token": token, "expires_at": expires.isoformat()},
            "ehr": ehr.name,
            "patient": smart.patient_summary(launched),
            "model": model_asked,
            "models": {model.name: smart.extract_for(model, launched, today) for model in models},
        }
    )
