"""Start-up and end-to-end figures of issue 9, each a fresh process, against floors in the same run.

    .venv/bin/python bench/startup.py [--root DIR] [--reps 5] [--rows 200000]

Measures, for the code in ``--root`` (default: this checkout; another checkout such as a git
worktree of an older commit is run with ``cwd=ROOT`` and ``PYTHONPATH=ROOT``, so its own
packages shadow the editable install):

- ``clinrisk score NAME INPUT -o OUTPUT`` on a 10-row CSV of each model: wall time of the whole
  process (interpreter start, imports, model load and verification, scoring, writing).
- ``clinrisk score diabetes INPUT -o OUTPUT --explain`` on ``--rows`` rows: rows/s end to end,
  process start included.
- ``python -c "import service.client"``: wall time, and which heavy modules it pulls in.
- ``python -m uvicorn service.main:app``: start to the first 200 from ``/health/ready``.

The command behind ``clinrisk`` is the console script ``.venv/bin/clinrisk`` when it points to
the entry point that ROOT's pyproject.toml declares, else ``python -c "from MOD import ATTR;
ATTR()"`` with that entry point (what the console script would run after a reinstall).
Inputs are real rows: the model's training loader reads ``../shared/data`` (through ROOT's own
``training`` package) and its canonical feature columns, plus ``patient_id``, are written to CSV
(rows sampled; tiled when more rows are asked than the dataset has).

Floors, same run, same repetitions: ``python -c pass``; a fresh process reading the big CSV
and writing it back with pyarrow (file I/O of the 200k-row job); the framework floor app
(``bench/floor_app.py``) from uvicorn start to its first 200. Medians of ``--reps`` runs (min
and max beside them), and the median CPU seconds of the measured process (user + system, from
``getrusage`` or ``/proc``), which other load on a shared machine disturbs much less than wall
time. Figures only; nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
MODELS = ("diabetes", "readmission", "cvd")
HEAVY = ("numpy", "pandas", "pyarrow", "xgboost", "sklearn", "scipy", "fastapi", "pydantic")

# Runs in a subprocess with ROOT's code: the training loader maps the shared dataset onto the
# model's canonical feature columns.
MAKE_INPUTS = """
import json, sys
from pathlib import Path
from training.config import load_config
from training.datasets import LOADERS, SHARED_DATA

name, out = sys.argv[1], Path(sys.argv[2])
sizes = [int(n) for n in sys.argv[3:]]
config = load_config(name)
frame = LOADERS[config.loader](SHARED_DATA / config.default_data).features
made = {}
for n in sizes:
    if n <= len(frame):
        rows = frame.sample(n=n, random_state=0)
    else:
        rows = frame.iloc[[i % len(frame) for i in range(n)]]
    rows = rows.reset_index(drop=True)
    rows.insert(0, "patient_id", [f"p{i:08d}" for i in range(n)])
    path = out / f"{name}-{n}.csv"
    rows.to_csv(path, index=False)
    made[n] = str(path)
print(json.dumps({"columns": list(frame.columns), "available": len(frame), "files": made}))
"""

IO_FLOOR = """
import sys
import pyarrow.csv as pacsv
pacsv.write_csv(pacsv.read_csv(sys.argv[1]), sys.argv[2])
"""

MODULES_AFTER_CLIENT = """
import json, sys
import service.client
heavy = {heavy!r}
print(json.dumps({{"modules": len(sys.modules),
                   "heavy": [m for m in heavy if m in sys.modules]}}))
"""


@dataclass
class Figure:
    label: str
    target: str
    unit: str
    samples: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    """CPU seconds (user + system) of the measured process, one per sample."""
    floor: Figure | None = None
    note: str = ""
    error: str = ""

    def cpu_cell(self) -> str:
        return f"{statistics.median(self.cpu):,.2f}" if self.cpu and not self.error else ""

    def vs_floor(self) -> str:
        if self.error or not self.samples or not self.floor or not self.floor.samples:
            return ""
        return f"{statistics.median(self.samples) / statistics.median(self.floor.samples):.2f}x"

    def cell(self) -> str:
        if self.error:
            return "not measured"
        if not self.samples:
            return "-"
        med = statistics.median(self.samples)
        return f"{med:,.3f}" if self.unit == "s" else f"{med:,.0f}"

    def spread(self) -> str:
        if not self.samples or self.error:
            return ""
        fmt = "{:,.3f}" if self.unit == "s" else "{:,.0f}"
        return f"{fmt.format(min(self.samples))}..{fmt.format(max(self.samples))}"


@dataclass
class Context:
    root: Path
    python: str
    env: dict[str, str]
    tmp: Path
    cli: list[str]
    cli_note: str
    last_cpu: float = 0.0
    """CPU seconds of the last process measured (timed, serve_until_ready)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def entry_point(root: Path) -> str | None:
    """``module:attr`` of the ``clinrisk`` script that ROOT's pyproject.toml declares."""
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return None
    with pyproject.open("rb") as handle:
        scripts = tomllib.load(handle).get("project", {}).get("scripts", {})
    value = scripts.get("clinrisk")
    return str(value) if value else None


def cli_command(root: Path, python: str, mode: str) -> tuple[list[str], str]:
    declared = entry_point(root)
    script = Path(python).parent / "clinrisk"
    installed = None
    if script.is_file():
        match = re.search(r"^from (\S+) import (\S+)", script.read_text(), re.M)
        installed = f"{match.group(1)}:{match.group(2)}" if match else None
    if mode == "script" or (mode == "auto" and installed and installed == declared):
        return [str(script)], f"console script {script} ({installed})"
    target = declared or installed
    if not target:
        raise SystemExit("no clinrisk entry point in pyproject.toml nor a console script")
    module, attr = target.split(":")
    code = f"import sys; from {module} import {attr} as a; sys.argv[0] = 'clinrisk'; sys.exit(a())"
    why = "declared entry point" if mode == "entry" else f"console script points to {installed}"
    return [python, "-c", code], f"python -c 'from {module} import {attr}; {attr}()' ({why})"


def timed(cmd: Sequence[str], ctx: Context, ok: Callable[[int], bool] = lambda rc: rc == 0):
    """Wall seconds of a fresh process and its result; its CPU seconds go to ctx.last_cpu."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        list(cmd), cwd=ctx.root, env=ctx.env, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    ctx.last_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if not ok(done.returncode):
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"exit {done.returncode}: {' | '.join(tail)}")
    return seconds, done


def serve_until_ready(app: str, path: str, ctx: Context, extra_env: dict[str, str]) -> float:
    """Seconds from spawning uvicorn to the first 200 on ``path``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}{path}"
    started = time.perf_counter()
    process = subprocess.Popen(
        [ctx.python, "-m", "uvicorn", app, "--port", str(port), "--log-level", "warning"],
        cwd=ctx.root,
        env={**ctx.env, **extra_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = started + 120
        while time.perf_counter() < deadline:
            if process.poll() is not None:
                tail = (process.stderr.read() if process.stderr else "").strip().splitlines()
                raise RuntimeError(f"uvicorn exited {process.returncode}: {' | '.join(tail[-3:])}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        seconds = time.perf_counter() - started
                        ctx.last_cpu = process_cpu(process.pid)
                        return seconds
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.01)
        raise RuntimeError(f"{url} not 200 within 120 s")
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service_env(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    keys = folder / "keys.json"
    keys.write_text(json.dumps({"keys": []}))
    return {
        "CLINRISK_PSEUDONYM_KEY": "bench-startup-key",
        "CLINRISK_API_KEYS_FILE": str(keys),
        "CLINRISK_DATABASE_URL": f"sqlite:///{folder / 'audit.db'}",
        "CLINRISK_LOG_LEVEL": "WARNING",
    }


def ready_models(ctx: Context) -> str:
    """The /health/ready body of one more start (which models it reports)."""
    port = free_port()
    process = subprocess.Popen(
        [ctx.python, "-m", "uvicorn", "service.main:app", "--port", str(port)],
        cwd=ctx.root,
        env={**ctx.env, **service_env(ctx.tmp / "svc-check")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/health/ready", timeout=2
                ) as response:
                    body = json.loads(response.read())
                    return ", ".join(f"{k} {v}" for k, v in body.get("models", {}).items())
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        return "never ready"
    finally:
        process.terminate()
        process.wait(timeout=30)


def repeat(figure: Figure, ctx: Context, reps: int, run: Callable[[int], float]) -> None:
    for i in range(reps):
        try:
            figure.samples.append(run(i))
            figure.cpu.append(ctx.last_cpu)
        except Exception as exc:
            figure.error = str(exc)[:300]
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=HERE, help="checkout to measure")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--big-reps", type=int, default=3, help="repetitions of the big file")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--big-model", default="diabetes")
    parser.add_argument("--output-suffix", default=".csv", help="OUTPUT format: .csv, .parquet")
    parser.add_argument(
        "--cli",
        choices=("auto", "script", "entry"),
        default="auto",
        help="auto: the console script when it matches ROOT's pyproject entry point",
    )
    parser.add_argument("--json", type=Path, help="also write the samples here")
    args = parser.parse_args()

    root = args.root.resolve()
    python = sys.executable
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "COLUMNS": "120",
    }
    commit = subprocess.run(
        ["git", "-C", str(root), "log", "-1", "--format=%h %s"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="clinrisk-startup-") as tmp_name:
        tmp = Path(tmp_name)
        cli, cli_note = cli_command(root, python, args.cli)
        ctx = Context(root=root, python=python, env=env, tmp=tmp, cli=cli, cli_note=cli_note)
        print(f"root {root} ({commit})\npython {python}\nclinrisk = {cli_note}")
        print(
            f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
            f"{os.cpu_count()} cpus"
        )

        # inputs from the real datasets, through ROOT's own training loaders
        inputs: dict[str, dict[int, Path]] = {}
        for name in MODELS:
            sizes = [10] + ([args.rows] if name == args.big_model else [])
            try:
                _, done = timed([python, "-c", MAKE_INPUTS, name, str(tmp), *map(str, sizes)], ctx)
                info = json.loads(done.stdout.strip().splitlines()[-1])
                inputs[name] = {int(n): Path(p) for n, p in info["files"].items()}
                print(
                    f"input {name}: {len(info['columns'])} feature columns, {info['available']:,} "
                    f"rows in the dataset, files of {', '.join(f'{n:,}' for n in sizes)} rows"
                )
            except Exception as exc:
                print(f"input {name}: could not build ({exc})")

        figures: list[Figure] = []
        floor = Figure("floor: python -c pass", "", "s")
        repeat(floor, ctx, args.reps, lambda _i: timed([python, "-c", "pass"], ctx)[0])
        figures.append(floor)

        runs = 0
        rejected: dict[tuple[str, int], str] = {}

        def score(name: str, n: int, extra: list[str]) -> float:
            """A fresh OUTPUT folder each run (no resume); notes the exit code and rejects."""
            nonlocal runs
            runs += 1
            out = tmp / f"out-{runs}" / f"scored{args.output_suffix}"
            out.parent.mkdir()
            cmd = [*ctx.cli, "score", name, str(inputs[name][n]), "-o", str(out), *extra]
            seconds, done = timed(cmd, ctx, ok=lambda rc: rc in (0, 2))
            files = [p for p in out.parent.iterdir() if "reject" in p.name and p.is_file()]
            lines = sum(max(0, len(p.read_text().splitlines()) - 1) for p in files)
            rejected[(name, n)] = f"exit {done.returncode}, {lines:,} rows rejected"
            return seconds

        for name in MODELS:
            fig = Figure(f"clinrisk score {name}, 10 rows: wall", "< 1 s", "s")
            if name in inputs:
                repeat(fig, ctx, args.reps, lambda _i, name=name: score(name, 10, []))
                fig.note = rejected.get((name, 10), "")
            else:
                fig.error = "no input"
            figures.append(fig)

        big = args.big_model
        io = Figure(
            f"floor: pyarrow read+write {args.rows:,}-row CSV (fresh process)", "", "rows/s"
        )
        fig = Figure(
            f"clinrisk score {big}, {args.rows:,} rows --explain -> {args.output_suffix}: "
            "end to end",
            ">= 100k rows/s",
            "rows/s",
            floor=io,
        )
        if big in inputs and args.rows in inputs[big]:
            source = inputs[big][args.rows]
            for _ in range(args.big_reps):  # interleaved, so that both see the same load
                try:
                    seconds, _ = timed(
                        [python, "-c", IO_FLOOR, str(source), str(tmp / "io.csv")], ctx
                    )
                    io.samples.append(args.rows / seconds)
                    io.cpu.append(ctx.last_cpu)
                    fig.samples.append(args.rows / score(big, args.rows, ["--explain"]))
                    fig.cpu.append(ctx.last_cpu)
                except Exception as exc:
                    fig.error = str(exc)[:300]
                    break
            fig.note = rejected.get((big, args.rows), "")
        else:
            fig.error = "no input"
        figures += [io, fig]

        imp = Figure('python -c "import service.client": wall', "< 0.3 s", "s")
        repeat(
            imp, ctx, args.reps, lambda _i: timed([python, "-c", "import service.client"], ctx)[0]
        )
        try:
            code = MODULES_AFTER_CLIENT.format(heavy=HEAVY)
            _, done = timed([python, "-c", code], ctx)
            mods = json.loads(done.stdout.strip().splitlines()[-1])
            imp.note = f"{mods['modules']} modules; heavy: {', '.join(mods['heavy']) or 'none'}"
        except Exception as exc:
            imp.note = f"module check failed: {exc}"
        figures.append(imp)

        floor_app = Figure("floor: uvicorn bench.floor_app:app to first 200 (/docs)", "", "s")
        floor_ctx = Context(
            root=HERE,
            python=python,
            env={**os.environ, "PYTHONPATH": str(HERE)},
            tmp=tmp,
            cli=[],
            cli_note="",
        )
        svc = Figure("uvicorn service.main:app to /health/ready 200", "< 2 s", "s", floor=floor_app)
        for i in range(args.reps):  # interleaved with the floor
            try:
                floor_app.samples.append(
                    serve_until_ready("bench.floor_app:app", "/docs", floor_ctx, {})
                )
                floor_app.cpu.append(floor_ctx.last_cpu)
            except Exception as exc:
                floor_app.error = str(exc)[:300]
            try:
                svc.samples.append(
                    serve_until_ready(
                        "service.main:app", "/health/ready", ctx, service_env(tmp / f"svc-{i}")
                    )
                )
                svc.cpu.append(ctx.last_cpu)
            except Exception as exc:
                svc.error = str(exc)[:300]
                break
        if not svc.error:
            svc.note = f"ready with: {ready_models(ctx)}"
        figures += [floor_app, svc]

    width = max(len(f.label) for f in figures) + 2
    print(
        f"\n{'figure':<{width}}{'median':>12} {'unit':<7}{'min..max':>22}{'cpu s':>8}"
        f"{'vs floor':>9}  {'wanted':<15}note"
    )
    for f in figures:
        note = f"ERROR {f.error}" if f.error else f.note
        print(
            f"{f.label:<{width}}{f.cell():>12} {f.unit:<7}{f.spread():>22}{f.cpu_cell():>8}"
            f"{f.vs_floor():>9}  {f.target:<15}{note}"
        )
    print(
        "cpu s: median CPU seconds (user + system) of the measured process, less sensitive "
        "than wall time to other load on the machine; vs floor: median / the floor's median"
    )
    load = os.getloadavg()
    print(f"\nload average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "root": str(root),
                    "commit": commit,
                    "clinrisk": cli_note,
                    "figures": [
                        {k: v for k, v in f.__dict__.items() if k != "floor"} for f in figures
                    ],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
