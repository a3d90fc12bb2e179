"""The fault battery's real surroundings: the service as a uvicorn subprocess, fresh audit stores
(an SQLite file or a PostgreSQL database created and dropped here), request bodies from real
BRFSS rows, worker RSS from /proc, a lock-holding process and a TCP proxy that can refuse.

Nothing here imports the service's internals except ``service.auth.create_key`` (the documented
way to make a key); the battery talks to the service over HTTP and to the store with SQL.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from service.auth import create_key

ROOT = Path(__file__).resolve().parents[1]
UVICORN = Path(sys.executable).with_name("uvicorn")
POSTGRES_ADMIN = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
PREDICT = "/v1/models/diabetes/predict"
BATCH = "/v1/models/diabetes/predict/batch"
CURVES = "/v1/models/diabetes/curves"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident set size of one process, MiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# Audit stores: a fresh one per scenario, read back with plain SQL.


@dataclass
class Store:
    """A fresh, empty audit store and how to read it back."""

    kind: str  # "sqlite" or "postgresql"
    url: str  # what the service gets as CLINRISK_DATABASE_URL
    path: Path | None = None  # SQLite file
    database: str | None = None  # PostgreSQL database name

    def prediction_ids(self) -> set[str]:
        if self.path is not None:
            with sqlite3.connect(self.path, timeout=60) as conn:
                return {r[0] for r in conn.execute("SELECT prediction_id FROM audit_records")}
        with psycopg.connect(admin_url(self.database)) as conn:
            rows = conn.execute("SELECT prediction_id FROM audit_records").fetchall()
            return {r[0] for r in rows}

    def wal_bytes(self) -> int:
        if self.path is None:
            return 0
        try:
            return Path(str(self.path) + "-wal").stat().st_size
        except OSError:
            return 0


def admin_url(database: str | None) -> str:
    base, _, _ = POSTGRES_ADMIN.rpartition("/")
    return f"{base}/{database or 'postgres'}"


def postgres_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        with psycopg.connect(POSTGRES_ADMIN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {POSTGRES_ADMIN} unreachable: {str(exc).strip()[:120]}"
    return None


def pg_admin(sql: str, database: str | None = None) -> None:
    with psycopg.connect(admin_url(database), autocommit=True) as conn:
        conn.execute(sql.encode())


@contextmanager
def sqlite_store(folder: Path) -> Iterator[Store]:
    path = folder / "audit.db"
    yield Store("sqlite", f"sqlite:///{path}", path=path)


@contextmanager
def postgres_store(role: str | None = None) -> Iterator[Store]:
    """A database created for this scenario and dropped after it (with its role, if any)."""
    name = f"clinrisk_fault_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    pg_admin(f'CREATE DATABASE "{name}"')
    try:
        if role is not None:
            pg_admin(f'CREATE ROLE "{role}" LOGIN')
            # The service creates its table itself, so it needs CREATE on the schema (PG 15).
            pg_admin(f'GRANT CREATE, USAGE ON SCHEMA public TO "{role}"', name)
        user = role or "postgres"
        host = POSTGRES_ADMIN.split("@", 1)[1].rpartition("/")[0]
        yield Store("postgresql", f"postgresql://{user}@{host}/{name}", database=name)
    finally:
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if role is not None:
            pg_admin(f'DROP ROLE IF EXISTS "{role}"')


# ---------------------------------------------------------------------------------------------
# The service: real uvicorn, real workers.


@dataclass
class Service:
    """``uvicorn service.main:app`` as a subprocess in its own process group."""

    folder: Path
    store: Store
    workers: int = 1
    port: int = field(default_factory=free_port)
    # Root ignores file modes; without CAP_DAC_OVERRIDE it obeys them (unwritable-store scenario).
    drop_dac_override: bool = False
    process: subprocess.Popen[bytes] | None = None
    token: str = ""

    def __post_init__(self) -> None:
        keys = self.folder / "keys.json"
        self.token = create_key(keys, "faults", ["predict", "batch", "admin"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}

    def env(self) -> dict[str, str]:
        # The caller's CLINRISK_* settings (e.g. trusted model keys) pass through; these win.
        return {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "CLINRISK_DATABASE_URL": self.store.url,
            "CLINRISK_API_KEYS_FILE": str(self.folder / "keys.json"),
            "CLINRISK_PSEUDONYM_KEY": "fault-battery-pseudonym-key",
            "CLINRISK_LOG_LEVEL": "WARNING",
        }

    def start(self, timeout: float = 90) -> float:
        """Start and wait until /health/live answers; seconds it took."""
        started = time.monotonic()
        log = (self.folder / "service.log").open("ab")
        prefix = []
        if self.drop_dac_override and os.geteuid() == 0:
            prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
        self.process = subprocess.Popen(
            [
                *prefix,
                str(UVICORN),
                "service.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env=self.env(),
            cwd=ROOT,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                print(self.log_tail(), flush=True)
                last = (self.log_tail(1) or "no output").strip()
                raise RuntimeError(f"the service exited at start: {last}")
            try:
                if httpx.get(self.url + "/health/live", timeout=2).status_code == 200:
                    if len(self.worker_pids()) >= self.workers:
                        return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        print(self.log_tail(), flush=True)
        raise RuntimeError(f"the service did not start in {timeout:.0f} s")

    def log_tail(self, lines: int = 15) -> str:
        path = self.folder / "service.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the server itself, or its spawned workers."""
        if self.process is None or self.process.poll() is not None:
            return []
        if self.workers == 1:
            return [self.process.pid]
        return [p for p in _children(self.process.pid) if "spawn_main" in _cmdline(p)]

    def rss_mb(self) -> list[float]:
        return [rss_mb(p) for p in self.worker_pids()]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(p) for p in self.worker_pids())

    def kill9(self) -> None:
        """SIGKILL the whole server (its process group: no worker survives to finish)."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            except ProcessLookupError:
                pass
        # Workers of a killed supervisor may linger in the group.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process = None


@contextmanager
def running_service(
    folder: Path, store: Store, workers: int = 1, drop_dac_override: bool = False
) -> Iterator[Service]:
    service = Service(folder, store, workers, drop_dac_override=drop_dac_override)
    try:
        service.start()
        yield service
    finally:
        service.stop()


@contextmanager
def scratch_dir(prefix: str = "clinrisk-faults-") -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Request bodies: real, different BRFSS patients.


@dataclass(frozen=True)
class Bodies:
    singles: list[bytes]
    batches: list[bytes]
    batch_size: int


_BODIES: Bodies | None = None


def real_bodies(singles: int = 2000, batches: int = 20, batch_size: int = 50) -> Bodies:
    """Bodies built from BRFSS 2015 rows (``/work/shared/data``), cached for the run."""
    global _BODIES
    if _BODIES is None:
        from training.config import load_config
        from training.datasets import LOADERS, SHARED_DATA

        config = load_config("diabetes")
        frame = LOADERS[config.loader](SHARED_DATA / config.default_data).features
        rows = frame.sample(n=singles + batches * batch_size, random_state=15).to_dict("records")
        features = [{k: v for k, v in row.items() if v == v and v is not None} for row in rows]
        single = [
            json.dumps({"patient_id": f"fault-{i}", "features": f}).encode()
            for i, f in enumerate(features[:singles])
        ]
        rest = features[singles:]
        batch = [
            json.dumps(
                {
                    "items": [
                        {"patient_id": f"fault-b{b}-{i}", "features": f}
                        for i, f in enumerate(rest[b * batch_size : (b + 1) * batch_size])
                    ]
                }
            ).encode()
            for b in range(batches)
        ]
        random.Random(15).shuffle(single)
        _BODIES = Bodies(single, batch, batch_size)
    return _BODIES


# ---------------------------------------------------------------------------------------------
# Faults from outside the service.


class TcpProxy:
    """A loopback TCP forwarder to PostgreSQL that can be stopped (connections refused, every
    open connection cut) and started again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def postgres_target() -> tuple[str, int]:
    hostport = POSTGRES_ADMIN.split("@", 1)[1].rpartition("/")[0]
    host, _, port = hostport.partition(":")
    return host, int(port or 5432)


def mount_tmpfs(folder: Path, size: str = "2m") -> str | None:
    """Mount a small tmpfs on ``folder``; None, or why it could not be mounted."""
    run = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    return None if run.returncode == 0 else (run.stderr.strip() or f"mount exited {run.returncode}")


def umount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def fill_disk(folder: Path) -> Path:
    """A file that takes every free byte of ``folder``'s filesystem."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for size in (1 << 16, 4096, 512):  # big pieces, then small ones: not a page left
            block = b"\0" * size
            try:
                while True:
                    os.write(fd, block)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def json_loads(content: bytes) -> Any:
    return json.loads(content)
