"""Score a file with a local, verified artifact (``clinrisk score NAME INPUT -o OUTPUT``).

Each chunk is validated column-wise and scored by the model's facade
(``models.predictor.Predictor.score_table``). Two chunks are
scored at once by a pool of *threads* sharing one loaded model: nearly all the work is Arrow
compute and numpy on whole columns, which release the GIL, and Arrow parses and writes files on
its own threads. Worker processes were measured and dropped (``bench/batch.py``, 1M rows on 2
cores): each paid ~1-2 s of imports and every chunk was pickled across, ~75k vs ~155k rows/s
with explanations (one thread: ~120k).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from models.predictor import Predictor, load_predictor
from models.registry import artifact_folder
from service.batch.files import Chunk, check_paths, input_schema, rejects_path, write_ipc
from service.batch.job import ChunkDone, ScoreOptions, ScoreSummary
from service.batch.plan import Plan, plan, split_scored
from service.batch.progress import NoProgress, ProgressSink
from service.batch.resume import job_key, part_path, work_dir
from service.batch.runner import done, run_chunks


@dataclass(frozen=True)
class ChunkTask:
    chunk: Chunk
    model: Predictor
    plan: Plan
    work: Path

    @property
    def index(self) -> int:
        return self.chunk.index


def score_chunk(task: ChunkTask) -> ChunkDone:
    """Score one chunk and write its scored and rejected rows as part files."""
    chunk = task.chunk
    table = chunk.table
    columns = {name: table.column(name) for name in table.column_names}
    result = task.model.score_table(
        columns, table.num_rows, explain=task.plan.explain, top_k=task.plan.top_k
    )
    scored, rejects = split_scored(task.plan, chunk, result.table)
    write_ipc(scored, part_path(task.work, chunk.index, "scored"))
    write_ipc(rejects, part_path(task.work, chunk.index, "rejects"))
    return ChunkDone(chunk.index, chunk.rows, scored.num_rows, rejects.num_rows)


class LocalRunner:
    """Chunks to ``workers`` threads sharing the loaded model (1: in the calling thread)."""

    def __init__(self, model: Predictor, plan_: Plan, work: Path, *, workers: int) -> None:
        self.model = model
        self.plan = plan_
        self.work = work
        self.pool = (
            ThreadPoolExecutor(workers, thread_name_prefix="clinrisk") if workers > 1 else None
        )

    def submit(self, chunk: Chunk) -> Future[ChunkDone]:
        task = ChunkTask(chunk, self.model, self.plan, self.work)
        if self.pool is None:
            return done(score_chunk(task))
        return self.pool.submit(score_chunk, task)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


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
    model = load_predictor(artifact_folder(models_dir, model_name, version))
    what = f"model '{model.name}' {model.version}"
    plan_ = plan(
        model.manifest.features,
        input_schema(input_path),
        options,
        what,
        sorted(model.population.contexts),
    )
    model_ref = {"name": model.name, "version": model.version, "sha256": model.sha256}
    summary = ScoreSummary(output=output, rejects=rejects_path(output), model=model_ref)
    runner = LocalRunner(model, plan_, work_dir(output), workers=options.workers)
    try:
        return run_chunks(
            input_path,
            output,
            plan_,
            options=options,
            key=job_key(input_path, model_ref, options, "local"),
            progress=progress or NoProgress(),
            runner=runner,
            summary=summary,
            in_flight=2 * max(1, options.workers),
        )
    finally:
        runner.close()
