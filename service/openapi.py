"""Print the OpenAPI document the app serves, as YAML (``make openapi`` / ``check-openapi``)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.app import create_app
from service.settings import Settings


def openapi_document() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            database_url=f"sqlite:///{Path(tmp) / 'openapi.db'}",
            api_keys_file=Path(tmp) / "keys.json",
            pseudonym_key=SecretStr("only-used-to-render-the-document"),
            log_level="WARNING",
        )
        with TestClient(create_app(settings)) as client:
            document: dict[str, Any] = client.get("/openapi.json").json()
    return document


class _NoAliasDumper(yaml.SafeDumper):
    """Repeated examples are written out in full, not as YAML anchors."""

    def ignore_aliases(self, _data: Any) -> bool:
        return True


def render() -> str:
    return yaml.dump(
        openapi_document(), Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True, width=100
    )


if __name__ == "__main__":
    sys.stdout.write(render())
