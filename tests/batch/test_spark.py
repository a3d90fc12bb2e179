"""Spark (local mode), local files, the HTTP batch endpoint and the single endpoint agree.

These tests skip when Java is missing, unless CI is set (then they fail): see conftest.py.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.csv as pacsv
import pytest

from models.predictor import Predictor
from models.registry import artifact_folder
from models.validation import InvalidFeatures
from service.batch import ScoreOptions, rejects_path, score_file, score_file_http
from service.client import ClinriskClient

OPTIONS = ScoreOptions(explain=True, top_k=3, chunk_size=150, workers=1)


def _rows_csv(
    tmp_path: Path, batch_kit: SimpleNamespace, name: str, n: int
) -> tuple[Path, list[dict[str, Any]]]:
    manifest = batch_kit.manifest_of(name)
    rows = batch_kit.random_rows(manifest, n, seed=2024)
    columns = batch_kit.rows_to_columns(manifest, rows)
    columns["patient_id"] = [f"s{i}" for i in range(n)]
    return batch_kit.write_csv(tmp_path / f"{name}.csv", columns), rows


def _compare(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key, value in x.items():
            if isinstance(value, float):
                assert y[key] == pytest.approx(value, abs=1e-9), key
            elif not key.endswith("_feature"):  # ties may order differently
                assert y[key] == value, key


@pytest.mark.parametrize("name", ["readmission", "cvd"])
def test_spark_local_http_and_single_predictions_agree(
    name: str,
    tmp_path: Path,
    spark_session: Any,
    clinrisk_live_server: Any,
    batch_kit: SimpleNamespace,
) -> None:
    from service.batch.spark import score_file_spark

    source, rows = _rows_csv(tmp_path, batch_kit, name, 400)
    paths = {k: tmp_path / f"{k}.csv" for k in ("local", "http", "spark")}
    score_file(
        source, paths["local"], model_name=name, models_dir=batch_kit.models_dir, options=OPTIONS
    )
    live = clinrisk_live_server
    with ClinriskClient(live.url, api_key=live.api_key) as client:
        score_file_http(
            source, paths["http"], client=client, model_name=name, options=OPTIONS, batch_size=50
        )
        # several input partitions, so row numbers cross partition boundaries
        spark_session.conf.set("spark.sql.files.maxPartitionBytes", str(16 * 1024))
        try:
            summary = score_file_spark(
                source,
                paths["spark"],
                model_name=name,
                models_dir=batch_kit.models_dir,
                options=OPTIONS,
                session=spark_session,
            )
        finally:
            spark_session.conf.unset("spark.sql.files.maxPartitionBytes")
        assert summary.chunks > 1  # Spark partitions
        outputs = {k: pacsv.read_csv(p).to_pylist() for k, p in paths.items()}
        rejects = {k: pacsv.read_csv(rejects_path(p)).to_pylist() for k, p in paths.items()}
        _compare(outputs["local"], outputs["spark"])
        _compare(outputs["local"], outputs["http"])
        assert rejects["local"] == rejects["spark"] == rejects["http"]
        assert summary.rows_read == len(rows)

        # ...and each of them equals the single-prediction endpoint
        by_row = {r["row_number"]: r for r in outputs["spark"]}
        checked = 0
        for number, row in enumerate(rows, start=1):
            if number not in by_row:
                continue
            single = client.predict(name, row, patient_id=f"s{number - 1}", top_k=3)
            out = by_row[number]
            assert out["status"] == single.status
            if single.status == "not_applicable":  # outside the population: no score anywhere
                assert out["probability"] is None and single.probability is None
                continue
            assert single.tier is not None and single.explanation is not None
            assert out["probability"] == pytest.approx(single.probability, abs=1e-9)
            assert out["tier"] == single.tier.name
            contributions = single.explanation.contributions
            for k in range(3):
                assert out[f"top{k + 1}_contribution"] == pytest.approx(
                    contributions[k].contribution, abs=1e-9
                )
            checked += 1
            if checked == 40:
                break
        assert checked == 40


def test_score_spark_dataframe_adds_score_columns_and_keeps_the_rest(
    tmp_path: Path, spark_session: Any, batch_kit: SimpleNamespace
) -> None:
    from service.batch.spark import score_spark_dataframe

    source, rows = _rows_csv(tmp_path, batch_kit, "diabetes", 200)
    df = spark_session.read.option("header", True).csv(str(source))
    scored = score_spark_dataframe(
        df, "diabetes", models_dir=batch_kit.models_dir, explain=True, top_k=2
    )
    assert scored.columns[: len(df.columns)] == df.columns
    assert {"probability", "tier", "top2_feature", "reject_reason"} <= set(scored.columns)
    assert "top3_feature" not in scored.columns
    result = sorted(scored.collect(), key=lambda r: int(r["patient_id"][1:]))
    from models.loader import load_artifact

    # The version scoring without one serves: the newest.
    loaded = Predictor(load_artifact(artifact_folder(batch_kit.models_dir, "diabetes")))
    for row, out in zip(rows, result, strict=True):
        try:
            single = loaded.predict(row).result
        except InvalidFeatures:
            assert out["probability"] is None
            assert out["reject_reason"]
            continue
        assert out["reject_reason"] is None
        assert out["probability"] == pytest.approx(single["probability"], abs=1e-12)
    with pytest.raises(ValueError, match="already has score columns"):
        score_spark_dataframe(scored, "diabetes", models_dir=batch_kit.models_dir)
