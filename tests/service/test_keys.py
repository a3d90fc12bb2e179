"""API keys an operator manages while the service runs: `clinrisk keys create|list|revoke|rotate`,
concurrent writers, reload without restart, model-restricted keys and a corrupt keys file.

Servers are real (uvicorn on a socket, `running_server`); commands are the real `clinrisk` app,
in subprocesses where processes must race.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from service.app import create_app
from service.auth import KeyStore, create_key, load_keys
from service.cli import app as cli
from service.logging import configure_logging
from service.settings import REPO_ROOT, Settings
from tests.conftest import SHIPPED_VERSION, Keys, running_server
from tests.service.test_predict import CVD_PATIENT, typical

RELOAD_DEADLINE = 2.5  # seconds: the service re-checks the file at most once per second


def clinrisk(*args: str) -> str:
    """Run `clinrisk ARGS` in process; its output (exit code 0 asserted)."""
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def token_of(output: str) -> str:
    return output.split()[0]


def key_id(token: str) -> str:
    return token.split("_", 2)[1]


@pytest.fixture
def server(settings: Settings) -> Iterator[httpx.Client]:
    """The service on a real socket, reading the `keys` fixture's file."""
    with running_server(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        yield http


def status(http: httpx.Client, token: str, path: str = "/v1/models", **kwargs: Any) -> int:
    method = "POST" if "json" in kwargs else "GET"
    response = http.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs)
    return response.status_code


def wait_for(condition: Callable[[], bool], deadline: float = RELOAD_DEADLINE) -> float:
    """Seconds until ``condition`` held; fails after ``deadline``."""
    started = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - started
        assert elapsed < deadline, f"not within {deadline} s"
        time.sleep(0.05)
    return time.monotonic() - started


# --- concurrent writers ----------------------------------------------------------------------

# Each process imports the command first and waits for the others, so the ten writes really
# race (import time would otherwise spread them out).
_RACER = """
import pathlib, sys, time
from service.cli import app
ready, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
ready.touch()
while not go.exists():
    time.sleep(0.001)
app(["keys", "create", sys.argv[3], "--scopes", "predict", "--keys-file", sys.argv[4]])
"""


def test_ten_concurrent_creates_store_ten_distinct_working_keys(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _RACER,
                str(tmp_path / f"ready{i}"),
                str(go),
                f"racer-{i}",
                str(keys_file),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(10)
    ]
    wait_for(lambda: all((tmp_path / f"ready{i}").exists() for i in range(10)), deadline=120)
    go.touch()
    outputs = [p.communicate(timeout=120) for p in processes]

    assert [p.returncode for p in processes] == [0] * 10, [err for _, err in outputs]
    tokens = [token_of(out) for out, _ in outputs]
    assert len(set(tokens)) == 10
    stored = load_keys(keys_file)
    assert sorted(k.name for k in stored.values()) == sorted(f"racer-{i}" for i in range(10))
    store = KeyStore(stored)
    assert all(store.authenticate(token) is not None for token in tokens)
    assert oct(keys_file.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in tmp_path.iterdir() if "tmp" in p.name) == []


# --- revoke, rotate, list while the service runs ---------------------------------------------


def test_a_revoked_key_is_refused_within_seconds_without_a_restart(
    server: httpx.Client, keys: Keys
) -> None:
    assert status(server, keys.predict) == 200
    assert status(server, keys.everything) == 200

    clinrisk("keys", "revoke", key_id(keys.predict), "--keys-file", str(keys.file))

    seconds = wait_for(lambda: status(server, keys.predict) == 401)
    assert seconds < RELOAD_DEADLINE
    assert status(server, keys.everything) == 200
    assert status(server, keys.batch) == 200
    # Kept for the audit trail, marked revoked.
    record = load_keys(keys.file)[key_id(keys.predict)]
    assert record.revoked_at is not None


def test_rotate_gives_a_working_key_and_refuses_the_old_one_after_the_grace_period(
    server: httpx.Client, keys: Keys
) -> None:
    old = keys.predict
    # 0.05 minutes = 3 s of grace.
    new = token_of(
        clinrisk(
            "keys", "rotate", key_id(old), "--grace-minutes", "0.05", "--keys-file", str(keys.file)
        )
    )

    assert wait_for(lambda: status(server, new) == 200) < RELOAD_DEADLINE
    assert status(server, old) == 200  # still in its grace period
    wait_for(lambda: status(server, old) == 401, deadline=3 + RELOAD_DEADLINE)
    assert status(server, new) == 200
    stored = load_keys(keys.file)
    assert stored[key_id(new)].scopes == stored[key_id(old)].scopes == frozenset({"predict"})
    assert stored[key_id(new)].name == stored[key_id(old)].name == "ehr"
    assert stored[key_id(old)].replaced_by == key_id(new)


def test_rotate_without_grace_refuses_the_old_key_at_once(server: httpx.Client, keys: Keys) -> None:
    new = token_of(clinrisk("keys", "rotate", key_id(keys.batch), "--keys-file", str(keys.file)))

    wait_for(lambda: status(server, keys.batch) == 401 and status(server, new) == 200)


def test_list_shows_ids_names_scopes_and_models_never_a_hash_or_a_secret(keys: Keys) -> None:
    restricted = create_key(keys.file, "cardiology", ["predict"], ["cvd"])
    clinrisk("keys", "revoke", key_id(keys.admin), "--keys-file", str(keys.file))

    table = clinrisk("keys", "list", "--keys-file", str(keys.file))
    rows = [
        json.loads(line)
        for line in clinrisk("keys", "list", "--json", "--keys-file", str(keys.file)).splitlines()
    ]

    tokens = [keys.predict, keys.batch, keys.admin, keys.everything, restricted]
    hashes = [k.sha256 for k in load_keys(keys.file).values()]
    for output in (table, json.dumps(rows)):
        for secret in tokens:
            assert secret.split("_", 2)[2] not in output
        for digest in hashes:
            assert digest not in output
    for token in tokens:
        assert key_id(token) in table
    assert "cardiology" in table and "cvd" in table
    by_name = {row["name"]: row for row in rows}
    assert by_name["cardiology"]["models"] == ["cvd"]
    assert by_name["ops"]["models"] is None
    assert by_name["auditor"]["active"] is False and by_name["auditor"]["revoked_at"]
    assert set(by_name["ehr"]) == {
        "key_id",
        "name",
        "scopes",
        "models",
        "created_at",
        "revoked_at",
        "replaced_by",
        "active",
    }


def test_revoking_an_unknown_key_fails_naming_it(keys: Keys) -> None:
    result = CliRunner().invoke(
        cli, ["keys", "revoke", "0123456789ab", "--keys-file", str(keys.file)]
    )

    assert result.exit_code == 1
    assert "0123456789ab" in result.output


# --- keys restricted to models ---------------------------------------------------------------


def test_a_model_restricted_key_scores_its_models_and_gets_403_for_another(
    server: httpx.Client, keys: Keys
) -> None:
    output = clinrisk(
        "keys",
        "create",
        "--name",
        "endocrinology",
        "--scope",
        "predict",
        "--scope",
        "batch",
        "--model",
        "diabetes",
        "--keys-file",
        str(keys.file),
    )
    token = token_of(output)
    wait_for(lambda: status(server, token) == 200)
    diabetes = {"features": typical("diabetes")}

    assert status(server, token, "/v1/models/diabetes/predict", json=diabetes) == 200
    pinned = f"/v1/models/diabetes/versions/{SHIPPED_VERSION}/predict"
    assert status(server, token, pinned, json=diabetes) == 200
    assert (
        status(server, token, "/v1/models/diabetes/predict/batch", json={"items": [diabetes]})
        == 200
    )

    response = server.post(
        "/v1/models/cvd/predict",
        headers={"Authorization": f"Bearer {token}"},
        json={"features": CVD_PATIENT},
    )
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert "'cvd'" in problem["detail"] and "diabetes" in problem["detail"]
    assert problem["errors"][0]["field"] == "name"
    assert problem["errors"][0]["value"] == "cvd"
    assert problem["errors"][0]["allowed"] == "diabetes"
    # Every scoring door for another model, and a model that does not exist: 403, not 404.
    for path, body in [
        (f"/v1/models/cvd/versions/{SHIPPED_VERSION}/predict", {"features": CVD_PATIENT}),
        ("/v1/models/cvd/predict/batch", {"items": [{"features": CVD_PATIENT}]}),
        ("/v1/models/cvd/curves", {"features": CVD_PATIENT, "features_to_vary": ["age_years"]}),
        ("/v1/models/nope/predict", {"features": CVD_PATIENT}),
        ("/cds-services/clinrisk-ascvd-risk", {}),
        ("/cds-services/clinrisk-readmission-risk/feedback", {}),
    ]:
        assert status(server, token, path, json=body) == 403, path
    # An unrestricted key is unaffected; listing shows every model (documented choice).
    assert (
        status(server, keys.predict, "/v1/models/cvd/predict", json={"features": CVD_PATIENT})
        == 200
    )
    listed = server.get("/v1/models", headers={"Authorization": f"Bearer {token}"}).json()
    assert {m["name"] for m in listed} >= {"diabetes", "readmission", "cvd"}


def test_a_key_restricted_to_an_unknown_model_is_not_created(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"

    result = CliRunner().invoke(
        cli, ["keys", "create", "x", "--model", "diabetis", "--keys-file", str(keys_file)]
    )

    assert result.exit_code == 2
    assert "diabetis" in result.output and "diabetes" in result.output
    assert not keys_file.exists()


# --- a corrupt keys file ---------------------------------------------------------------------


def test_a_corrupt_keys_file_keeps_the_previous_keys_and_a_repaired_one_is_picked_up(
    capsys: pytest.CaptureFixture[str], server: httpx.Client, keys: Keys
) -> None:
    configure_logging("INFO")  # onto this test's captured stderr
    good = keys.file.read_text()
    assert status(server, keys.predict) == 200

    # Written in place, the way a hand edit or a half-finished copy leaves it.
    for broken in (good[: len(good) // 2], "", '{"keys": [{"key_id": 1}]}'):
        keys.file.write_text(broken)
        time.sleep(1.2)  # past the reload interval: the service has looked at it
        assert status(server, keys.predict) == 200
        assert status(server, keys.everything) == 200

    # A command never overwrites a file it cannot parse (that would drop every key).
    refused = CliRunner().invoke(cli, ["keys", "create", "x", "--keys-file", str(keys.file)])
    assert refused.exit_code == 1
    assert keys.file.read_text() == '{"keys": [{"key_id": 1}]}'

    keys.file.write_text(good)
    added = create_key(keys.file, "added-after-repair", ["predict"])
    wait_for(lambda: status(server, added) == 200)
    assert status(server, keys.predict) == 200

    logs = capsys.readouterr().err
    assert "api keys file not loaded; keeping the previous keys" in logs
    for secret in (
        keys.predict,
        keys.everything,
        added,
        *(k.sha256 for k in load_keys(keys.file).values()),
    ):
        assert secret not in logs


def test_a_service_starting_on_a_corrupt_keys_file_starts_and_accepts_keys_once_repaired(
    settings: Settings, keys: Keys
) -> None:
    good = keys.file.read_text()
    keys.file.write_text("{not json")

    with running_server(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        assert status(http, keys.predict) == 401
        keys.file.write_text(good)
        wait_for(lambda: status(http, keys.predict) == 200)
