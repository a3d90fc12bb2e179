"""Fixtures for batch scoring: random patient rows (good and bad), a live uvicorn server, Spark.

The live server is a real uvicorn on a free loopback port in a background thread, serving
``create_app(settings)`` with the committed models, a tmp SQLite audit DB and keys made with
``service.auth.create_key``: the client is tested over real sockets, as a hospital would use it.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest

from models.loader import load_artifact
from models.manifest import FeatureSpec, FeatureType, Manifest
from service.app import create_app
from service.auth import create_key
from service.settings import REPO_ROOT, Settings
from tests.conftest import SHIPPED_VERSION, running_server

MODELS_DIR = REPO_ROOT / "models"
MODEL_NAMES = ("diabetes", "readmission", "cvd")
UNIT_SUFFIX = "_unit"

# Text that no reading of a table could take for a number, a boolean or a category code.
JUNK_TEXT = ["abc", "n/a", "?", "1,5", " ", "high", "--3", "yes", "12 mg"]


def manifest_of(name: str) -> Manifest:
    return load_artifact(MODELS_DIR / name / SHIPPED_VERSION).manifest


def _plausible(spec: FeatureSpec, rng: random.Random) -> float:
    low = spec.minimum if spec.minimum is not None else -1000.0
    high = spec.maximum if spec.maximum is not None else 1000.0
    quantiles = spec.distribution.quantiles if spec.distribution else {}
    roll = rng.random()
    if quantiles and roll < 0.15:  # exactly on a training quantile (flag boundaries)
        value = rng.choice(list(quantiles.values()))
    elif quantiles and roll < 0.85:
        p01, p99 = quantiles.get("p01", low), quantiles.get("p99", high)
        value = rng.uniform(p01 - 0.1 * (p99 - p01), p99 + 0.1 * (p99 - p01))
        value = min(max(value, low), high)
    else:
        value = rng.uniform(low, high)
    if spec.type is FeatureType.ORDINAL or rng.random() < 0.3:
        value = float(round(value))
        value = min(max(value, math.ceil(low)), math.floor(high))
    return value


def valid_value(spec: FeatureSpec, rng: random.Random) -> Any:
    """A value RowValidator accepts (sometimes in an accepted alternative unit)."""
    if spec.type is FeatureType.CATEGORICAL:
        return rng.choice([c.code for c in spec.categories])
    if spec.type is FeatureType.BINARY:
        return rng.choice([0, 1, 0.0, 1.0, True, False])
    value: Any = _plausible(spec, rng)
    if rng.random() < 0.3 and value == int(value):
        value = int(value)  # JSON integers as well as floats
    if spec.alternative_units and rng.random() < 0.3:
        alternative = rng.choice(spec.alternative_units)
        return {
            "value": (value - alternative.offset) / alternative.factor,
            "unit": alternative.unit,
        }
    if spec.unit and rng.random() < 0.05:
        return {"value": value, "unit": spec.unit}
    return value


def invalid_value(spec: FeatureSpec, rng: random.Random) -> Any:
    """A value RowValidator refuses, of every kind a table can hold."""
    if spec.type is FeatureType.CATEGORICAL:
        codes = [c.code for c in spec.categories]
        return rng.choice(["UNKNOWN", codes[0].upper(), 3, True, rng.choice(JUNK_TEXT)])
    if spec.type is FeatureType.BINARY:
        return rng.choice([2, -1, 0.5, math.inf, rng.choice(JUNK_TEXT)])
    low = spec.minimum if spec.minimum is not None else 0.0
    high = spec.maximum if spec.maximum is not None else 0.0
    choices: list[Any] = [
        rng.choice(JUNK_TEXT),
        rng.choice([True, False]),
        rng.choice([math.inf, -math.inf]),
        rng.choice([low - 1.0, high + 10.0, high * 3 + 1, low - 0.001]),
        {"value": _plausible(spec, rng), "unit": "furlongs"},
    ]
    if spec.type is FeatureType.ORDINAL:
        choices.append(_plausible(spec, rng) + 0.5)
    return rng.choice(choices)


def random_rows(manifest: Manifest, n: int, *, seed: int) -> list[dict[str, Any]]:
    """JSON-like rows: about half clean, the rest with one to three bad or missing values."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        row: dict[str, Any] = {}
        for spec in manifest.features:
            if not spec.required and rng.random() < 0.1:
                if rng.random() < 0.5:  # absent and null are both missing
                    row[spec.name] = None
                continue
            row[spec.name] = valid_value(spec, rng)
        if rng.random() < 0.5:
            for spec in rng.sample(manifest.features, rng.randint(1, 3)):
                if spec.required and rng.random() < 0.15:
                    row.pop(spec.name, None)
                else:
                    row[spec.name] = invalid_value(spec, rng)
        rows.append(row)
    return rows


def rows_to_columns(manifest: Manifest, rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """JSON-like rows as table columns: a measurement becomes value + ``<feature>_unit``."""
    columns: dict[str, list[Any]] = {}
    for spec in manifest.features:
        values: list[Any] = []
        units: list[Any] = []
        for row in rows:
            value = row.get(spec.name)
            if isinstance(value, dict):
                values.append(value["value"])
                units.append(value["unit"])
            else:
                values.append(value)
                units.append(None)
        columns[spec.name] = values
        if any(u is not None for u in units):
            columns[spec.name + UNIT_SUFFIX] = units
    return columns


def as_text(value: Any) -> str | None:
    """How a CSV file holds a JSON-like value."""
    if value is None:
        return None
    if isinstance(value, float):
        return repr(value)
    return str(value)


def text_table(columns: dict[str, list[Any]]) -> pa.Table:
    return pa.table(
        {k: pa.array([as_text(v) for v in vs], pa.string()) for k, vs in columns.items()}
    )


# ---------------------------------------------------------------------------------------------
# A live server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class LiveServer:
    url: str
    api_key: str
    predict_only_key: str
    settings: Settings


@pytest.fixture(scope="session")
def clinrisk_live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real uvicorn serving the committed models on a free port, for the whole session."""
    folder = tmp_path_factory.mktemp("live-server")
    keys_file = folder / "keys.json"
    api_key = create_key(keys_file, "batch-tests", ["predict", "batch", "admin"])
    predict_only = create_key(keys_file, "ehr-tests", ["predict"])
    settings = Settings(
        models_dir=MODELS_DIR,
        database_url=f"sqlite:///{folder / 'audit.db'}",
        api_keys_file=keys_file,
        pseudonym_key="batch-test-pseudonym-key",  # type: ignore[arg-type]
        max_batch_size=200,
        log_level="WARNING",
    )
    with running_server(create_app(settings)) as url:
        yield LiveServer(url, api_key, predict_only, settings)


# ---------------------------------------------------------------------------------------------
# Spark (one local session for the whole test session)


def spark_unavailable() -> str | None:
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "Java is not installed (pyspark needs a Java 17 runtime)"
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install 'clinrisk[spark]')"
    return None


@pytest.fixture(scope="session")
def spark_session() -> Iterator[Any]:
    reason = spark_unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Spark tests: {reason}")
        pytest.skip(reason)
    from service.batch.spark import local_session

    session = local_session("local[2]", app_name="clinrisk-tests")
    try:
        yield session
    finally:
        session.stop()


def write_csv(path: Path, columns: dict[str, list[Any]]) -> Path:
    import pyarrow.csv as pacsv

    pacsv.write_csv(text_table(columns), path)
    return path


@pytest.fixture(scope="session")
def batch_kit() -> SimpleNamespace:
    """This folder's helpers (test modules cannot import conftest under importlib mode)."""
    return SimpleNamespace(
        models_dir=MODELS_DIR,
        model_names=MODEL_NAMES,
        manifest_of=manifest_of,
        random_rows=random_rows,
        rows_to_columns=rows_to_columns,
        text_table=text_table,
        as_text=as_text,
        write_csv=write_csv,
        free_port=free_port,
    )
