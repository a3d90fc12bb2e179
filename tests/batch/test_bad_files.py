"""Bad input files never end in a traceback (issue 15).

A bad row does not sink a batch: a line that cannot be split into the header's fields, or a cell
that is not UTF-8, is a rejected row (row number, field, what is allowed) and every other row is
scored. A whole-file problem (empty, no header, a column named twice, unreadable, an output folder
that cannot be written) is one line on stderr and exit code 1. Neither ever shows a cell of the
input on stderr: each bad row holds a marker that the tests look for.

Inputs are real Framingham rows (the cvd model's training source) from the shared data folder,
scored by the committed cvd model with the real ``clinrisk`` command: a fresh process where the
test is about what a failing process prints, typer's CliRunner elsewhere.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from service.batch import BatchError, rejects_path, work_dir
from service.batch.files import iter_chunks
from service.batch.progress import NoProgress
from service.cli import app
from service.settings import REPO_ROOT
from training.datasets import SHARED_DATA, load_framingham

MARKER = "ZZMARK4711"
"""Planted in every bad row: it must never reach stderr (or the summary on stdout)."""
N_ROWS = 300


@dataclass(frozen=True)
class Run:
    exit_code: int
    stdout: str
    stderr: str


def clinrisk(*args: str) -> Run:
    """The real command in a fresh process (what a failing job prints is the point)."""
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "COLUMNS": "100"},
        check=False,
        timeout=120,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def invoke(*args: str, env: dict[str, str] | None = None) -> Run:
    """The command through typer's runner (same code, no interpreter start-up)."""
    result = CliRunner().invoke(app, list(args), env=env)
    # an uncaught exception would be here instead of an exit code (and a traceback in a shell)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return Run(result.exit_code, result.stdout, result.stderr)


def score_args(source: Path, output: Path, *extra: str) -> list[str]:
    models = str(REPO_ROOT / "models")
    return ["score", "cvd", str(source), "-o", str(output), "--models-dir", models, *extra]


def assert_one_line_failure(run: Run, *needles: str) -> str:
    assert run.exit_code == 1, (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr + run.stdout
    # the progress bar's last state may precede it (stderr is not a terminal here)
    lines = [x for x in run.stderr.strip().splitlines() if not x.startswith("scoring ")]
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: ") and run.stderr.strip().endswith(lines[0])
    for needle in needles:
        assert needle in lines[0]
    assert MARKER not in run.stderr + run.stdout
    return lines[0]


@pytest.fixture(scope="module")
def framingham_lines() -> list[bytes]:
    """Header and the first N_ROWS real Framingham rows, as the cvd model's columns, ids
    ``pt-0000``... (row_number = id + 1)."""
    features = load_framingham(SHARED_DATA / "framingham" / "framingham.csv").features
    table = pa.Table.from_pandas(features.head(N_ROWS), preserve_index=False)
    ids = pa.array([f"pt-{i:04d}" for i in range(N_ROWS)])
    table = table.add_column(0, "patient_id", ids)
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return [",".join(table.column_names).encode(), *sink.getvalue().to_pybytes().splitlines()]


def write_lines(path: Path, lines: list[bytes], *, final_newline: bool = True) -> Path:
    path.write_bytes(b"\n".join(lines) + (b"\n" if final_newline else b""))
    return path


def scored_ids(path: Path) -> list[tuple[int, str]]:
    table = pacsv.read_csv(path) if path.suffix == ".csv" else pq.read_table(path)
    return list(zip(table["row_number"].to_pylist(), table["patient_id"].to_pylist(), strict=True))


def rejects_of(output: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pacsv.read_csv(
        rejects_path(output),
        convert_options=pacsv.ConvertOptions(
            column_types={"patient_id": pa.string()}, strings_can_be_null=True
        ),
    ).to_pylist()
    return rows


def assert_every_other_row_scored(output: Path, rejected_rows: set[int]) -> None:
    """Every row but ``rejected_rows`` is in OUTPUT under its own row number and id."""
    expected = [(i + 1, f"pt-{i:04d}") for i in range(N_ROWS) if i + 1 not in rejected_rows]
    got = [(number, pid) for number, pid in scored_ids(output) if number not in rejected_rows]
    assert got == expected
    assert len(scored_ids(output)) == N_ROWS - len(rejected_rows)


# ---------------------------------------------------------------------------------------------
# Whole-file problems: one line, exit code 1, no work folder


def test_an_empty_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    for name in ("empty.csv", "empty.parquet"):
        source = tmp_path / name
        source.write_bytes(b"")
        output = tmp_path / "out.csv"
        run = clinrisk(*score_args(source, output))
        assert_one_line_failure(run, f"'{name}' is empty")
        assert not output.exists() and not work_dir(output).exists()


def test_a_file_without_a_header_line_is_one_line_that_does_not_echo_its_first_row(
    tmp_path: Path, framingham_lines: list[bytes]
) -> None:
    first = framingham_lines[1].replace(b"pt-0000", MARKER.encode())
    source = write_lines(tmp_path / "no-header.csv", [first, *framingham_lines[2:]])
    output = tmp_path / "out.csv"
    run = clinrisk(*score_args(source, output, "--id-column", "mrn"))
    assert_one_line_failure(run, "header line missing", "systolic_bp_mm_hg")
    assert not work_dir(output).exists()


def test_missing_required_columns_and_a_header_that_is_not_utf8_are_one_line_each(
    tmp_path: Path, framingham_lines: list[bytes]
) -> None:
    # no systolic or diastolic pressure: the message names what is missing, on one line
    header = framingham_lines[0].split(b",")
    keep = [i for i, name in enumerate(header) if not name.endswith(b"_bp_mm_hg")]
    lines = [b",".join(line.split(b",")[i] for i in keep) for line in framingham_lines]
    lines[5] = lines[5].replace(b"pt-0004", MARKER.encode())
    source = write_lines(tmp_path / "no-bp.csv", lines)
    output = tmp_path / "out.csv"
    run = clinrisk(*score_args(source, output))
    assert_one_line_failure(run, "lacks required feature column(s) systolic_bp_mm_hg")
    header_bytes = framingham_lines[0].replace(b"sex_male", b"sex_m\xe4le")
    source = write_lines(tmp_path / "latin1-header.csv", [header_bytes, *framingham_lines[1:]])
    run = clinrisk(*score_args(source, output))
    assert_one_line_failure(run, "the header line of 'latin1-header.csv' is not UTF-8 text")
    assert not work_dir(output).exists()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_column_named_twice_is_one_line_and_exit_1(
    fmt: str, tmp_path: Path, framingham_lines: list[bytes]
) -> None:
    # a second age column at the end: which one is the patient's age?
    lines = [framingham_lines[0] + b",age_years"]
    lines += [line + b",99" for line in framingham_lines[1:]]
    source = write_lines(tmp_path / "dup.csv", lines)
    if fmt == "parquet":
        table = pacsv.read_csv(
            source, read_options=pacsv.ReadOptions(autogenerate_column_names=True)
        )
        table = table.slice(1).rename_columns(lines[0].decode().split(","))
        pq.write_table(table, tmp_path / "dup.parquet")
        source = tmp_path / "dup.parquet"
    output = tmp_path / "out.csv"
    run = clinrisk(*score_args(source, output))
    assert_one_line_failure(run, "more than once", "'age_years' in columns 3, 16")
    assert not output.exists() and not work_dir(output).exists()


def test_an_unreadable_input_is_one_line_and_leaves_no_work_folder(
    tmp_path: Path, framingham_lines: list[bytes]
) -> None:
    # a gzip file cut off (~4.5 MB of text, cut at ~2.7 MB): the same command cannot get past it
    whole = gzip.compress(
        b"\n".join(framingham_lines) + b"\n" + b"\n".join(framingham_lines[1:] * 300)
    )
    source = tmp_path / "cut.csv.gz"
    source.write_bytes(whole[: int(len(whole) * 0.6)])
    output = tmp_path / "out.csv"
    run = clinrisk(*score_args(source, output, "--chunk-size", "5000", "--workers", "1"))
    assert_one_line_failure(run, "cannot read the input 'cut.csv.gz'")
    # the reader reads ahead, so how many chunks were scored before it failed varies; the work
    # folder existed either way, and a bad input leaves none of it
    with pytest.raises(BatchError, match="not readable as a compressed stream"):
        list(iter_chunks(source, ["patient_id"], 5000, NoProgress()))
    assert not output.exists() and not rejects_path(output).exists()
    assert not work_dir(output).exists()
    parquet = tmp_path / "cut.parquet"
    pq.write_table(pacsv.read_csv(write_lines(tmp_path / "whole.csv", framingham_lines)), parquet)
    parquet.write_bytes(parquet.read_bytes()[:-100])
    assert_one_line_failure(clinrisk(*score_args(parquet, output)), "not readable as Parquet")


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` as no process may write into it (root too: chattr +i where chmod is not
    enough); skips the test where that cannot be arranged."""
    folder.chmod(0o555)
    immutable = False
    try:
        probe = folder / "probe"
        try:
            probe.touch()
        except OSError:
            pass
        else:
            probe.unlink()
            chattr = shutil.which("chattr")
            if chattr is None or subprocess.run([chattr, "+i", str(folder)]).returncode != 0:
                pytest.skip("cannot make a folder read-only for this user (root, no chattr)")
            immutable = True
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_a_read_only_output_folder_is_one_line_and_exit_1(
    tmp_path: Path, framingham_lines: list[bytes]
) -> None:
    source = write_lines(tmp_path / "cvd.csv", framingham_lines)
    folder = tmp_path / "read-only"
    folder.mkdir()
    output = folder / "out.csv"
    with read_only(folder):
        run = clinrisk(*score_args(source, output))
    assert_one_line_failure(run, f"cannot write to the output folder '{folder}'")
    assert list(folder.iterdir()) == []
    # OUTPUT under a file: one line as well
    run = clinrisk(*score_args(source, source / "out.csv"))
    assert_one_line_failure(run, "it is a file")


# ---------------------------------------------------------------------------------------------
# Bad rows: rejected with a reason, the rest scored (exit code 2)


def test_a_non_utf8_byte_rejects_its_row_and_every_other_row_is_scored(
    tmp_path: Path, framingham_lines: list[bytes]
) -> None:
    lines = list(framingham_lines)
    # row 10: its id and its age are not UTF-8 (Latin-1 bytes, say)
    cells = lines[10].split(b",")
    cells[0] = MARKER.encode() + b"-\xe9\xff"
    cells[2] = b"4\xff" + MARKER.encode()
    lines[10] = b",".join(cells)
    # row 200: only an optional feature (glucose) is not UTF-8: rejected, not scored as missing
    lines[200] = lines[200].rsplit(b",", 1)[0] + b"," + MARKER.encode() + b"\xc3("
    source = write_lines(tmp_path / "latin1.csv", lines)
    output = tmp_path / "out.parquet"
    run = invoke(*score_args(source, output, "--chunk-size", "64"))
    assert run.exit_code == 2, run.stdout + run.stderr
    assert MARKER not in run.stderr + run.stdout
    rejects = rejects_of(output)
    assert [r["row_number"] for r in rejects] == [10, 200]
    assert rejects[0]["patient_id"] is None  # the id cell itself was not UTF-8
    assert rejects[0]["reason"] == (
        "age_years: is not UTF-8 text (allowed: UTF-8 encoded text); "
        "patient_id: is not UTF-8 text (allowed: UTF-8 encoded text)"
    )
    assert rejects[1]["patient_id"] == "pt-0199"
    assert rejects[1]["reason"].startswith("glucose_mg_dl: is not UTF-8 text")
    assert all(MARKER not in str(r) for r in rejects)
    assert_every_other_row_scored(output, {10, 200})
    assert not work_dir(output).exists()


def test_a_non_utf8_cell_in_a_parquet_file_rejects_its_row(tmp_path: Path) -> None:
    csv = pacsv.read_csv(SHARED_DATA / "framingham" / "framingham.csv")
    features = load_framingham(SHARED_DATA / "framingham" / "framingham.csv").features
    table = pa.Table.from_pandas(features.head(N_ROWS), preserve_index=False)
    ids = [f"pt-{i:04d}".encode() for i in range(N_ROWS)]
    ids[41] = MARKER.encode() + b"\xff"  # row 42
    table = table.add_column(0, "patient_id", pa.array(ids, pa.binary()).view(pa.string()))
    assert csv.num_rows > N_ROWS
    pq.write_table(table, tmp_path / "in.parquet")
    output = tmp_path / "out.csv"
    run = invoke(*score_args(tmp_path / "in.parquet", output))
    assert run.exit_code == 2, run.stdout + run.stderr
    assert MARKER not in run.stderr + run.stdout
    assert rejects_of(output) == [
        {
            "row_number": 42,
            "patient_id": None,
            "reason": "patient_id: is not UTF-8 text (allowed: UTF-8 encoded text)",
        }
    ]
    assert_every_other_row_scored(output, {42})


def test_a_file_truncated_mid_line_scores_every_whole_row(
    tmp_path: Path, framingham_lines: list[bytes]
) -> None:
    lines = framingham_lines[:151]
    lines[150] = MARKER.encode() + b"," + b",".join(lines[150].split(b",")[1:6])  # cut short
    source = write_lines(tmp_path / "cut.csv", lines, final_newline=False)
    output = tmp_path / "out.csv"
    run = clinrisk(*score_args(source, output, "--chunk-size", "50"))
    assert run.exit_code == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert MARKER not in run.stderr + run.stdout
    assert rejects_of(output) == [
        {
            "row_number": 150,
            "patient_id": None,
            "reason": "row: has 6 of the header's 15 fields (a line cut short, e.g. a truncated "
            "file) (allowed: 15 comma-separated fields)",
        }
    ]
    scored = scored_ids(output)
    assert scored == [(i + 1, f"pt-{i:04d}") for i in range(149)]
    assert not work_dir(output).exists()


def test_partial_lines_anywhere_reject_only_themselves_and_keep_row_numbers(
    tmp_path: Path, framingham_lines: list[bytes]
) -> None:
    lines = list(framingham_lines)
    bad = {1, 50, 51, 64, 65, 129, 300}  # first row, chunk edges (64), last row
    for row in bad:
        cells = lines[row].split(b",")
        cells[0] = MARKER.encode()
        # too few fields, or one too many (an unquoted comma in a value)
        lines[row] = b",".join(cells[:4] if row % 2 else [*cells, b"1"])
    source = write_lines(tmp_path / "partial.csv", lines)
    output = tmp_path / "out.csv"
    for workers in ("1", "2"):
        run = invoke(*score_args(source, output, "--chunk-size", "64", "--workers", workers))
        assert run.exit_code == 2, run.stdout + run.stderr
        assert MARKER not in run.stderr + run.stdout
        rejects = rejects_of(output)
        assert [r["row_number"] for r in rejects] == sorted(bad)
        assert {r["patient_id"] for r in rejects} == {None}
        assert rejects[0]["reason"].startswith("row: has 4 of the header's 15 fields")
        assert rejects[1]["reason"].startswith("row: has 16 of the header's 15 fields")
        assert_every_other_row_scored(output, bad)
        assert "rows read        │ 300" in run.stdout.replace("┃", "│")


def test_only_bad_lines_after_the_last_chunk_still_reach_the_rejects_file(
    tmp_path: Path, framingham_lines: list[bytes]
) -> None:
    # 128 whole rows (two full chunks of 64), then two lines cut short
    lines = [*framingham_lines[:129], b"pt-x," + MARKER.encode(), b"pt-y,1,40"]
    source = write_lines(tmp_path / "tail.csv", lines)
    output = tmp_path / "out.csv"
    run = invoke(*score_args(source, output, "--chunk-size", "64"))
    assert run.exit_code == 2
    assert [r["row_number"] for r in rejects_of(output)] == [129, 130]
    assert len(scored_ids(output)) == 128


# ---------------------------------------------------------------------------------------------
# The HTTP runner treats the same bad rows the same way


class Counting(httpx.BaseTransport):
    """Forwards to the live server and keeps each batch item sent."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.items: list[dict[str, Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/predict/batch"):
            self.items.extend(json.loads(request.content)["items"])
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_the_http_runner_rejects_the_same_bad_rows_and_never_sends_them(
    tmp_path: Path,
    framingham_lines: list[bytes],
    clinrisk_live_server: Any,
    batch_kit: SimpleNamespace,
) -> None:
    from service.batch import ScoreOptions, score_file, score_file_http
    from service.client import ClinriskClient

    lines = list(framingham_lines[:201])
    lines[7] = lines[7].replace(b"pt-0006", MARKER.encode() + b"\xff")
    cells = lines[90].split(b",")
    lines[90] = b",".join([*cells[:-1], MARKER.encode() + b"\xfe"])  # glucose, optional
    lines[120] = MARKER.encode() + b",1,55"
    lines[200] = b",".join(lines[200].split(b",")[:9])
    source = write_lines(tmp_path / "bad.csv", lines, final_newline=False)
    options = ScoreOptions(chunk_size=64, workers=1)
    local = score_file(
        source,
        tmp_path / "local.csv",
        model_name="cvd",
        models_dir=batch_kit.models_dir,
        options=options,
    )
    transport = Counting()
    live = clinrisk_live_server
    with (
        httpx.Client(base_url=live.url, transport=transport) as http,
        ClinriskClient(client=http, api_key=live.api_key) as client,
    ):
        remote = score_file_http(
            source,
            tmp_path / "remote.csv",
            client=client,
            model_name="cvd",
            options=options,
            batch_size=50,
        )
    assert (
        (remote.rows_read, remote.rows_scored, remote.rows_rejected)
        == (
            local.rows_read,
            local.rows_scored,
            local.rows_rejected,
        )
        == (200, 196, 4)
    )
    assert rejects_of(tmp_path / "remote.csv") == rejects_of(tmp_path / "local.csv")
    assert [r["row_number"] for r in rejects_of(tmp_path / "local.csv")] == [7, 90, 120, 200]
    assert scored_ids(tmp_path / "remote.csv") == scored_ids(tmp_path / "local.csv")
    sent = [item.get("patient_id") for item in transport.items]
    assert len(sent) == 196 and None not in sent and "pt-0089" not in sent
    # and through the command: the same exit code, nothing of the bad rows on stderr
    run = invoke(
        *score_args(source, tmp_path / "cli.csv", "--url", live.url),
        env={"CLINRISK_API_KEY": live.api_key},
    )
    assert run.exit_code == 2 and MARKER not in run.stderr + run.stdout
    assert rejects_of(tmp_path / "cli.csv") == rejects_of(tmp_path / "local.csv")


def test_a_resumed_run_over_bad_lines_writes_what_a_fresh_run_writes(
    tmp_path: Path, framingham_lines: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.batch import ScoreOptions, local, score_file

    lines = list(framingham_lines)
    lines[70] = b",".join(lines[70].split(b",")[:3])
    lines[150] = lines[150].replace(b"pt-0149", b"\xff")
    source = write_lines(tmp_path / "bad.csv", lines)
    kwargs: dict[str, Any] = {"model_name": "cvd", "models_dir": REPO_ROOT / "models"}
    options = ScoreOptions(chunk_size=64, workers=1)
    real = local.score_chunk

    def interrupted_at_chunk_2(task: Any) -> Any:
        if task.index == 2:
            raise KeyboardInterrupt
        return real(task)

    output = tmp_path / "out.csv"
    monkeypatch.setattr(local, "score_chunk", interrupted_at_chunk_2)
    with pytest.raises(KeyboardInterrupt):
        score_file(source, output, options=options, **kwargs)
    assert work_dir(output).is_dir()  # an interruption keeps the finished chunks
    monkeypatch.setattr(local, "score_chunk", real)
    resumed = score_file(source, output, options=options, **kwargs)
    assert resumed.chunks_resumed == 2
    fresh = tmp_path / "fresh.csv"
    score_file(
        source, fresh, options=ScoreOptions(chunk_size=64, workers=1, resume=False), **kwargs
    )
    assert output.read_bytes() == fresh.read_bytes()
    assert rejects_path(output).read_bytes() == rejects_path(fresh).read_bytes()
    assert [r["row_number"] for r in rejects_of(output)] == [70, 150]
    assert_every_other_row_scored(output, {70, 150})
