"""The audit database: engines with bounded waits, and the schema, migrated once under a lock.

Every wait on the database is bounded by one timeout (``CLINRISK_AUDIT_TIMEOUT_SECONDS``): the
SQLite busy handler, PostgreSQL's connect, lock and statement timeouts, and the wait for a pooled
connection. A store that is locked or gone therefore costs a request that many seconds and a
clean 503, never a frozen worker.

The schema belongs to Alembic (``service/migrations``). :func:`upgrade` runs at every start-up and
by ``clinrisk db upgrade``; concurrent callers (uvicorn workers starting together) take one lock,
so exactly one of them migrates and the others find the schema at head.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection, Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# An arbitrary constant: the PostgreSQL advisory lock that serialises clinrisk's migrations.
MIGRATION_LOCK_ID = 0x636C696E7269736B


def sqlite_path(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def _private_file(path: Path) -> None:
    """Create the database file owner-only before SQLite does: SQLite gives its -wal and -shm
    files the database file's permissions, so the audit trail is never world-readable.

    Only when the file does not exist yet: closing any descriptor of an open database file drops
    the process's POSIX locks on it, and SQLite's locking with them (measured: two writer
    processes corrupted the database within seconds).
    """
    if path.exists():
        return
    # An unwritable place fails here quietly and at connect loudly (503, not ready), and the
    # next connection, once the store is back, creates the file.
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))


def make_engine(url: str, *, timeout_seconds: float = 5.0) -> Engine:
    path = sqlite_path(url)
    if path is not None:

        def connect() -> sqlite3.Connection:
            _private_file(path)
            # NOTE: a fresh connection per pool slot; a connection that failed a write is
            # invalidated by the store, so one opened while the file was unwritable (SQLite then
            # falls back to read-only) does not outlive the fault.
            return sqlite3.connect(path, timeout=timeout_seconds, check_same_thread=False)

        engine = sa.create_engine(
            "sqlite://",
            creator=connect,
            poolclass=sa.pool.QueuePool,
            pool_timeout=timeout_seconds,
            hide_parameters=True,
        )
        busy_ms = int(timeout_seconds * 1000)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # 8 KiB pages and a 16 MiB page cache (a new database only takes the page size):
            # inserting 1,000 records into 150k took 35 ms with 4 KiB pages and 2 MiB of cache,
            # 15-17 ms like this (the patient-pseudonym index takes random inserts).
            cursor.execute("PRAGMA page_size=8192")
            cursor.execute("PRAGMA cache_size=-16384")
            # WAL lets readers run beside the writer; the busy timeout makes a writer that finds
            # the lock taken (another worker) wait, for at most the audit timeout.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            # Checkpoints (which fsync) run in SqlAuditStore's background thread, not inside a
            # request's commit: on this machine they stalled the event loop for 20-40 ms.
            cursor.execute("PRAGMA wal_autocheckpoint=0")
            # After a checkpoint resets the log, SQLite truncates the file to this size.
            cursor.execute("PRAGMA journal_size_limit=16777216")
            cursor.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    timeout_ms = int(timeout_seconds * 1000)
    return sa.create_engine(
        url,
        pool_size=8,
        max_overflow=16,
        pool_pre_ping=True,
        pool_timeout=timeout_seconds,
        # NOTE: SQLAlchemy puts bound parameters (pseudonyms, filter values) into the text of
        # its exceptions; nothing a request sent may reach a log.
        hide_parameters=True,
        connect_args={
            "connect_timeout": max(1, round(timeout_seconds)),
            "options": f"-c lock_timeout={timeout_ms} -c statement_timeout={timeout_ms}",
        },
    )


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@contextlib.contextmanager
def _migration_lock(engine: Engine, url: str) -> Iterator[Connection]:
    path = sqlite_path(url)
    if path is not None:
        with (path.parent / f"{path.name}.migrate.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with engine.connect() as connection:
                    yield connection
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        connection.commit()
        try:
            yield connection
        finally:
            connection.execute(sa.text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()


def upgrade(url: str, *, timeout_seconds: float = 5.0) -> str | None:
    """Bring the audit database to the newest schema; returns the revision it is at."""
    engine = make_engine(url, timeout_seconds=timeout_seconds)
    try:
        with engine.connect() as connection:
            # The common case (a worker starting on a migrated store) reads and takes no lock.
            revision = current_revision(connection)
            if revision == head_revision():
                return revision
        with _migration_lock(engine, url) as connection:
            command.upgrade(_alembic_config(connection), "head")
            connection.commit()
            return current_revision(connection)
    finally:
        engine.dispose()


def head_revision() -> str | None:
    """The newest schema revision the migrations define."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()
