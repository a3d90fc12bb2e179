"""Observed outcomes of predictions (issue 13 part 1), recorded by the API and by
``clinrisk outcomes record FILE``.

A row names its prediction by ``prediction_id``, or by ``patient_id`` + ``model`` +
``observed_at``: the outcome observed at that time answers every scored prediction of that model
for that patient made within the model's horizon before it (the patient id is pseudonymised with
the service key, exactly as the audit trail does, and never stored).

Recording is idempotent (the same outcome again changes nothing); a different outcome for the
same prediction is a correction: the current value changes and ``outcome_history`` keeps who,
when, the old and the new value. A bad row is rejected with its row number, field and what is
allowed, and never stops the other rows. Messages never carry identifiers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from service.audit import Pseudonymizer, audit_records, metadata, patient_predictions
from service.outcome_counts import Scored, add, as_utc
from service.risk_bins import risk_bin

outcomes = sa.Table(
    "outcomes",
    metadata,
    sa.Column("prediction_id", sa.String(36), primary_key=True),
    sa.Column("outcome", sa.SmallInteger, nullable=False),
    sa.Column("observed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("recorded_by", sa.String(64), nullable=False),
    # Copied from the prediction's audit record (immutable) when the outcome is first recorded.
    sa.Column("model_name", sa.String(64), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("predicted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("subgroups", sa.Text, nullable=True),
    sa.Column("risk_bin", sa.Integer, nullable=False),
)
outcome_history = sa.Table(
    "outcome_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("prediction_id", sa.String(36), nullable=False),
    sa.Column("old_outcome", sa.SmallInteger, nullable=True),
    sa.Column("new_outcome", sa.SmallInteger, nullable=False),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("changed_by", sa.String(64), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
)

# How long after a prediction its outcome can be observed, from each model's target definition
# (manifest ``target.definition``): CHD within 10 years; readmission within 30 days of discharge;
# diabetes is a status (prevalent), taken as confirmed within a year. A model not listed: a year.
HORIZONS = {
    "cvd": timedelta(days=3653),
    "readmission": timedelta(days=30),
    "diabetes": timedelta(days=365),
}
DEFAULT_HORIZON = timedelta(days=365)
FIELDS = ("prediction_id", "patient_id", "model", "observed_at", "outcome")
OUTCOME_VALUES = {0: 0, 1: 1, "0": 0, "1": 1, "true": 1, "false": 0, "yes": 1, "no": 0}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
CHUNK = 500  # identifiers per IN (...) list: well under both databases' parameter limits


def horizon(model: str) -> timedelta:
    return HORIZONS.get(model, DEFAULT_HORIZON)


@dataclass(frozen=True)
class Rejection:
    row: int
    field: str
    message: str
    allowed: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "field": self.field,
            "message": self.message,
            "allowed": self.allowed,
        }


@dataclass
class Summary:
    rows: int = 0
    recorded: int = 0
    """Predictions that had no outcome and now have one."""
    corrected: int = 0
    unchanged: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "recorded": self.recorded,
            "corrected": self.corrected,
            "unchanged": self.unchanged,
            "rejected": [r.as_dict() for r in self.rejected],
        }


@dataclass(frozen=True)
class _Parsed:
    row: int
    outcome: int
    observed_at: datetime | None
    prediction_id: str | None
    pseudonym: str | None
    model: str | None


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value != value


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return as_utc(moment)


def _outcome(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value in (0.0, 1.0):
        return int(value)
    key = value.strip().lower() if isinstance(value, str) else value
    try:
        return OUTCOME_VALUES.get(key)
    except TypeError:  # unhashable (a list or object in JSON)
        return None


def parse_row(
    index: int, raw: Mapping[str, Any] | Any, pseudonymize: Pseudonymizer, models: Iterable[str]
) -> _Parsed | Rejection:
    """One row checked; the first problem found is its rejection. Identifiers are never quoted."""
    if not isinstance(raw, Mapping):
        return Rejection(index, "row", "not an object", "an object with: " + ", ".join(FIELDS))
    unknown = [k for k in raw if k not in FIELDS]
    if unknown:
        return Rejection(
            index, str(unknown[0])[:64], "unknown field", "one of: " + ", ".join(FIELDS)
        )
    outcome = _outcome(raw.get("outcome"))
    if outcome is None:
        return Rejection(index, "outcome", "missing or not an outcome", "0 or 1 (or true/false)")
    observed_raw = raw.get("observed_at")
    observed = None if _blank(observed_raw) else _time(observed_raw)
    if not _blank(observed_raw) and observed is None:
        return Rejection(
            index, "observed_at", "not a date-time", "ISO 8601, e.g. 2026-01-31T08:00:00Z"
        )
    if observed is not None and not 1900 <= observed.year <= 9000:
        return Rejection(index, "observed_at", "out of range", "a date-time between 1900 and 9000")
    prediction_id = raw.get("prediction_id")
    if not _blank(prediction_id):
        # NOTE: control characters (NUL) would make PostgreSQL refuse the whole batch.
        if (
            not isinstance(prediction_id, str)
            or len(prediction_id.strip()) > 36
            or _CONTROL.search(prediction_id)
        ):
            return Rejection(index, "prediction_id", "not a prediction id", "a UUID as returned")
        return _Parsed(index, outcome, observed, prediction_id.strip(), None, None)
    patient_id, model = raw.get("patient_id"), raw.get("model")
    if _blank(patient_id):
        return Rejection(
            index,
            "prediction_id",
            "missing",
            "a prediction id, or patient_id + model + observed_at",
        )
    if (
        not isinstance(patient_id, str | int)
        or isinstance(patient_id, bool)
        or len(str(patient_id)) > 256
        or _CONTROL.search(str(patient_id))
    ):
        return Rejection(index, "patient_id", "not a patient id", "a string up to 256 characters")
    names = sorted(models)
    if not isinstance(model, str) or model not in names:
        return Rejection(index, "model", "missing or unknown model", "one of: " + ", ".join(names))
    if observed is None:
        return Rejection(
            index, "observed_at", "missing", "the time the outcome was observed (ISO 8601)"
        )
    return _Parsed(index, outcome, observed, None, pseudonymize(str(patient_id).strip()), model)


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


class OutcomeStore:
    """Outcomes in the audit database, through the audit store's engine."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def record(
        self,
        rows: Sequence[Mapping[str, Any] | Any],
        *,
        who: str,
        source: str,
        pseudonymize: Pseudonymizer,
        models: Iterable[str],
        first_row: int = 1,
    ) -> Summary:
        """Check and record ``rows`` in one transaction; rejected rows are reported, not
        written. ``models``: the model names the caller may record outcomes for. Row numbers
        count from ``first_row``."""
        summary = Summary(rows=len(rows))
        names = list(models)
        parsed: list[_Parsed] = []
        for offset, raw in enumerate(rows):
            item = parse_row(first_row + offset, raw, pseudonymize, names)
            if isinstance(item, Rejection):
                summary.rejected.append(item)
            else:
                parsed.append(item)
        with self.engine.begin() as connection:
            targets = self._resolve(connection, parsed, summary, set(names))
            self._write(connection, targets, summary, who=who, source=source)
        summary.rejected.sort(key=lambda r: r.row)
        return summary

    def _resolve(
        self,
        connection: sa.Connection,
        parsed: list[_Parsed],
        summary: Summary,
        allowed: set[str],
    ) -> list[tuple[str, _Parsed]]:
        """(prediction id, row) for every row that names a scored prediction; the rest rejected."""
        by_id = [p for p in parsed if p.prediction_id is not None]
        status: dict[str, tuple[str, str]] = {}
        ids = sorted({p.prediction_id for p in by_id if p.prediction_id})
        for chunk in _chunks(ids):
            query = sa.select(
                audit_records.c.prediction_id, audit_records.c.status, audit_records.c.model_name
            ).where(audit_records.c.prediction_id.in_(chunk))
            status.update({row[0]: (row[1], row[2]) for row in connection.execute(query)})
        targets: list[tuple[str, _Parsed]] = []
        for p in by_id:
            assert p.prediction_id is not None
            found, model = status.get(p.prediction_id, (None, ""))
            if found is None:
                summary.rejected.append(
                    Rejection(
                        p.row, "prediction_id", "no such prediction", "an audited prediction id"
                    )
                )
            elif model not in allowed:
                summary.rejected.append(
                    Rejection(
                        p.row,
                        "prediction_id",
                        "a prediction of a model this caller may not record outcomes for",
                        "one of: " + ", ".join(sorted(allowed)),
                    )
                )
            elif found != "scored":
                summary.rejected.append(
                    Rejection(
                        p.row,
                        "prediction_id",
                        "that answer carried no score",
                        "a scored prediction",
                    )
                )
            else:
                targets.append((p.prediction_id, p))
        by_patient = [p for p in parsed if p.pseudonym is not None]
        predictions: dict[tuple[str, str], list[tuple[datetime, str]]] = {}
        pseudonyms = sorted({p.pseudonym for p in by_patient if p.pseudonym})
        for chunk in _chunks(pseudonyms):
            query = sa.select(
                audit_records.c.patient_pseudonym,
                audit_records.c.model_name,
                audit_records.c.created_at,
                audit_records.c.prediction_id,
            ).where(
                audit_records.c.prediction_id.in_(patient_predictions(chunk)),
                audit_records.c.status == "scored",
            )
            for row in connection.execute(query):
                predictions.setdefault((str(row[0]), str(row[1])), []).append(
                    (as_utc(row[2]), str(row[3]))
                )
        for p in by_patient:
            assert p.pseudonym is not None and p.model is not None and p.observed_at is not None
            earliest = p.observed_at - horizon(p.model)
            matched = [
                prediction_id
                for created, prediction_id in predictions.get((p.pseudonym, p.model), [])
                if earliest <= created <= p.observed_at
            ]
            if not matched:
                summary.rejected.append(
                    Rejection(
                        p.row,
                        "patient_id",
                        f"no prediction of this model for this patient within "
                        f"{horizon(p.model).days} days before observed_at",
                        "a patient scored by the model within its horizon",
                    )
                )
            targets.extend((prediction_id, p) for prediction_id in matched)
        return targets

    def _write(
        self,
        connection: sa.Connection,
        targets: list[tuple[str, _Parsed]],
        summary: Summary,
        *,
        who: str,
        source: str,
    ) -> None:
        current: dict[str, int] = {}
        scored: dict[str, Scored] = {}
        ids = sorted({prediction_id for prediction_id, _ in targets})
        for chunk in _chunks(ids):
            # FOR UPDATE (PostgreSQL): a concurrent correction of the same prediction waits and
            # then reads this one's value, so the counts move by each change exactly once.
            query = (
                sa.select(
                    outcomes.c.prediction_id,
                    outcomes.c.outcome,
                    outcomes.c.model_name,
                    outcomes.c.model_version,
                    outcomes.c.predicted_at,
                    outcomes.c.probability,
                    outcomes.c.subgroups,
                    outcomes.c.risk_bin,
                )
                .where(outcomes.c.prediction_id.in_(chunk))
                .with_for_update()
            )
            for found in connection.execute(query):
                current[found[0]] = int(found[1])
                scored[found[0]] = Scored(*found[2:4], as_utc(found[4]), *found[5:8])
        superseded = dict(current)
        now = datetime.now(UTC)
        inserts: dict[str, dict[str, Any]] = {}
        updates: dict[str, dict[str, Any]] = {}
        history: list[dict[str, Any]] = []
        for prediction_id, p in targets:
            old = current.get(prediction_id)
            if old == p.outcome:
                summary.unchanged += 1
                continue
            values = {
                "prediction_id": prediction_id,
                "outcome": p.outcome,
                "observed_at": p.observed_at,
                "recorded_at": now,
                "recorded_by": who,
            }
            if old is None and prediction_id not in inserts:
                inserts[prediction_id] = values
                summary.recorded += 1
            elif prediction_id in inserts:  # corrected again within the same call
                inserts[prediction_id] = values
                summary.corrected += 1
            else:
                updates[prediction_id] = values
                summary.corrected += 1
            history.append(
                {
                    "prediction_id": prediction_id,
                    "old_outcome": old,
                    "new_outcome": p.outcome,
                    "changed_at": now,
                    "changed_by": who,
                    "source": source,
                }
            )
            current[prediction_id] = p.outcome
        if inserts:
            # The prediction's identity and score travel with its outcome (the audit record is
            # immutable): live validation then reads one table, no join (bench/monitoring.py).
            copied = (
                audit_records.c.prediction_id,
                audit_records.c.model_name,
                audit_records.c.model_version,
                audit_records.c.created_at,
                audit_records.c.probability,
                audit_records.c.subgroups,
            )
            for chunk in _chunks(sorted(inserts)):
                query = sa.select(*copied).where(audit_records.c.prediction_id.in_(chunk))
                for row in connection.execute(query):
                    inserts[row[0]].update(
                        model_name=row[1],
                        model_version=row[2],
                        predicted_at=as_utc(row[3]),
                        probability=row[4],
                        subgroups=row[5],
                        risk_bin=risk_bin(row[4]),
                    )
                    scored[row[0]] = Scored(
                        row[1], row[2], as_utc(row[3]), row[4], row[5], risk_bin(row[4])
                    )
            connection.execute(outcomes.insert(), list(inserts.values()))
        if updates:
            statement = (
                outcomes.update()
                .where(outcomes.c.prediction_id == sa.bindparam("target"))
                .values(
                    outcome=sa.bindparam("outcome"),
                    observed_at=sa.bindparam("observed_at"),
                    recorded_at=sa.bindparam("recorded_at"),
                    recorded_by=sa.bindparam("recorded_by"),
                )
            )
            connection.execute(
                statement,
                [
                    {**{k: v for k, v in values.items() if k != "prediction_id"}, "target": key}
                    for key, values in updates.items()
                ],
            )
        if history:
            connection.execute(outcome_history.insert(), history)
        # Live validation's counts: each prediction once, from its value before this call
        # (None: no outcome yet) to its value after it.
        add(
            connection,
            [
                (scored[key], superseded.get(key), current[key])
                for key in sorted({*inserts, *updates})
            ],
        )

    def history(self, prediction_id: str) -> list[dict[str, Any]]:
        query = (
            sa.select(outcome_history)
            .where(outcome_history.c.prediction_id == prediction_id)
            .order_by(outcome_history.c.id)
        )
        with self.engine.connect() as connection:
            return [dict(row) for row in connection.execute(query).mappings()]

    def current(self, prediction_id: str) -> int | None:
        query = sa.select(outcomes.c.outcome).where(outcomes.c.prediction_id == prediction_id)
        with self.engine.connect() as connection:
            value = connection.execute(query).scalar()
        return None if value is None else int(value)


# --- files -----------------------------------------------------------------------------------

FILE_BATCH_ROWS = 5_000
"""Rows per transaction when recording a file: memory stays bounded by this, not the file."""


class OutcomeFileError(Exception):
    """The file as a whole cannot be read (never quotes its content)."""


def _batches(path: Path) -> Iterable[list[dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    def as_rows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
        names = batch.schema.names
        unknown = [i for i, name in enumerate(names, 1) if name not in FIELDS]
        if unknown:
            # NOTE: the column is named by position: a file without a header line would put a
            # patient's identifiers in the "names".
            raise OutcomeFileError(
                f"column {unknown[0]} of the header is not an outcome field "
                f"(allowed: {', '.join(FIELDS)})"
            )
        rows: list[dict[str, Any]] = batch.to_pylist()
        return rows

    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            for batch in pq.ParquetFile(path).iter_batches(batch_size=FILE_BATCH_ROWS):
                yield as_rows(batch)
            return
        # Every column as text: identifiers keep their leading zeros; parse_row checks the rest.
        convert = pacsv.ConvertOptions(
            column_types={name: pa.string() for name in FIELDS}, strings_can_be_null=True
        )
        read = pacsv.ReadOptions(block_size=1 << 20)
        with pacsv.open_csv(path, read_options=read, convert_options=convert) as reader:
            for batch in reader:
                for start in range(0, batch.num_rows, FILE_BATCH_ROWS):
                    yield as_rows(batch.slice(start, FILE_BATCH_ROWS))
    except (pa.ArrowException, OSError) as exc:
        # NOTE: Arrow's messages can quote a row; only the kind of failure is reported.
        raise OutcomeFileError(f"cannot read the file ({type(exc).__name__})") from None


def record_file(
    path: Path,
    store: OutcomeStore,
    *,
    who: str,
    pseudonymize: Pseudonymizer,
    models: Iterable[str],
) -> Summary:
    """Record a CSV or Parquet file of outcome rows, a batch per transaction; row numbers count
    data rows from 1 (the line after a CSV header)."""
    names = list(models)
    total = Summary()
    for batch in _batches(path):
        part = store.record(
            batch,
            who=who,
            source="file",
            pseudonymize=pseudonymize,
            models=names,
            first_row=total.rows + 1,
        )
        total.rows += part.rows
        total.recorded += part.recorded
        total.corrected += part.corrected
        total.unchanged += part.unchanged
        total.rejected.extend(part.rejected)
    return total
