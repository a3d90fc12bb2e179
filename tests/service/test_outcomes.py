"""Outcomes in (issue 13 part 1): by prediction id or patient + model + time, idempotent,
corrections audited, bad rows rejected with reasons; API and `clinrisk outcomes record`;
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service.app import create_app
from service.auth import create_key
from service.database import make_engine
from service.outcomes import OutcomeStore
from service.settings import Settings
from tests.conftest import MODELS_DIR, Keys

CVD = {
    "sex_male": 1,
    "age_years": 55,
    "current_smoker": 0,
    "cigarettes_per_day": 0,
    "bp_medication": 0,
    "stroke_history": 0,
    "hypertension": 1,
    "diabetes": 0,
    "total_cholesterol_mg_dl": 240,
    "systolic_bp_mm_hg": 150,
    "diastolic_bp_mm_hg": 90,
    "bmi_kg_m2": 27,
    "heart_rate_bpm": 75,
    "glucose_mg_dl": 90,
}
MARKER = "PATIENT-ZZ-4711"
"""A patient id planted in rows: it must never come back in an answer or a log."""


@pytest.fixture
def outcomes_key(keys: Keys) -> str:
    return create_key(keys.file, "registry", ["outcomes"])


@pytest.fixture
def app_client(keys: Keys, database_url: str, outcomes_key: str) -> Iterator[TestClient]:
    # The outcomes key exists before the app starts: a running service re-reads keys each second.
    assert outcomes_key
    settings = Settings(
        models_dir=MODELS_DIR,
        database_url=database_url,
        api_keys_file=keys.file,
        pseudonym_key="test-pseudonym-key",  # type: ignore[arg-type]
    )
    with TestClient(create_app(settings)) as client:
        yield client


def _predict(client: TestClient, keys: Keys, patient_id: str | None = None) -> str:
    body: dict[str, Any] = {"features": CVD}
    if patient_id is not None:
        body["patient_id"] = patient_id
    answer = client.post("/v1/models/cvd/predict", json=body, headers=keys.header("predict"))
    assert answer.status_code == 200, answer.text
    prediction_id: str = answer.json()["prediction_id"]
    return prediction_id


def _record(client: TestClient, key: str, rows: list[dict[str, Any]]) -> Any:
    return client.post(
        "/v1/outcomes", json={"outcomes": rows}, headers={"Authorization": f"Bearer {key}"}
    )


def _store(client: TestClient) -> OutcomeStore:
    return OutcomeStore(client.app.state.clinrisk.audit.engine)  # type: ignore[attr-defined]


def test_record_by_prediction_id_is_idempotent_and_corrections_keep_history(
    app_client: TestClient, keys: Keys, outcomes_key: str
) -> None:
    first, second = _predict(app_client, keys), _predict(app_client, keys)

    answer = _record(
        app_client,
        outcomes_key,
        [{"prediction_id": first, "outcome": 1}, {"prediction_id": second, "outcome": 0}],
    )
    again = _record(app_client, outcomes_key, [{"prediction_id": first, "outcome": 1}])
    corrected = _record(app_client, outcomes_key, [{"prediction_id": first, "outcome": 0}])

    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "rows": 2,
        "recorded": 2,
        "corrected": 0,
        "unchanged": 0,
        "rejected": [],
    }
    assert again.json()["unchanged"] == 1 and again.json()["recorded"] == 0
    assert corrected.json()["corrected"] == 1
    store = _store(app_client)
    assert store.current(first) == 0
    history = store.history(first)
    assert [(h["old_outcome"], h["new_outcome"]) for h in history] == [(None, 1), (1, 0)]
    outcomes_key_id = outcomes_key.split("_")[1]
    assert {h["changed_by"] for h in history} == {outcomes_key_id}
    assert all(h["source"] == "api" and h["changed_at"] is not None for h in history)


def test_record_by_patient_and_time_matches_predictions_within_the_horizon(
    app_client: TestClient, keys: Keys, outcomes_key: str
) -> None:
    prediction = _predict(app_client, keys, patient_id=MARKER)
    other = _predict(app_client, keys, patient_id="someone-else")
    now = datetime.now(UTC)

    answer = _record(
        app_client,
        outcomes_key,
        [
            {
                "patient_id": MARKER,
                "model": "cvd",
                "observed_at": (now + timedelta(days=400)).isoformat(),
                "outcome": 1,
            },
            # Before the prediction was made: no prediction to answer.
            {
                "patient_id": MARKER,
                "model": "cvd",
                "observed_at": (now - timedelta(days=1)).isoformat(),
                "outcome": 1,
            },
            # Past the cvd model's ten-year horizon.
            {
                "patient_id": MARKER,
                "model": "cvd",
                "observed_at": (now + timedelta(days=3700)).isoformat(),
                "outcome": 0,
            },
        ],
    )

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["recorded"] == 1
    assert [(r["row"], r["field"]) for r in body["rejected"]] == [
        (2, "patient_id"),
        (3, "patient_id"),
    ]
    assert "3653 days" in body["rejected"][0]["message"]
    assert MARKER not in answer.text
    store = _store(app_client)
    assert store.current(prediction) == 1 and store.current(other) is None
    # The patient id is stored nowhere in the clear.
    with store.engine.connect() as connection:
        for table in ("outcomes", "outcome_history", "audit_records"):
            rows = connection.execute(sa.text(f"SELECT * FROM {table}")).all()
            assert MARKER not in repr(rows)


def test_bad_rows_are_rejected_with_reasons_and_the_rest_recorded(
    app_client: TestClient, keys: Keys, outcomes_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _predict(app_client, keys)

    answer = _record(
        app_client,
        outcomes_key,
        [
            {"prediction_id": good, "outcome": 1},
            {"prediction_id": "0190c0de-0000-7000-8000-000000000000", "outcome": 1},
            {"prediction_id": good, "outcome": 2},
            {"patient_id": MARKER, "model": "nope", "observed_at": "2030-01-01", "outcome": 0},
            {"patient_id": MARKER, "model": "cvd", "observed_at": "yesterday", "outcome": 0},
            {"patient_id": MARKER, "model": "cvd", "outcome": 0},
            {"prediction_id": good, "outcome": 1, "mrn": MARKER},
            "not a row",
            {"prediction_id": "nul\u0000byte", "outcome": 1},
            {"patient_id": MARKER, "model": "cvd", "observed_at": "0001-01-01", "outcome": 0},
        ],
    )

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["recorded"] == 1
    reasons = {r["row"]: (r["field"], r["allowed"]) for r in body["rejected"]}
    assert reasons[2] == ("prediction_id", "an audited prediction id")
    assert reasons[3] == ("outcome", "0 or 1 (or true/false)")
    assert reasons[4][0] == "model" and "cvd" in reasons[4][1]
    assert reasons[5][0] == "observed_at" and "ISO 8601" in reasons[5][1]
    assert reasons[6][0] == "observed_at"
    assert reasons[7][0] == "mrn"
    assert reasons[8] == (
        "row",
        "an object with: prediction_id, patient_id, model, observed_at, outcome",
    )
    assert reasons[9] == ("prediction_id", "a UUID as returned")
    assert reasons[10] == ("observed_at", "a date-time between 1900 and 9000")
    assert MARKER not in answer.text
    assert MARKER not in capsys.readouterr().err


def test_all_rows_bad_is_a_422_problem_and_scopes_are_enforced(
    app_client: TestClient, keys: Keys, outcomes_key: str
) -> None:
    prediction = _predict(app_client, keys)

    bad = _record(app_client, outcomes_key, [{"prediction_id": prediction, "outcome": "maybe"}])
    no_scope = _record(app_client, keys.predict, [{"prediction_id": prediction, "outcome": 1}])
    envelope = app_client.post(
        "/v1/outcomes", json=[1, 2], headers={"Authorization": f"Bearer {outcomes_key}"}
    )

    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    assert bad.json()["errors"][0]["field"] == "outcomes[0].outcome"
    assert bad.json()["errors"][0]["allowed"] == "0 or 1 (or true/false)"
    assert no_scope.status_code == 403
    assert envelope.status_code == 422 and envelope.json()["errors"][0]["field"] == "outcomes"


def test_clinrisk_outcomes_record_reads_csv_and_parquet(
    tmp_path: Path, keys: Keys, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.cli import app as cli

    settings = Settings(
        models_dir=MODELS_DIR,
        database_url=database_url,
        api_keys_file=keys.file,
        pseudonym_key="test-pseudonym-key",  # type: ignore[arg-type]
    )
    with TestClient(create_app(settings)) as client:
        ids = [_predict(client, keys, patient_id=f"p-{i}") for i in range(3)]
    monkeypatch.setenv("CLINRISK_DATABASE_URL", database_url)
    monkeypatch.setenv("CLINRISK_PSEUDONYM_KEY", "test-pseudonym-key")
    from service.settings import get_settings

    get_settings.cache_clear()
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    csv_file = tmp_path / "outcomes.csv"
    csv_file.write_text(
        "prediction_id,patient_id,model,observed_at,outcome\n"
        f"{ids[0]},,,,1\n"
        f",p-1,cvd,{later},0\n"
        f",{MARKER},cvd,{later},1\n"
    )
    parquet_file = tmp_path / "outcomes.parquet"
    pq.write_table(pa.table({"prediction_id": [ids[2], ids[0]], "outcome": [1, 1]}), parquet_file)
    rejects = tmp_path / "rejects.csv"
    runner = CliRunner()
    try:
        from_csv = runner.invoke(
            cli, ["outcomes", "record", str(csv_file), "--rejects", str(rejects)]
        )
        from_parquet = runner.invoke(cli, ["outcomes", "record", str(parquet_file)])
        bad_header = tmp_path / "bad.csv"
        bad_header.write_text(f"{MARKER},outcome\n1,1\n")
        header = runner.invoke(cli, ["outcomes", "record", str(bad_header)])
    finally:
        get_settings.cache_clear()

    assert from_csv.exit_code == 1, from_csv.output  # one row rejected
    assert "row 3: patient_id" in from_csv.output and MARKER not in from_csv.output
    assert rejects.read_text().splitlines()[1].startswith("3,patient_id,")
    assert from_parquet.exit_code == 0, from_parquet.output
    assert header.exit_code == 2 and "column 1" in header.output and MARKER not in header.output
    engine = make_engine(database_url)
    try:
        store = OutcomeStore(engine)
        assert [store.current(i) for i in ids] == [1, 0, 1]
        assert store.history(ids[0])[0]["source"] == "file"
        assert store.history(ids[0])[0]["changed_by"].startswith("cli:")
    finally:
        engine.dispose()
