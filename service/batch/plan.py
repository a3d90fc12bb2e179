"""Which columns a job reads and which it writes, and how a scored chunk splits into the two files.

Every front door (local, HTTP, Spark) writes the same columns: ``row_number``, the id column if
any, then ``models.tables.score_fields``; a rejected row goes to the rejects file with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.manifest import FeatureSpec, FeatureType
from models.tables import UNIT_SUFFIX, effective_top_k, score_fields
from service.batch.job import BatchError, ScoreOptions

DEFAULT_ID_COLUMN = "patient_id"


@dataclass(frozen=True)
class Plan:
    features: list[FeatureSpec]
    read_columns: list[str]
    id_column: str | None
    id_type: Any
    explain: bool
    top_k: int
    output_schema: Any
    rejects_schema: Any
    ignored: list[str]

    def score_fields(self) -> list[Any]:
        """The score columns (pyarrow fields) of this job, ``reject_reason`` last."""
        return score_fields(len(self.features), explain=self.explain, top_k=self.top_k)


def plan(features: Sequence[FeatureSpec], schema: Any, options: ScoreOptions, what: str) -> Plan:
    """The job's columns for an input ``schema``; ``what`` names the model in error messages."""
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
    return Plan(
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


def _keys(plan_: Plan, table: Any, first_row: int) -> dict[str, Any]:
    keys: dict[str, Any] = {
        "row_number": pa.array(np.arange(first_row, first_row + table.num_rows), pa.int64())
    }
    if plan_.id_column is not None:
        keys[plan_.id_column] = table.column(plan_.id_column)
    return keys


def split_scored(plan_: Plan, table: Any, first_row: int, scores: Any) -> tuple[Any, Any]:
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
