"""Crash safety and resume: the work folder next to OUTPUT, its progress file, the job key.

Every finished chunk is written as two Arrow part files (scored, rejects) into ``.OUTPUT.work``
with a small ``progress.json`` keyed by the input (path, size, mtime), the model (sha256), the
options and the front door, so a re-run after an interruption skips finished chunks. OUTPUT and
the rejects file are assembled from the parts at the very end (:func:`assemble`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from service.batch.files import TableWriter, read_ipc
from service.batch.job import BatchError, ChunkDone, ScoreOptions
from service.batch.plan import Plan

PROGRESS_FILE = "progress.json"
LOCK_FILE = ".lock"
WORK_FORMAT = 1


def work_dir(output: Path) -> Path:
    return output.with_name(f".{output.name}.work")


def part_path(work: Path, index: int, kind: str) -> Path:
    """A chunk's part file: ``kind`` is ``scored`` or ``rejects``."""
    return work / f"part-{index:06d}.{kind}.arrow"


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


class WorkState:
    """The work folder's ``progress.json``, held under an exclusive lock for the whole run."""

    def __init__(self, work: Path, key: str, *, resume: bool) -> None:
        self.work = work
        self.key = key
        self.done: dict[int, ChunkDone] = {}
        try:
            work.mkdir(parents=True, exist_ok=True)
            self._lock = (work / LOCK_FILE).open("a")
        except OSError as exc:
            # Checked before any row is scored: a run that cannot write its output fails now.
            raise BatchError(
                f"cannot write to the output folder '{work.parent}': "
                f"{exc.strerror or type(exc).__name__}"
            ) from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise BatchError(
                f"another run is writing {work.name.removeprefix('.').removesuffix('.work')} "
                "right now (its work folder is locked)"
            ) from None
        previous = self._previous() if resume else {}
        if previous.get("key") == key:
            for index, done in previous.get("done", {}).items():
                chunk = ChunkDone(int(index), done["rows"], done["scored"], done["rejected"])
                if (
                    part_path(work, chunk.index, "scored").is_file()
                    and part_path(work, chunk.index, "rejects").is_file()
                ):
                    self.done[chunk.index] = chunk
        else:  # another input, model or options: start over, keeping the lock file
            for path in work.iterdir():
                if path.name != LOCK_FILE:
                    path.unlink()
        self._save()

    def _previous(self) -> dict[str, Any]:
        state_file = self.work / PROGRESS_FILE
        if not state_file.is_file():
            return {}
        try:
            previous: dict[str, Any] = json.loads(state_file.read_text())
        except ValueError:
            return {}
        return previous

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


def assemble(plan_: Plan, work: Path, n_chunks: int, output: Path, rejects: Path) -> None:
    """OUTPUT and the rejects file from the parts, in chunk order, renamed into place."""
    out_writer = TableWriter(output, plan_.output_schema)
    rej_writer = TableWriter(rejects, plan_.rejects_schema)
    try:
        for index in range(n_chunks):
            out_writer.write(read_ipc(part_path(work, index, "scored")))
            rej_writer.write(read_ipc(part_path(work, index, "rejects")))
    except BaseException:
        out_writer.abort()
        rej_writer.abort()
        raise
    # Rejects first: a complete OUTPUT always has its rejects file beside it.
    rej_writer.commit()
    out_writer.commit()
