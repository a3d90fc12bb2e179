"""What the audit trail and the logs may hold: keyed hashes only, and no value a request sent,
even when the store fails (real server, real SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import hmac

import httpx
import orjson
import pytest
import sqlalchemy as sa

from models.predictor import load_predictor
from models.registry import artifact_folder
from service.app import create_app
from service.audit import Pseudonymizer
from service.database import make_engine
from tests.conftest import MODELS_DIR, Keys, running_server
from tests.service.test_audit_store_faults import _predict, _settings
from tests.service.test_predict import CVD_PATIENT

KEY = b"fault-test-key"  # _settings' pseudonym key


def test_a_failing_audit_query_logs_no_value_it_was_given(
    keys: Keys, database_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """On main, PostgreSQL's failing audit queries logged their SQL parameters."""
    settings = _settings(keys, database_url)
    with (
        running_server(create_app(settings)) as url,
        httpx.Client(base_url=url, headers=keys.header(), timeout=30) as http,
    ):
        assert _predict(http).status_code == 200
        engine = make_engine(database_url)
        with engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE audit_records"))
        engine.dispose()
        capfd.readouterr()
        response = http.get("/v1/audit", params={"patient_id": "SECRET-PATIENT-4711"})
        predicted = _predict(http)
    assert response.status_code == 503
    assert predicted.status_code == 503
    pseudonym = Pseudonymizer(KEY)("SECRET-PATIENT-4711")
    logged = "".join(capfd.readouterr())
    assert "SECRET-PATIENT" not in logged
    assert pseudonym is not None and pseudonym not in logged


def test_the_input_hash_is_keyed(keys: Keys, database_url: str) -> None:
    """A plain sha256 of a few low-entropy inputs can be reversed by trying every patient."""
    with (
        running_server(create_app(_settings(keys, database_url))) as url,
        httpx.Client(base_url=url, headers=keys.header(), timeout=30) as http,
    ):
        response = _predict(http)
        assert response.status_code == 200
        prediction_id = response.json()["prediction_id"]
        records = http.get("/v1/audit", params={"patient_id": "p"}).json()["records"]
        (record,) = [r for r in records if r["prediction_id"] == prediction_id]
    canonical = orjson.dumps(
        load_predictor(artifact_folder(MODELS_DIR, "cvd")).predict(CVD_PATIENT).values,
        option=orjson.OPT_SORT_KEYS,
    )
    assert record["input_sha256"] != hashlib.sha256(canonical).hexdigest()
    assert record["input_sha256"] == hmac.new(KEY, canonical, hashlib.sha256).hexdigest()
