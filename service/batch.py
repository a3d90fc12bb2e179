"""Score a file (CSV or Parquet) with a model: locally, or through a running service.

The job streams the input in chunks of ``chunk_size`` rows (``pyarrow.csv.open_csv`` /
``ParquetFile.iter_batches``), so memory is bounded by a few chunks whatever the file's size.
Locally each chunk is validated column-wise and scored by ``frames.FrameScorer`` (the service's
scoring core); through a service (``--url``) each chunk goes to the batch endpoint with bounded
concurrency. Both write the same output columns and the same rejects file.

Crash safety: every finished chunk is written as a part file into a work folder next to OUTPUT,
with a small ``progress.json`` keyed by the input (path, size, mtime), the model (sha256) and the
options, so a re-run after an interruption skips finished chunks. OUTPUT and the rejects file
are assembled from the parts under temporary names and renamed into place at the very end: an
interrupted run never leaves a half-written OUTPUT that looks complete.

Parallelism: locally, two chunks are scored at once by a pool of *threads* sharing one loaded
model. Nearly all the work is Arrow compute and numpy on whole columns, which release the GIL,
and Arrow parses and writes files on its own threads. Spawned worker processes were measured too
(``--pool processes``, ``bench/batch.py``, 1M rows on 2 cores): each pays ~1-2 s of imports and
every chunk is pickled across, so they were slower there (~75k vs ~155k rows/s with
explanations; one thread ~120k). They may pay off for much larger files on more cores.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from models.manifest import FeatureSpec, FeatureType
from models.tables import (
    UNIT_SUFFIX,
    FrameScorer,
    artifact_folder,
    cells_of,
    effective_top_k,
    json_values,
    load_scorer,
    reason_text,
    score_fields,
)
from models.validation import FieldError
from service.api.schemas import BatchItemResult, ModelDetail
from service.client import ClinriskClient

DEFAULT_CHUNK_SIZE = 50_000
DEFAULT_ID_COLUMN = "patient_id"
PROGRESS_FILE = "progress.json"
LOCK_FILE = ".lock"
WORK_FORMAT = 1
REJECT_FIELDS = ("row_number", "reason")
FINITE_MESSAGE = "must be a finite number"


class BatchError(Exception):
    """The job cannot run or go on (bad input file, unknown model, service refused the calls)."""


@dataclass(frozen=True)
class ScoreOptions:
    explain: bool = False
    top_k: int = 3
    id_column: str | None = None
    """None: ``patient_id`` when the input has it."""
    chunk_size: int = DEFAULT_CHUNK_SIZE
    workers: int = 2
    """Chunks scored at once, locally (1 = one after the other, in this thread)."""
    pool: Literal["threads", "processes"] = "threads"
    """Threads share the loaded model and start instantly; processes (spawned) pay ~1-2 s of
    imports each but never contend for the GIL. Measured on 2 cores: see bench/batch.py."""
    resume: bool = True
    """Reuse finished chunks of an interrupted run with the same input, model and options."""


@dataclass
class ScoreSummary:
    output: Path
    rejects: Path
    model: dict[str, str]
    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    chunks: int = 0
    chunks_resumed: int = 0
    seconds: float = 0.0
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


class ProgressSink(Protocol):
    """Where the job reports progress (the CLI renders it with rich)."""

    def start(self, *, total: int | None, unit: str) -> None: ...

    def advance(self, *, rows: int, position: int) -> None: ...

    def stop(self) -> None: ...


class _NoProgress:
    def start(self, *, total: int | None, unit: str) -> None:
        pass

    def advance(self, *, rows: int, position: int) -> None:
        pass

    def stop(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# Files


def file_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz", ".csv.bz2", ".csv.zst")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    raise BatchError(f"'{path}': use a .csv (optionally .gz) or .parquet file")


def rejects_path(output: Path) -> Path:
    """``out.csv`` -> ``out.rejects.csv``, next to OUTPUT."""
    return output.with_name(output.stem + ".rejects.csv")


def work_dir(output: Path) -> Path:
    return output.with_name(f".{output.name}.work")


def _csv_stream(path: Path) -> tuple[IO[bytes], Any]:
    handle = path.open("rb")
    compression = pa.Codec.detect(str(path)).name if not path.name.endswith(".csv") else None
    stream = pa.PythonFile(handle, mode="r")
    if compression:
        stream = pa.CompressedInputStream(stream, compression)
    return handle, stream


def input_schema(path: Path) -> Any:
    """The input's column names and types (CSV columns are read as text)."""
    if file_format(path) == "parquet":
        return pq.ParquetFile(path).schema_arrow
    handle, stream = _csv_stream(path)
    with handle:
        reader = pacsv.open_csv(stream, read_options=pacsv.ReadOptions(block_size=1 << 16))
        names = reader.schema.names
    return pa.schema([pa.field(n, pa.string()) for n in names])


def _csv_convert(columns: Sequence[str]) -> Any:
    # Every column as text: the frames module reads text by one grammar, whatever a block holds,
    # and only an empty cell is missing (as in Spark's CSV reader and pandas' CSV writer).
    return pacsv.ConvertOptions(
        include_columns=list(columns),
        column_types={c: pa.string() for c in columns},
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )


def iter_chunks(
    path: Path, columns: Sequence[str], chunk_size: int, progress: ProgressSink
) -> Iterator[Any]:
    """The input's ``columns`` as tables of exactly ``chunk_size`` rows (the last may be short)."""
    if chunk_size < 1:
        raise BatchError("--chunk-size must be at least 1")
    pending: list[Any] = []
    pending_rows = 0
    position = 0
    for batch, position in _batches(path, columns, chunk_size):
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= chunk_size:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, chunk_size).combine_chunks()
            rest = table.slice(chunk_size)
            pending = rest.to_batches() if rest.num_rows else []
            pending_rows = rest.num_rows
            progress.advance(rows=chunk_size, position=position)
    if pending_rows:
        yield pa.Table.from_batches(pending).combine_chunks()
        progress.advance(rows=pending_rows, position=position)


def _batches(path: Path, columns: Sequence[str], chunk_size: int) -> Iterator[tuple[Any, int]]:
    if file_format(path) == "parquet":
        parquet = pq.ParquetFile(path)
        rows = 0
        for batch in parquet.iter_batches(batch_size=chunk_size, columns=list(columns)):
            rows += batch.num_rows
            yield batch, rows
        return
    handle, stream = _csv_stream(path)
    with handle:
        # NOTE: 1 MB blocks keep peak memory flat in the file's size; with 4 MB blocks it grew
        # by ~50 MB per million rows (measured: 128 vs 133 MB for 1M vs 3M rows, reader alone).
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=1 << 20),
            convert_options=_csv_convert(columns),
        )
        for batch in reader:
            yield batch, handle.tell()


def _write_ipc(table: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(tmp, path)


def _read_ipc(path: Path) -> Any:
    with pa.memory_map(str(path), "r") as source:
        return pa.ipc.open_file(source).read_all()


class TableWriter:
    """Writes tables to a CSV or Parquet file under a temporary name; ``commit`` renames it."""

    def __init__(self, path: Path, schema: Any) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self._writer: Any
        if file_format(path) == "parquet":
            self._writer = pq.ParquetWriter(str(self.tmp), schema)
        else:
            self._writer = pacsv.CSVWriter(str(self.tmp), schema)

    def write(self, table: Any) -> None:
        self._writer.write_table(table.cast(self.schema))

    def commit(self) -> None:
        self._writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Plan: which columns to read, which schema to write


@dataclass(frozen=True)
class _Plan:
    features: list[FeatureSpec]
    read_columns: list[str]
    id_column: str | None
    id_type: Any
    explain: bool
    top_k: int
    output_schema: Any
    rejects_schema: Any
    ignored: list[str]


def plan(features: Sequence[FeatureSpec], schema: Any, options: ScoreOptions, what: str) -> _Plan:
    names = list(schema.names)
    id_column = options.id_column
    if id_column is None and DEFAULT_ID_COLUMN in names:
        id_column = DEFAULT_ID_COLUMN
    if id_column is not None and id_column not in names:
        raise BatchError(f"the input has no id column '{id_column}' (columns: {', '.join(names)})")
    missing_required = [f.name for f in features if f.required and f.name not in names]
    if missing_required:
        raise BatchError(
            f"the input lacks required feature column(s) {', '.join(missing_required)} for "
            f"{what}; it needs: {', '.join(f.name for f in features)}"
        )
    wanted = {f.name for f in features} | {
        f.name + UNIT_SUFFIX
        for f in features
        if f.type in (FeatureType.NUMERIC, FeatureType.ORDINAL)
    }
    read = [n for n in names if n in wanted]
    if id_column is not None and id_column not in read:
        read.append(id_column)
    id_type = schema.field(id_column).type if id_column is not None else None
    if options.top_k < 1:
        raise BatchError("--top-k must be at least 1")
    k = effective_top_k(len(features), options.top_k)
    key_fields = [pa.field("row_number", pa.int64())]
    if id_column is not None:
        key_fields.append(pa.field(id_column, id_type))
    scores = score_fields(len(features), explain=options.explain, top_k=k)
    return _Plan(
        features=list(features),
        read_columns=read,
        id_column=id_column,
        id_type=id_type,
        explain=options.explain,
        top_k=k,
        output_schema=pa.schema([*key_fields, *scores[:-1]]),
        rejects_schema=pa.schema([*key_fields, pa.field("reason", pa.string())]),
        ignored=[n for n in names if n not in read],
    )


def _keys(plan_: _Plan, table: Any, first_row: int) -> dict[str, Any]:
    keys: dict[str, Any] = {
        "row_number": pa.array(np.arange(first_row, first_row + table.num_rows), pa.int64())
    }
    if plan_.id_column is not None:
        keys[plan_.id_column] = table.column(plan_.id_column)
    return keys


def split_scored(plan_: _Plan, table: Any, first_row: int, scores: Any) -> tuple[Any, Any]:
    """(scored rows, rejected rows) of one chunk, from score columns aligned with its rows."""
    keys = _keys(plan_, table, first_row)
    full = pa.table(
        {**keys, **{name: scores.column(name) for name in scores.column_names}},
    )
    rejected = full.column("reject_reason").is_valid()
    scored = full.filter(pc.invert(rejected)).select(plan_.output_schema.names)
    rejects = full.filter(rejected).select([*keys, "reject_reason"])
    rejects = rejects.rename_columns([*keys, "reason"])
    return scored.cast(plan_.output_schema), rejects.cast(plan_.rejects_schema)


# ---------------------------------------------------------------------------------------------
# Local scoring (in this process or in worker processes)


@dataclass(frozen=True)
class _ChunkTask:
    index: int
    first_row: int
    table: Any
    folder: str
    sha256: str
    plan: _Plan
    work: str


@dataclass(frozen=True)
class ChunkDone:
    index: int
    rows: int
    scored: int
    rejected: int


def _part(work: Path, index: int, kind: str) -> Path:
    return work / f"part-{index:06d}.{kind}.arrow"


def _score_chunk_local(task: _ChunkTask) -> ChunkDone:
    scorer: FrameScorer = load_scorer(Path(task.folder), expected_sha256=task.sha256)
    table = task.table
    columns = {name: table.column(name) for name in table.column_names}
    result = scorer.score(columns, table.num_rows, explain=task.plan.explain, top_k=task.plan.top_k)
    scored, rejects = split_scored(task.plan, table, task.first_row, result.table)
    work = Path(task.work)
    _write_ipc(scored, _part(work, task.index, "scored"))
    _write_ipc(rejects, _part(work, task.index, "rejects"))
    return ChunkDone(task.index, table.num_rows, scored.num_rows, rejects.num_rows)


def _worker_init() -> None:
    # One core per worker process: Arrow's own thread pool would otherwise oversubscribe them.
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)


# ---------------------------------------------------------------------------------------------
# Progress manifest (resume)


class _WorkState:
    """The work folder's ``progress.json``, held under an exclusive lock for the whole run."""

    def __init__(self, work: Path, key: str, *, resume: bool) -> None:
        self.work = work
        self.key = key
        self.done: dict[int, ChunkDone] = {}
        work.mkdir(parents=True, exist_ok=True)
        self._lock = (work / LOCK_FILE).open("a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise BatchError(
                f"another run is writing {work.name.removeprefix('.').removesuffix('.work')} "
                "right now (its work folder is locked)"
            ) from None
        state_file = work / PROGRESS_FILE
        previous: dict[str, Any] = {}
        if resume and state_file.is_file():
            try:
                previous = json.loads(state_file.read_text())
            except ValueError:
                previous = {}
        if previous.get("key") == key:
            for index, done in previous.get("done", {}).items():
                chunk = ChunkDone(int(index), done["rows"], done["scored"], done["rejected"])
                if (
                    _part(work, chunk.index, "scored").is_file()
                    and _part(work, chunk.index, "rejects").is_file()
                ):
                    self.done[chunk.index] = chunk
        else:  # another input, model or options: start over, keeping the lock file
            for path in work.iterdir():
                if path.name != LOCK_FILE:
                    path.unlink()
        self._save()

    def release(self) -> None:
        self._lock.close()

    def record(self, chunk: ChunkDone) -> None:
        self.done[chunk.index] = chunk
        self._save()

    def _save(self) -> None:
        state = {
            "key": self.key,
            "format": WORK_FORMAT,
            "done": {
                str(i): {"rows": c.rows, "scored": c.scored, "rejected": c.rejected}
                for i, c in sorted(self.done.items())
            },
        }
        tmp = self.work / (PROGRESS_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.work / PROGRESS_FILE)


def job_key(input_path: Path, model: dict[str, str], options: ScoreOptions, mode: str) -> str:
    """What a finished chunk depends on: input identity, model identity, options, front door."""
    stat = input_path.stat()
    material = {
        "format": WORK_FORMAT,
        "input": str(input_path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "model": model,
        "explain": options.explain,
        "top_k": options.top_k,
        "id_column": options.id_column,
        "chunk_size": options.chunk_size,
        "mode": mode,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _assemble(plan_: _Plan, work: Path, n_chunks: int, output: Path, rejects: Path) -> None:
    out_writer = TableWriter(output, plan_.output_schema)
    rej_writer = TableWriter(rejects, plan_.rejects_schema)
    try:
        for index in range(n_chunks):
            out_writer.write(_read_ipc(_part(work, index, "scored")))
            rej_writer.write(_read_ipc(_part(work, index, "rejects")))
    except BaseException:
        out_writer.abort()
        rej_writer.abort()
        raise
    # Rejects first: a complete OUTPUT always has its rejects file beside it.
    rej_writer.commit()
    out_writer.commit()


def _progress_total(path: Path) -> tuple[int | None, str]:
    if file_format(path) == "parquet":
        return pq.ParquetFile(path).metadata.num_rows, "rows"
    return path.stat().st_size, "bytes"


class _Runner(Protocol):
    """Scores chunks: ``submit`` may hold a chunk back; ``flush`` hands back what it held."""

    def submit(self, index: int, first_row: int, table: Any) -> list[Future[ChunkDone]]: ...

    def flush(self) -> list[Future[ChunkDone]]: ...


def _done(result: ChunkDone) -> Future[ChunkDone]:
    future: Future[ChunkDone] = Future()
    future.set_result(result)
    return future


class _LocalRunner:
    """Chunks to a pool of threads (default) or worker processes.

    With processes the first chunk waits for a second one, so a one-chunk file is scored here
    without paying for starting workers (each imports numpy, Arrow and XGBoost: ~1-2 s of CPU).
    """

    def __init__(
        self, folder: Path, sha256: str, plan_: _Plan, work: Path, options: ScoreOptions
    ) -> None:
        self.folder = str(folder)
        self.sha256 = sha256
        self.plan = plan_
        self.work = str(work)
        self.workers = options.workers
        self.use_processes = options.pool == "processes"
        self.pool: Executor | None = None
        self.held: _ChunkTask | None = None

    def _task(self, index: int, first_row: int, table: Any) -> _ChunkTask:
        return _ChunkTask(index, first_row, table, self.folder, self.sha256, self.plan, self.work)

    def submit(self, index: int, first_row: int, table: Any) -> list[Future[ChunkDone]]:
        task = self._task(index, first_row, table)
        if self.workers <= 1:
            return [_done(_score_chunk_local(task))]
        if not self.use_processes:
            if self.pool is None:
                self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="clinrisk")
            return [self.pool.submit(_score_chunk_local, task)]
        if self.pool is None:
            if self.held is None:
                self.held = task
                return []
            self.pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
            )
            held, self.held = self.held, None
            return [
                self.pool.submit(_score_chunk_local, held),
                self.pool.submit(_score_chunk_local, task),
            ]
        return [self.pool.submit(_score_chunk_local, task)]

    def flush(self) -> list[Future[ChunkDone]]:
        if self.held is None:
            return []
        held, self.held = self.held, None
        return [_done(_score_chunk_local(held))]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _run_chunks(
    input_path: Path,
    output: Path,
    plan_: _Plan,
    *,
    options: ScoreOptions,
    key: str,
    progress: ProgressSink,
    runner: _Runner,
    summary: ScoreSummary,
    in_flight: int,
) -> ScoreSummary:
    """Stream chunks, hand unfinished ones to ``runner``, then assemble OUTPUT atomically."""
    started = time.perf_counter()
    work = work_dir(output)
    state = _WorkState(work, key, resume=options.resume)
    try:
        for stale in [
            *output.parent.glob(f".{output.name}.*.tmp"),
            *output.parent.glob(f".{rejects_path(output).name}.*.tmp"),
        ]:  # left by a run that was killed while assembling (it never renamed them)
            stale.unlink(missing_ok=True)
        n_chunks = _score_chunks(
            input_path, plan_, state, options, progress, runner, summary, in_flight
        )
        _assemble(plan_, work, n_chunks, output, rejects_path(output))
        shutil.rmtree(work, ignore_errors=True)
    finally:
        state.release()
    done = [state.done[i] for i in range(n_chunks)]
    summary.rows_read = sum(c.rows for c in done)
    summary.rows_scored = sum(c.scored for c in done)
    summary.rows_rejected = sum(c.rejected for c in done)
    summary.chunks = n_chunks
    summary.seconds = time.perf_counter() - started
    summary.ignored_columns = plan_.ignored
    return summary


def _score_chunks(
    input_path: Path,
    plan_: _Plan,
    state: _WorkState,
    options: ScoreOptions,
    progress: ProgressSink,
    runner: _Runner,
    summary: ScoreSummary,
    in_flight: int,
) -> int:
    """Score every chunk not already done; returns the number of chunks in the input."""
    total, unit = _progress_total(input_path)
    progress.start(total=total, unit=unit)
    pending: set[Future[ChunkDone]] = set()
    n_chunks = 0

    def collect(futures: set[Future[ChunkDone]]) -> None:
        # Record every chunk that finished before raising the first failure, so a re-run
        # resumes after all of them.
        failures = [f.exception() for f in futures if f.exception() is not None]
        for future in futures:
            if future.exception() is None:
                state.record(future.result())
        if failures:
            raise failures[0]  # type: ignore[misc]

    try:
        chunks = iter_chunks(input_path, plan_.read_columns, options.chunk_size, progress)
        for index, table in enumerate(chunks):
            n_chunks = index + 1
            if index in state.done:
                summary.chunks_resumed += 1
                continue
            first_row = index * options.chunk_size + 1
            pending.update(runner.submit(index, first_row, table))
            finished = {f for f in pending if f.done()}
            pending -= finished
            collect(finished)
            while len(pending) >= in_flight:  # bounded: at most a few chunks in memory
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                collect(finished)
        pending.update(runner.flush())
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            collect(finished)
    finally:
        for future in pending:
            future.cancel()
        progress.stop()
    return n_chunks


def check_paths(input_path: Path, output: Path) -> None:
    file_format(input_path)
    file_format(output)
    if not input_path.is_file():
        raise BatchError(f"input file '{input_path}' does not exist")
    if input_path.resolve() == output.resolve():
        raise BatchError("OUTPUT must differ from INPUT")


def score_file(
    input_path: Path,
    output: Path,
    *,
    model_name: str,
    models_dir: Path,
    version: str | None = None,
    options: ScoreOptions | None = None,
    progress: ProgressSink | None = None,
) -> ScoreSummary:
    """Score ``input_path`` into ``output`` (+ rejects file) with a local, verified artifact."""
    options = options or ScoreOptions()
    check_paths(input_path, output)
    folder = artifact_folder(models_dir, model_name, version)
    scorer = load_scorer(folder)
    core = scorer.core
    what = f"model '{core.name}' {core.version}"
    plan_ = plan(scorer.manifest.features, input_schema(input_path), options, what)
    model_ref = {"name": core.name, "version": core.version, "sha256": core.sha256}
    summary = ScoreSummary(output=output, rejects=rejects_path(output), model=model_ref)
    runner = _LocalRunner(folder, core.sha256, plan_, work_dir(output), options)
    try:
        return _run_chunks(
            input_path,
            output,
            plan_,
            options=options,
            key=job_key(input_path, model_ref, options, "local"),
            progress=progress or _NoProgress(),
            runner=runner,
            summary=summary,
            in_flight=2 * max(1, options.workers),
        )
    finally:
        runner.close()


# ---------------------------------------------------------------------------------------------
# Through a running service


def _problem_errors(item: BatchItemResult) -> list[FieldError]:
    problem = item.error
    assert problem is not None
    prefix = f"items[{item.index}]."
    return [
        FieldError(e.field.removeprefix(prefix), e.message, e.value, e.allowed)
        for e in problem.errors
    ]


class _HttpRunner:
    """Each chunk is sent to the batch endpoint in calls of ``batch_size`` patients, at most
    ``concurrency`` calls at a time; results come back in the same columns as local scoring."""

    def __init__(
        self,
        client: ClinriskClient,
        detail: ModelDetail,
        plan_: _Plan,
        work: Path,
        *,
        version: str | None,
        batch_size: int,
        concurrency: int,
    ) -> None:
        if batch_size < 1 or concurrency < 1:
            raise BatchError("--batch-size and --concurrency must be at least 1")
        self.client = client
        self.detail = detail
        self.plan = plan_
        self.work = work
        self.version = version
        self.batch_size = batch_size
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="clinrisk")

    def flush(self) -> list[Future[ChunkDone]]:
        return []

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, index: int, first_row: int, table: Any) -> list[Future[ChunkDone]]:
        scores = self._score(table)
        scored, rejects = split_scored(self.plan, table, first_row, scores)
        _write_ipc(scored, _part(self.work, index, "scored"))
        _write_ipc(rejects, _part(self.work, index, "rejects"))
        return [_done(ChunkDone(index, table.num_rows, scored.num_rows, rejects.num_rows))]

    def _score(self, table: Any) -> Any:
        n = table.num_rows
        names = set(table.column_names)
        cells = {}
        values: dict[str, list[Any]] = {}
        non_finite: dict[str, Any] = {}
        for spec in self.plan.features:
            cells[spec.name] = cells_of(table.column(spec.name) if spec.name in names else None, n)
            unit_name = spec.name + UNIT_SUFFIX
            units = cells_of(table.column(unit_name), n) if unit_name in names else None
            values[spec.name], non_finite[spec.name] = json_values(spec, cells[spec.name], units)
        ids = table.column(self.plan.id_column).to_pylist() if self.plan.id_column else [None] * n
        items: list[dict[str, Any]] = []
        for i in range(n):
            item: dict[str, Any] = {
                "features": {k: v[i] for k, v in values.items() if v[i] is not None}
            }
            if ids[i] is not None and len(str(ids[i])) <= 256:
                item["patient_id"] = str(ids[i])
            items.append(item)
        starts = range(0, n, self.batch_size)
        calls = [
            self.pool.submit(
                self.client.predict_batch,
                self.detail.name,
                items[start : start + self.batch_size],
                top_k=self.plan.top_k,
                version=self.version,
            )
            for start in starts
        ]
        columns: dict[str, list[Any]] = {
            f.name: [None] * n
            for f in score_fields(
                len(self.plan.features), explain=self.plan.explain, top_k=self.plan.top_k
            )
        }
        for start, call in zip(starts, calls, strict=True):
            try:
                response = call.result()
            except Exception as exc:
                raise BatchError(f"the service refused a batch call: {exc}") from exc
            for result in response.results:
                self._fill(columns, start + result.index, result, cells, non_finite)
        answered = sum(
            p is not None or r is not None
            for p, r in zip(columns["probability"], columns["reject_reason"], strict=True)
        )
        if answered != n:
            raise BatchError(f"the service answered {answered} of {n} patients in a chunk")
        schema = pa.schema(
            score_fields(len(self.plan.features), explain=self.plan.explain, top_k=self.plan.top_k)
        )
        return pa.table(columns, schema=schema)

    def _fill(
        self,
        columns: dict[str, list[Any]],
        row: int,
        item: BatchItemResult,
        cells: dict[str, Any],
        non_finite: dict[str, Any],
    ) -> None:
        columns["model_name"][row] = self.detail.name
        columns["model_version"][row] = self.detail.version
        columns["model_sha256"][row] = self.detail.sha256
        if item.result is None:
            errors = []
            for error in _problem_errors(item):
                feature = error.field.removeprefix("features.")
                if feature in cells:
                    message = error.message
                    if non_finite[feature][row] and message == "must be a number":
                        message = FINITE_MESSAGE  # sent as text: JSON has no infinities
                    value = (
                        None
                        if message == "required feature is missing"
                        else cells[feature].value_at(row)
                    )
                    error = FieldError(error.field, message, value, error.allowed)
                errors.append(error)
            if not errors and item.error is not None:
                errors = [FieldError("request", item.error.detail, None, None)]
            columns["reject_reason"][row] = reason_text(errors)
            return
        result = item.result
        quality = result.data_quality
        columns["model_name"][row] = result.model.name
        columns["model_version"][row] = result.model.version
        columns["model_sha256"][row] = result.model.sha256
        columns["probability"][row] = result.probability
        columns["tier"][row] = result.tier.name
        columns["missing_features"][row] = ";".join(m.feature for m in quality.missing)
        columns["out_of_training_range"][row] = ";".join(
            o.feature for o in quality.out_of_training_range
        )
        columns["unit_conversions"][row] = ";".join(u.feature for u in quality.unit_conversions)
        columns["trustworthy"][row] = quality.trustworthy
        if self.plan.explain:
            contributions = result.explanation.contributions
            top = [c for c in contributions if c.feature != "other_features"]
            for k, contribution in enumerate(top[: self.plan.top_k], start=1):
                columns[f"top{k}_feature"][row] = contribution.feature
                columns[f"top{k}_contribution"][row] = contribution.contribution
            columns["other_contribution"][row] = next(
                (c.contribution for c in contributions if c.feature == "other_features"), 0.0
            )


def score_file_http(
    input_path: Path,
    output: Path,
    *,
    client: ClinriskClient,
    model_name: str,
    version: str | None = None,
    options: ScoreOptions | None = None,
    batch_size: int = 100,
    concurrency: int = 4,
    progress: ProgressSink | None = None,
    service_url: str = "",
) -> ScoreSummary:
    """Score a file through a running service's batch endpoint (same output as local)."""
    options = options or ScoreOptions()
    check_paths(input_path, output)
    try:
        detail = client.get_model(model_name, version)
    except Exception as exc:
        raise BatchError(f"could not read model '{model_name}' from the service: {exc}") from exc
    what = f"model '{detail.name}' {detail.version} at {service_url or 'the service'}"
    plan_ = plan(detail.features, input_schema(input_path), options, what)
    model_ref = {"name": detail.name, "version": detail.version, "sha256": detail.sha256}
    summary = ScoreSummary(output=output, rejects=rejects_path(output), model=model_ref)
    runner = _HttpRunner(
        client,
        detail,
        plan_,
        work_dir(output),
        version=detail.version,
        batch_size=batch_size,
        concurrency=concurrency,
    )
    try:
        return _run_chunks(
            input_path,
            output,
            plan_,
            options=options,
            key=job_key(input_path, model_ref, options, f"http {service_url}"),
            progress=progress or _NoProgress(),
            runner=runner,
            summary=summary,
            in_flight=1,
        )
    finally:
        runner.close()


class RichProgress:
    """A rich progress bar on stderr: rows, rows/s and ETA (by bytes for CSV, rows for Parquet)."""

    def __init__(self, console: Any | None = None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self._progress: Any = None
        self._task: Any = None
        self._rows = 0
        self._started = 0.0

    def start(self, *, total: int | None, unit: str) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]scoring"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rows]:>12,} rows"),
            TextColumn("{task.fields[rate]:>9,.0f} rows/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._progress.start()
        # The bar and ETA follow bytes read for CSV (row count unknown up front), rows for Parquet.
        self._task = self._progress.add_task(unit, total=total, rows=0, rate=0.0)
        self._started = time.perf_counter()

    def advance(self, *, rows: int, position: int) -> None:
        self._rows += rows
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        self._progress.update(
            self._task, completed=position, rows=self._rows, rate=self._rows / elapsed
        )

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
