"""Score Spark DataFrames with the scoring core (``clinrisk score --engine spark``).

:func:`score_spark_dataframe` adds the score columns of ``models.tables.score_fields`` with
``mapInPandas``: every executor process verifies the artifact (``models.loader.load_artifact``
checks every hash) once, caches the model at module level, and pins it to the sha256 the driver
resolved, so a whole job scores with one artifact. Validation and scoring are the model's
facade (``models.predictor.Predictor.score_table``), exactly as for ``clinrisk score``.

pyspark is an optional extra (``pip install 'clinrisk[spark]'``); it is imported only here and
only when a function is called, so the service itself never needs it.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.predictor import load_predictor
from models.registry import artifact_folder
from models.tables import effective_top_k
from service.batch.files import TableWriter, check_paths, file_format, input_schema, rejects_path
from service.batch.job import ScoreOptions, ScoreSummary
from service.batch.plan import Plan, plan
from service.batch.resume import work_dir

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType

ROW_NUMBER = "row_number"
PANDAS_WARNING = "PySpark does not yet fully support pandas"
REJECT_REASON = "reject_reason"


def _spark_type(arrow_type: Any) -> DataType:
    from pyspark.sql import types as T

    if pa.types.is_floating(arrow_type):
        return T.DoubleType()
    if pa.types.is_boolean(arrow_type):
        return T.BooleanType()
    if pa.types.is_integer(arrow_type):
        return T.LongType()
    return T.StringType()


def _score_partitions(
    folder: str,
    sha256: str,
    columns: list[str],
    explain: bool,
    top_k: int,
    batches: Iterator[pd.DataFrame],
) -> Iterator[pd.DataFrame]:
    """Runs on the executors: one verified, cached model per Python worker process."""
    import pandas as pd

    model = load_predictor(Path(folder), expected_sha256=sha256)
    for batch in batches:
        n = len(batch)
        result = model.score_table(
            {c: batch[c].to_numpy() for c in columns}, n, explain=explain, top_k=top_k
        )
        scores = result.table.to_pandas()
        yield pd.concat([batch.reset_index(drop=True), scores], axis=1)


def score_spark_dataframe(
    df: DataFrame,
    model_name: str,
    *,
    models_dir: Path | str,
    version: str | None = None,
    explain: bool = False,
    top_k: int = 3,
) -> DataFrame:
    """``df`` with the score columns added (``reject_reason`` set, scores null, on a bad row).

    Feature columns are read as :mod:`models.tables` reads any table (numeric text is a
    number, ``<feature>_unit`` columns give alternative units); other columns pass through.
    Executors open the artifact at the driver's absolute path: on a cluster, ``models_dir`` must
    be on a shared file system (each executor still verifies every hash and the sha256).
    """
    from pyspark.sql import types as T

    folder = artifact_folder(Path(models_dir), model_name, version)
    model = load_predictor(folder)  # verified here on the driver; its sha256 pins the executors
    k = effective_top_k(len(model.specs), top_k)
    fields = model.table_fields(explain=explain, top_k=k)
    clash = sorted(set(df.columns) & {f.name for f in fields})
    if clash:
        raise ValueError(f"the DataFrame already has score columns: {', '.join(clash)}")
    schema = T.StructType(
        [*df.schema.fields, *(T.StructField(f.name, _spark_type(f.type), True) for f in fields)]
    )
    wanted = set(model.input_columns())
    columns = [c for c in df.columns if c in wanted]
    score = functools.partial(
        _score_partitions, str(folder.resolve()), model.sha256, columns, explain, k
    )
    with warnings.catch_warnings():
        # NOTE: PySpark 4.3 warns that pandas 3 is not yet fully supported. The frames cross
        # Arrow <-> pandas only as float64, bool, and str/None object columns; the tests compare
        # Spark's scores with local and HTTP scoring row by row (1e-9).
        warnings.filterwarnings("ignore", PANDAS_WARNING, FutureWarning)
        return df.mapInPandas(score, schema)


def local_session(master: str = "local[2]", *, app_name: str = "clinrisk") -> SparkSession:
    """A Spark session in local mode whose Python workers run this interpreter."""
    from pyspark.sql import SparkSession

    # Executors must import this project with the same libraries as the driver.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", PANDAS_WARNING, FutureWarning)
        session: SparkSession = (
            SparkSession.builder.master(master)
            .appName(app_name)
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "4")
            .config("spark.sql.execution.arrow.maxRecordsPerBatch", "20000")
            .config("spark.python.worker.reuse", "true")
            .getOrCreate()
        )
    session.sparkContext.setLogLevel("ERROR")
    return session


def with_row_numbers(df: DataFrame) -> DataFrame:
    """``row_number`` = 1-based position in the source, computed without a global sort.

    ``monotonically_increasing_id`` is the partition index in the upper 31 bits and the record
    number within the partition in the lower 33; partitions of a file scan are in file order, so
    the row number is the rows of earlier partitions plus the record number plus one.
    """
    from pyspark.sql import functions as F

    tagged = df.withColumn("__pid", F.spark_partition_id()).withColumn(
        "__mid", F.monotonically_increasing_id()
    )
    counts = {row["__pid"]: row["count"] for row in tagged.groupBy("__pid").count().collect()}
    offsets: list[Any] = []
    total = 0
    for pid in sorted(counts):
        offsets += [F.lit(pid), F.lit(total)]
        total += counts[pid]
    offset = F.create_map(*offsets)[F.col("__pid")] if offsets else F.lit(0)
    within = F.col("__mid") - F.shiftleft(F.col("__pid").cast("long"), 33)
    numbered = tagged.withColumn(ROW_NUMBER, (offset + within + 1).cast("long"))
    return numbered.drop("__pid", "__mid")


def score_file_spark(
    input_path: Path,
    output: Path,
    *,
    model_name: str,
    models_dir: Path,
    version: str | None = None,
    options: ScoreOptions | None = None,
    session: SparkSession | None = None,
    master: str = "local[2]",
) -> ScoreSummary:
    """``clinrisk score --engine spark``: the same job, output and rejects file, run by Spark.

    Spark writes its partitions to the work folder next to OUTPUT; the driver then streams them
    (one partition at a time) into OUTPUT and the rejects file, renamed into place at the end.
    There is no chunk-level resume here: a Spark job is re-run whole.
    """
    options = options or ScoreOptions()
    check_paths(input_path, output)
    started = time.perf_counter()
    model = load_predictor(artifact_folder(models_dir, model_name, version))
    what = f"model '{model.name}' {model.version}"
    plan_ = plan(model.manifest.features, input_schema(input_path), options, what)
    model_ref = {"name": model.name, "version": model.version, "sha256": model.sha256}
    summary = ScoreSummary(output=output, rejects=rejects_path(output), model=model_ref)
    work = work_dir(output)
    shutil.rmtree(work, ignore_errors=True)
    spark = session or local_session(master)
    try:
        scored = score_spark_dataframe(
            with_row_numbers(_read_input(spark, input_path, plan_)),
            model_name,
            models_dir=models_dir,
            version=model.version,
            explain=options.explain,
            top_k=plan_.top_k,
        )
        keep = [*plan_.output_schema.names, REJECT_REASON]
        scored.select(*keep).write.mode("overwrite").parquet(str(work / "spark"))
    finally:
        if session is None:
            spark.stop()
    _assemble(_parts_in_order(work / "spark"), plan_, summary)
    shutil.rmtree(work, ignore_errors=True)
    summary.seconds = time.perf_counter() - started
    summary.ignored_columns = plan_.ignored
    return summary


def _read_input(spark: SparkSession, input_path: Path, plan_: Plan) -> DataFrame:
    if file_format(input_path) == "csv":
        # every column as text, as the local reader does (empty cells are missing in tables.py)
        df = spark.read.option("header", True).option("inferSchema", False).csv(str(input_path))
    else:
        df = spark.read.parquet(str(input_path))
    return df.select(*plan_.read_columns)


def _parts_in_order(parts_dir: Path) -> list[Path]:
    """Spark's non-empty part files, in the order of their first row."""
    parts = []
    for path in parts_dir.glob("*.parquet"):
        if pq.ParquetFile(path).metadata.num_rows:
            column = pq.read_table(path, columns=[ROW_NUMBER]).column(ROW_NUMBER)
            parts.append((pc.min(column).as_py(), path))
    return [path for _, path in sorted(parts)]


def _assemble(parts: list[Path], plan_: Plan, summary: ScoreSummary) -> None:
    """OUTPUT and the rejects file from the parts, one part in memory at a time."""
    out_writer = TableWriter(summary.output, plan_.output_schema)
    rej_writer = TableWriter(summary.rejects, plan_.rejects_schema)
    try:
        for path in parts:
            table = pq.read_table(path).sort_by(ROW_NUMBER)
            rejected = table.column(REJECT_REASON).is_valid()
            good = table.filter(pc.invert(rejected)).select(plan_.output_schema.names)
            bad = table.filter(rejected)
            bad = bad.select([*plan_.rejects_schema.names[:-1], REJECT_REASON]).rename_columns(
                plan_.rejects_schema.names
            )
            out_writer.write(good)
            rej_writer.write(bad)
            summary.rows_read += table.num_rows
            summary.rows_scored += good.num_rows
            summary.rows_rejected += bad.num_rows
            summary.chunks += 1
    except BaseException:
        out_writer.abort()
        rej_writer.abort()
        raise
    # Rejects first: a complete OUTPUT always has its rejects file beside it.
    rej_writer.commit()
    out_writer.commit()


__all__ = [
    "local_session",
    "score_file_spark",
    "score_spark_dataframe",
    "with_row_numbers",
]
