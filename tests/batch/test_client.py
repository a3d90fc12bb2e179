"""The Python client against a real uvicorn server, its retry policy, and `clinrisk score --url`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pyarrow.csv as pacsv
import pytest
from typer.testing import CliRunner

from service.api.schemas import BatchPredictResponse, ModelDetail, PredictResponse
from service.batch import ScoreOptions, rejects_path, score_file, score_file_http
from service.cli import app
from service.client import (
    AsyncClinriskClient,
    AuthenticationError,
    ClinriskClient,
    ClinriskConnectionError,
    InvalidInputError,
    ModelNotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
)
from tests.conftest import SHIPPED_VERSION

PATIENT = {
    "sex_male": 1,
    "age_years": 61,
    "current_smoker": True,
    "cigarettes_per_day": 20,
    "stroke_history": 0,
    "hypertension": 1,
    "diabetes": 0,
    "total_cholesterol_mg_dl": {"value": 6.2, "unit": "mmol/L"},
    "systolic_bp_mm_hg": 152,
    "diastolic_bp_mm_hg": 91,
    "bmi_kg_m2": 29.5,
    "heart_rate_bpm": 74,
    "glucose_mg_dl": 98,
}


@pytest.fixture
def live(clinrisk_live_server: Any) -> Any:
    return clinrisk_live_server


@pytest.fixture
def client(live: Any) -> Any:
    with ClinriskClient(live.url, api_key=live.api_key) as c:
        yield c


def test_predict_returns_the_services_typed_response(client: ClinriskClient) -> None:
    result = client.predict("cvd", PATIENT, patient_id="p-1", top_k=3)
    assert isinstance(result, PredictResponse)
    assert 0.0 < result.probability < 1.0
    assert result.model.name == "cvd"
    assert len(result.explanation.contributions) == 4  # top 3 + other_features
    assert [u.feature for u in result.data_quality.unit_conversions] == ["total_cholesterol_mg_dl"]


def test_list_and_read_models_are_typed(client: ClinriskClient) -> None:
    summaries = client.list_models()
    assert {"cvd", "diabetes", "readmission"} <= {s.name for s in summaries}
    detail = client.get_model("diabetes", SHIPPED_VERSION)
    assert isinstance(detail, ModelDetail)
    assert detail.version == SHIPPED_VERSION
    assert detail.features[0].name


def test_invalid_features_raise_an_error_carrying_the_problem_details(
    client: ClinriskClient,
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        client.predict("cvd", {**PATIENT, "systolic_bp_mm_hg": 900, "bmi_kg_m2": "fat"})
    error = caught.value
    assert error.status == 422
    assert error.title == "Invalid input"
    assert {(e.field, e.message) for e in error.errors} == {
        ("features.systolic_bp_mm_hg", "outside the plausible range"),
        ("features.bmi_kg_m2", "must be a number"),
    }


def test_unknown_model_bad_key_and_missing_scope_raise_their_own_errors(live: Any) -> None:
    with ClinriskClient(live.url, api_key=live.api_key) as client:
        with pytest.raises(ModelNotFoundError) as missing:
            client.predict("nope", PATIENT)
        assert missing.value.status == 404
        assert "Available" in missing.value.detail
    with ClinriskClient(live.url, api_key="crk_000000000000_wrong") as client:
        with pytest.raises(AuthenticationError):
            client.list_models()
    with ClinriskClient(live.url, api_key=live.predict_only_key) as client:
        with pytest.raises(PermissionDeniedError) as denied:
            client.predict_batch("cvd", [{"features": PATIENT}])
        assert "batch" in denied.value.detail


def test_batch_gives_each_item_its_result_or_its_problem(client: ClinriskClient) -> None:
    response = client.predict_batch(
        "cvd", [{"features": PATIENT}, {"features": {"age_years": 500}}], top_k=2
    )
    assert isinstance(response, BatchPredictResponse)
    assert (response.succeeded, response.failed) == (1, 1)
    assert response.results[0].result is not None
    assert len(response.results[0].result.explanation.contributions) == 3
    assert response.results[1].error is not None
    assert response.results[1].error.status == 422


def test_the_async_client_scores_like_the_sync_one(live: Any, client: ClinriskClient) -> None:
    async def run() -> tuple[PredictResponse, BatchPredictResponse]:
        async with AsyncClinriskClient(live.url, api_key=live.api_key) as async_client:
            single, batch = await asyncio.gather(
                async_client.predict("cvd", PATIENT),
                async_client.predict_batch("cvd", [{"features": PATIENT}] * 3),
            )
            with pytest.raises(InvalidInputError):
                await async_client.predict("cvd", {"age_years": 500})
            return single, batch

    single, batch = asyncio.run(run())
    expected = client.predict("cvd", PATIENT)
    assert single.probability == expected.probability
    assert all(r.result is not None for r in batch.results)
    assert batch.results[2].result.probability == expected.probability  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------
# Retry policy (a mock transport counts the attempts)


def _counting(statuses: list[int | type[Exception]]) -> tuple[httpx.Client, list[str]]:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        outcome = statuses[min(len(calls) - 1, len(statuses) - 1)]
        if isinstance(outcome, type):
            raise outcome("refused", request=request)
        if outcome == 200:
            return httpx.Response(200, json=[])
        body = {"type": "about:blank", "title": "T", "status": outcome, "detail": "d"}
        return httpx.Response(outcome, json=body, headers={"content-type": "application/json"})

    return httpx.Client(transport=httpx.MockTransport(handler), base_url="http://svc"), calls


def _client(http: httpx.Client, retries: int = 3) -> ClinriskClient:
    client = ClinriskClient(client=http, api_key="k", retries=retries, backoff=0.0)
    client._sleep = lambda _seconds: None
    return client


def test_503_and_connection_errors_are_retried_with_backoff() -> None:
    http, calls = _counting([503, httpx.ConnectError, 200])
    assert _client(http).list_models() == []
    assert len(calls) == 3


def test_retries_give_up_with_a_typed_error() -> None:
    http, calls = _counting([503])
    with pytest.raises(ServiceUnavailableError):
        _client(http, retries=2).list_models()
    assert len(calls) == 3
    http, calls = _counting([httpx.ConnectError])
    with pytest.raises(ClinriskConnectionError):
        _client(http, retries=1).list_models()
    assert len(calls) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422, 500])
def test_client_errors_and_500_are_never_retried(status: int) -> None:
    http, calls = _counting([status, 200])
    with pytest.raises(Exception) as caught:
        _client(http).list_models()
    assert getattr(caught.value, "status", None) == status
    assert len(calls) == 1


def test_read_timeouts_are_not_retried_as_the_call_may_have_been_scored() -> None:
    http, calls = _counting([httpx.ReadTimeout, 200])
    with pytest.raises(httpx.ReadTimeout):
        _client(http).list_models()
    assert len(calls) == 1


def test_an_injected_client_is_left_open_and_an_owned_one_is_closed() -> None:
    http, _ = _counting([200])
    with _client(http) as client:
        client.list_models()
    assert not http.is_closed
    owned = ClinriskClient("http://127.0.0.1:9")
    owned.close()
    assert owned._client.is_closed


def test_an_unreachable_service_raises_a_connection_error(batch_kit: SimpleNamespace) -> None:
    with ClinriskClient(f"http://127.0.0.1:{batch_kit.free_port()}", retries=1, backoff=0) as c:
        with pytest.raises(ClinriskConnectionError):
            c.list_models()


# ---------------------------------------------------------------------------------------------
# Scoring a file through the service


def _rows_csv(tmp_path: Path, batch_kit: SimpleNamespace, name: str, n: int) -> Path:
    manifest = batch_kit.manifest_of(name)
    rows = batch_kit.random_rows(manifest, n, seed=99)
    columns = batch_kit.rows_to_columns(manifest, rows)
    columns["patient_id"] = [f"id{i}" for i in range(n)]
    return batch_kit.write_csv(tmp_path / f"{name}.csv", columns)


@pytest.mark.parametrize("name", ["cvd", "readmission"])
def test_scoring_a_file_through_the_service_equals_scoring_it_locally(
    name: str, tmp_path: Path, live: Any, batch_kit: SimpleNamespace
) -> None:
    source = _rows_csv(tmp_path, batch_kit, name, 450)
    options = ScoreOptions(explain=True, top_k=3, chunk_size=200, workers=1)
    local = score_file(
        source,
        tmp_path / "local.csv",
        model_name=name,
        models_dir=batch_kit.models_dir,
        options=options,
    )
    with ClinriskClient(live.url, api_key=live.api_key) as client:
        remote = score_file_http(
            source,
            tmp_path / "remote.csv",
            client=client,
            model_name=name,
            options=options,
            batch_size=64,
            concurrency=3,
        )
    assert (remote.rows_scored, remote.rows_rejected) == (local.rows_scored, local.rows_rejected)
    assert remote.model == local.model
    a = pacsv.read_csv(tmp_path / "local.csv").to_pylist()
    b = pacsv.read_csv(tmp_path / "remote.csv").to_pylist()
    assert_same_scores(a, b)
    assert pacsv.read_csv(rejects_path(tmp_path / "local.csv")).to_pylist() == (
        pacsv.read_csv(rejects_path(tmp_path / "remote.csv")).to_pylist()
    )


def assert_same_scores(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key, value in x.items():
            if isinstance(value, float):
                assert y[key] == pytest.approx(value, abs=1e-9), key
            elif key.endswith("_feature"):
                continue  # ties may order differently; the contributions are compared
            else:
                assert y[key] == value, key


def test_cli_scores_through_the_service_with_the_key_from_the_environment(
    tmp_path: Path, live: Any, batch_kit: SimpleNamespace
) -> None:
    source = _rows_csv(tmp_path, batch_kit, "cvd", 120)
    output = tmp_path / "out.parquet"
    runner = CliRunner()
    args = ["score", "cvd", str(source), "-o", str(output), "--url", live.url]
    result = runner.invoke(app, [*args, "--api-key-env", "MY_KEY"], env={"MY_KEY": live.api_key})
    assert result.exit_code == 2, result.output  # the random rows include bad ones
    assert output.is_file() and rejects_path(output).is_file()
    no_key = runner.invoke(app, [*args, "--api-key-env", "MY_KEY"], env={"MY_KEY": ""})
    assert no_key.exit_code == 1
    assert "MY_KEY" in no_key.output
    bad_key = runner.invoke(app, args, env={"CLINRISK_API_KEY": "crk_000000000000_nope"})
    assert bad_key.exit_code == 1
    assert "401" in bad_key.output
