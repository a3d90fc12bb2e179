"""`clinrisk score` in local mode: outputs, rejects, exit codes, resume and atomic output."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from models.predictor import Predictor
from models.validation import InvalidFeatures
from service.batch import BatchError, ScoreOptions, local, rejects_path, score_file, work_dir
from service.batch.resume import WorkState
from service.cli import app
from tests.conftest import SHIPPED_VERSION


@pytest.fixture
def readmission_csv(
    tmp_path: Path, batch_kit: SimpleNamespace
) -> tuple[Path, list[dict[str, Any]]]:
    manifest = batch_kit.manifest_of("readmission")
    rows = batch_kit.random_rows(manifest, 700, seed=21)
    columns = batch_kit.rows_to_columns(manifest, rows)
    columns["patient_id"] = [f"pt-{i:04d}" for i in range(len(rows))]
    columns["ward"] = ["3B"] * len(rows)  # not a feature: ignored
    return batch_kit.write_csv(tmp_path / "patients.csv", columns), rows


@pytest.fixture
def clean_cvd_csv(tmp_path: Path, batch_kit: SimpleNamespace) -> Path:
    manifest = batch_kit.manifest_of("cvd")
    rows = [
        row
        for row in batch_kit.random_rows(manifest, 400, seed=5)
        if _accepted(batch_kit, "cvd", row)
    ]
    columns = batch_kit.rows_to_columns(manifest, rows)
    columns["mrn"] = [f"m{i}" for i in range(len(rows))]
    return batch_kit.write_csv(tmp_path / "clean.csv", columns)


def _loaded(batch_kit: SimpleNamespace, name: str) -> Predictor:
    from models.loader import load_artifact

    return Predictor(load_artifact(batch_kit.models_dir / name / SHIPPED_VERSION))


def _accepted(batch_kit: SimpleNamespace, name: str, row: dict[str, Any]) -> bool:
    try:
        _loaded(batch_kit, name).validator.validate(row)
    except InvalidFeatures:
        return False
    return True


def _options(**overrides: Any) -> ScoreOptions:
    return ScoreOptions(**{"chunk_size": 128, "workers": 1, **overrides})


def test_scoring_a_csv_writes_scores_and_rejects_that_match_the_service(
    tmp_path: Path, readmission_csv: tuple[Path, list[dict[str, Any]]], batch_kit: SimpleNamespace
) -> None:
    source, rows = readmission_csv
    output = tmp_path / "scored.csv"
    summary = score_file(
        source,
        output,
        model_name="readmission",
        models_dir=batch_kit.models_dir,
        options=_options(explain=True, top_k=4),
    )
    scored = pacsv.read_csv(output).to_pylist()
    rejects = pacsv.read_csv(rejects_path(output)).to_pylist()
    assert summary.rows_read == len(rows) == len(scored) + len(rejects)
    assert (summary.rows_scored, summary.rows_rejected) == (len(scored), len(rejects))
    assert summary.ignored_columns == ["ward"]
    assert rejects and scored
    assert not work_dir(output).exists()
    loaded = _loaded(batch_kit, "readmission")
    by_row = {r["row_number"]: r for r in scored}
    rejected = {r["row_number"]: r for r in rejects}
    for number, row in enumerate(rows, start=1):
        try:
            single = loaded.predict(row, top_k=4).result
        except InvalidFeatures as exc:
            reject = rejected[number]
            assert reject["patient_id"] == f"pt-{number - 1:04d}"
            first = exc.errors[0]
            assert reject["reason"].startswith(
                f"{first.field.removeprefix('features.')}: {first.message}"
            )
            continue
        out = by_row[number]
        assert out["patient_id"] == f"pt-{number - 1:04d}"
        assert out["status"] == single["status"]
        if single["status"] == "not_applicable":  # outside the population: no score anywhere
            assert out["probability"] is None and out["not_applicable"]
            continue
        assert single["tier"] is not None and single["explanation"] is not None
        assert out["probability"] == pytest.approx(single["probability"], abs=1e-12)
        assert out["tier"] == single["tier"]["name"]
        assert out["model_sha256"] == single["model"]["sha256"]
        contributions = single["explanation"]["contributions"]
        assert out["top1_feature"] == contributions[0]["feature"]
        for k in range(4):
            assert out[f"top{k + 1}_contribution"] == pytest.approx(
                contributions[k]["contribution"], abs=1e-9
            )
        assert out["other_contribution"] == pytest.approx(
            contributions[4]["contribution"], abs=1e-9
        )


def test_parquet_in_and_out_keep_column_types(
    tmp_path: Path, readmission_csv: tuple[Path, list[dict[str, Any]]], batch_kit: SimpleNamespace
) -> None:
    source, _ = readmission_csv
    as_parquet = tmp_path / "patients.parquet"
    pq.write_table(pacsv.read_csv(source), as_parquet)  # typed columns: numbers, strings
    from_csv = tmp_path / "a.parquet"
    from_parquet = tmp_path / "b.parquet"
    kwargs: dict[str, Any] = {"model_name": "readmission", "models_dir": batch_kit.models_dir}
    score_file(source, from_csv, options=_options(), **kwargs)
    score_file(as_parquet, from_parquet, options=_options(), **kwargs)
    a, b = pq.read_table(from_csv), pq.read_table(from_parquet)
    assert a.schema.field("probability").type == "double"
    assert a.column("row_number").to_pylist() == b.column("row_number").to_pylist()
    assert a.column("probability").to_pylist() == pytest.approx(
        b.column("probability").to_pylist(), abs=1e-12
    )


def test_cli_exit_code_is_0_when_every_row_scored_and_2_when_some_were_rejected(
    tmp_path: Path,
    clean_cvd_csv: Path,
    readmission_csv: tuple[Path, list[dict[str, Any]]],
    batch_kit: SimpleNamespace,
) -> None:
    runner = CliRunner()
    models = ["--models-dir", str(batch_kit.models_dir), "--chunk-size", "100"]
    clean = runner.invoke(
        app, ["score", "cvd", str(clean_cvd_csv), "-o", str(tmp_path / "c.csv"), *models]
    )
    assert clean.exit_code == 0, clean.output
    assert "rows rejected" in clean.output
    assert pacsv.read_csv(rejects_path(tmp_path / "c.csv")).num_rows == 0
    assert "mrn" not in pacsv.read_csv(tmp_path / "c.csv").column_names  # not the id column
    with_id = runner.invoke(
        app,
        [
            "score",
            "cvd",
            str(clean_cvd_csv),
            "-o",
            str(tmp_path / "d.csv"),
            "--id-column",
            "mrn",
            *models,
        ],
    )
    assert with_id.exit_code == 0, with_id.output
    assert pacsv.read_csv(tmp_path / "d.csv").column_names[:2] == ["row_number", "mrn"]
    source, _ = readmission_csv
    some_bad = runner.invoke(
        app,
        [
            "score",
            "readmission",
            str(source),
            "-o",
            str(tmp_path / "r.parquet"),
            "--explain",
            *models,
        ],
    )
    assert some_bad.exit_code == 2, some_bad.output
    assert (tmp_path / "r.rejects.csv").is_file()


def test_cli_fails_with_exit_code_1_and_a_message_naming_the_missing_column(
    tmp_path: Path, batch_kit: SimpleNamespace
) -> None:
    source = batch_kit.write_csv(tmp_path / "x.csv", {"age_years": ["50"]})
    models = ["--models-dir", str(batch_kit.models_dir)]
    result = CliRunner().invoke(
        app,
        ["score", "diabetes", str(source), "-o", str(tmp_path / "y.csv"), *models],
    )
    assert result.exit_code == 1
    assert "lacks required feature column(s)" in result.output
    assert "sex_male" in result.output
    unknown = CliRunner().invoke(
        app,
        ["score", "nope", str(source), "-o", str(tmp_path / "y.csv"), *models],
    )
    assert unknown.exit_code == 1
    assert "No model named 'nope'" in unknown.output


def test_an_interrupted_run_leaves_no_output_and_resumes_without_redoing_chunks(
    tmp_path: Path,
    readmission_csv: tuple[Path, list[dict[str, Any]]],
    batch_kit: SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, _ = readmission_csv
    output = tmp_path / "scored.csv"
    output.write_text("an older result\n")
    real = local.score_chunk

    def crash_on_chunk_3(task: Any) -> Any:
        if task.index == 3:
            raise KeyboardInterrupt
        return real(task)

    kwargs: dict[str, Any] = {"model_name": "readmission", "models_dir": batch_kit.models_dir}
    monkeypatch.setattr(local, "score_chunk", crash_on_chunk_3)
    with pytest.raises(KeyboardInterrupt):
        score_file(source, output, options=_options(explain=True), **kwargs)
    assert output.read_text() == "an older result\n"  # untouched, not half-written
    assert not rejects_path(output).exists()
    progress = json.loads((work_dir(output) / "progress.json").read_text())
    assert sorted(progress["done"]) == ["0", "1", "2"]

    calls: list[int] = []

    def counting(task: Any) -> Any:
        calls.append(task.index)
        return real(task)

    monkeypatch.setattr(local, "score_chunk", counting)
    resumed = score_file(source, output, options=_options(explain=True), **kwargs)
    assert resumed.chunks_resumed == 3
    assert calls == [3, 4, 5]
    fresh = tmp_path / "fresh.csv"
    score_file(source, fresh, options=_options(explain=True, resume=False), **kwargs)
    assert output.read_bytes() == fresh.read_bytes()
    assert rejects_path(output).read_bytes() == rejects_path(fresh).read_bytes()
    assert not work_dir(output).exists()


def test_a_resume_with_other_options_starts_over(
    tmp_path: Path,
    readmission_csv: tuple[Path, list[dict[str, Any]]],
    batch_kit: SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, _ = readmission_csv
    output = tmp_path / "scored.csv"
    real = local.score_chunk

    def crash_on_chunk_2(task: Any) -> Any:
        if task.index == 2:
            raise RuntimeError("disk full")
        return real(task)

    kwargs: dict[str, Any] = {"model_name": "readmission", "models_dir": batch_kit.models_dir}
    monkeypatch.setattr(local, "score_chunk", crash_on_chunk_2)
    with pytest.raises(RuntimeError):
        score_file(source, output, options=_options(), **kwargs)
    monkeypatch.setattr(local, "score_chunk", real)
    again = score_file(source, output, options=_options(explain=True), **kwargs)
    assert again.chunks_resumed == 0
    assert "top1_feature" in pacsv.read_csv(output).column_names


def test_worker_threads_write_what_one_thread_writes_whatever_the_chunking(
    tmp_path: Path, readmission_csv: tuple[Path, list[dict[str, Any]]], batch_kit: SimpleNamespace
) -> None:
    source, _ = readmission_csv
    kwargs: dict[str, Any] = {"model_name": "readmission", "models_dir": batch_kit.models_dir}
    outputs = {}
    for name, options in {
        "serial": _options(explain=True),
        "threads": _options(explain=True, workers=2),
        # other chunk boundaries too: the same rows whatever the chunking
        "rechunked": _options(explain=True, workers=2, chunk_size=256),
    }.items():
        path = tmp_path / f"{name}.csv"
        score_file(source, path, options=options, **kwargs)
        outputs[name] = path.read_bytes()
    assert outputs["serial"] == outputs["threads"]
    # BLAS may sum a contribution's terms in another order for another chunk size: ulps apart
    serial = pacsv.read_csv(tmp_path / "serial.csv").to_pylist()
    rechunked = pacsv.read_csv(tmp_path / "rechunked.csv").to_pylist()
    assert len(serial) == len(rechunked)
    for a, b in zip(serial, rechunked, strict=True):
        for key, value in a.items():
            if isinstance(value, float):
                assert b[key] == pytest.approx(value, abs=1e-12)
            else:
                assert b[key] == value


def test_output_and_input_must_be_csv_or_parquet_files(
    tmp_path: Path, batch_kit: SimpleNamespace
) -> None:
    source = batch_kit.write_csv(tmp_path / "x.csv", {"age_years": ["50"]})
    with pytest.raises(BatchError, match=r"\.csv"):
        score_file(source, tmp_path / "y.xlsx", model_name="cvd", models_dir=batch_kit.models_dir)
    with pytest.raises(BatchError, match="does not exist"):
        score_file(
            tmp_path / "missing.csv",
            tmp_path / "y.csv",
            model_name="cvd",
            models_dir=batch_kit.models_dir,
        )


def test_a_second_run_on_the_same_output_is_refused_while_one_is_running(
    tmp_path: Path, readmission_csv: tuple[Path, list[dict[str, Any]]], batch_kit: SimpleNamespace
) -> None:
    source, _ = readmission_csv
    output = tmp_path / "scored.csv"
    running = WorkState(work_dir(output), "another job", resume=True)
    try:
        with pytest.raises(BatchError, match=r"another run is writing scored\.csv"):
            score_file(
                source,
                output,
                model_name="readmission",
                models_dir=batch_kit.models_dir,
                options=_options(),
            )
    finally:
        running.release()
    assert not output.exists()


def test_cli_interrupted_exits_130_and_keeps_finished_chunks(
    tmp_path: Path,
    readmission_csv: tuple[Path, list[dict[str, Any]]],
    batch_kit: SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, _ = readmission_csv
    output = tmp_path / "scored.csv"
    real = local.score_chunk

    def interrupted_at_chunk_1(task: Any) -> Any:
        if task.index == 1:
            raise KeyboardInterrupt  # what a scheduler's SIGTERM becomes, too
        return real(task)

    monkeypatch.setattr(local, "score_chunk", interrupted_at_chunk_1)
    models = ["--models-dir", str(batch_kit.models_dir), "--chunk-size", "128", "--workers", "1"]
    result = CliRunner().invoke(
        app, ["score", "readmission", str(source), "-o", str(output), *models]
    )

    assert result.exit_code == 130, result.output
    assert "run the same command again to resume" in result.output
    assert not output.exists()
    assert json.loads((work_dir(output) / "progress.json").read_text())["done"].keys() == {"0"}
