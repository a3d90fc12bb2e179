"""Traffic for the fault battery: an asyncio httpx load generator that records every acknowledged
prediction id, and a poller that sends one request per target every 100 ms whatever the earlier
ones are doing (so a worker that stops answering shows up as requests that stay unanswered)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from bench.faults_env import BATCH, PREDICT, Bodies

# Long enough to see any hang end (busy timeouts are tens of seconds), short enough to finish.
REQUEST_TIMEOUT = 90.0


@dataclass
class Outcome:
    kind: str  # "single", "batch", "live", "ready"
    phase: str
    sent: float  # time.monotonic()
    done: float | None = None
    status: int | None = None
    error: str | None = None  # transport error class name
    problem_json: bool = False
    ids: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return str(self.status) if self.status is not None else (self.error or "pending")

    def waited(self, now: float) -> float:
        return (self.done if self.done is not None else now) - self.sent


@dataclass
class Traffic:
    """Every request of a scenario, in order of sending."""

    outcomes: list[Outcome] = field(default_factory=list)
    phase: str = "before"

    def acknowledged(self) -> set[str]:
        return {i for o in self.outcomes if o.status == 200 for i in o.ids}

    def of(self, kinds: Iterable[str] = (), phase: str | None = None) -> list[Outcome]:
        wanted = set(kinds)
        return [
            o
            for o in self.outcomes
            if (not wanted or o.kind in wanted) and (phase is None or o.phase == phase)
        ]

    def statuses(self, kinds: Iterable[str] = (), phase: str | None = None) -> str:
        counts = Counter(o.label for o in self.of(kinds, phase))
        return " ".join(f"{k}x{v}" for k, v in sorted(counts.items())) or "-"

    def longest_wait(self, kinds: Iterable[str] = (), phase: str | None = None) -> float:
        now = time.monotonic()
        return max((o.waited(now) for o in self.of(kinds, phase)), default=0.0)

    def first_ok_after(self, when: float, kinds: Iterable[str] = ("single",)) -> float | None:
        """Seconds from ``when`` to the first 200 answered after it, by a request sent after it."""
        done = [
            o.done
            for o in self.of(kinds)
            if o.status == 200 and o.done is not None and o.sent >= when
        ]
        return min(done) - when if done else None

    def longest_gap(self, start: float, end: float, kinds: Iterable[str] = ("single",)) -> float:
        """Longest stretch within [start, end] in which no request of ``kinds`` got a 200."""
        marks = sorted(
            o.done
            for o in self.of(kinds)
            if o.status == 200 and o.done is not None and start <= o.done <= end
        )
        edges = [start, *marks, end]
        return max(b - a for a, b in itertools.pairwise(edges))

    def broken(self) -> list[str]:
        """Invariant breaks seen on the wire: a 5xx other than a problem+json 503."""

        def clean(o: Outcome) -> bool:  # readiness answers 503 with its own JSON
            return o.problem_json or o.kind == "ready"

        bad = Counter(
            f"{o.kind} {o.status}{'' if clean(o) else ' (not problem+json)'}"
            for o in self.outcomes
            if o.status is not None and o.status >= 500 and not (o.status == 503 and clean(o))
        )
        return [f"{k} x{v}" for k, v in sorted(bad.items())]


def _ids(kind: str, content: bytes) -> list[str]:
    body: Any = orjson.loads(content)
    if kind == "single":
        return [body["prediction_id"]]
    return [r["result"]["prediction_id"] for r in body["results"] if r.get("result")]


async def send(
    client: httpx.AsyncClient,
    traffic: Traffic,
    kind: str,
    method: str,
    url: str,
    body: bytes | None,
    headers: dict[str, str],
) -> Outcome:
    outcome = Outcome(kind, traffic.phase, time.monotonic())
    traffic.outcomes.append(outcome)
    try:
        response = await client.request(method, url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        outcome.error = type(exc).__name__
    else:
        outcome.status = response.status_code
        outcome.problem_json = response.headers.get("content-type", "").startswith(
            "application/problem+json"
        )
        if response.status_code == 200 and kind in ("single", "batch"):
            outcome.ids = _ids(kind, response.content)
    outcome.done = time.monotonic()
    return outcome


def client(connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(timeout=REQUEST_TIMEOUT, limits=limits)


class Connection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: several times cheaper per request
    than httpx, so on a 2-core machine the load generator leaves the cores to the server."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        hostport = base_url.removeprefix("http://")
        self.host, _, port = hostport.partition(":")
        self.port = int(port or 80)
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.reader, self.writer
        try:
            writer.write(
                b"POST %s HTTP/1.1\r\nHost: %s\r\n%sContent-Length: %d\r\n\r\n%s"
                % (path.encode(), self.host.encode(), self.head, len(body), body)
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    key, _, value = line.partition(":")
                    headers[key.strip().lower()] = value.strip()
            if "content-length" in headers:
                content = await reader.readexactly(int(headers["content-length"]))
            else:  # chunked (a streamed answer): not what predict sends, read it anyway
                content = b""
                while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                    content += await reader.readexactly(size)
                    await reader.readexactly(2)
                await reader.readexactly(2)
            if headers.get("connection", "").lower() == "close":
                await self.close()
            return status, headers, content
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass


async def send_raw(
    connection: Connection, traffic: Traffic, kind: str, path: str, body: bytes
) -> Outcome:
    outcome = Outcome(kind, traffic.phase, time.monotonic())
    traffic.outcomes.append(outcome)
    try:
        status, headers, content = await connection.post(path, body)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
        outcome.error = type(exc).__name__
    else:
        outcome.status = status
        outcome.problem_json = headers.get("content-type", "").startswith(
            "application/problem+json"
        )
        if status == 200:
            outcome.ids = _ids(kind, content)
    outcome.done = time.monotonic()
    return outcome


async def load(
    base_url: str,
    headers: dict[str, str],
    bodies: Bodies,
    traffic: Traffic,
    *,
    concurrency: int,
    stop: asyncio.Event,
    batch_every: int = 50,
) -> None:
    """``concurrency`` connections, each sending the next request as soon as the last one is
    answered: single predictions of different patients, every ``batch_every``-th a batch."""
    counter = itertools.count()

    async def connection() -> None:
        http = Connection(base_url, headers)
        try:
            while not stop.is_set():
                n = next(counter)
                if n % batch_every == batch_every - 1:
                    body = bodies.batches[n % len(bodies.batches)]
                    outcome = await send_raw(http, traffic, "batch", BATCH, body)
                else:
                    body = bodies.singles[n % len(bodies.singles)]
                    outcome = await send_raw(http, traffic, "single", PREDICT, body)
                if outcome.error is not None or outcome.status == 503:
                    await asyncio.sleep(0.02)  # the server is down: do not spin
        finally:
            await http.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))


@dataclass(frozen=True)
class Target:
    kind: str
    method: str
    path: str
    body: Callable[[int], bytes | None] = lambda _n: None


async def poll(
    base_url: str,
    headers: dict[str, str],
    targets: list[Target],
    traffic: Traffic,
    *,
    stop: asyncio.Event,
    interval: float = 0.1,
) -> None:
    """One request per target every ``interval`` seconds, each on its own connection, never
    waiting for the previous one; returns once ``stop`` is set and every request has ended."""
    tasks: set[asyncio.Task[Outcome]] = set()
    # Plenty of connections: requests to a stuck worker pile up instead of queueing here.
    async with client(2000) as http:
        n = 0
        next_at = time.monotonic()
        while not stop.is_set():
            for target in targets:
                task = asyncio.create_task(
                    send(
                        http,
                        traffic,
                        target.kind,
                        target.method,
                        base_url + target.path,
                        target.body(n),
                        headers,
                    )
                )
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            n += 1
            next_at += interval
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
            except TimeoutError:
                pass
        if tasks:
            await asyncio.wait(tasks)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
