"""Issue 13 measures: live validation over 1M audited predictions with outcomes on PostgreSQL
(target < 1 s), and recording 100k outcomes from a file (time and peak memory).

    .venv/bin/python bench/monitoring.py [--predictions 1000000] [--outcomes 100000]
        [--url postgresql://postgres@127.0.0.1:5432/clinrisk_bench] [--sqlite]

The database (created if missing, never the tests' ``test`` database: their fixtures drop every
table) is filled with synthetic audit records of the shipped cvd version: probabilities from a
Beta distribution around the model's test prevalence, outcomes drawn from them, subgroup labels
from the manifest's subgroups (random, with membership-style combinations). The live-validation
report is computed with :func:`service.monitoring.report` (what the API serves), cold then warm,
from the outcome rows (``from_rows``, as before migration 0010) and from the counts the service
keeps (filled by :func:`service.outcome_counts.add`, its own code), interleaved.
The outcome file (CSV, 90% by prediction id, 10% by patient id + model + time) is recorded by a
fresh ``clinrisk outcomes record`` process, so its peak RSS is its own. Figures only.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.applicability import subgroup_key  # noqa: E402
from models.loader import load_artifact  # noqa: E402
from models.manifest import Manifest  # noqa: E402
from models.registry import artifact_folder  # noqa: E402
from service.audit import Pseudonymizer  # noqa: E402
from service.database import make_engine, upgrade  # noqa: E402
from service.monitoring import Window, fetch, report  # noqa: E402
from service.outcome_counts import Scored, add  # noqa: E402
from service.risk_bins import risk_bin  # noqa: E402

MODEL = "cvd"
KEY = "bench-pseudonym-key"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/clinrisk_bench"


def _ensure_database(url: str) -> None:
    if not url.startswith("postgresql://"):
        return
    name = url.rsplit("/", 1)[1]
    admin = make_engine(url.rsplit("/", 1)[0] + "/postgres")
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        exists = connection.execute(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
        ).scalar()
        if not exists:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


def _fill(url: str, n: int, with_outcome: float, seed: int = 13) -> tuple[list[str], list[str]]:
    """``n`` audit records of the shipped cvd version, a fraction with outcomes; returns their
    prediction ids and patient ids (patient ``i`` for record ``i``)."""
    manifest = load_artifact(artifact_folder(ROOT / "models", MODEL)).manifest
    assert manifest.validation is not None
    keys = [subgroup_key(g) for g in manifest.validation.subgroups]
    factors: dict[str, list[str]] = {}
    for key in keys:
        factors.setdefault(key.split("=", 1)[0], []).append(key)
    rng = np.random.default_rng(seed)
    p = rng.beta(1.5, 8.5, n)
    y = (rng.random(n) < p).astype(int)
    # One label per combination of levels (one level per factor), as predict.py stores them.
    labels = [",".join(combo) for combo in itertools.product(*factors.values())]
    chosen = rng.integers(len(labels), size=n)
    pseudonymize = Pseudonymizer(KEY.encode())
    ids = [str(uuid.uuid4()) for _ in range(n)]
    patients = [f"bench-{i}" for i in range(n)]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    engine = make_engine(url, timeout_seconds=600)
    with engine.begin() as connection:
        for table in (
            "outcome_bins",
            "outcome_day_bins",
            "outcome_history",
            "outcomes",
            "audit_records",
            "audit_patient_pending",
            "audit_patient_index",
        ):
            # TRUNCATE on PostgreSQL: deleted rows would stay in the table as dead tuples.
            verb = "TRUNCATE" if url.startswith("postgresql://") else "DELETE FROM"
            connection.execute(sa.text(f"{verb} {table}"))
    created = [(start + timedelta(seconds=i)).isoformat(" ") for i in range(n)]
    subgroups = [labels[c] for c in chosen]
    audit = pa.table(
        {
            "prediction_id": ids,
            "created_at": created,
            "caller": ["bench"] * n,
            "model_name": [MODEL] * n,
            "model_version": [manifest.version] * n,
            "model_sha256": ["0" * 64] * n,
            "patient_pseudonym": [pseudonymize(patient) for patient in patients],
            "input_sha256": ["0" * 64] * n,
            "probability": p,
            "tier": ["low"] * n,
            "latency_ms": np.ones(n),
            "channel": ["batch"] * n,
            "status": ["scored"] * n,
            "subgroups": subgroups,
        }
    )
    # A patient's predictions are found through the merged pseudonym index (migration 0009),
    # which the service fills as it audits; filled here beside the records, sorted.
    index = pa.table(
        {"patient_pseudonym": audit.column("patient_pseudonym"), "prediction_id": ids}
    ).sort_by([("patient_pseudonym", "ascending"), ("prediction_id", "ascending")])
    keep = np.flatnonzero(np.arange(n) % 100 < with_outcome * 100)
    outcome_table = pa.table(
        {
            "prediction_id": [ids[i] for i in keep],
            "outcome": y[keep],
            "observed_at": [created[0]] * keep.size,
            "recorded_at": [created[0]] * keep.size,
            "recorded_by": ["bench"] * keep.size,
            "model_name": [MODEL] * keep.size,
            "model_version": [manifest.version] * keep.size,
            "predicted_at": [created[i] for i in keep],
            "probability": p[keep],
            "subgroups": [subgroups[i] for i in keep],
            "risk_bin": [risk_bin(float(v)) for v in p[keep]],
        }
    )
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for name, table in (
            ("audit_records", audit),
            ("audit_patient_index", index),
            ("outcomes", outcome_table),
        ):
            columns = ", ".join(table.column_names)
            if url.startswith("postgresql://"):
                sink = pa.BufferOutputStream()
                pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False))
                with cursor.copy(f"COPY {name} ({columns}) FROM STDIN (FORMAT csv)") as copy:
                    copy.write(sink.getvalue().to_pybytes())
                cursor.execute(f"ANALYZE {name}")
            else:
                marks = ", ".join("?" * table.num_columns)
                rows = zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True)
                cursor.executemany(f"INSERT INTO {name} ({columns}) VALUES ({marks})", list(rows))
        raw.commit()
    finally:
        raw.close()
    # The counts live validation reads, kept by the service as it records outcomes: the same
    # code (service.outcome_counts.add) over the outcomes written above.
    predicted_at = [start + timedelta(seconds=int(i)) for i in keep]
    with engine.begin() as connection:
        add(
            connection,
            (
                (
                    Scored(
                        MODEL, manifest.version, when, float(p[i]), subgroups[i], risk_bin(p[i])
                    ),
                    None,
                    int(y[i]),
                )
                for when, i in zip(predicted_at, keep.tolist(), strict=True)
            ),
        )
        if url.startswith("postgresql://"):
            # Statistics as autovacuum would leave them on a live store.
            for table in ("outcome_bins", "outcome_day_bins"):
                connection.execute(sa.text(f"ANALYZE {table}"))
    engine.dispose()
    return ids, patients


def _with_membership(manifest: Manifest) -> Manifest:
    """The manifest with subgroup membership (training's rule) where it predates it, so the
    report computes every subgroup as a current manifest makes it."""
    from training.train import membership

    assert manifest.validation is not None
    names = {f.name for f in manifest.features}
    groups = [
        g if g.feature else g.model_copy(update=membership(g.factor, g.level, names))
        for g in manifest.validation.subgroups
    ]
    validation = manifest.validation.model_copy(update={"subgroups": groups})
    return manifest.model_copy(update={"validation": validation})


def bench_report(url: str, n: int) -> None:
    print(f"filling {n:,} audited predictions with outcomes ({url.split('@')[-1]}) ...")
    started = time.perf_counter()
    _fill(url, n, with_outcome=1.0)
    print(f"  filled in {time.perf_counter() - started:.1f} s")
    manifest = _with_membership(load_artifact(artifact_folder(ROOT / "models", MODEL)).manifest)
    engine = make_engine(url, timeout_seconds=60)
    thresholds = [t.lower for t in manifest.tiers if t.lower > 0]
    windows = {
        "3 whole days": Window(datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 5, tzinfo=UTC)),
        "3.5 days, partial at both ends": Window(
            datetime(2026, 1, 2, 6, tzinfo=UTC), datetime(2026, 1, 5, 18, tzinfo=UTC)
        ),
    }
    # Before (outcomes aggregated from their rows) and after (the kept counts), interleaved so
    # both see the same load on a shared machine.
    for from_rows in (True, False):
        with engine.connect() as connection:
            started = time.perf_counter()
            fetch(connection, manifest, Window(), thresholds, from_rows=from_rows)
            print(
                f"  {'rows ' if from_rows else 'counts'}: the aggregating queries alone "
                f"{time.perf_counter() - started:.3f} s"
            )
    timings: dict[bool, list[float]] = {True: [], False: []}
    windowed = {(w, r): list[float]() for w in windows for r in (True, False)}
    known: dict[str, int] = {}
    results: dict[bool, Any] = {}
    for _ in range(5):
        for from_rows in (True, False):
            started = time.perf_counter()
            with engine.connect() as connection:
                results[from_rows] = report(connection, manifest, Window(), from_rows=from_rows)
            timings[from_rows].append(time.perf_counter() - started)
    for _ in range(3):
        for name, window in windows.items():
            for from_rows in (True, False):
                started = time.perf_counter()
                with engine.connect() as connection:
                    part = report(connection, manifest, window, from_rows=from_rows)
                windowed[name, from_rows].append(time.perf_counter() - started)
                known[name] = part["overall"]["outcomes_known"]
    engine.dispose()
    overall = results[False]["overall"]
    same = _same(results[True], results[False])
    for from_rows, name in ((True, "from outcome rows"), (False, "from kept counts ")):
        print(
            f"live validation {name}: {overall['outcomes_known']:,} outcomes, "
            f"{sum(not g['suppressed'] for g in results[from_rows]['subgroups'])} subgroups: "
            f"first {timings[from_rows][0]:.3f} s, "
            f"median of the next 4 {statistics.median(timings[from_rows][1:]):.3f} s; "
            + "; ".join(
                f"{w} ({known[w]:,}) median {statistics.median(windowed[w, from_rows]):.3f} s"
                for w in windows
            )
        )
    print(f"  same report both ways (counts exact, sums to 1e-9 relative): {same}")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


def bench_record(url: str, n: int) -> None:
    print(f"recording {n:,} outcomes from a CSV file ({url.split('@')[-1]}) ...")
    ids, patients = _fill(url, n, with_outcome=0.0, seed=7)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rng = np.random.default_rng(7)
    by_patient = rng.random(n) < 0.1
    table = pa.table(
        {
            "prediction_id": [None if by_patient[i] else ids[i] for i in range(n)],
            "patient_id": [patients[i] if by_patient[i] else None for i in range(n)],
            "model": [MODEL if by_patient[i] else None for i in range(n)],
            "observed_at": [
                (start + timedelta(seconds=i, days=30)).isoformat() if by_patient[i] else None
                for i in range(n)
            ],
            "outcome": [int(v) for v in rng.integers(0, 2, n)],
        }
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "outcomes.csv"
        pacsv.write_csv(table, path)
        env = {**os.environ, "CLINRISK_DATABASE_URL": url, "CLINRISK_PSEUDONYM_KEY": KEY}
        # /usr/bin/time -f: the recording process's own peak RSS (not the largest child so far).
        command = ["/usr/bin/time", "-f", "peak RSS %M KB", sys.executable, "-m", "service.cli"]
        command += ["outcomes", "record", str(path)]
        started = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        peak = [line for line in done.stderr.splitlines() if line.startswith("peak RSS")]
        peak_mb = int(peak[-1].split()[2]) / 1024 if peak else float("nan")
        if done.returncode != 0:
            print(done.stdout[-2000:], done.stderr[-2000:])
            raise SystemExit("clinrisk outcomes record failed")
        # Idempotence at scale: the same file again changes nothing.
        started_again = time.perf_counter()
        again = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
        elapsed_again = time.perf_counter() - started_again
    recorded = [line for line in done.stdout.splitlines() if "recorded" in line]
    unchanged = [line for line in again.stdout.splitlines() if "unchanged" in line]
    print(
        f"  {n:,} rows ({int(by_patient.sum()):,} by patient + time): {elapsed:.1f} s "
        f"({n / elapsed:,.0f} rows/s), peak RSS {peak_mb:.0f} MB; "
        f"{' '.join(recorded[0].split()) if recorded else ''}"
    )
    print(
        f"  the same file again: {elapsed_again:.1f} s; "
        f"{' '.join(unchanged[0].split()) if unchanged else ''}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=1_000_000)
    parser.add_argument("--outcomes", type=int, default=100_000)
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--sqlite", action="store_true", help="also on a temporary SQLite file")
    parser.add_argument("--only", choices=["report", "record"], help="run one of the two")
    args = parser.parse_args()
    urls = [args.url]
    tmp = tempfile.TemporaryDirectory()
    if args.sqlite:
        urls.append(f"sqlite:///{Path(tmp.name) / 'bench.db'}")
    for url in urls:
        _ensure_database(url)
        upgrade(url, timeout_seconds=60)
        if args.only != "record":
            bench_report(url, args.predictions)
        if args.only != "report":
            bench_record(url, args.outcomes)
    tmp.cleanup()


if __name__ == "__main__":
    main()
