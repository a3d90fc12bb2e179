"""The whole OpenAPI contract, fuzzed by Schemathesis against a real server with every check
(its audit trail in SQLite and in PostgreSQL).

Schemathesis generates valid and invalid requests from the document the app serves (examples,
coverage, fuzzing and stateful phases), sends them with a key that has every scope, and checks
each answer: no 5xx, every status and content type documented, bodies matching their schemas,
invalid data refused, valid data accepted, 405 with ``Allow``, and so on. The deliberate
exceptions are in ``schemathesis.toml`` beside this file, each with its reason.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from service.app import create_app
from service.settings import Settings
from tests.conftest import MODELS_DIR, Keys, running_server

CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES_PER_OPERATION = 10


@pytest.fixture
def server_url(keys: Keys, database_url: str) -> Iterator[str]:
    """The app on a real uvicorn, with its audit trail in SQLite and then in PostgreSQL."""
    settings = Settings(
        models_dir=MODELS_DIR,
        database_url=database_url,
        api_keys_file=keys.file,
        pseudonym_key=SecretStr("fuzz-pseudonym-key"),
        log_level="WARNING",
    )
    with running_server(create_app(settings)) as url:
        yield url


def test_the_whole_contract_survives_the_fuzzer_with_every_check(
    server_url: str, keys: Keys, tmp_path: Path
) -> None:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--no-color",
        "--config-file",
        str(CONFIG),
        "run",
        f"{server_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {keys.everything}",
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--seed",
        "20261129",
        "--workers",
        "1",
        "--report-dir",
        str(tmp_path / "report"),
    ]

    # Run from tmp_path: Hypothesis keeps its caches (.hypothesis/) in the working directory.
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path
    )

    summary = run.stdout[run.stdout.find("=== FAILURES") :] or run.stdout[-4000:]
    assert run.returncode == 0, f"schemathesis found problems:\n{summary[:20000]}\n{run.stderr}"
