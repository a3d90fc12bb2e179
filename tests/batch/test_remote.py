"""The HTTP runner: refusals come from the service's problem as they are; what JSON cannot
carry (non-finite numbers) is decided locally and never sent."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pyarrow.csv as pacsv

from service.batch import ScoreOptions, rejects_path, score_file, score_file_http
from service.client import ClinriskClient

OPTIONS = ScoreOptions(chunk_size=64, workers=1)


class Relay(httpx.BaseTransport):
    """Forwards to the live server, keeps each batch body sent, optionally edits the answers."""

    def __init__(self, edit: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.inner = httpx.HTTPTransport()
        self.edit = edit
        self.items: list[dict[str, Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        is_batch = request.url.path.endswith("/predict/batch")
        if is_batch:
            self.items.extend(json.loads(request.content)["items"])
        response = self.inner.handle_request(request)
        if not (is_batch and self.edit):
            return response
        response.read()
        response.close()
        body = json.loads(response.content)
        self.edit(body)
        return httpx.Response(response.status_code, json=body)

    def close(self) -> None:
        self.inner.close()


def _not_finite(value: Any) -> bool:
    if isinstance(value, dict):
        value = value["value"]
    return isinstance(value, float) and not math.isfinite(value)


def _cvd_csv(tmp_path: Path, batch_kit: SimpleNamespace, n: int) -> tuple[Path, set[int]]:
    """A file whose rows sometimes hold an infinity; returns it and those rows (0-based)."""
    manifest = batch_kit.manifest_of("cvd")
    rows = batch_kit.random_rows(manifest, n, seed=7)
    for i in range(0, n, 9):  # a table holds infinities; JSON cannot
        rows[i]["bmi_kg_m2"] = float("inf") if i % 2 else float("-inf")
    numbers = [s.name for s in manifest.features if s.type.value != "binary"]
    infinite = {i for i, row in enumerate(rows) if any(_not_finite(row.get(f)) for f in numbers)}
    columns = batch_kit.rows_to_columns(manifest, rows)
    columns["patient_id"] = [f"r{i}" for i in range(n)]
    return batch_kit.write_csv(tmp_path / "cvd.csv", columns), infinite


def _score_remote(live: Any, relay: Relay, source: Path, output: Path) -> None:
    http = httpx.Client(base_url=live.url, transport=relay)
    with ClinriskClient(client=http, api_key=live.api_key) as client:
        score_file_http(source, output, client=client, model_name="cvd", options=OPTIONS)
    http.close()


def test_rows_with_non_finite_numbers_are_rejected_locally_and_never_sent(
    tmp_path: Path, clinrisk_live_server: Any, batch_kit: SimpleNamespace
) -> None:
    source, infinite = _cvd_csv(tmp_path, batch_kit, 200)
    relay = Relay()
    _score_remote(clinrisk_live_server, relay, source, tmp_path / "remote.csv")
    score_file(
        source,
        tmp_path / "local.csv",
        model_name="cvd",
        models_dir=batch_kit.models_dir,
        options=OPTIONS,
    )

    sent = {item.get("patient_id") for item in relay.items}
    assert len(relay.items) == 200 - len(infinite)
    assert sent.isdisjoint({f"r{i}" for i in infinite})
    remote = pacsv.read_csv(rejects_path(tmp_path / "remote.csv")).to_pylist()
    local = pacsv.read_csv(rejects_path(tmp_path / "local.csv")).to_pylist()
    assert remote == local
    by_row = {r["row_number"]: r["reason"] for r in remote}
    assert all("must be a finite number" in by_row[i + 1] for i in infinite)


def test_the_services_refusals_reach_the_rejects_file_unchanged(
    tmp_path: Path, clinrisk_live_server: Any, batch_kit: SimpleNamespace
) -> None:
    def reword(body: dict[str, Any]) -> None:
        for result in body["results"]:
            for error in (result.get("error") or {}).get("errors", []):
                error["message"] = f"said the service: {error['message']}"
                error["allowed"] = "whatever the service allows"

    source, _ = _cvd_csv(tmp_path, batch_kit, 120)
    relay = Relay(reword)
    _score_remote(clinrisk_live_server, relay, source, tmp_path / "remote.csv")

    reasons = [
        r["reason"] for r in pacsv.read_csv(rejects_path(tmp_path / "remote.csv")).to_pylist()
    ]
    from_service = [r for r in reasons if "must be a finite number" not in r]
    assert from_service
    for reason in from_service:
        said = reason.count(": said the service: ")
        assert said >= 1
        assert reason.count("allowed: whatever the service allows") == said
