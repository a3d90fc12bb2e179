"""Swagger UI and ReDoc come with every asset from the service itself (no CDN)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient


def _references(html: str) -> list[str]:
    return re.findall(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']""", html) + re.findall(
        r"""url:\s*["']([^"']+)["']""", html
    )


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_every_asset_from_the_service(client: TestClient, page: str) -> None:
    response = client.get(page)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    references = _references(response.text)
    assert any(r.endswith(".js") for r in references)
    for reference in references:
        assert reference.startswith("/"), f"{page} loads {reference} from elsewhere"
        asset = client.get(reference)
        assert asset.status_code == 200, reference
    assert "cdn" not in response.text.lower()
    assert "fonts.googleapis" not in response.text
    # The browser itself refuses anything from elsewhere (ReDoc's bundle would fetch a logo).
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "img-src 'self' data: blob:" in policy


def test_swagger_ui_knows_the_bearer_scheme(client: TestClient) -> None:
    document = client.get("/openapi.json").json()

    assert document["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "crk_<key id>_<secret>",
        "description": (
            "An API key from `clinrisk keys create`, sent as `Authorization: Bearer <key>`."
        ),
    }
    read_model = document["paths"]["/v1/models/{name}"]["get"]
    assert read_model["security"] == [{"apiKey": []}]
    assert "security" not in document["paths"]["/health/live"]["get"]


def test_the_oauth2_redirect_page_is_served(client: TestClient) -> None:
    assert client.get("/docs/oauth2-redirect").status_code == 200
