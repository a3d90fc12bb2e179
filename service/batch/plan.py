"""Which columns a job reads and which it writes, and how a scored chunk splits into the two files.

Every front door (local, HTTP, Spark) writes the same columns: ``row_number``, the id column if
any, then ``models.tables.score_fields``; a rejected row goes to the rejects file with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from models.manifest import FeatureSpec, FeatureType
from models.tables import UNIT_SUFFIX, effective_top_k, reason_text, score_fields
from service.batch.files import Chunk
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


def check_header(
    names: Sequence[str], features: Sequence[FeatureSpec], id_column: str | None
) -> None:
    """Refuse a header that is missing or names a column twice (one line, no cell quoted).

    A file whose first line names none of the model's columns has no header: its first line is
    a patient's row, so the message says what is needed and never echoes what was found.
    """
    known = {f.name for f in features} | {f.name + UNIT_SUFFIX for f in features}
    if id_column is not None:
        known.add(id_column)
    if not known & set(names):
        raise BatchError(
            "the input's header names none of the model's columns: is the header line missing? "
            f"it needs: {', '.join(f.name for f in features)}"
        )
    positions: dict[str, list[int]] = {}
    for position, name in enumerate(names, start=1):
        positions.setdefault(name, []).append(position)
    repeated = {name: at for name, at in positions.items() if len(at) > 1}
    if repeated:
        listed = "; ".join(
            f"'{name}' in columns {', '.join(map(str, at))}" for name, at in repeated.items()
        )
        raise BatchError(f"the input's header names a column more than once: {listed}")


def plan(
    features: Sequence[FeatureSpec],
    schema: Any,
    options: ScoreOptions,
    what: str,
    contexts: Sequence[str] = (),
) -> Plan:
    """The job's columns for an input ``schema``; ``what`` names the model in error messages.
    ``contexts``: the applicability facts (yes/no columns) the model's rules name, read if
    present (issue 14)."""
    names = list(schema.names)
    check_header(names, features, options.id_column or DEFAULT_ID_COLUMN)
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
    wanted |= set(contexts)
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


def _keys(plan_: Plan, chunk: Chunk) -> dict[str, Any]:
    keys: dict[str, Any] = {"row_number": chunk.row_numbers}
    if plan_.id_column is not None:
        keys[plan_.id_column] = chunk.table.column(plan_.id_column)
    return keys


def unreadable_reasons(chunk: Chunk) -> dict[int, str]:
    """The reject reason of each row of the chunk's table that held a cell that was not UTF-8."""
    return {row: reason_text(errors) for row, errors in chunk.undecodable.items()}


def split_scored(plan_: Plan, chunk: Chunk, scores: Any) -> tuple[Any, Any]:
    """(scored rows, rejected rows) of one chunk, from score columns aligned with its rows.

    A row with a cell that was not UTF-8 is rejected for that (the cell was read as missing, so
    the model's own verdict on it does not count), and each line that could not be parsed is a
    rejected row of its own, with no id: its fields cannot be trusted.
    """
    keys = _keys(plan_, chunk)
    reasons = scores.column("reject_reason")
    if chunk.undecodable:
        forced = unreadable_reasons(chunk)
        texts = reasons.to_pylist()
        for row, reason in forced.items():
            texts[row] = reason
        reasons = pa.array(texts, pa.string())
    full = pa.table(
        {
            **keys,
            **{n: scores.column(n) for n in scores.column_names if n != "reject_reason"},
            "reject_reason": reasons,
        }
    )
    rejected = full.column("reject_reason").is_valid()
    scored = full.filter(pc.invert(rejected)).select(plan_.output_schema.names)
    rejects = full.filter(rejected).select([*keys, "reject_reason"])
    rejects = rejects.rename_columns([*keys, "reason"]).cast(plan_.rejects_schema)
    if chunk.unparsed:
        unparsed = {
            "row_number": pa.array([row for row, _ in chunk.unparsed], pa.int64()),
            **(
                {plan_.id_column: pa.nulls(len(chunk.unparsed), plan_.id_type)}
                if plan_.id_column
                else {}
            ),
            "reason": pa.array([reason_text([error]) for _, error in chunk.unparsed], pa.string()),
        }
        rejects = pa.concat_tables([rejects, pa.table(unparsed, schema=plan_.rejects_schema)])
        rejects = rejects.sort_by("row_number")
    return scored.cast(plan_.output_schema), rejects
