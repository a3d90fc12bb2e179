"""One problem+json renderer for every error: service errors, validation, routing (404, 405)."""

from __future__ import annotations

import math

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from service.errors import (
    EXCEPTION_HANDLERS,
    PROBLEM_JSON,
    InvalidFeatures,
    NotAuthenticated,
    json_safe,
    problem_response,
)
from tests.conftest import Keys
from tests.service.test_predict import CVD_PATIENT


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        (2**64, str(2**64)),
        (-(2**63) - 1, str(-(2**63) - 1)),
        (2**64 - 1, 2**64 - 1),
        (math.nan, "nan"),
        (math.inf, "inf"),
        ({"a": [2**70, 1.5]}, {"a": [str(2**70), 1.5]}),
        ({1: b"x"}, {"1": "b'x'"}),
        (None, None),
        (True, True),
    ],
)
def test_values_json_cannot_carry_are_rendered_as_strings(value: object, rendered: object) -> None:
    assert json_safe(value) == rendered


def test_the_renderer_never_fails() -> None:
    errors = [
        {"field": "x", "message": "m", "value": v, "allowed": None} for v in (2**64, math.nan)
    ]

    response = problem_response(422, "Invalid input", "Bad.", instance="/p", errors=errors)

    assert response.status_code == 422
    assert response.media_type == PROBLEM_JSON
    body = orjson.loads(response.body)
    assert body == {
        "type": "https://clinrisk.dev/problems/invalid-input",
        "title": "Invalid input",
        "status": 422,
        "detail": "Bad.",
        "instance": "/p",
        "errors": [
            {"field": "x", "message": "m", "value": str(2**64), "allowed": None},
            {"field": "x", "message": "m", "value": "nan", "allowed": None},
        ],
    }


def test_service_errors_carry_their_headers() -> None:
    assert NotAuthenticated("no key").headers == {"WWW-Authenticate": 'Bearer realm="clinrisk"'}
    assert InvalidFeatures("bad").headers == {}
    assert InvalidFeatures("bad", headers={"Retry-After": "1"}).headers == {"Retry-After": "1"}


class _Count(BaseModel):
    count: int = Field(le=10)


def test_a_validation_error_echoing_an_integer_past_64_bits_is_a_422_not_a_500() -> None:
    # Pydantic's error echoes the input value, which orjson cannot write: the renderer must
    # still answer (it used to fail, and the server logged the whole body with the exception).
    app = FastAPI(exception_handlers=EXCEPTION_HANDLERS)

    @app.post("/count")
    def count(body: _Count) -> int:
        return body.count

    huge = 2**64
    with TestClient(app) as client:
        response = client.post(
            "/count", content=b'{"count": %d}' % huge, headers={"Content-Type": "application/json"}
        )

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON
    [error] = response.json()["errors"]
    assert error["field"] == "count"
    assert error["value"] == str(huge)


def test_an_unknown_path_is_a_404_problem(client: TestClient) -> None:
    response = client.get("/v1/nothing-here")

    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["title"] == "Not Found"
    assert response.json()["instance"] == "/v1/nothing-here"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/models", "GET"),
        ("PUT", "/v1/models/cvd", "GET"),
        ("GET", "/v1/models/cvd/predict", "POST"),
        ("POST", "/v1/audit", "GET"),
        ("POST", "/health/live", "GET"),
    ],
)
def test_every_405_carries_allow(
    client: TestClient, keys: Keys, method: str, path: str, allowed: str
) -> None:
    response = client.request(method, path, headers=keys.header())

    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["title"] == "Method Not Allowed"


def test_a_prediction_still_answers_json(client: TestClient, keys: Keys) -> None:
    response = client.post(
        "/v1/models/cvd/predict", headers=keys.header(), json={"features": CVD_PATIENT}
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
