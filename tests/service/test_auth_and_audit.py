"""API keys and scopes, and the audit trail in SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from models.registry import artifact_folder
from service.app import create_app
from service.settings import Settings
from tests.conftest import MODELS_DIR, SHIPPED_VERSION, Keys
from tests.service.test_predict import CVD_PATIENT


@pytest.fixture
def db_client(keys: Keys, database_url: str) -> Iterator[TestClient]:
    settings = Settings(
        models_dir=MODELS_DIR,
        database_url=database_url,
        api_keys_file=keys.file,
        pseudonym_key="audit-test-key",  # type: ignore[arg-type]
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_v1_without_a_key_is_401(client: TestClient) -> None:
    for method, path in [
        ("get", "/v1/models"),
        ("post", "/v1/models/cvd/predict"),
        ("get", "/v1/audit"),
    ]:
        response = client.request(method, path, json={"features": CVD_PATIENT})
        assert response.status_code == 401, path
        assert response.headers["content-type"] == "application/problem+json"


def test_the_key_is_checked_before_the_model_is_looked_up(client: TestClient) -> None:
    """An unauthenticated caller learns nothing about which models or versions exist."""
    for method, path in [
        ("get", "/v1/models/nope"),
        ("get", "/v1/models/cvd/versions/9.9.9"),
        ("post", "/v1/models/nope/predict"),
        ("post", "/v1/models/cvd/versions/9.9.9/predict"),
        ("post", "/v1/models/nope/predict/batch"),
        ("post", "/v1/models/nope/curves"),
    ]:
        response = client.request(method, path, json={"features": CVD_PATIENT})
        assert response.status_code == 401, path


def test_a_wrong_key_is_401(client: TestClient, keys: Keys) -> None:
    forged = keys.predict[:-4] + "AAAA"

    response = client.get("/v1/models", headers={"Authorization": f"Bearer {forged}"})

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwdw==", "crk_x_y"]
)
def test_every_401_names_the_bearer_scheme(client: TestClient, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}

    response = client.get("/v1/models", headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="clinrisk"'
    assert response.json()["title"] == "Not authenticated"


@pytest.mark.parametrize(
    "path", ["/v1/models/cvd/predict", "/v1/models/cvd/predict/batch", "/v1/models/cvd/curves"]
)
def test_the_key_is_checked_before_the_body_is_read(
    client: TestClient, settings: Settings, path: str
) -> None:
    too_large = b"[" + b"0," * settings.max_body_bytes + b"0]"

    response = client.post(path, content=too_large, headers={"Content-Type": "application/json"})

    assert response.status_code == 401


def test_a_403_does_not_ask_for_credentials(client: TestClient, keys: Keys) -> None:
    response = client.get("/v1/audit", headers=keys.header("predict"))

    assert response.status_code == 403
    assert "www-authenticate" not in response.headers


def test_scopes_are_enforced(client: TestClient, keys: Keys) -> None:
    batch_with_predict_key = client.post(
        "/v1/models/cvd/predict/batch", headers=keys.header("predict"), json={"items": []}
    )
    predict_with_batch_key = client.post(
        "/v1/models/cvd/predict", headers=keys.header("batch"), json={"features": CVD_PATIENT}
    )
    audit_with_predict_key = client.get("/v1/audit", headers=keys.header("predict"))

    assert batch_with_predict_key.status_code == 403
    assert "lacks the 'batch' scope" in batch_with_predict_key.json()["detail"]
    assert predict_with_batch_key.status_code == 403
    assert audit_with_predict_key.status_code == 403


def test_keys_file_holds_only_hashes(keys_file: Path, keys: Keys) -> None:
    stored = keys_file.read_text()

    assert keys.predict not in stored
    assert hashlib.sha256(keys.predict.encode()).hexdigest() in stored


def test_health_and_metrics_are_open(client: TestClient, keys: Keys) -> None:
    client.post("/v1/models/cvd/predict", headers=keys.header(), json={"features": CVD_PATIENT})

    assert client.get("/health/live").json()["status"] == "ok"
    ready = client.get("/health/ready").json()
    assert ready == {
        "status": "ok",
        # Each model's newest committed version.
        "models": {
            name: artifact_folder(MODELS_DIR, name).name
            for name in ("cvd", "diabetes", "readmission")
        }
        | dict.fromkeys(("ascvd-pce", "ascvd-prevent", "cvd-framingham-2008"), "1.2.0"),
        "audit_store": True,
    }
    metrics = client.get("/metrics").text
    assert f'clinrisk_score_probability_count{{model="cvd",version="{SHIPPED_VERSION}"}}' in metrics
    assert "clinrisk_http_request_seconds_bucket" in metrics


def test_every_prediction_is_audited_with_a_pseudonym_only(
    db_client: TestClient, keys: Keys
) -> None:
    response = db_client.post(
        "/v1/models/cvd/predict",
        headers=keys.header("predict"),
        json={"patient_id": "MRN-0042", "features": CVD_PATIENT},
    )
    prediction = response.json()

    page = db_client.get("/v1/audit", headers=keys.header("admin"), params={"model": "cvd"})

    assert page.status_code == 200
    records = page.json()["records"]
    assert len(records) == 1
    record = records[0]
    expected = hmac.new(b"audit-test-key", b"MRN-0042", hashlib.sha256).hexdigest()
    assert record["patient_pseudonym"] == expected
    assert record["prediction_id"] == prediction["prediction_id"]
    assert record["probability"] == prediction["probability"]
    assert record["model_sha256"] == prediction["model"]["sha256"]
    assert record["tier"] == prediction["tier"]["name"]
    assert "MRN-0042" not in page.text
    # No raw feature values (compared whole: a random id may contain the digits of one).
    assert not {str(v) for v in CVD_PATIENT.values()} & {str(v) for v in record.values()}
    assert not set(CVD_PATIENT) & set(record)


def test_audit_filters_by_patient_model_version_and_time(db_client: TestClient, keys: Keys) -> None:
    for patient in ("p1", "p2", "p1"):
        db_client.post(
            "/v1/models/cvd/predict",
            headers=keys.header(),
            json={"patient_id": patient, "features": CVD_PATIENT},
        )
    admin = keys.header("admin")

    by_patient = db_client.get("/v1/audit", headers=admin, params={"patient_id": "p1"}).json()
    by_version = db_client.get("/v1/audit", headers=admin, params={"version": "2.0.0"}).json()
    future = db_client.get(
        "/v1/audit", headers=admin, params={"since": "2999-01-01T00:00:00Z"}
    ).json()
    every = db_client.get(
        "/v1/audit", headers=admin, params={"model": "cvd", "version": SHIPPED_VERSION}
    ).json()

    assert len(by_patient["records"]) == 2
    assert by_version["records"] == []
    assert future["records"] == []
    assert len(every["records"]) == 3


def test_batch_writes_one_record_per_scored_item(db_client: TestClient, keys: Keys) -> None:
    items = [{"features": CVD_PATIENT}, {"features": {}}, {"features": CVD_PATIENT}]

    db_client.post("/v1/models/cvd/predict/batch", headers=keys.header(), json={"items": items})

    records = db_client.get("/v1/audit", headers=keys.header("admin")).json()["records"]
    assert [r["channel"] for r in records] == ["batch", "batch"]


def test_a_prediction_whose_audit_write_fails_is_not_returned(
    db_client: TestClient, keys: Keys
) -> None:
    state = db_client.app.state.clinrisk  # type: ignore[attr-defined]
    with state.audit.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE audit_records")

    response = db_client.post(
        "/v1/models/cvd/predict", headers=keys.header(), json={"features": CVD_PATIENT}
    )

    assert response.status_code == 503
    assert response.json()["title"] == "Audit store unavailable"
    assert "probability" not in response.json()


@pytest.mark.parametrize(
    "params",
    [
        {"until": "0.5"},
        {"since": "1700000000"},
        {"since": "yesterday"},
        {"until": "9999-12-31T23:59:59-01:00"},  # past year 9999 once in UTC
        {"offset": str(2**63)},
        {"offset": "-1"},
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "10.5"},
        {"model": "cvd\x00"},
    ],
)
def test_audit_query_parameters_out_of_contract_are_422(
    db_client: TestClient, keys: Keys, params: dict[str, str]
) -> None:
    response = db_client.get("/v1/audit", headers=keys.header("admin"), params=params)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    [field] = params
    assert [e["field"] for e in response.json()["errors"]] == [f"query.{field}"]


def test_audit_accepts_the_largest_offset_and_integral_floats(
    db_client: TestClient, keys: Keys
) -> None:
    admin = keys.header("admin")

    last = db_client.get("/v1/audit", headers=admin, params={"offset": str(2**63 - 1)})
    integral = db_client.get("/v1/audit", headers=admin, params={"limit": "10.0"})

    assert last.status_code == 200
    assert last.json()["records"] == []
    assert integral.status_code == 200
    assert integral.json()["limit"] == 10


def test_audit_times_in_other_zones_compare_as_instants(db_client: TestClient, keys: Keys) -> None:
    db_client.post("/v1/models/cvd/predict", headers=keys.header(), json={"features": CVD_PATIENT})
    admin = keys.header("admin")
    [record] = db_client.get("/v1/audit", headers=admin).json()["records"]
    created = datetime.fromisoformat(record["created_at"])
    # The same instant written in UTC+05:00, and a minute later written in UTC-05:00.
    at = (created + timedelta(seconds=-1)).astimezone(timezone(timedelta(hours=5)))
    after = (created + timedelta(minutes=1)).astimezone(timezone(timedelta(hours=-5)))

    since = db_client.get("/v1/audit", headers=admin, params={"since": at.isoformat()}).json()
    until = db_client.get("/v1/audit", headers=admin, params={"until": after.isoformat()}).json()
    later = db_client.get("/v1/audit", headers=admin, params={"since": after.isoformat()}).json()

    assert len(since["records"]) == 1
    assert len(until["records"]) == 1
    assert later["records"] == []


def test_an_unreadable_audit_store_is_503(db_client: TestClient, keys: Keys) -> None:
    state = db_client.app.state.clinrisk  # type: ignore[attr-defined]
    with state.audit.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE audit_records")

    response = db_client.get("/v1/audit", headers=keys.header("admin"))

    assert response.status_code == 503
    assert response.json()["title"] == "Audit store unavailable"
