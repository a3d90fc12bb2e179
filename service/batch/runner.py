"""The chunk loop every file job shares: stream chunks, hand unfinished ones to a runner, record
what finished, then assemble OUTPUT atomically. Runners (local, remote) only score a chunk and
write its two part files."""

from __future__ import annotations

import shutil
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Protocol

from service.batch.files import (
    Chunk,
    iter_chunks,
    progress_total,
    rejects_path,
    stale_temporaries,
)
from service.batch.job import BatchError, ChunkDone, ScoreOptions, ScoreSummary
from service.batch.plan import Plan
from service.batch.progress import ProgressSink
from service.batch.resume import WorkState, assemble, work_dir


class Runner(Protocol):
    """Scores one chunk into the work folder (now, or on a thread of its own)."""

    def submit(self, chunk: Chunk) -> Future[ChunkDone]: ...


def done(result: ChunkDone) -> Future[ChunkDone]:
    """A chunk scored in the calling thread, as a finished future."""
    future: Future[ChunkDone] = Future()
    future.set_result(result)
    return future


def run_chunks(
    input_path: Path,
    output: Path,
    plan_: Plan,
    *,
    options: ScoreOptions,
    key: str,
    progress: ProgressSink,
    runner: Runner,
    summary: ScoreSummary,
    in_flight: int,
) -> ScoreSummary:
    """Stream chunks, hand unfinished ones to ``runner``, then assemble OUTPUT atomically."""
    started = time.perf_counter()
    work = work_dir(output)
    state = WorkState(work, key, resume=options.resume)
    try:
        for stale in stale_temporaries(output):
            stale.unlink(missing_ok=True)
        n_chunks, resumed = _score_chunks(
            input_path, plan_, state, options, progress, runner, in_flight
        )
        assemble(plan_, work, n_chunks, output, rejects_path(output))
        shutil.rmtree(work, ignore_errors=True)
    except BatchError as exc:
        # A failure the same command cannot get past (bad input, unwritable output): the
        # finished chunks are of no use, so no work folder is left behind. Anything else (an
        # interruption, a crash, the service away) keeps them for the resume.
        if not exc.resumable:
            shutil.rmtree(work, ignore_errors=True)
        raise
    except OSError as exc:
        # Writing the parts or OUTPUT failed (disk full, permissions): one line, chunks kept.
        raise BatchError(_os_failure(exc), resumable=True) from None
    finally:
        state.release()
    finished = [state.done[i] for i in range(n_chunks)]
    summary.rows_read = sum(c.rows for c in finished)
    summary.rows_scored = sum(c.scored for c in finished)
    summary.rows_rejected = sum(c.rejected for c in finished)
    summary.chunks = n_chunks
    summary.chunks_resumed = resumed
    summary.seconds = time.perf_counter() - started
    summary.ignored_columns = plan_.ignored
    return summary


def _os_failure(exc: OSError) -> str:
    where = f" '{exc.filename}'" if exc.filename else ""
    return (
        f"could not write{where}: {exc.strerror or type(exc).__name__}; finished chunks are "
        "kept, run the same command again to resume"
    )


def _score_chunks(
    input_path: Path,
    plan_: Plan,
    state: WorkState,
    options: ScoreOptions,
    progress: ProgressSink,
    runner: Runner,
    in_flight: int,
) -> tuple[int, int]:
    """Score every chunk not already done: (chunks in the input, chunks already done)."""
    total, unit = progress_total(input_path)
    progress.start(total=total, unit=unit)
    pending: set[Future[ChunkDone]] = set()
    n_chunks = resumed = 0

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
        for chunk in iter_chunks(input_path, plan_.read_columns, options.chunk_size, progress):
            n_chunks = chunk.index + 1
            if chunk.index in state.done:
                resumed += 1
                continue
            pending.add(runner.submit(chunk))
            finished = {f for f in pending if f.done()}
            pending -= finished
            collect(finished)
            while len(pending) >= in_flight:  # bounded: at most a few chunks in memory
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                collect(finished)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            collect(finished)
    finally:
        for future in pending:
            future.cancel()
        # Chunks already running finish before the caller looks at the work folder (it may
        # remove it: a part written after that would leave it behind).
        wait(pending)
        progress.stop()
    return n_chunks, resumed
