"""Drift before outcomes (issue 13 part 3) on real traffic: the diabetes model's held-out BRFSS
rows are scored through the API; unshifted they raise no alarm, an older and heavier
subpopulation does. Counts are checked against an independent binning of the same rows, and
nothing but counts reaches the database. SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from models.registry import artifact_folder
from service import drift
from service.app import create_app
from service.database import make_engine, upgrade
from service.settings import Settings
from tests.conftest import MODELS_DIR, Keys
from training.datasets import SHARED_DATA, load_brfss
from training.train import split_test

MODEL = "diabetes"
# The version unversioned scoring serves (the newest), whose drift is read.
SERVED_VERSION = artifact_folder(MODELS_DIR, MODEL).name
ROWS = 2000


@cache
def _held_out() -> pd.DataFrame:
    manifest = json.loads((MODELS_DIR / MODEL / SERVED_VERSION / "manifest.json").read_text())
    data = load_brfss(
        SHARED_DATA / "brfss2015" / "diabetes_binary_health_indicators_BRFSS2015.csv.gz"
    )
    split = manifest["split"]
    _, test = split_test(data, test_fraction=split["test_fraction"], seed=split["seed"])
    names = [f["name"] for f in manifest["features"]]
    frame: pd.DataFrame = data.features.loc[test, names].reset_index(drop=True)
    return frame


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {str(k): (None if v != v else v) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


@pytest.fixture
def client(keys: Keys, database_url: str) -> Iterator[TestClient]:
    settings = Settings(
        models_dir=MODELS_DIR,
        database_url=database_url,
        api_keys_file=keys.file,
        pseudonym_key="test-pseudonym-key",  # type: ignore[arg-type]
        max_batch_size=1000,
        max_body_bytes=8 * 1024 * 1024,
        drift_min_rows=500,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _score(client: TestClient, keys: Keys, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), 1000):
        items = [{"features": r} for r in rows[start : start + 1000]]
        answer = client.post(
            f"/v1/models/{MODEL}/predict/batch",
            json={"items": items, "top_k": 1},
            headers=keys.header("batch"),
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["failed"] == 0


def _drift(client: TestClient, keys: Keys, **params: Any) -> dict[str, Any]:
    answer = client.get(
        f"/v1/models/{MODEL}/versions/{SERVED_VERSION}/drift",
        params=params,
        headers=keys.header("admin"),
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_held_out_traffic_raises_no_alarm_and_counts_match_the_rows(
    client: TestClient, keys: Keys
) -> None:
    frame = _held_out().sample(ROWS, random_state=1)
    _score(client, keys, _rows(frame))

    report = _drift(client, keys)

    assert report["scored"] == ROWS
    assert report["breaches"] == []
    features = {f["feature"]: f for f in report["features"]}
    assert all(f["n"] == ROWS for f in features.values())
    assert max(f["psi"] for f in features.values()) < 0.1
    # Independent binning of the same rows: right-closed intervals between the quantiles.
    age = features["age_years"]
    quantiles = json.loads((MODELS_DIR / MODEL / SERVED_VERSION / "manifest.json").read_text())
    edges = sorted(
        set(
            next(f for f in quantiles["features"] if f["name"] == "age_years")["distribution"][
                "quantiles"
            ].values()
        )
    )
    counts = np.bincount(
        np.searchsorted(edges, frame["age_years"].to_numpy()), minlength=len(edges) + 1
    )
    assert [b["observed"] for b in age["bins"][1:]] == pytest.approx(list(counts / ROWS))
    sex = features["sex_male"]
    assert sex["bins"][2]["observed"] == pytest.approx(float((frame["sex_male"] == 1).mean()))
    expected = report["expected_performance"]
    assert expected["expected_auroc"] == pytest.approx(expected["validation_auroc"], abs=0.03)
    assert report["predicted_risk"]["status"] == "stable"
    assert report["tiers"]["status"] == "stable"
    assert sum(d["scored"] for d in report["tiers"]["daily"]) == ROWS


def test_an_older_heavier_subpopulation_raises_the_alarms(client: TestClient, keys: Keys) -> None:
    frame = _held_out()
    shifted = frame[(frame["age_years"] >= 60) & (frame["bmi_kg_m2"] >= 30)].head(ROWS)
    _score(client, keys, _rows(shifted))

    report = _drift(client, keys)

    assert {"feature:age_years", "feature:bmi_kg_m2", "risk", "tiers"} <= set(report["breaches"])
    features = {f["feature"]: f for f in report["features"]}
    assert features["age_years"]["status"] == "alert"
    assert features["sex_male"]["status"] == "stable"  # unselected features stay quiet
    shares = {t["tier"]: t for t in report["tiers"]["shares"]}
    assert shares["high"]["share"] > 2 * shares["high"]["validation_share"]
    metrics = client.get("/metrics").text
    assert (
        f'clinrisk_drift_breach{{check="risk",model="{MODEL}",version="{SERVED_VERSION}"}} 1.0'
        in metrics
    )
    assert 'clinrisk_drift_psi{feature="age_years"' in metrics


def test_single_predictions_are_counted_and_only_counts_are_stored(
    client: TestClient, keys: Keys, database_url: str
) -> None:
    rows = _rows(_held_out().head(3))
    for row in rows:
        answer = client.post(
            f"/v1/models/{MODEL}/predict",
            json={"patient_id": "p-123", "features": row},
            headers=keys.header("predict"),
        )
        assert answer.status_code == 200, answer.text

    report = _drift(client, keys)

    assert report["scored"] == 3
    assert all(f["status"] == "too few rows" for f in report["features"])
    assert report["breaches"] == []
    engine = make_engine(database_url)
    with engine.connect() as connection:
        columns = sa.inspect(connection).get_columns("drift_counts")
        stored = connection.execute(sa.select(drift.drift_counts)).all()
    engine.dispose()
    assert [c["name"] for c in columns] == [
        "model_name",
        "model_version",
        "day",
        "feature",
        "bin",
        "n",
        "sum_p",
    ]
    assert {r.feature for r in stored} >= {"age_years", drift.RISK, drift.TIER}
    assert sum(r.n for r in stored if r.feature == "age_years") == 3


def test_expected_auroc_is_the_calibrated_pairwise_expectation() -> None:
    rng = np.random.default_rng(3)
    p = np.sort(rng.uniform(0.01, 0.9, 300))
    # Brute force over pairs of distinct patients: p_i (1 - p_j) [p_i > p_j].
    wins = np.sum(np.outer(p, 1 - p) * (p[:, None] > p[None, :]))
    pairs = np.sum(np.outer(p, 1 - p)) - np.sum(p * (1 - p))
    value = drift.expected_auroc(np.ones_like(p), p)

    assert value == pytest.approx(wins / pairs, abs=0.005)


def test_a_failed_flush_keeps_the_counts(tmp_path: Path) -> None:
    from models.manifest import Manifest

    manifest = Manifest.model_validate_json(
        (MODELS_DIR / MODEL / SERVED_VERSION / "manifest.json").read_text()
    )
    rows = _rows(_held_out().head(10))
    accumulator = drift.Accumulator()
    accumulator.observe(manifest, rows, [0.1] * 10, ["low"] * 10)
    missing = make_engine(f"sqlite:///{tmp_path / 'not-migrated.db'}")

    with pytest.raises(sa.exc.OperationalError):
        drift.flush(missing, accumulator)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(url)
    engine = make_engine(url)
    written = drift.flush(engine, accumulator)
    with engine.connect() as connection:
        report = drift.report(connection, manifest)

    assert written > 0
    assert report["scored"] == 10
    assert report["tiers"]["shares"][0]["share"] == 1.0


def test_counts_are_flushed_at_shutdown_and_the_flusher_sets_the_gauges(
    keys: Keys, database_url: str
) -> None:
    settings = Settings(
        models_dir=MODELS_DIR,
        database_url=database_url,
        api_keys_file=keys.file,
        pseudonym_key="test-pseudonym-key",  # type: ignore[arg-type]
        max_batch_size=1000,
        max_body_bytes=8 * 1024 * 1024,
        drift_flush_seconds=3600,  # only the shutdown flush can write them
    )
    frame = _held_out().head(40)
    app = create_app(settings)
    with TestClient(app) as client:
        _score(client, keys, _rows(frame))

    from prometheus_client import REGISTRY

    from models.manifest import Manifest

    manifest = Manifest.model_validate_json(
        (MODELS_DIR / MODEL / SERVED_VERSION / "manifest.json").read_text()
    )
    engine = make_engine(database_url)
    with engine.connect() as connection:
        stored = connection.execute(
            sa.select(sa.func.sum(drift.drift_counts.c.n)).where(
                drift.drift_counts.c.feature == drift.RISK
            )
        ).scalar_one()
        low = drift.report(connection, manifest)["tiers"]["shares"][0]
    engine.dispose()
    assert stored == 40
    # The flusher's last round exported this store's figures without anyone asking.
    value = REGISTRY.get_sample_value(
        "clinrisk_drift_tier_share",
        {"model": MODEL, "version": SERVED_VERSION, "tier": low["tier"], "source": "live"},
    )
    assert value == pytest.approx(low["share"])


@pytest.mark.parametrize(
    ("params", "field"), [({"days": "0"}, "days"), ({"until": "yesterday"}, "until")]
)
def test_a_bad_window_is_a_problem_naming_the_parameter(
    client: TestClient, keys: Keys, params: dict[str, str], field: str
) -> None:
    answer = client.get(
        f"/v1/models/{MODEL}/versions/{SERVED_VERSION}/drift",
        params=params,
        headers=keys.header("admin"),
    )

    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert field in json.dumps(answer.json()["errors"])


def test_every_served_model_reports_drift_even_without_a_reference(tmp_path: Path) -> None:
    from models.manifest import Manifest
    from models.registry import Registry

    registry: Registry[Manifest] = Registry(lambda artifact: artifact.manifest)
    registry.load_dir(MODELS_DIR)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(url)
    engine = make_engine(url)
    accumulator = drift.accumulator_for(engine)
    for name in registry.names():
        manifest = registry.get(name)
        rows = [{f.name: None for f in manifest.features}] * 3
        accumulator.observe(manifest, rows, [0.05, 0.1, 0.3], [manifest.tiers[0].name] * 3)
    drift.flush(engine)

    with engine.connect() as connection:
        reports = {n: drift.report(connection, registry.get(n)) for n in registry.names()}
    engine.dispose()

    for name, report in reports.items():
        assert report["scored"] == 3, name
        assert report["breaches"] == [], name
        if registry.get(name).validation is None:  # a published equation: nothing to compare
            assert report["predicted_risk"]["status"] == "no reference"
            assert report["tiers"]["status"] == "no reference"
        # Every input missing: the missing bin holds them all.
        for feature in report["features"]:
            assert feature["bins"][0]["observed"] == 1.0


def test_workers_flushing_at_once_add_up(database_url: str) -> None:
    import threading

    from models.manifest import Manifest

    manifest = Manifest.model_validate_json(
        (MODELS_DIR / MODEL / SERVED_VERSION / "manifest.json").read_text()
    )
    rows = _rows(_held_out().head(20))
    upgrade(database_url)
    engines = [make_engine(database_url) for _ in range(3)]
    errors: list[BaseException] = []

    def worker(engine: sa.Engine) -> None:
        accumulator = drift.Accumulator()  # one per worker process
        try:
            for _ in range(15):
                accumulator.observe(manifest, rows, [0.2] * 20, ["elevated"] * 20)
                drift.flush(engine, accumulator)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with engines[0].connect() as connection:
        report = drift.report(connection, manifest)
    for engine in engines:
        engine.dispose()

    assert errors == []
    assert report["scored"] == 3 * 15 * 20
    assert all(f["n"] == 3 * 15 * 20 for f in report["features"])


def test_research_scores_outside_the_population_are_not_counted(
    client: TestClient, keys: Keys
) -> None:
    row = _rows(_held_out().head(1))[0]
    inside = client.post(
        f"/v1/models/{MODEL}/predict", json={"features": row}, headers=keys.header("predict")
    )
    research = client.post(
        f"/v1/models/{MODEL}/predict",
        json={"features": row, "context": {"diagnosed_diabetes": True}, "research_use": True},
        headers=keys.header("everything"),  # predict with admin: research use allowed
    )

    report = _drift(client, keys)

    assert inside.status_code == 200 and research.status_code == 200, research.text
    assert research.json()["applicability"]["applicable"] is False
    assert research.json()["probability"] is not None  # scored, for research only
    assert report["scored"] == 1
