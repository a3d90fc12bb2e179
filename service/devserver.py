"""``make run``: start the service on the embedded defaults with a fresh local API key.

Creates ``var/`` (SQLite audit store, key file, a local pseudonymisation key), prints a new
API key and a curl example, then serves on http://127.0.0.1:8000.
"""

from __future__ import annotations

import os
import secrets

import orjson
import uvicorn

from service.auth import create_key
from service.openapi_schema import example_features
from service.settings import REPO_ROOT, Settings

VAR = REPO_ROOT / "var"


def main() -> None:
    VAR.mkdir(exist_ok=True)
    key_file = VAR / "pseudonym.key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(32))
        key_file.chmod(0o600)
    os.environ.setdefault("CLINRISK_PSEUDONYM_KEY", key_file.read_text().strip())
    settings = Settings()
    token = create_key(settings.api_keys_file, "make-run", ["predict", "batch", "admin"])
    from models.loader import load_artifact
    from models.registry import artifact_folder

    # The example uses whichever diabetes version is committed (the highest).
    diabetes = load_artifact(artifact_folder(settings.models_dir, "diabetes")).manifest
    example = example_features(diabetes)
    body = orjson.dumps({"patient_id": "demo-1", "features": example, "top_k": 5}).decode()
    print(f"\nLocal API key (shown once, stored hashed in {settings.api_keys_file}):\n  {token}\n")  # noqa: T201
    print(  # noqa: T201
        "Try:\n  curl -s http://127.0.0.1:8000/v1/models/diabetes/predict \\\n"
        f"    -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n"
        f"    -d '{body}'\n\nClinician page: http://127.0.0.1:8000/ui\n"
    )
    uvicorn.run(
        "service.main:app", host="127.0.0.1", port=8000, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
