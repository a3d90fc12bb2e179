"""A real multi-worker uvicorn server under concurrent load loses no audit record."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sqlalchemy as sa

from service.database import make_engine
from tests.conftest import MODELS_DIR, Keys
from tests.service.test_predict import CVD_PATIENT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(keys: Keys, database_url: str) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "CLINRISK_MODELS_DIR": str(MODELS_DIR),
        "CLINRISK_DATABASE_URL": database_url,
        "CLINRISK_API_KEYS_FILE": str(keys.file),
        "CLINRISK_PSEUDONYM_KEY": "load-test-key",
        "CLINRISK_LOG_LEVEL": "WARNING",
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "service.main:app",
        "--port",
        str(port),
        "--workers",
        "2",
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("the server did not become ready")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_concurrent_predictions_from_two_workers_lose_no_audit_record(
    server: str, keys: Keys, database_url: str
) -> None:
    headers = keys.header()

    def call(i: int) -> int:
        with httpx.Client(base_url=server, headers=headers, timeout=30) as http:
            ok = 0
            for j in range(20):
                if j % 5 == 0:
                    items = [
                        {"patient_id": f"p{i}-{j}-{k}", "features": CVD_PATIENT} for k in range(10)
                    ]
                    response = http.post("/v1/models/cvd/predict/batch", json={"items": items})
                    assert response.status_code == 200
                    ok += response.json()["succeeded"]
                else:
                    response = http.post(
                        "/v1/models/cvd/predict",
                        json={"patient_id": f"p{i}-{j}", "features": CVD_PATIENT},
                    )
                    assert response.status_code == 200, response.text
                    ok += 1
            return ok

    with ThreadPoolExecutor(max_workers=16) as pool:
        returned = sum(pool.map(call, range(16)))

    engine = make_engine(database_url)
    with engine.connect() as connection:
        stored = connection.execute(
            sa.text("SELECT count(*), count(DISTINCT prediction_id) FROM audit_records")
        ).one()
    engine.dispose()
    assert returned == 16 * (16 + 4 * 10)
    assert tuple(stored) == (returned, returned)
