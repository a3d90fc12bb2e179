"""Fault battery (issue 15): the real service, in a subprocess, under load and under faults.

    .venv/bin/python bench/faults.py [--store sqlite|postgresql|both] [--seconds N]
                                     [--workers 1|2] [--only NAME ...]

Scenarios (``--only`` names):

- ``load``: 32 connections for ``--seconds`` of single predictions of real BRFSS patients (every
  50th request a batch of 50): throughput, p50/p99, statuses, worker RSS before/after, SQLite's
  ``-wal`` size at the end and its peak; every acknowledged prediction id is reconciled with
  ``audit_records``. 1 and 2 workers unless ``--workers``.
- ``kill``: ``kill -9`` under load (the whole server, then restarted, with 1 worker; one worker
  of two otherwise): time until the service answers again; every prediction acknowledged before
  (and after) the kill must be in the store.
- ``lock``: another process holds the store's write lock (SQLite ``BEGIN EXCLUSIVE`` 40 s,
  PostgreSQL ``LOCK TABLE audit_records IN ACCESS EXCLUSIVE MODE`` 15 s) while /health/live,
  /health/ready and a predict are sent every 100 ms: the statuses, the longest time a request
  stayed unanswered, time to the first 200 predict after the release.
- ``revoke`` (PostgreSQL: INSERT revoked from the service's own role), ``refused`` (PostgreSQL
  reached through a proxy that is stopped), ``unwritable`` (SQLite: folder and files chmod a-w),
  ``diskfull`` (SQLite on a 2 MiB tmpfs, filled): the same polling, ``--fault-seconds`` long.
  ``store-faults`` names all four.
- ``bodies``: 500 MB chunked bodies with and without a key to /curves and /predict, and a 500 MB
  Content-Length: statuses, bytes read before the answer, worker RSS before/after (< +50 MiB).
- ``fuzz``: Schemathesis over openapi.json with every check (tests/service/schemathesis.toml).

Exits 1 when an invariant breaks: an acknowledged prediction missing from the audit store, a
5xx other than a problem+json 503, a worker that gives no 200 within 60 s after a fault, RSS
growth over the bound. Figures that are merely bad (a hang, a big WAL) are printed, not failed.
Needs root for the tmpfs mount (skipped with the reason otherwise) and, for PostgreSQL, a server
at BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test) that lets it create
and drop databases and roles.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

# Run as a script (`python bench/faults.py`): the repository root makes `bench` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.faults_env import postgres_available, real_bodies
from bench.faults_scenarios import (
    Results,
    scenario_bodies,
    scenario_disk_full,
    scenario_fuzz,
    scenario_kill,
    scenario_load,
    scenario_lock,
    scenario_refused,
    scenario_revoke,
    scenario_unwritable,
)

NAMES = ("load", "kill", "lock", "revoke", "refused", "unwritable", "diskfull", "bodies", "fuzz")
STORE_FAULTS = ("revoke", "refused", "unwritable", "diskfull")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--seconds", type=float, default=60, help="load duration (default 60)")
    parser.add_argument(
        "--workers",
        type=int,
        choices=(1, 2),
        help="only this worker count (default: load and kill with 1 and 2, the rest with 1)",
    )
    parser.add_argument("--only", nargs="+", choices=(*NAMES, "store-faults"), metavar="NAME")
    parser.add_argument("--fault-seconds", type=float, default=10)
    parser.add_argument("--fuzz-examples", type=int, default=10)
    args = parser.parse_args()

    wanted = set(args.only or NAMES)
    if "store-faults" in wanted:
        wanted |= set(STORE_FAULTS)
    stores = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    results = Results()
    if "postgresql" in stores and (why := postgres_available()) is not None:
        results.skipped.append(f"postgresql: {why}")
        print(f"skipping PostgreSQL: {why}")
        stores.remove("postgresql")
    both_counts = [args.workers] if args.workers else [1, 2]
    one_count = args.workers or 1

    plan: list[tuple[str, Callable[[], None]]] = []

    def add(name: str, scenario: Callable[..., None], *args: object) -> None:
        plan.append((name, functools.partial(scenario, results, *args)))

    faults = args.fault_seconds
    for kind in stores:
        if "load" in wanted:
            for w in both_counts:
                add("load", scenario_load, kind, w, args.seconds)
        if "kill" in wanted:
            for w in both_counts:
                add("kill", scenario_kill, kind, w)
        if "lock" in wanted:
            add("lock", scenario_lock, kind, one_count)
    if "postgresql" in stores:
        if "revoke" in wanted:
            add("revoke", scenario_revoke, one_count, faults)
        if "refused" in wanted:
            add("refused", scenario_refused, one_count, faults)
    if "sqlite" in stores:
        if "unwritable" in wanted:
            add("unwritable", scenario_unwritable, one_count, faults)
        if "diskfull" in wanted:
            add("diskfull", scenario_disk_full, one_count, faults)
    for kind in stores:
        if "bodies" in wanted:
            add("bodies", scenario_bodies, kind, one_count)
        if "fuzz" in wanted:
            add("fuzz", scenario_fuzz, kind, one_count, args.fuzz_examples)

    started = time.monotonic()
    print(
        f"clinrisk fault battery: stores {', '.join(stores) or 'none'}, load {args.seconds:.0f} s,"
        f" faults {faults:.0f} s; loading BRFSS request bodies ...",
        flush=True,
    )
    real_bodies()
    for name, run in plan:
        try:
            run()
        except Exception as exc:  # a scenario that cannot run is a finding, not a crash
            traceback.print_exc()
            results.breaks.append(f"{name}: the scenario itself failed: {exc!r}"[:300])

    print(f"\n\n{'=' * 100}\nFault battery figures ({time.monotonic() - started:.0f} s)\n")
    width = max((len(r[0]) for r in results.rows), default=10) + 2
    last = ""
    for case, label, value, flag in results.rows:
        print(f"{case if case != last else '':<{width}}{flag or ' '} {label:<54} {value}")
        last = case
    for skipped in results.skipped:
        print(f"skipped: {skipped}")
    if results.breaks:
        print(f"\n{len(results.breaks)} invariant(s) broken:")
        for line in results.breaks:
            print(f"  - {line}")
        return 1
    print("\nall invariants held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
