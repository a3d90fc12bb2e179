"""Serves the clinician page at ``/ui`` and its own static files at ``/ui/static/*``.

Everything the page needs ships in this package: no fonts, scripts or styles from elsewhere, and
a Content-Security-Policy that forbids them. The page calls the public API with the user's own
key (kept in the tab's sessionStorage), so it has no privileges of its own.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources

from fastapi import APIRouter, Request, Response
from starlette.exceptions import HTTPException

from service.ui.smart import router as smart_router

STATIC_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "monitoring.js": "text/javascript; charset=utf-8",
    "monitoring.css": "text/css; charset=utf-8",
}
# NOTE: `form-action 'none'` means a form can never be submitted by the browser itself, so patient
# values cannot end up in a URL even if the script fails; the script sends them in POST bodies.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

router = APIRouter(prefix="/ui", include_in_schema=False)
router.include_router(smart_router)  # /ui/smart/*: the SMART launch (service/ui/smart.py)


@lru_cache
def _package_file(name: str) -> tuple[bytes, str]:
    content = resources.files("service.ui").joinpath("static", name).read_bytes()
    return content, '"' + hashlib.sha256(content).hexdigest()[:32] + '"'


def _serve(request: Request, name: str, media_type: str, cache: str) -> Response:
    content, etag = _package_file(name)
    headers = {**SECURITY_HEADERS, "Cache-Control": cache, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(content, media_type=media_type, headers=headers)


@router.get("", operation_id="read_clinician_page")
def read_clinician_page(request: Request) -> Response:
    """The clinician page."""
    response = _serve(request, "index.html", "text/html; charset=utf-8", "no-store")
    state = getattr(request.app.state, "clinrisk", None)
    origins = state.settings.smart_frame_ancestors if state is not None else []
    if origins:
        # An EHR that embeds SMART apps shows the page in its own frame: only its origins may.
        # X-Frame-Options cannot name several origins (and yields to frame-ancestors): dropped.
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY.replace(
            "frame-ancestors 'none'", "frame-ancestors " + " ".join(origins)
        )
        del response.headers["X-Frame-Options"]
    return response


@router.get("/monitoring", operation_id="read_monitoring_page")
def read_monitoring_page(request: Request) -> Response:
    """The model monitoring page: live validation and drift (issue 13)."""
    return _serve(request, "monitoring.html", "text/html; charset=utf-8", "no-store")


@router.get("/static/{filename}", operation_id="read_clinician_page_file")
def read_clinician_page_file(filename: str, request: Request) -> Response:
    """A script or style sheet of the clinician page."""
    media_type = STATIC_TYPES.get(filename)
    if media_type is None:
        raise HTTPException(404, f"No file '{filename}' in the clinician page.")
    return _serve(request, filename, media_type, "no-cache")
