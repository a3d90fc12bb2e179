"""Group commit: concurrent single predictions share INSERTs and commits, none is lost, and a
failed group fails every request in it (real SQLite and PostgreSQL stores)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from service.audit import AuditRecord, SqlAuditStore
from service.database import upgrade
from service.errors import AuditUnavailable


class CountingStore(SqlAuditStore):
    """A real store that also counts its transactions (on the event loop or the writer
    thread)."""

    transactions = 0

    def write(self, records: list[AuditRecord]) -> None:
        self.transactions += 1
        super().write(records)

    def _write_now(self, records: list[AuditRecord]) -> bool:
        written = super()._write_now(records)
        self.transactions += written
        return written


def _record(prediction_id: str | None = None) -> AuditRecord:
    return AuditRecord(
        prediction_id=prediction_id or str(uuid.uuid4()),
        created_at=datetime.now(UTC),
        caller="test",
        model_name="cvd",
        model_version="1.1.0",
        model_sha256="0" * 64,
        patient_pseudonym=None,
        input_sha256="1" * 64,
        probability=0.1,
        tier="low",
        latency_ms=1.0,
        channel="single",
    )


async def _write_concurrently(store: SqlAuditStore, records: list[AuditRecord]) -> list[object]:
    return await asyncio.gather(
        *(store.write_together([r]) for r in records), return_exceptions=True
    )


@pytest.fixture
def database_url(database_url: str) -> str:
    upgrade(database_url)
    return database_url


def test_concurrent_writes_share_one_commit_and_all_land(database_url: str) -> None:
    store = CountingStore(database_url)
    records = [_record() for _ in range(20)]
    try:
        outcomes = asyncio.run(_write_concurrently(store, records))

        assert outcomes == [None] * 20
        assert store.transactions == 1
        stored = {r["prediction_id"] for r in store.query(limit=100)}
        assert stored == {r.prediction_id for r in records}
    finally:
        store.dispose()


def test_a_failed_group_fails_every_write_in_it(database_url: str) -> None:
    store = SqlAuditStore(database_url)
    duplicate = str(uuid.uuid4())
    try:
        store.write([_record(duplicate)])
        records = [_record() for _ in range(5)] + [_record(duplicate)]

        outcomes = asyncio.run(_write_concurrently(store, records))

        assert all(isinstance(o, AuditUnavailable) for o in outcomes)
        assert {r["prediction_id"] for r in store.query(limit=100)} == {duplicate}
    finally:
        store.dispose()


@pytest.mark.parametrize("n", [1, 3])
def test_sequential_writes_each_commit(database_url: str, n: int) -> None:
    store = CountingStore(database_url)
    try:
        for _ in range(n):
            asyncio.run(store.write_together([_record()]))
        assert store.transactions == n
        assert len(store.query(limit=100)) == n
    finally:
        store.dispose()
