"""The audit trail: one record per prediction, in SQLite (default) or PostgreSQL.

Records hold a keyed-HMAC pseudonym of the patient id, a hash of the canonical input, the model
identity, score, tier, caller and latency: never raw feature values or identifiers. Writes are
transactional; a prediction whose record was not written is not returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hmac
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import psycopg
import sqlalchemy as sa
import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from service.database import make_engine, sqlite_path, upgrade
from service.errors import AuditUnavailable

log = structlog.get_logger("clinrisk.audit")
WORKER = f"{socket.gethostname()}:{os.getpid()}"[:128]
PROBE_SECONDS = 0.5
"""Longest wait of a readiness probe on a lock (the store's own timeout is for predictions)."""

# The table as queries see it; its DDL is owned by the migrations (service/migrations).
metadata = sa.MetaData()
audit_records = sa.Table(
    "audit_records",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("prediction_id", sa.String(36), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("caller", sa.String(64), nullable=False),
    sa.Column("model_name", sa.String(64), nullable=False, index=True),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("model_sha256", sa.String(64), nullable=False),
    sa.Column("patient_pseudonym", sa.String(64), nullable=True),
    sa.Column("input_sha256", sa.String(64), nullable=False),
    # Null for a "not_applicable" answer (issue 14): it is audited, but carries no score.
    sa.Column("probability", sa.Float, nullable=True),
    sa.Column("tier", sa.String(32), nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="scored"),
    # The manifest subgroups the input placed the patient in (issue 13; migration 0005).
    sa.Column("subgroups", sa.Text, nullable=True),
)


# A patient's predictions: the merged index plus the rows appended since the last merge
# (migration 0009 says why the pseudonym is not indexed on audit_records itself).
audit_patient_pending = sa.Table(
    "audit_patient_pending",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("patient_pseudonym", sa.String(64), nullable=False),
    sa.Column("prediction_id", sa.String(36), nullable=False),
)
audit_patient_index = sa.Table(
    "audit_patient_index",
    metadata,
    sa.Column("patient_pseudonym", sa.String(64), primary_key=True),
    sa.Column("prediction_id", sa.String(36), primary_key=True),
)
MERGE_ROWS = 50_000
"""Pending patient-index rows a writer merges at once: large enough that a merge writes each
index page once for many records (50k into 1M records: ~0.2 s), small enough that a lookup's
scan of the pending rows stays in milliseconds."""


def patient_predictions(pseudonyms: Sequence[str]) -> sa.CompoundSelect[tuple[str]]:
    """The prediction ids of the patients with these pseudonyms: merged and pending."""
    return sa.union_all(
        sa.select(audit_patient_index.c.prediction_id).where(
            audit_patient_index.c.patient_pseudonym.in_(pseudonyms)
        ),
        sa.select(audit_patient_pending.c.prediction_id).where(
            audit_patient_pending.c.patient_pseudonym.in_(pseudonyms)
        ),
    )


class AuditRecord(NamedTuple):
    """One row of ``audit_records``; field order is the insert's column order."""

    prediction_id: str
    created_at: datetime
    caller: str
    model_name: str
    model_version: str
    model_sha256: str
    patient_pseudonym: str | None
    input_sha256: str
    probability: float | None
    tier: str | None
    latency_ms: float
    channel: str
    status: str = "scored"
    """"scored" or "not_applicable" (outside the model's intended population: no score)."""
    subgroups: str | None = None
    """Comma-separated manifest subgroup keys of the input (live validation per subgroup)."""


class Pseudonymizer:
    """Keyed HMAC-SHA256 of what the audit trail may not hold in the clear: stable per key, not
    reversible without it."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __call__(self, patient_id: str | None) -> str | None:
        return self.many([patient_id])[0]

    def input_hash(self, values: dict[str, Any]) -> str:
        """Of the canonical (validated, unit-converted) input, keys sorted. Keyed because inputs
        have little entropy: a plain hash of age, sex and a few lab values could be reversed by
        trying every plausible patient."""
        return self.input_hashes([values])[0]

    def many(self, patient_ids: Sequence[str | None]) -> list[str | None]:
        """:meth:`__call__` of each id: one loop of local names for a batch (hmac.digest: the
        one-shot C path, cheaper than hmac.new(...).hexdigest() per record)."""
        key, digest = self._key, hmac.digest
        return [None if p is None else digest(key, p.encode(), "sha256").hex() for p in patient_ids]

    def input_hashes(self, inputs: Sequence[dict[str, Any]]) -> list[str]:
        """:meth:`input_hash` of each input."""
        key, digest, dumps, option = self._key, hmac.digest, orjson.dumps, orjson.OPT_SORT_KEYS
        return [digest(key, dumps(values, option=option), "sha256").hex() for values in inputs]


class WriterLock:
    """One writer at a time: across the threads of this process, and for SQLite across the
    processes (workers) that share the database file, through ``flock`` on a sibling file.

    SQLite allows one writer, and a writer that finds its lock taken sleeps in SQLite's busy
    handler (1, 2, 5, 10... ms) and may lose every retry to a busy neighbour. Writers queued
    here start the moment the previous one commits, and the checkpointer can hold them all back.
    """

    def __init__(self, path: Path | None) -> None:
        self._threads = threading.Lock()
        self._path = path
        self._fd: int | None = None

    def _descriptor(self) -> int | None:
        if self._fd is None and self._path is not None:
            with contextlib.suppress(OSError):  # an unwritable folder: threads only, for now
                self._fd = os.open(self._path, os.O_CREAT | os.O_RDWR, 0o600)
        return self._fd

    def try_hold_forever(self) -> bool:
        """Take the lock for the rest of this process's life if it is free (the kernel
        releases it when the process ends, however it ends)."""
        fd = self._descriptor()
        if fd is None:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    @contextlib.contextmanager
    def held_now(self) -> Iterator[bool]:
        """Hold the lock if nobody does (True), without waiting (False otherwise)."""
        if not self._threads.acquire(blocking=False):
            yield False
            return
        try:
            fd = self._descriptor()
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    yield False
                    return
            try:
                yield True
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    @contextlib.contextmanager
    def held(self, timeout: float) -> Iterator[None]:
        """Hold the lock, or raise ``TimeoutError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        if not self._threads.acquire(timeout=timeout):
            raise TimeoutError
        try:
            fd = self._descriptor()
            while fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError from None
                    time.sleep(0.0005)
            try:
                yield
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()


def _patients(records: list[AuditRecord]) -> list[tuple[str, str]]:
    return [(r.patient_pseudonym, r.prediction_id) for r in records if r.patient_pseudonym]


def _sqlstate(exc: BaseException) -> str | None:
    """The SQL state or SQLite error name of a database error: why, never what it was about."""
    cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    if isinstance(cause, psycopg.Error):
        return cause.sqlstate
    if isinstance(cause, sqlite3.Error):
        return getattr(cause, "sqlite_errorname", None)
    return None


class SqlAuditStore:
    """The audit store behind one interface for SQLite and PostgreSQL.

    Writes run on one writer thread, never on the event loop, and every wait is bounded by
    ``timeout_seconds``: a store that is locked, full or gone answers 503 within that time while
    the worker goes on serving health checks and everything that needs no store.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float = 5.0,
        checkpoint_seconds: float = 1.0,
        wal_limit_bytes: int = 64 * 1024 * 1024,
        merge_rows: int = MERGE_ROWS,
    ) -> None:
        self.engine = make_engine(url, timeout_seconds=timeout_seconds)
        self._url = url
        self._timeout = timeout_seconds
        self._schema_ready = False
        self._sqlite = self.engine.dialect.name == "sqlite"
        self._wal: Path | None = None
        self._checkpointing = False
        self._wal_limit = wal_limit_bytes
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if self._sqlite:
            path = sqlite_path(url)
            assert path is not None
            self._wal = path.with_name(path.name + "-wal")
        # NOTE: inserts go straight to the DB-API cursor with a prepared statement text:
        # SQLAlchemy's per-call statement handling cost ~6x the SQLite commit itself.
        names = list(AuditRecord._fields)
        placeholder = "?" if self._sqlite else "%s"
        self._insert_sql = (
            f"INSERT INTO audit_records ({', '.join(names)}) "
            f"VALUES ({', '.join(placeholder for _ in names)})"
        )
        self._pending_sql = (
            "INSERT INTO audit_patient_pending (patient_pseudonym, prediction_id) "
            f"VALUES ({placeholder}, {placeholder})"
        )
        self._appended = 0  # pending rows this process appended since it last looked
        self._merge_rows = merge_rows
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")
        self._pending: list[tuple[list[AuditRecord], asyncio.Future[None]]] = []
        self._flushing = False
        self._writing: set[asyncio.Future[None]] = set()
        path = sqlite_path(url)
        self._path = path
        self._inline: sqlite3.Connection | None = None
        self._write_lock = WriterLock(path.with_name(path.name + ".writer.lock") if path else None)
        self._writable_checked = 0.0
        self._writable = False
        self._probing = threading.Lock()
        # A store that is unwritable at start-up does not stop the service: it starts not
        # ready, answers 503, and migrates and serves once the store is back.
        with contextlib.suppress(AuditUnavailable):
            self._ensure_schema()
        if self._wal is not None:
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, args=(checkpoint_seconds,), daemon=True
            )
            self._checkpointer.start()

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        try:
            upgrade(self._url, timeout_seconds=self._timeout)
        except (SQLAlchemyError, sqlite3.Error, psycopg.Error, OSError) as exc:
            raise self._unavailable(type(exc).__name__, _sqlstate(exc)) from None
        self._schema_ready = True

    def write(self, records: list[AuditRecord]) -> None:
        """Commit ``records`` in one transaction, or raise :class:`AuditUnavailable` within the
        timeout. Blocking: call it off the event loop."""
        if not records:
            return
        rows, patients = self._rows(records), _patients(records)
        try:
            with self._write_lock.held(self._timeout):
                self._ensure_schema()
                self._insert(rows, patients)
        except TimeoutError:
            raise self._unavailable("TimeoutError", "another writer held it too long") from None
        except (SQLAlchemyError, sqlite3.Error, psycopg.Error) as exc:
            raise self._unavailable(type(exc).__name__, _sqlstate(exc)) from None

    def _rows(self, records: list[AuditRecord]) -> list[tuple[Any, ...]]:
        if not self._sqlite:
            return records  # type: ignore[return-value]
        # SQLAlchemy's SQLite DateTime text format; sqlite3's own datetime adapter is deprecated
        # from Python 3.12. A batch shares one time: formatted once, rows as plain tuples.
        texts: dict[datetime, str] = {}
        rows = []
        for r in records:
            moment = r[1]
            text = texts.get(moment)
            if text is None:
                text = texts[moment] = moment.isoformat(" ")
            rows.append((r[0], text, *r[2:]))
        return rows

    def _write_now(self, records: list[AuditRecord]) -> bool:
        """SQLite only: commit ``records`` right here, on the event loop, if that cannot wait —
        the writer lock free and SQLite's lock free (busy timeout 0); otherwise (or on any
        error) return False and let the writer thread do it with its bounded waits.

        NOTE: a commit in WAL mode with synchronous=NORMAL does not fsync and takes well under
        a millisecond; handing every group to a thread cost 10-30% of single-prediction
        throughput (two threads taking turns on the GIL), measured with bench/api_load.py.
        """
        if not self._sqlite or not self._schema_ready or self._wal_too_large():
            return False
        with self._write_lock.held_now() as held:
            if not held:
                return False
            try:
                if self._inline is None:
                    assert self._path is not None
                    self._inline = sqlite3.connect(self._path, timeout=0, check_same_thread=False)
                    for pragma in ("busy_timeout=0", "synchronous=NORMAL", "wal_autocheckpoint=0"):
                        self._inline.execute(f"PRAGMA {pragma}")
                self._inline.executemany(self._insert_sql, self._rows(records))
                self._inline.executemany(self._pending_sql, _patients(records))
                self._inline.commit()
                self._appended += len(records)
            except sqlite3.Error:
                if self._inline is not None:
                    with contextlib.suppress(sqlite3.Error):
                        self._inline.close()
                self._inline = None
                return False
        return True

    @staticmethod
    def _unavailable(error: str, cause: str | None) -> AuditUnavailable:
        # The class and SQL state say why; the message is not logged, it can quote values.
        log.warning("audit_write_failed", error=error, cause=cause)
        return AuditUnavailable(
            "The audit record could not be written, so the prediction is not returned."
        )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A DB-API cursor whose statements commit together at the end.

        A connection that failed is not reused: it may be read-only (SQLite opened it while the
        file was unwritable) or broken; the next transaction opens a fresh one.
        """
        connection = self.engine.raw_connection()
        try:
            cursor = connection.cursor()
            yield cursor
            cursor.close()
            connection.commit()
        except BaseException:
            connection.invalidate()
            raise
        finally:
            connection.close()

    def _insert(self, rows: list[tuple[Any, ...]], patients: list[tuple[str, str]]) -> None:
        with self._transaction() as cursor:
            if self._wal_too_large():
                # NOTE: a passive checkpoint never waits, so under constant writes it never
                # catches up and the log never restarts: it grew by 26 KB per prediction, 642 MB
                # in 60 s (measured). This writer holds every process's writers back (the
                # writer lock), so the truncating checkpoint finds no writer in its way; a
                # checkpointer thread waiting for that lock was starved by busy writers.
                cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            cursor.executemany(self._insert_sql, rows)
            cursor.executemany(self._pending_sql, patients)
            self._appended += len(rows)
            if self._appended >= self._merge_rows // 4:
                self._appended = 0
                self._merge_patients(cursor)

    def _merge_patients(self, cursor: Any) -> None:
        """Move the pending patient-index rows into the index, sorted, once there are
        ``merge_rows`` (default :data:`MERGE_ROWS`) of them. Runs in a write transaction: under
        the writer lock on SQLite; on PostgreSQL as one statement, so a row committed meanwhile
        by another worker is either moved or left pending, never lost."""
        cursor.execute("SELECT min(id), max(id) FROM audit_patient_pending")
        low, high = cursor.fetchone()
        if low is None or high - low + 1 < self._merge_rows:
            return
        if self._sqlite:
            cursor.execute(
                "INSERT INTO audit_patient_index (patient_pseudonym, prediction_id) "
                "SELECT patient_pseudonym, prediction_id FROM audit_patient_pending "
                "WHERE id <= ? ORDER BY 1, 2 ON CONFLICT DO NOTHING",
                (high,),
            )
            cursor.execute("DELETE FROM audit_patient_pending WHERE id <= ?", (high,))
        else:
            cursor.execute(
                "WITH moved AS (DELETE FROM audit_patient_pending WHERE id <= %s "
                "RETURNING patient_pseudonym, prediction_id) "
                "INSERT INTO audit_patient_index (patient_pseudonym, prediction_id) "
                "SELECT patient_pseudonym, prediction_id FROM moved ORDER BY 1, 2 "
                "ON CONFLICT DO NOTHING",
                (high,),
            )

    async def write_together(self, records: list[AuditRecord]) -> None:
        """:meth:`write`, shared with the other requests that arrive while a write is under way:
        one INSERT and one commit for all of them (group commit), on the writer thread.

        Each caller returns only once its own records are committed; every caller of a failed
        group gets ``AuditUnavailable``, and so does a caller whose group has not started within
        the timeout (its records are then never written). A group already being written is
        waited for, since that write is bounded by the timeout itself: the audit trail then holds
        exactly the predictions that were returned. Measured: the per-request commit was a
        quarter of a single prediction's server time at 8 concurrent connections.
        """
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._pending.append((records, done))
        if not self._flushing:
            self._flushing = True
            # The requests that reach this point in the same turn of the loop join the group.
            loop.call_soon(self._flush, loop)
        try:
            await asyncio.wait_for(asyncio.shield(done), self._timeout)
        except TimeoutError:
            if done not in self._writing:
                done.cancel()
                raise self._unavailable("TimeoutError", "the write did not start in time") from None
            await done

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        group = [(records, done) for records, done in self._pending if not done.cancelled()]
        self._pending = []
        if not group:
            self._flushing = False
            return
        rows = [record for records, _ in group for record in records]
        if self._write_now(rows):
            for _, done in group:
                done.set_result(None)
            self._flushing = False
            return
        self._writing = {done for _, done in group}
        written = loop.run_in_executor(self._writer, self.write, rows)
        written.add_done_callback(lambda result: self._flushed(loop, group, result))

    def _flushed(
        self,
        loop: asyncio.AbstractEventLoop,
        group: list[tuple[list[AuditRecord], asyncio.Future[None]]],
        result: asyncio.Future[None],
    ) -> None:
        error = result.exception()
        self._writing = set()
        for _, done in group:
            if done.done():
                continue
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(AuditUnavailable(str(getattr(error, "detail", error))))
        # Whoever arrived during that write is the next group.
        self._flush(loop)

    def accepts_writes(self) -> bool:
        """Whether a prediction could be audited now. The probe inserts an audit record and
        deletes it (a read-only, locked or revoked audit table fails) and commits this worker's
        heartbeat (a full disk or a lost connection fails), in one transaction. Checked at most
        once a second: readiness probes are unauthenticated."""
        now = time.monotonic()
        if now - self._writable_checked < 1.0 or not self._probing.acquire(blocking=False):
            return self._writable  # fresh enough, or another request is probing right now
        try:
            self._writable_checked = now
            self._ensure_schema()
            with self._write_lock.held(PROBE_SECONDS):
                self._probe()
            self._writable = True
        except (AuditUnavailable, TimeoutError, SQLAlchemyError, sqlite3.Error, psycopg.Error):
            self._writable = False
        finally:
            self._probing.release()
        return self._writable

    def _probe(self) -> None:
        created: Any = datetime.now(UTC)
        if self._sqlite:
            created = created.isoformat(" ")
        probe = AuditRecord(
            str(uuid.uuid4()), created, "probe", "-", "-", "-", None, "-", 0.0, "-", 0.0, "probe"
        )
        mark = "?" if self._sqlite else "%s"
        with self._transaction() as cursor:
            # A readiness probe answers within about a second: a held lock is "not ready" now.
            wait_ms = int(PROBE_SECONDS * 1000)
            if self._sqlite:
                cursor.execute(f"PRAGMA busy_timeout={wait_ms}")
            else:
                cursor.execute(f"SET LOCAL lock_timeout = {wait_ms}")
            cursor.execute(self._insert_sql, probe)
            cursor.execute(
                f"DELETE FROM audit_records WHERE prediction_id = {mark}", (probe.prediction_id,)
            )
            cursor.execute(
                f"INSERT INTO store_heartbeat (worker, checked_at) VALUES ({mark}, {mark}) "
                "ON CONFLICT (worker) DO UPDATE SET checked_at = excluded.checked_at",
                (WORKER, created),
            )
            if self._sqlite:
                cursor.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")

    def query(
        self,
        *,
        model_name: str | None = None,
        model_version: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        patient_pseudonym: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        query = sa.select(audit_records).order_by(audit_records.c.id)
        filters: list[tuple[object, Callable[[Any], ColumnElement[bool]]]] = [
            (model_name, lambda v: audit_records.c.model_name == v),
            (model_version, lambda v: audit_records.c.model_version == v),
            (since, lambda v: audit_records.c.created_at >= v),
            (until, lambda v: audit_records.c.created_at < v),
            (
                patient_pseudonym,
                lambda v: audit_records.c.prediction_id.in_(patient_predictions([v])),
            ),
        ]
        for value, condition in filters:
            if value is not None:
                query = query.where(condition(value))
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(query.limit(limit).offset(offset)).mappings().all()
        except SQLAlchemyError:
            raise AuditUnavailable("The audit store could not be read; try again.") from None
        # Subgroup labels (sex, age band) are for live validation, not for the audit API.
        return [{k: v for k, v in row.items() if k not in ("id", "subgroups")} for row in rows]

    def _checkpoint(self, mode: str) -> None:
        try:
            with self.engine.connect() as connection:
                connection.exec_driver_sql(f"PRAGMA wal_checkpoint({mode})")
        except SQLAlchemyError:
            pass  # a busy database is checkpointed on the next round

    def _wal_too_large(self) -> bool:
        try:
            return self._wal is not None and self._wal.stat().st_size > self._wal_limit
        except OSError:
            return False

    def _checkpoint_loop(self, every: float) -> None:
        assert self._wal is not None
        # One checkpointer for all the processes on this database: a second one running at the
        # same moment makes the other's checkpoint fail at once (SQLITE_BUSY).
        elected = WriterLock(
            self._wal.with_name(self._wal.name.replace("-wal", ".checkpoint.lock"))
        )
        while not self._stop.wait(every):
            if not self._checkpointing:
                self._checkpointing = elected.try_hold_forever()
            # Past the limit the next writer truncates the log; a passive checkpoint running at
            # that moment would make it fail (one checkpoint at a time).
            if self._checkpointing and not self._wal_too_large():
                # NOTE: alone, a passive checkpoint never caught up with constant writes: the
                # log grew by ~28 MB/s to the 64 MiB truncation, a 30-50 ms stall of every
                # writer (the p99 of single predictions). So the bulk is copied back while the
                # writers go on, then the rest under the writer lock: no frame is appended
                # meanwhile, and the next writer restarts the log from its start.
                self._checkpoint("PASSIVE")
                with contextlib.suppress(TimeoutError), self._write_lock.held(PROBE_SECONDS):
                    self._checkpoint("PASSIVE")

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._stop.set()
            self._checkpointer.join()
            if self._checkpointing:
                self._checkpoint("TRUNCATE")
        self._writer.shutdown(wait=True)
        if self._inline is not None:
            self._inline.close()
        self.engine.dispose()
