"""CDS Hooks card feedback in the audit database (SQLite and PostgreSQL): the spec's examples,
feedback on a real card, idempotence per card uuid, the admins' view, and no comment in logs or
metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from service.app import create_app
from service.cds_hooks.cards import OVERRIDE_REASONS
from service.cds_hooks.services import ASCVD, DIABETES
from service.logging import configure_logging
from service.settings import Settings
from tests.conftest import MODELS_DIR, Keys
from tests.service.test_cds_hooks import (
    FEEDBACK_EXAMPLES,
    bundle_path,
    call,
    hook_request,
    only_card,
    prefetch,
)

FEEDBACK = f"/cds-services/{ASCVD.id}/feedback"
COMMENT = "Lipids were redrawn today; will recompute."


@pytest.fixture
def db_client(keys: Keys, database_url: str) -> Iterator[TestClient]:
    settings = Settings(
        models_dir=MODELS_DIR,
        database_url=database_url,
        api_keys_file=keys.file,
        pseudonym_key="test-pseudonym-key",  # type: ignore[arg-type]
    )
    with TestClient(create_app(settings)) as client:
        yield client


def example(stem: str) -> dict[str, Any]:
    (path,) = [p for p in FEEDBACK_EXAMPLES if p.stem == stem]
    body: dict[str, Any] = json.loads(path.read_text())
    return body


def post(client: TestClient, keys: Keys, body: Any, url: str = FEEDBACK) -> Any:
    return client.post(url, headers=keys.header("predict"), json=body)


def counted(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "clinrisk_cds_feedback_total", {"service": ASCVD.id, "outcome": outcome}
    )
    return value or 0.0


def listed(client: TestClient, keys: Keys, **params: str) -> list[dict[str, Any]]:
    response = client.get("/v1/cds-feedback", headers=keys.header("admin"), params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["feedback"]
    return items


def test_the_specs_examples_are_stored_once_per_card(db_client: TestClient, keys: Keys) -> None:
    overridden = example("feedback-overridden-with-reason")
    accepted = example("feedback-suggestion-accepted")

    before = counted("overridden")
    first = post(db_client, keys, overridden)
    again = post(db_client, keys, overridden)  # an EHR retrying
    other = post(db_client, keys, accepted)

    assert first.json() == {"received": 1, "stored": 1}
    assert again.json() == {"received": 1, "stored": 0}
    assert other.json() == {"received": 1, "stored": 1}
    assert counted("overridden") == before + 1  # the retry is not counted again
    items = {i["card"]: i for i in listed(db_client, keys)}
    assert set(items) == {overridden["feedback"][0]["card"], accepted["feedback"][0]["card"]}
    stored = items[overridden["feedback"][0]["card"]]
    assert stored["outcome"] == "overridden"
    assert stored["override_reason"] == {
        "system": "https://example.com/cds-hooks/override-reason-system",
        "code": "d7ecf885",
        "display": None,
    }
    assert stored["comment"] == "A comment entered by the clinician."
    assert stored["outcome_at"].startswith("2020-12-11T00:00:00")
    assert stored["service"] == ASCVD.id
    assert stored["caller"] == keys.predict.split("_")[1]
    taken = items[accepted["feedback"][0]["card"]]
    assert taken["accepted_suggestions"] == ["e56e1945-20b3-4393-8503-a1a20fd73152"]
    assert taken["override_reason"] is None
    assert [i["card"] for i in listed(db_client, keys, outcome="accepted")] == [taken["card"]]
    assert listed(db_client, keys, service=DIABETES.id) == []


def test_feedback_on_a_real_card_with_its_override_reason(
    db_client: TestClient, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO")  # onto this test's captured stderr
    patient_id, data = prefetch(bundle_path("Morris_Lockman"))
    card = only_card(call(db_client, keys, hook_request(patient_id, data)))
    reason = card["overrideReasons"][0]
    assert reason in OVERRIDE_REASONS
    body = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "overrideReason": {"reason": reason, "userComment": COMMENT},
                "outcomeTimestamp": "2026-11-29T10:00:00Z",
            }
        ]
    }

    assert post(db_client, keys, body).json() == {"received": 1, "stored": 1}

    (item,) = listed(db_client, keys)
    assert (
        item["card"]
        == card["uuid"]
        == card["extension"]["dev.clinrisk.prediction"]["prediction_id"]
    )
    assert item["override_reason"] == reason
    assert item["comment"] == COMMENT
    logged = capsys.readouterr()
    assert COMMENT not in logged.out + logged.err
    assert COMMENT not in db_client.get("/metrics").text


INVALID: list[dict[str, Any]] = [
    {},
    {"feedback": []},
    {"feedback": [{"card": "c", "outcome": "ignored", "outcomeTimestamp": "2021-01-01"}]},
    {"feedback": [{"card": "c", "outcome": "accepted"}]},
    {"feedback": [{"outcome": "overridden", "outcomeTimestamp": "2021-01-01T00:00:00Z"}]},
    {
        "feedback": [
            {
                "card": "c",
                "outcome": "overridden",
                "overrideReason": {"userComment": 5},
                "outcomeTimestamp": "2021-01-01T00:00:00Z",
            }
        ]
    },
    {"feedback": [{"card": "x" * 200, "outcome": "accepted", "outcomeTimestamp": "2021-01-01"}]},
    # NUL in text (PostgreSQL cannot store it; found by the contract fuzzer as a 503).
    {"feedback": [{"card": "a\x00b", "outcome": "accepted", "outcomeTimestamp": "2021-01-01"}]},
    {
        "feedback": [
            {
                "card": "c",
                "outcome": "overridden",
                "outcomeTimestamp": "2021-01-01",
                "overrideReason": {"userComment": "not\x00now"},
            }
        ]
    },
]


def test_invalid_feedback_is_400_and_nothing_is_stored(
    db_client: TestClient, keys: Keys, subtests: pytest.Subtests
) -> None:
    for index, body in enumerate(INVALID):
        with subtests.test(case=index):
            response = post(db_client, keys, body)
            assert response.status_code == 400
            assert response.headers["content-type"] == "application/problem+json"
    assert listed(db_client, keys) == []


def test_only_admins_read_the_feedback(db_client: TestClient, keys: Keys) -> None:
    assert db_client.get("/v1/cds-feedback").status_code == 401
    assert db_client.get("/v1/cds-feedback", headers=keys.header("predict")).status_code == 403
    bad = db_client.get(
        "/v1/cds-feedback", headers=keys.header("admin"), params={"outcome": "maybe"}
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
