"""The fault battery's scenarios. Each one starts the real service on a fresh store, does one
thing to it from outside, and records figures and invariant breaks in a :class:`Results`."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.faults_env import (
    CURVES,
    PREDICT,
    ROOT,
    Service,
    Store,
    TcpProxy,
    admin_url,
    fill_disk,
    mount_tmpfs,
    pg_admin,
    postgres_store,
    postgres_target,
    real_bodies,
    rss_mb,
    running_service,
    scratch_dir,
    sqlite_store,
    umount,
)
from bench.faults_load import Target, Traffic, load, percentile, poll, send

RECOVERY_TIMEOUT = 60.0  # a worker that gives no 200 this long after a fault ends never recovered
MiB = 1024 * 1024
SETTLE_SECONDS = 5.0


@dataclass
class Results:
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)  # case, figure, value
    breaks: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def case(self, scenario: str, store: str, workers: int | None = None) -> Case:
        name = f"{scenario} {store}" + (f" w={workers}" if workers else "")
        print(f"\n== {name}", flush=True)
        return Case(self, name)


@dataclass
class Case:
    results: Results
    name: str

    def figure(self, label: str, value: object) -> None:
        text = f"{value:.2f}" if isinstance(value, float) else str(value)
        self.results.rows.append((self.name, label, text, ""))
        print(f"   {label:<54} {text}", flush=True)

    def fail(self, message: str) -> None:
        self.results.breaks.append(f"{self.name}: {message}")
        self.results.rows.append((self.name, "INVARIANT BROKEN", message, "!"))
        print(f"   !! INVARIANT BROKEN: {message}", flush=True)

    def skip(self, reason: str) -> None:
        self.results.skipped.append(f"{self.name}: {reason}")
        self.results.rows.append((self.name, "skipped", reason, ""))
        print(f"   skipped: {reason}", flush=True)


@contextmanager
def store_for(kind: str, folder: Path, role: str | None = None) -> Iterator[Store]:
    if kind == "sqlite":
        with sqlite_store(folder) as store:
            yield store
    else:
        with postgres_store(role) as store:
            yield store


def reconcile(case: Case, traffic: Traffic, store: Store, until: float | None = None) -> None:
    """Every prediction the service acknowledged (answered 200) must be in ``audit_records``.

    Read once right after the traffic ends; ids not there are read again after
    :data:`SETTLE_SECONDS`: late ones are reported (a commit that was not visible when its
    prediction was answered), only ids still missing then break the invariant."""
    acknowledged = traffic.acknowledged()
    audited = store.prediction_ids()
    missing = acknowledged - audited
    case.figure(
        "acknowledged / audited / missing",
        f"{len(acknowledged)} / {len(audited)} / {len(missing)}",
    )
    if until is not None:
        before = {
            i
            for o in traffic.outcomes
            if o.status == 200 and o.done is not None and o.done <= until
            for i in o.ids
        }
        case.figure(
            "acknowledged before the fault / missing", f"{len(before)} / {len(before - audited)}"
        )
    if missing:
        end = max(o.done for o in traffic.outcomes if o.done is not None)
        when = [o.done for o in traffic.outcomes if o.done is not None and set(o.ids) & missing]
        case.figure(
            "missing ones were answered at (s before the read)",
            f"{end - min(when):.2f} .. {end - max(when):.2f} before the traffic ended",
        )
        time.sleep(SETTLE_SECONDS)
        lost = missing - store.prediction_ids()
        case.figure(
            f"? not visible at once, there {SETTLE_SECONDS:.0f} s later", len(missing - lost)
        )
        if lost:
            case.fail(f"{len(lost)} acknowledged predictions are not in the audit store")
    for message in traffic.broken():
        case.fail(f"server error: {message}")


def _rss(service: Service) -> str:
    return " + ".join(f"{v:.0f}" for v in service.rss_mb()) + " MiB"


async def _warm_up(service: Service, traffic: Traffic, n: int = 20) -> None:
    bodies = real_bodies()
    async with httpx.AsyncClient(timeout=30) as http:
        for i in range(n):
            await send(
                http,
                traffic,
                "single",
                "POST",
                service.url + PREDICT,
                bodies.singles[i],
                service.headers,
            )


# ---------------------------------------------------------------------------------------------
# 1. load


def scenario_load(results: Results, kind: str, workers: int, seconds: float) -> None:
    case = results.case("load", kind, workers)
    with ExitStack() as stack:
        folder = stack.enter_context(scratch_dir())
        store = stack.enter_context(store_for(kind, folder))
        service = stack.enter_context(running_service(folder, store, workers))
        bodies = real_bodies()
        traffic = Traffic(phase="warmup")
        asyncio.run(_warm_up(service, traffic))
        rss_before = _rss(service)
        wal_peak = 0
        sampling = threading.Event()

        def sample_wal() -> None:
            nonlocal wal_peak
            while not sampling.wait(0.1):
                wal_peak = max(wal_peak, store.wal_bytes())

        sampler = threading.Thread(target=sample_wal, daemon=True)
        sampler.start()

        async def run() -> float:
            stop = asyncio.Event()
            traffic.phase = "load"
            started = time.monotonic()
            task = asyncio.create_task(
                load(service.url, service.headers, bodies, traffic, concurrency=32, stop=stop)
            )
            await asyncio.sleep(seconds)
            stop.set()
            await task
            return time.monotonic() - started

        server_cpu = service.cpu_seconds()
        client_cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
        elapsed = asyncio.run(run())
        server_cpu = service.cpu_seconds() - server_cpu
        client_cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - client_cpu
        wal_end = store.wal_bytes()
        wal_peak = max(wal_peak, wal_end)
        sampling.set()
        sampler.join()
        singles = [o for o in traffic.of(["single"], "load") if o.status == 200]
        batches = [o for o in traffic.of(["batch"], "load") if o.status == 200]
        latencies = [(o.done or 0) - o.sent for o in singles]
        patients = len(singles) + sum(len(o.ids) for o in batches)
        case.figure("requests (single / batch of 50)", f"{len(singles)} / {len(batches)}")
        case.figure("statuses", traffic.statuses(phase="load"))
        case.figure(
            "throughput req/s (patients/s)",
            f"{(len(singles) + len(batches)) / elapsed:.0f} ({patients / elapsed:.0f})",
        )
        case.figure(
            "single p50 / p99 ms",
            f"{percentile(latencies, 0.5) * 1000:.1f} / {percentile(latencies, 0.99) * 1000:.1f}",
        )
        case.figure(
            "CPU s: service / load generator",
            f"{server_cpu:.0f} / {client_cpu:.0f} of {elapsed * (os.cpu_count() or 1):.0f}",
        )
        case.figure("worker RSS before -> after", f"{rss_before} -> {_rss(service)}")
        if kind == "sqlite":
            case.figure(
                "WAL at end of load / peak during (MiB)",
                f"{wal_end / MiB:.1f} / {wal_peak / MiB:.1f}",
            )
        reconcile(case, traffic, store)


# ---------------------------------------------------------------------------------------------
# 2. kill -9 under load


def scenario_kill(results: Results, kind: str, workers: int) -> None:
    what = "the whole server, restarted" if workers == 1 else "one worker of two"
    case = results.case("kill -9", kind, workers)
    case.figure("killed", what)
    with ExitStack() as stack:
        folder = stack.enter_context(scratch_dir())
        store = stack.enter_context(store_for(kind, folder))
        service = Service(folder, store, workers)
        stack.callback(service.stop)
        service.start()
        bodies = real_bodies()
        traffic = Traffic(phase="before")

        async def run() -> tuple[float, float | None, float | None]:
            stop = asyncio.Event()
            task = asyncio.create_task(
                load(service.url, service.headers, bodies, traffic, concurrency=32, stop=stop)
            )
            await asyncio.sleep(8)
            killed_at = time.monotonic()
            traffic.phase = "after kill"
            respawned: float | None = None
            if workers == 1:
                await asyncio.to_thread(service.kill9)
                await asyncio.to_thread(service.start)
                respawned = time.monotonic() - killed_at
            else:
                victim = service.worker_pids()[0]
                os.kill(victim, signal.SIGKILL)
                while time.monotonic() - killed_at < RECOVERY_TIMEOUT:
                    pids = service.worker_pids()
                    if len(pids) == workers and victim not in pids:
                        respawned = time.monotonic() - killed_at
                        break
                    await asyncio.sleep(0.05)
            while (
                traffic.first_ok_after(killed_at) is None
                and time.monotonic() - killed_at < RECOVERY_TIMEOUT
            ):
                await asyncio.sleep(0.05)
            await asyncio.sleep(5)
            stop.set()
            await task
            return killed_at, respawned, traffic.first_ok_after(killed_at)

        killed_at, respawned, answered = asyncio.run(run())
        case.figure("statuses after the kill", traffic.statuses(phase="after kill"))
        if workers == 1:
            case.figure("s until restarted server is up", respawned)
        else:
            case.figure("s until the replacement worker exists", respawned or "never")
            end = time.monotonic()
            case.figure(
                "longest gap without a 200 after the kill s", traffic.longest_gap(killed_at, end)
            )
        case.figure(
            "s from kill to the next 200 predict", answered if answered is not None else "never"
        )
        if answered is None:
            case.fail(f"no 200 within {RECOVERY_TIMEOUT:.0f} s of the kill")
        reconcile(case, traffic, store, until=killed_at)


# ---------------------------------------------------------------------------------------------
# 3. and 4.: faults applied while a poller sends live, ready and a predict every 100 ms


def _poll_targets(n_bodies: int) -> list[Target]:
    bodies = real_bodies()
    return [
        Target("live", "GET", "/health/live"),
        Target("ready", "GET", "/health/ready"),
        Target("single", "POST", PREDICT, lambda n: bodies.singles[n % n_bodies]),
    ]


async def _during_fault(
    case: Case,
    service: Service,
    traffic: Traffic,
    apply: Callable[[], Awaitable[None]],
    restore: Callable[[], Awaitable[None]],
    *,
    extra_load: int = 0,
) -> tuple[float, float]:
    """Poll before (1 s), during (``apply`` .. ``restore``) and after the fault, until the first
    200 predict after it (or :data:`RECOVERY_TIMEOUT`); report what each phase saw."""
    stop = asyncio.Event()
    poller = asyncio.create_task(
        poll(
            service.url,
            service.headers,
            _poll_targets(len(real_bodies().singles)),
            traffic,
            stop=stop,
        )
    )
    await asyncio.sleep(1)
    traffic.phase = "fault"
    fault_at = time.monotonic()
    load_stop = asyncio.Event()
    loader = None
    if extra_load:
        loader = asyncio.create_task(
            load(
                service.url,
                service.headers,
                real_bodies(),
                traffic,
                concurrency=extra_load,
                stop=load_stop,
                batch_every=10**9,
            )
        )
    await apply()
    load_stop.set()
    await restore()
    restored_at = time.monotonic()
    traffic.phase = "after"
    while (
        traffic.first_ok_after(restored_at) is None
        and time.monotonic() - restored_at < RECOVERY_TIMEOUT
    ):
        await asyncio.sleep(0.05)
    await asyncio.sleep(1)
    stop.set()
    await poller
    if loader is not None:
        await loader
    case.figure("fault lasted s", restored_at - fault_at)
    for kind in ("single", "ready", "live"):
        case.figure(f"{kind}: statuses during the fault", traffic.statuses([kind], "fault"))
    case.figure(
        "longest unanswered request s (live / ready / predict)",
        " / ".join(f"{traffic.longest_wait([k]):.2f}" for k in ("live", "ready", "single")),
    )
    case.figure("statuses after the fault", traffic.statuses(phase="after"))
    answered = traffic.first_ok_after(restored_at)
    case.figure(
        "s from the fault's end to the first 200 predict",
        answered if answered is not None else "never",
    )
    if answered is None:
        case.fail(f"no 200 predict within {RECOVERY_TIMEOUT:.0f} s after the fault ended")
    return fault_at, restored_at


def scenario_lock(results: Results, kind: str, workers: int) -> None:
    seconds = 40.0 if kind == "sqlite" else 15.0
    case = results.case("write lock held", kind, workers)
    case.figure(
        "lock",
        f"BEGIN EXCLUSIVE for {seconds:.0f} s"
        if kind == "sqlite"
        else f"LOCK TABLE audit_records IN ACCESS EXCLUSIVE MODE for {seconds:.0f} s",
    )
    with ExitStack() as stack:
        folder = stack.enter_context(scratch_dir())
        store = stack.enter_context(store_for(kind, folder))
        service = stack.enter_context(running_service(folder, store, workers))
        traffic = Traffic()
        asyncio.run(_warm_up(service, traffic))
        target = str(store.path) if store.path is not None else admin_url(store.database)
        holder: list[subprocess.Popen[str]] = []

        async def apply() -> None:
            process = subprocess.Popen(
                [sys.executable, "-c", _HOLDER, store.kind, target, str(seconds)],
                stdout=subprocess.PIPE,
                text=True,
            )
            holder.append(process)
            stack.callback(_end, process)  # killing it releases the lock
            assert process.stdout is not None
            line = await asyncio.to_thread(process.stdout.readline)
            if line.strip() != "locked":
                raise RuntimeError(f"the lock holder did not take the lock: {line!r}")

        async def restore() -> None:
            out = holder[0].stdout
            assert out is not None
            await asyncio.to_thread(out.readline)  # "released", after `seconds`

        asyncio.run(_during_fault(case, service, traffic, apply, restore))
        reconcile(case, traffic, store)


_HOLDER = r"""
import sys, time
kind, target, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
if kind == "sqlite":
    import sqlite3
    conn = sqlite3.connect(target, isolation_level=None, timeout=60)
    conn.execute("BEGIN EXCLUSIVE")
else:
    import psycopg
    conn = psycopg.connect(target)
    conn.execute("LOCK TABLE audit_records IN ACCESS EXCLUSIVE MODE")
print("locked", flush=True)
time.sleep(seconds)
conn.execute("COMMIT") if kind == "sqlite" else conn.commit()
conn.close()
print("released", flush=True)
"""


def _end(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


def scenario_revoke(results: Results, workers: int, fault_seconds: float) -> None:
    case = results.case("revoked insert", "postgresql", workers)
    role = f"clinrisk_fault_{os.getpid()}"
    case.figure(
        "fault", f"REVOKE INSERT ON audit_records FROM the service's role, {fault_seconds:.0f} s"
    )
    with ExitStack() as stack:
        folder = stack.enter_context(scratch_dir())
        store = stack.enter_context(store_for("postgresql", folder, role=role))
        service = stack.enter_context(running_service(folder, store, workers))
        traffic = Traffic()
        asyncio.run(_warm_up(service, traffic))
        database = store.database

        def grant() -> None:
            pg_admin(f'GRANT INSERT ON audit_records TO "{role}"', database)

        stack.callback(grant)  # also when the scenario fails half-way

        async def apply() -> None:
            await asyncio.to_thread(
                pg_admin, f'REVOKE INSERT ON audit_records FROM "{role}"', database
            )
            await asyncio.sleep(fault_seconds)

        async def restore() -> None:
            await asyncio.to_thread(grant)

        asyncio.run(_during_fault(case, service, traffic, apply, restore))
        reconcile(case, traffic, store)


def scenario_refused(results: Results, workers: int, fault_seconds: float) -> None:
    case = results.case("connections refused", "postgresql", workers)
    case.figure(
        "fault", f"the service's TCP path to PostgreSQL closed and refusing, {fault_seconds:.0f} s"
    )
    with ExitStack() as stack:
        folder = stack.enter_context(scratch_dir())
        real = stack.enter_context(store_for("postgresql", folder))
        proxy = TcpProxy(postgres_target())
        proxy.start()
        stack.callback(proxy.stop)
        host = f"{postgres_target()[0]}:{postgres_target()[1]}"
        store = Store(
            "postgresql", real.url.replace(host, f"127.0.0.1:{proxy.port}"), database=real.database
        )
        service = stack.enter_context(running_service(folder, store, workers))
        traffic = Traffic()
        asyncio.run(_warm_up(service, traffic))

        async def apply() -> None:
            proxy.stop()
            await asyncio.sleep(fault_seconds)

        async def restore() -> None:
            proxy.start()

        asyncio.run(_during_fault(case, service, traffic, apply, restore))
        reconcile(case, traffic, store)


def scenario_unwritable(results: Results, workers: int, fault_seconds: float) -> None:
    case = results.case("unwritable store", "sqlite", workers)
    case.figure(
        "fault",
        f"chmod a-w on the db folder and files, {fault_seconds:.0f} s "
        "(service without CAP_DAC_OVERRIDE so root obeys modes)",
    )
    with ExitStack() as stack:
        folder = stack.enter_context(scratch_dir())
        db_dir = folder / "db"
        db_dir.mkdir()
        store = stack.enter_context(store_for("sqlite", db_dir))
        service = stack.enter_context(
            running_service(folder, store, workers, drop_dac_override=True)
        )
        traffic = Traffic()
        asyncio.run(_warm_up(service, traffic))

        def chmod(writable: bool) -> None:
            for path in db_dir.iterdir():
                path.chmod(0o644 if writable else 0o444)
            db_dir.chmod(0o755 if writable else 0o555)

        stack.callback(chmod, True)

        async def apply() -> None:
            chmod(False)
            await asyncio.sleep(fault_seconds)

        async def restore() -> None:
            chmod(True)

        asyncio.run(_during_fault(case, service, traffic, apply, restore))
        reconcile(case, traffic, store)


def scenario_disk_full(results: Results, workers: int, fault_seconds: float) -> None:
    case = results.case("disk full", "sqlite", workers)
    with ExitStack() as stack:
        folder = stack.enter_context(scratch_dir())
        mnt = folder / "tmpfs"
        mnt.mkdir()
        why = mount_tmpfs(mnt, "2m")
        if why is not None:
            case.skip(f"cannot mount a tmpfs ({why})")
            return
        stack.callback(umount, mnt)
        case.figure(
            "fault",
            f"SQLite on a 2 MiB tmpfs filled to the last byte, "
            f"{fault_seconds:.0f} s, 4 extra connections of predictions",
        )
        store = stack.enter_context(store_for("sqlite", mnt))
        service = stack.enter_context(running_service(folder, store, workers))
        traffic = Traffic()
        asyncio.run(_warm_up(service, traffic))
        filler: list[Path] = []

        async def apply() -> None:
            filler.append(await asyncio.to_thread(fill_disk, mnt))
            await asyncio.sleep(fault_seconds)

        async def restore() -> None:
            filler[0].unlink()

        asyncio.run(_during_fault(case, service, traffic, apply, restore, extra_load=4))
        reconcile(case, traffic, store)


# ---------------------------------------------------------------------------------------------
# 5. bodies


def send_large(
    port: int, path: str, token: str | None, total: int, *, chunked: bool, timeout: float = 120
) -> tuple[str, int, float]:
    """POST ``total`` bytes over a raw socket, reading the answer while sending: the status (or
    why there was none), the body bytes sent before the answer came, and the seconds it took."""
    headers = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if token:
        headers.append(f"Authorization: Bearer {token}")
    headers.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}")
    piece = b"a" * 65536
    frame = (b"%x\r\n" % len(piece)) + piece + b"\r\n" if chunked else piece
    started = time.monotonic()
    sent = 0
    answer = b""
    pending = memoryview(b"")
    finished = False
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
        sock.setblocking(False)
        try:
            while time.monotonic() - started < timeout:
                writing = not finished
                readable, writable, _ = select.select([sock], [sock] if writing else [], [], 1.0)
                if readable:
                    data = sock.recv(65536)
                    if not data:
                        break
                    answer += data
                    if b"\r\n" in answer:
                        break
                if writable and writing:
                    if not pending:
                        if sent >= total:
                            pending = memoryview(b"0\r\n\r\n" if chunked else b"")
                            finished = True
                        else:
                            pending = memoryview(frame)
                            sent += len(piece)
                    if pending:
                        pending = pending[sock.send(pending) :]
        except OSError as exc:
            try:
                answer += sock.recv(65536)
            except OSError:
                pass
            if b"\r\n" not in answer:
                return type(exc).__name__, sent, time.monotonic() - started
    elapsed = time.monotonic() - started
    match = re.match(rb"HTTP/1\.1 (\d{3})", answer)
    return (match.group(1).decode() if match else "no answer"), sent, elapsed


def scenario_bodies(results: Results, kind: str, workers: int) -> None:
    case = results.case("bodies", kind, workers)
    total = 500 * 1000 * 1000
    with ExitStack() as stack:
        folder = stack.enter_context(scratch_dir())
        store = stack.enter_context(store_for(kind, folder))
        service = stack.enter_context(running_service(folder, store, workers))
        asyncio.run(_warm_up(service, Traffic()))
        before = service.rss_mb()
        for chunked in (True, False):
            for key in (False, True):
                for path in (CURVES, PREDICT):
                    if not chunked and path == CURVES:
                        continue
                    status, sent, seconds = send_large(
                        service.port,
                        path,
                        service.token if key else None,
                        total,
                        chunked=chunked,
                    )
                    label = (
                        f"{'chunked 500 MB' if chunked else 'Content-Length 500 MB'} "
                        f"{'key' if key else 'no key'} {path.rsplit('/', 1)[-1]}"
                    )
                    case.figure(
                        label,
                        f"{status}, answered after {sent / MiB:.1f} MiB sent, {seconds:.2f} s",
                    )
                    if status.startswith("5"):
                        case.fail(f"{label}: {status}")
        after = service.rss_mb()
        case.figure("worker RSS before -> after", f"{_fmt(before)} -> {_fmt(after)}")
        growth = max((a - b for a, b in zip(after, before, strict=False)), default=0.0)
        if growth > 50:
            case.fail(f"worker RSS grew {growth:.0f} MiB (bound: 50)")
        if not service.worker_pids():
            case.fail("the server died")


def _fmt(values: list[float]) -> str:
    return " + ".join(f"{v:.0f}" for v in values) + " MiB"


# ---------------------------------------------------------------------------------------------
# 6. fuzz


def scenario_fuzz(results: Results, kind: str, workers: int, examples: int) -> None:
    case = results.case("fuzz (schemathesis, every check)", kind, workers)
    config = ROOT / "tests" / "service" / "schemathesis.toml"
    with ExitStack() as stack:
        folder = stack.enter_context(scratch_dir())
        store = stack.enter_context(store_for(kind, folder))
        service = stack.enter_context(running_service(folder, store, workers))
        before = rss_mb(service.worker_pids()[0])
        started = time.monotonic()
        run = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "--no-color",
                "--config-file",
                str(config),
                "run",
                f"{service.url}/openapi.json",
                "--header",
                f"Authorization: Bearer {service.token}",
                "--max-examples",
                str(examples),
                "--seed",
                "20261129",
                "--workers",
                "1",
                "--report-dir",
                str(folder / "report"),
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=folder,
            timeout=1800,
        )
        out = run.stdout
        case.figure("seconds", time.monotonic() - started)
        selected = re.search(r"Selected: (\S+)", out)
        tested = re.search(r"Tested: (\d+)", out)
        cases = re.search(r"Test cases:\s*\n\s+(.+)", out)
        failures = re.search(r"Failures:\s*\n((?:\s+.+\n)+)", out)
        case.figure(
            "operations selected / tested",
            f"{selected.group(1) if selected else '?'} / {tested.group(1) if tested else '?'}",
        )
        case.figure("test cases", cases.group(1).strip() if cases else "(not in output)")
        case.figure(
            "failures",
            "; ".join(x.strip() for x in failures.group(1).splitlines()) if failures else "none",
        )
        case.figure("summary", (out.strip().splitlines() or ["(no output)"])[-1])
        case.figure(
            "worker RSS before -> after",
            f"{before:.0f} -> {rss_mb(service.worker_pids()[0]):.0f} MiB",
        )
        if run.returncode != 0:
            details = out[out.find("=== FAILURES") :] if "=== FAILURES" in out else out[-3000:]
            print(details[:6000], run.stderr[-2000:], sep="\n", flush=True)
            case.fail(f"schemathesis exited {run.returncode}")
