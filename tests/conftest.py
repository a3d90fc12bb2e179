"""Shared fixtures, bottom-up: settings -> keys -> app -> client. Models are the committed ones."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

from models.registry import artifact_folder
from service.app import create_app
from service.auth import create_key
from service.settings import REPO_ROOT, Settings

MODELS_DIR = REPO_ROOT / "models"
MODEL_NAMES = ("diabetes", "readmission", "cvd")
# The shipped (highest) version of the committed models: tests never name a version literally.
SHIPPED_VERSION = artifact_folder(MODELS_DIR, "cvd").name
# The PostgreSQL server every CI machine has; elsewhere the PostgreSQL variants skip, naming why.
POSTGRES_URL = os.environ.get(
    "CLINRISK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@dataclass(frozen=True)
class Keys:
    file: Path
    predict: str
    batch: str
    admin: str
    everything: str

    def header(self, which: str = "everything") -> dict[str, str]:
        return {"Authorization": f"Bearer {getattr(self, which)}"}


def make_keys(path: Path) -> Keys:
    return Keys(
        file=path,
        predict=create_key(path, "ehr", ["predict"]),
        batch=create_key(path, "nightly", ["batch"]),
        admin=create_key(path, "auditor", ["admin"]),
        everything=create_key(path, "ops", ["predict", "batch", "admin"]),
    )


@contextmanager
def running_server(app: Any) -> Iterator[str]:
    """``app`` on a real uvicorn, on a free loopback port, in a background thread: its URL.

    The socket is bound first and handed to uvicorn, so the port is free and already ours.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the uvicorn server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def _postgres_available() -> str | None:
    if not POSTGRES_URL:
        return "CLINRISK_TEST_POSTGRES_URL is not set"
    try:
        import sqlalchemy as sa

        from service.database import make_engine

        engine = make_engine(POSTGRES_URL)
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"PostgreSQL at {POSTGRES_URL} is not reachable: {exc}"
    return None


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every test using it runs against SQLite and against PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.db'}"
        return
    reason = _postgres_available()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL tests: {reason}")
        pytest.skip(reason)
    import sqlalchemy as sa

    from service.database import make_engine

    assert POSTGRES_URL is not None
    engine = make_engine(POSTGRES_URL)
    # Every table the migrations made, so each test starts from an empty database.
    existing = sa.MetaData()
    existing.reflect(engine)
    existing.drop_all(engine)
    engine.dispose()
    yield POSTGRES_URL


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    return tmp_path / "keys.json"


@pytest.fixture
def keys(keys_file: Path) -> Keys:
    return make_keys(keys_file)


@pytest.fixture
def settings(tmp_path: Path, keys: Keys) -> Settings:
    return Settings(
        models_dir=MODELS_DIR,
        database_url=f"sqlite:///{tmp_path / 'audit.db'}",
        api_keys_file=keys.file,
        pseudonym_key="test-pseudonym-key",  # type: ignore[arg-type]
        max_batch_size=50,
        max_body_bytes=256 * 1024,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client
