"""Starting the service: workers racing on a fresh database, `clinrisk db upgrade`, and
configuration errors that end in one line rather than a traceback (real processes)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from service.database import head_revision
from tests.conftest import MODELS_DIR, Keys
from tests.service.test_concurrent_audit import free_port

CLINRISK = str(Path(sys.executable).with_name("clinrisk"))


def _env(tmp_path: Path, keys: Keys, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "CLINRISK_MODELS_DIR": str(MODELS_DIR),
        "CLINRISK_DATABASE_URL": f"sqlite:///{tmp_path / 'audit.db'}",
        "CLINRISK_API_KEYS_FILE": str(keys.file),
        "CLINRISK_PSEUDONYM_KEY": "startup-test-key",
        **extra,
    }
    return {k: v for k, v in env.items() if v}


def test_two_workers_on_a_fresh_database_start_and_stay_up(tmp_path: Path, keys: Keys) -> None:
    """On main, 2 of 6 such starts lost a worker to `table audit_records already exists` and
    uvicorn stopped the whole server ~20 s after it reported ready."""
    for attempt in range(3):
        folder = tmp_path / str(attempt)
        folder.mkdir()
        port = free_port()
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "service.main:app"),
                *("--port", str(port), "--workers", "2", "--log-level", "warning"),
            ],
            env=_env(folder, keys),
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            else:
                raise AssertionError("the server did not become ready")
            time.sleep(2)
            assert process.poll() is None, "the server stopped after it reported ready"
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=30)
        assert "Traceback" not in stderr and "already exists" not in stderr, stderr
        with sqlite3.connect(folder / "audit.db") as database:
            (revision,) = database.execute("SELECT version_num FROM alembic_version").fetchone()
        assert revision == head_revision()


def test_db_upgrade_creates_the_schema_once(tmp_path: Path, keys: Keys) -> None:
    env = _env(tmp_path, keys)
    first = subprocess.run([CLINRISK, "db", "upgrade"], env=env, capture_output=True, text=True)
    again = subprocess.run([CLINRISK, "db", "upgrade"], env=env, capture_output=True, text=True)
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    head = head_revision()
    assert f"revision {head}" in first.stdout and f"revision {head}" in again.stdout


def test_serving_without_a_pseudonym_key_says_so_in_one_line(tmp_path: Path, keys: Keys) -> None:
    env = _env(tmp_path, keys, CLINRISK_PSEUDONYM_KEY="")
    for command in (
        [CLINRISK, "serve", "--port", str(free_port())],
        [sys.executable, "-m", "uvicorn", "service.main:app", "--port", str(free_port())],
    ):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert "Traceback" not in result.stderr
        assert len(lines) == 1 and "CLINRISK_PSEUDONYM_KEY is not set" in lines[0], lines
