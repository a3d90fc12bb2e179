"""A patient's audit records through the merged pseudonym index (migration 0009), on SQLite
and PostgreSQL: found whether merged or still pending, never lost by a merge, and backfilled
from records written before the migration."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command

from models.predictor import prediction_id
from service.audit import (
    AuditRecord,
    Pseudonymizer,
    SqlAuditStore,
    audit_patient_index,
    audit_patient_pending,
)
from service.database import _alembic_config, make_engine

PSEUDONYMIZE = Pseudonymizer(b"test-key")


def _record(patient: str | None) -> AuditRecord:
    return AuditRecord(
        prediction_id(),
        datetime.now(UTC),
        "caller",
        "cvd",
        "1.0.0",
        "0" * 64,
        PSEUDONYMIZE(patient),
        "1" * 64,
        0.1,
        "low",
        1.0,
        "batch",
    )


def _count(url: str, table: sa.Table) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            )
    finally:
        engine.dispose()


def test_records_are_found_by_patient_before_and_after_the_merge(database_url: str) -> None:
    store = SqlAuditStore(database_url, merge_rows=8)
    written: dict[str | None, list[str]] = {"a": [], "b": [], "c": [], None: []}
    try:
        for round_ in range(7):
            batch = [_record(p) for p in ("a", "b", "c", None) if round_ % 2 or p != "c"]
            store.write(batch)
            for record, patient in zip(
                batch, [p for p in ("a", "b", "c", None) if round_ % 2 or p != "c"], strict=True
            ):
                written[patient].append(record.prediction_id)
            for patient in ("a", "b", "c"):
                found = store.query(patient_pseudonym=PSEUDONYMIZE(patient), limit=1000)
                assert sorted(r["prediction_id"] for r in found) == sorted(written[patient])
        merged = _count(database_url, audit_patient_index)
        pending = _count(database_url, audit_patient_pending)
        # Merges happened, and no patient's row was lost or doubled.
        assert merged >= 8
        assert merged + pending == sum(len(written[p]) for p in ("a", "b", "c"))
    finally:
        store.dispose()


def test_the_migration_indexes_the_records_written_before_it(database_url: str) -> None:
    engine = make_engine(database_url)
    with engine.connect() as connection:
        command.upgrade(_alembic_config(connection), "0007")
        connection.commit()
    engine.dispose()
    old = [_record("a"), _record("b"), _record(None)]
    engine = make_engine(database_url)
    from service.audit import audit_records

    with engine.begin() as connection:
        connection.execute(audit_records.insert(), [r._asdict() for r in old])
    engine.dispose()
    store = SqlAuditStore(database_url)  # migrates to the head
    try:
        for patient, record in (("a", old[0]), ("b", old[1])):
            found = store.query(patient_pseudonym=PSEUDONYMIZE(patient))
            assert [r["prediction_id"] for r in found] == [record.prediction_id]
        assert _count(database_url, audit_patient_index) == 2
    finally:
        store.dispose()
