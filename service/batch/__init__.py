"""Batch scoring of CSV/Parquet files: locally, through a running service, or with Spark.

One job, three front doors, the same output columns and rejects file::

    job       ScoreOptions, ScoreSummary, BatchError, ChunkDone
    files     formats, chunked reading with bounded memory, atomic TableWriter, rejects path
    plan      the columns a job reads and writes; a scored chunk -> (scored, rejected)
    resume    the work folder, its locked progress file and job key; assembling OUTPUT
    runner    the chunk loop the local and remote runners share
    local     score_file: a verified local artifact, chunks on threads
    remote    score_file_http: a running service's batch endpoint (service.client)
    spark     score_file_spark, score_spark_dataframe (pyspark, an optional extra)
    progress  ProgressSink, RichProgress

The public names below are imported on first use, so ``from service.batch import ScoreOptions``
costs no numpy, Arrow or httpx, and ``clinrisk score`` loads only the door it uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from service.batch.job import BatchError, ChunkDone, ScoreOptions, ScoreSummary

if TYPE_CHECKING:
    from service.batch.files import TableWriter, file_format, rejects_path
    from service.batch.local import score_file
    from service.batch.progress import ProgressSink, RichProgress
    from service.batch.remote import score_file_http
    from service.batch.resume import work_dir
    from service.batch.spark import local_session, score_file_spark, score_spark_dataframe

_LAZY = {
    "TableWriter": "files",
    "file_format": "files",
    "rejects_path": "files",
    "score_file": "local",
    "ProgressSink": "progress",
    "RichProgress": "progress",
    "score_file_http": "remote",
    "work_dir": "resume",
    "local_session": "spark",
    "score_file_spark": "spark",
    "score_spark_dataframe": "spark",
}

__all__ = [
    "BatchError",
    "ChunkDone",
    "ProgressSink",
    "RichProgress",
    "ScoreOptions",
    "ScoreSummary",
    "TableWriter",
    "file_format",
    "local_session",
    "rejects_path",
    "score_file",
    "score_file_http",
    "score_file_spark",
    "score_spark_dataframe",
    "work_dir",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'service.batch' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"service.batch.{module}"), name)
    globals()[name] = value
    return value
