"""An unexpected failure is a 500 problem without internals, and its log carries no values."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from models.predictor import Predictor
from service.app import create_app
from service.settings import Settings
from tests.conftest import Keys
from tests.service.test_predict import CVD_PATIENT


def test_unexpected_error_is_a_500_problem_and_the_log_keeps_values_out(
    settings: Settings,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("boom for patient MRN-777 with systolic 150")

    monkeypatch.setattr(Predictor, "predict", broken)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.post(
            "/v1/models/cvd/predict",
            headers=keys.header(),
            json={"patient_id": "MRN-777", "features": CVD_PATIENT},
        )

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "MRN-777" not in response.text
    assert "Traceback" not in response.text
    logged = capsys.readouterr()
    assert "unhandled error" in logged.err
    assert "RuntimeError" in logged.err
    assert "MRN-777" not in logged.err + logged.out


def test_an_unexpected_error_does_not_reach_the_server(
    settings: Settings, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # NOTE: Starlette re-raises a handled 500 to the server, which logs the message (with any
    # request values in it); the service answers it itself, so the server sees a response.
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("boom for patient MRN-777")

    monkeypatch.setattr(Predictor, "predict", broken)
    with TestClient(create_app(settings)) as client:  # raises whatever reaches the server
        response = client.post(
            "/v1/models/cvd/predict", headers=keys.header(), json={"features": CVD_PATIENT}
        )

    assert response.status_code == 500
    assert response.json()["title"] == "Internal error"
