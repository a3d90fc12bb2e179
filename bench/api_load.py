"""HTTP benchmark: the real service under wrk, against a floor measured in the same run.

Starts uvicorn (same worker count for every case) for clinrisk and for the floor app
(bench/floor_app.py), then drives them with wrk from a separate process:
single predictions of the `diabetes` model with full explanations at 1, 8 and 32 connections,
batch calls of 100 and 1,000 copies of one patient, and batch calls of 1,000 real, different
BRFSS patients (40 bodies sent in turn, so nothing repeats between consecutive calls). Prints
p50/p99 latency, requests/s, patients/s and clinrisk's throughput as a fraction of the floor's.

    python bench/api_load.py [--duration 10] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from models.loader import load_artifact
from models.registry import artifact_folder
from service.auth import create_key
from service.openapi_schema import example_features

ROOT = Path(__file__).resolve().parents[1]

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
wrk.body = [[{body}]]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def uvicorn_server(app: str, workers: int, env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(url + "/docs", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


# Each request sends the next of several bodies (real, different patients in every call).
LUA_ROTATING = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
bodies = {{}}
for i, path in ipairs({{{paths}}}) do
  local f = io.open(path, "r"); bodies[i] = f:read("*a"); f:close()
end
n = 0
request = function()
  n = n % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[n])
end
"""


def real_batches(name: str, size: int, count: int, folder: Path) -> list[str]:
    """``count`` batch bodies of ``size`` different patients each, rows of the real dataset."""
    from training.config import load_config
    from training.datasets import LOADERS, SHARED_DATA

    config = load_config(name)
    frame = LOADERS[config.loader](SHARED_DATA / config.default_data).features
    rows = frame.sample(n=size * count, random_state=0).to_dict("records")
    paths = []
    for b in range(count):
        items = [
            {
                "patient_id": f"r{b * size + i}",
                "features": {k: v for k, v in row.items() if v == v and v is not None},
            }
            for i, row in enumerate(rows[b * size : (b + 1) * size])
        ]
        path = folder / f"{name}-batch-{b}.json"
        path.write_text(json.dumps({"items": items}))
        paths.append(str(path))
    return paths


def wrk(
    url: str,
    body: str,
    token: str,
    *,
    connections: int,
    duration: int,
    bodies: list[str] | None = None,
) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        if bodies:
            paths = ", ".join(f'"{p}"' for p in bodies)
            script.write(LUA_ROTATING.format(token=token, paths=paths))
        else:
            script.write(LUA.format(token=token, body=body))
    threads = min(2, connections)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            script.name,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script.name)

    def ms(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", out, re.M)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50": ms("50"),
        "p99": ms("99"),
        "non2xx": float(errors.group(1)) if errors else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")

    folder = artifact_folder(ROOT / "models", "diabetes")
    features = example_features(load_artifact(folder).manifest)
    single = json.dumps({"patient_id": "bench-1", "features": features})
    tmp = Path(tempfile.mkdtemp())
    token = create_key(tmp / "keys.json", "bench", ["predict", "batch"])
    env = {
        "CLINRISK_DATABASE_URL": os.environ.get(
            "BENCH_DATABASE_URL", f"sqlite:///{tmp / 'audit.db'}"
        ),
        "CLINRISK_API_KEYS_FILE": str(tmp / "keys.json"),
        "CLINRISK_PSEUDONYM_KEY": "bench-key",
        "CLINRISK_LOG_LEVEL": "WARNING",
        "CLINRISK_MAX_BODY_BYTES": str(64 * 1024 * 1024),
    }
    print(
        f"workers={args.workers}, duration={args.duration}s per case, "
        f"model diabetes {folder.name}, "
        f"full explanations, audit to SQLite"
    )
    results: dict[str, dict[str, float]] = {}
    with uvicorn_server("bench.floor_app:app", args.workers, {}) as floor_url:
        for c in (1, 8, 32):
            results[f"floor c={c}"] = wrk(
                floor_url + "/predict", single, token, connections=c, duration=args.duration
            )
    with uvicorn_server("service.main:app", args.workers, env) as url:
        endpoint = url + "/v1/models/diabetes/predict"
        check = httpx.post(
            endpoint,
            content=single,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        assert check.status_code == 200, check.text
        for c in (1, 8, 32):
            results[f"clinrisk c={c}"] = wrk(
                endpoint, single, token, connections=c, duration=args.duration
            )
        # Two connections per worker keep every worker busy (one sends while the other is
        # scored); with two workers and two connections, both could land on one worker.
        batch_connections = 2 * args.workers
        for size in (100, 1000):
            items = [{"patient_id": f"p{i}", "features": features} for i in range(size)]
            body = json.dumps({"items": items})
            r = wrk(
                endpoint + "/batch",
                body,
                token,
                connections=batch_connections,
                duration=args.duration,
            )
            r["patients_per_s"] = r["rps"] * size
            results[f"batch {size}"] = r
        # Real, different patients in every call: 40 bodies of 1,000 BRFSS rows, in turn.
        bodies = real_batches("diabetes", 1000, 40, tmp)
        r = wrk(
            endpoint + "/batch",
            "",
            token,
            connections=batch_connections,
            duration=args.duration,
            bodies=bodies,
        )
        r["patients_per_s"] = r["rps"] * 1000
        results["batch 1000 real"] = r

    print(f"\n{'case':<16}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'vs floor':>10}{'non-2xx':>9}")
    for c in (1, 8, 32):
        floor, ours = results[f"floor c={c}"], results[f"clinrisk c={c}"]
        for name, r in ((f"floor c={c}", floor), (f"clinrisk c={c}", ours)):
            ratio = f"{r['rps'] / floor['rps']:.0%}" if name.startswith("clinrisk") else ""
            print(
                f"{name:<16}{r['rps']:>10.0f}{r['p50']:>10.2f}{r['p99']:>10.2f}{ratio:>10}{r['non2xx']:>9.0f}"
            )
    for case in ("batch 100", "batch 1000", "batch 1000 real"):
        r = results[case]
        print(
            f"{case:<16}{r['rps']:>10.1f}{r['p50']:>10.1f}{r['p99']:>10.1f}"
            f"   patients/s {r['patients_per_s']:,.0f}  non-2xx {r['non2xx']:.0f}"
        )


if __name__ == "__main__":
    main()
