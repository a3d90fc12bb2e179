"""The fhirServer fallback against a real HTTP FHIR server serving the Synthea patients.

The FHIR server (``tests/service/synthea_fhir.py``) answers reads and searches with the
parameters of the discovery templates and requires the bearer token the hook request carries
in ``fhirAuthorization``; the CDS service fetches every prefetch key the request leaves out.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.cds_hooks.services import ASCVD, READMISSION, HookService
from service.logging import configure_logging
from tests.conftest import Keys, running_server
from tests.service import synthea_fhir
from tests.service.test_cds_hooks import (
    bundle_path,
    call,
    discharge,
    hook_request,
    only_card,
    prefetch,
)

TOKEN = "fhir-access-token-7c1e"


@pytest.fixture(scope="module")
def fhir_server() -> Iterator[tuple[str, list[str]]]:
    calls: list[str] = []
    with running_server(synthea_fhir.app(TOKEN, calls)) as url:
        yield url + "/fhir", calls


def with_server(request: dict[str, Any], server: str, token: str = TOKEN) -> dict[str, Any]:
    return {
        **request,
        "fhirServer": server,
        "fhirAuthorization": {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/Patient.read patient/Observation.read",
            "subject": "clinrisk",
        },
    }


def rendered(service: HookService, patient_id: str, encounter_id: str | None = None) -> set[str]:
    out = set()
    for spec in service.prefetch.values():
        query = spec.template.replace("{{context.patientId}}", patient_id)
        out.add(query.replace("{{context.encounterId}}", encounter_id or ""))
    return out


def same_score(a: dict[str, Any], b: dict[str, Any]) -> None:
    ea, eb = (c["extension"]["dev.clinrisk.prediction"] for c in (a, b))
    assert ea["probability"] == eb["probability"] and ea["tier"] == eb["tier"]
    assert a["summary"] == b["summary"]


def test_without_prefetch_every_key_is_fetched_and_the_card_is_the_same(
    client: TestClient, keys: Keys, fhir_server: tuple[str, list[str]]
) -> None:
    server, calls = fhir_server
    patient_id, data = prefetch(bundle_path("Alfreda_Wyman"))
    with_prefetch = only_card(call(client, keys, hook_request(patient_id, data)))
    calls.clear()

    fetched = only_card(call(client, keys, with_server(hook_request(patient_id, None), server)))

    same_score(with_prefetch, fetched)
    assert set(calls) == rendered(ASCVD, patient_id)


def test_only_the_absent_or_failed_keys_are_fetched(
    client: TestClient, keys: Keys, fhir_server: tuple[str, list[str]]
) -> None:
    server, calls = fhir_server
    patient_id, data = prefetch(bundle_path("Morris_Lockman"))
    full = only_card(call(client, keys, hook_request(patient_id, data)))
    del data["hdlCholesterol"]
    data["medicationRequests"] = {"resourceType": "OperationOutcome", "issue": []}
    calls.clear()

    card = only_card(call(client, keys, with_server(hook_request(patient_id, data), server)))

    same_score(full, card)
    assert sorted(q.split("?")[0] for q in calls) == ["MedicationRequest", "Observation"]
    assert any("2085-9" in q for q in calls)


def test_the_discharge_hook_fetches_the_stay(
    client: TestClient, keys: Keys, fhir_server: tuple[str, list[str]]
) -> None:
    server, calls = fhir_server
    patient_id, encounter_id, data = discharge("Dirk")
    request = hook_request(patient_id, data, "encounter-discharge", encounter_id)
    full = only_card(call(client, keys, request, READMISSION))
    calls.clear()

    bare = hook_request(patient_id, None, "encounter-discharge", encounter_id)
    card = only_card(call(client, keys, with_server(bare, server), READMISSION))

    same_score(full, card)
    assert f"Encounter/{encounter_id}" in calls
    assert set(calls) == rendered(READMISSION, patient_id, encounter_id)


def test_a_refused_token_is_412_and_no_token_or_patient_id_is_logged(
    client: TestClient,
    keys: Keys,
    fhir_server: tuple[str, list[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO")  # onto this test's captured stderr
    server, _ = fhir_server
    patient_id, _data = prefetch(bundle_path("Lupe_Little"))
    wrong = "wrong-token-5d2a"

    response = call(client, keys, with_server(hook_request(patient_id, None), server, wrong))

    assert response.status_code == 412
    assert response.headers["content-type"] == "application/problem+json"
    reasons = [e["message"] for e in response.json()["errors"]]
    assert "the FHIR server answered HTTP 401" in reasons
    logged = capsys.readouterr()
    for secret in (wrong, TOKEN, patient_id):
        assert secret not in logged.out + logged.err
    assert "cds_fhir_fetch_failed" in logged.out + logged.err


def test_an_unreachable_fhir_server_is_412(client: TestClient, keys: Keys) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    patient_id, _data = prefetch(bundle_path("Lupe_Little"))
    request = with_server(hook_request(patient_id, None), f"http://127.0.0.1:{port}/fhir")

    response = call(client, keys, request)

    assert response.status_code == 412
    assert any("did not answer" in e["message"] for e in response.json()["errors"])


def test_context_ids_that_are_not_fhir_ids_are_never_put_in_a_url(
    client: TestClient, keys: Keys, fhir_server: tuple[str, list[str]]
) -> None:
    server, calls = fhir_server
    calls.clear()
    request = with_server(hook_request("x&_count=100000", None), server)

    response = call(client, keys, request)

    assert response.status_code == 400
    assert calls == []
