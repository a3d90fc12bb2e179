"""What a batch job is: its options, its summary, its one error type and a finished chunk."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CHUNK_SIZE = 50_000


class BatchError(Exception):
    """The job cannot run or go on (bad input file, unknown model, service refused the calls).

    The message is one line for the operator and never holds a cell or a line of the input.
    ``resumable``: the same command may succeed later with the finished chunks (the service was
    down, the disk was full); otherwise (bad input, unwritable output) the work folder is removed.
    """

    def __init__(self, message: str, *, resumable: bool = False) -> None:
        super().__init__(message)
        self.resumable = resumable


@dataclass(frozen=True)
class ScoreOptions:
    explain: bool = False
    top_k: int = 3
    id_column: str | None = None
    """None: ``patient_id`` when the input has it."""
    chunk_size: int = DEFAULT_CHUNK_SIZE
    workers: int = 2
    """Chunks scored at once by threads sharing one loaded model (1 = in this thread)."""
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


@dataclass(frozen=True)
class ChunkDone:
    """A chunk whose scored and rejected rows are in the work folder."""

    index: int
    rows: int
    scored: int
    rejected: int
