"""Batch scoring throughput: file to file, against the bare XGBoost model on the same rows.

    .venv/bin/python bench/batch.py [--rows 1000000] [--spark-rows 100000] [--no-spark]

Rows are synthesised from the diabetes model's training distribution as its manifest records it
(quantiles of numeric features, category/binary rates, missing rates) and written to a temporary
CSV and Parquet file first. Each end-to-end run is a fresh ``clinrisk score`` process, so its
peak RSS (its own and its worker processes') is its alone. The bare model is timed in memory on
the same rows: ``booster.predict(DMatrix)`` and ``predict(pred_contribs=True)`` with nthread=2.
Figures only; nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.loader import load_artifact  # noqa: E402
from models.manifest import FeatureType, Manifest  # noqa: E402
from models.registry import artifact_folder  # noqa: E402

MODEL = "diabetes"
QUANTILES = [("p01", 0.01), ("p05", 0.05), ("p25", 0.25), ("p50", 0.5), ("p75", 0.75)]
QUANTILES += [("p95", 0.95), ("p99", 0.99)]


def synthesise(manifest: Manifest, n: int, seed: int = 0) -> pa.Table:
    """Rows drawn feature by feature from the training marginals (inverse CDF by quantiles)."""
    rng = np.random.default_rng(seed)
    columns: dict[str, pa.Array] = {"patient_id": pa.array([f"p{i:08d}" for i in range(n)])}
    for spec in manifest.features:
        dist = spec.distribution
        missing = rng.random(n) < (dist.missing_rate if dist else 0.0)
        if spec.type is FeatureType.CATEGORICAL:
            codes = [c.code for c in spec.categories]
            rates = np.array([dist.category_rates.get(c, 0.0) if dist else 1.0 for c in codes])
            picks = rng.choice(len(codes), size=n, p=rates / rates.sum())
            values = np.array(codes, dtype=object)[picks]
            columns[spec.name] = pa.array(np.where(missing, None, values), pa.string())
            continue
        if spec.type is FeatureType.BINARY:
            p = dist.mean if dist and dist.mean is not None else 0.5
            values = (rng.random(n) < p).astype(np.float64)
        else:
            q = dist.quantiles if dist else {}
            low = spec.minimum if spec.minimum is not None else q.get("p01", 0.0)
            high = spec.maximum if spec.maximum is not None else q.get("p99", 1.0)
            # tails: 0.5% of rows between the plausible minimum and p01 (and p99 and maximum)
            points = [(0.0, max(low, q.get("p01", low) - (q.get("p50", 0) - q.get("p01", low))))]
            points += [(prob, q[key]) for key, prob in QUANTILES if key in q]
            points += [(1.0, min(high, q.get("p99", high) * 1.1))]
            probs, quantiles = zip(*points, strict=True)
            values = np.interp(rng.random(n), probs, np.maximum.accumulate(quantiles))
            # as charts hold them: whole numbers where training saw only those, else 1 decimal
            whole = all(float(v).is_integer() for v in q.values())
            values = np.round(values, 0 if whole or spec.type is FeatureType.ORDINAL else 1)
        columns[spec.name] = pa.array(values, pa.float64(), mask=missing)
    return pa.table(columns)


def run_cli(args: list[str]) -> tuple[float, int, int]:
    """Seconds in the command, exit code, peak RSS (KiB) of a fresh ``clinrisk score`` process.

    The seconds exclude the interpreter's start and imports (about a second), which a long
    job amortises; they include loading and verifying the model, reading, scoring and writing.
    """
    code = (
        "import sys, time\n"
        "from typer.main import get_command\n"
        "try:\n"
        "    from service.cli import app\n"
        "except ImportError:\n"
        "    from training.cli import app\n"
        "t = time.perf_counter()\n"
        "try:\n"
        "    rc = get_command(app).main(args=sys.argv[1:], standalone_mode=False) or 0\n"
        "except SystemExit as e:\n"
        "    rc = e.code or 0\n"
        "except Exception as e:\n"
        "    rc = getattr(e, 'exit_code', 1)\n"
        "s = time.perf_counter() - t\n"
        "print(f'@@ {s} {rc}', file=sys.stderr)\n"
    )
    # NOTE: Linux carries a process's peak RSS across fork and exec, so a child of this
    # (large) process would report this process's peak. A small launcher process runs the job
    # and reports its children's peak (RUSAGE_CHILDREN: the largest of the job's processes).
    launcher = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:])\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(f'@@rss {peak}', file=sys.stderr)\n"
    )
    env = {**os.environ, "COLUMNS": "120"}
    done = subprocess.run(
        [sys.executable, "-c", launcher, sys.executable, "-c", code, "score", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
    )
    line = next(x for x in done.stderr.splitlines() if x.startswith("@@ "))
    seconds, rc = line.split()[1:3]
    peak = next(x for x in done.stderr.splitlines() if x.startswith("@@rss "))
    if int(rc) not in (0, 2):
        raise RuntimeError(done.stdout + done.stderr)
    return float(seconds), int(rc), int(peak.split()[1])


def bare_model(manifest: Manifest, booster: object, table: pa.Table) -> dict[str, float]:
    """XGBoost alone on the same rows, already in memory as a float matrix (nthread=2)."""
    import xgboost as xgb

    from models.columns import encode

    values = {
        f.name: table.column(f.name).to_numpy(zero_copy_only=False) for f in manifest.features
    }
    matrix = encode(manifest.columns, values)
    out: dict[str, float] = {}
    started = time.perf_counter()
    dmatrix = xgb.DMatrix(matrix, nthread=2, feature_names=[c.name for c in manifest.columns])
    out["dmatrix_s"] = time.perf_counter() - started
    booster.set_param({"nthread": 2})  # type: ignore[attr-defined]
    started = time.perf_counter()
    booster.predict(dmatrix)  # type: ignore[attr-defined]
    out["predict_s"] = time.perf_counter() - started
    started = time.perf_counter()
    booster.predict(dmatrix, pred_contribs=True)  # type: ignore[attr-defined]
    out["contribs_s"] = time.perf_counter() - started
    return out


def spark_rate(csv_path: Path, out_dir: Path, n: int) -> float:
    from service.batch import ScoreOptions
    from service.batch.spark import local_session, score_file_spark

    session = local_session("local[2]", app_name="clinrisk-bench")
    try:
        # warm the JVM and the Python workers on a first, small run
        small = out_dir / "spark-warm.csv"
        pacsv.write_csv(pacsv.read_csv(csv_path).slice(0, 1000), small)
        score_file_spark(
            small,
            out_dir / "warm.parquet",
            model_name=MODEL,
            models_dir=ROOT / "models",
            options=ScoreOptions(explain=True),
            session=session,
        )
        started = time.perf_counter()
        score_file_spark(
            csv_path,
            out_dir / "spark.parquet",
            model_name=MODEL,
            models_dir=ROOT / "models",
            options=ScoreOptions(explain=True),
            session=session,
        )
        return n / (time.perf_counter() - started)
    finally:
        session.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-size", type=int, default=16_384)
    parser.add_argument("--spark-rows", type=int, default=100_000)
    parser.add_argument("--no-spark", action="store_true")
    args = parser.parse_args()

    artifact = load_artifact(artifact_folder(ROOT / "models", MODEL))
    manifest = artifact.manifest
    with tempfile.TemporaryDirectory(prefix="clinrisk-bench-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        table = synthesise(manifest, args.rows)
        csv_path, parquet_path = folder / "rows.csv", folder / "rows.parquet"
        pacsv.write_csv(table, csv_path)
        pq.write_table(table, parquet_path)
        chunks = -(-args.rows // args.chunk_size)
        print(
            f"{args.rows:,} synthetic '{MODEL}' rows ({len(manifest.features)} features): "
            f"CSV {csv_path.stat().st_size / 1e6:.0f} MB, Parquet "
            f"{parquet_path.stat().st_size / 1e6:.0f} MB, {chunks} chunks of "
            f"{args.chunk_size:,} ({time.perf_counter() - started:.1f} s to write)"
        )
        import xgboost as xgb  # training-only now: the bare model is read from model.json

        booster = xgb.Booster(model_file=str(artifact.path / "model.json"))
        bare = bare_model(manifest, booster, table)
        predict_rate = args.rows / (bare["dmatrix_s"] + bare["predict_s"])
        contribs_rate = args.rows / (bare["dmatrix_s"] + bare["contribs_s"])
        print(
            f"\nbare XGBoost in memory (nthread=2, DMatrix build included): "
            f"predict {predict_rate:,.0f} rows/s, pred_contribs {contribs_rate:,.0f} rows/s "
            f"(DMatrix {bare['dmatrix_s']:.2f} s, predict {bare['predict_s']:.2f} s, "
            f"pred_contribs {bare['contribs_s']:.2f} s)\n"
        )
        big = folder / "rows-x3.csv"  # the same rows three times: does memory stay flat?
        with big.open("wb") as out:
            for copy in range(3):
                with csv_path.open("rb") as part:
                    if copy:
                        part.readline()  # header once
                    out.write(part.read())
        runs = [
            ("csv -> csv", csv_path, "out.csv", [], args.rows),
            ("csv -> csv, --explain", csv_path, "out.csv", ["--explain"], args.rows),
            ("parquet -> parquet, --explain", parquet_path, "o.parquet", ["--explain"], args.rows),
            ("csv -> parquet, --explain", csv_path, "o.parquet", ["--explain"], args.rows),
            (
                "csv -> csv, --explain, 1 worker",
                csv_path,
                "out.csv",
                ["--explain", "--workers", "1"],
                args.rows,
            ),
            ("csv x3 -> csv, --explain", big, "out.csv", ["--explain"], 3 * args.rows),
        ]
        print(
            f"{'end to end, file to file (fresh process)':<42}{'rows':>11}{'rows/s':>10}"
            f"{'vs bare model':>24}{'peak RSS':>10}"
        )
        results: dict[str, dict[str, float]] = {}
        for label, source, target, extra, n_rows in runs:
            seconds, rc, rss = run_cli(
                [
                    MODEL,
                    str(source),
                    "-o",
                    str(folder / target),
                    "--chunk-size",
                    str(args.chunk_size),
                    "--no-resume",
                    *extra,
                ]
            )
            r = {"rows": n_rows, "rows_s": n_rows / seconds, "rss_mb": rss / 1024, "rc": rc}
            results[label] = r
            reference = contribs_rate if "explain" in label else predict_rate
            which = "pred_contribs" if "explain" in label else "predict"
            print(
                f"{label:<42}{r['rows']:>11,.0f}{r['rows_s']:>10,.0f}"
                f"{r['rows_s'] / reference:>10.2f}x {which:<13}{r['rss_mb']:>7,.0f} MB",
                flush=True,
            )
        if not args.no_spark:
            n = min(args.spark_rows, args.rows)
            sample = folder / "spark-rows.csv"
            pacsv.write_csv(table.slice(0, n), sample)
            rate = spark_rate(sample, folder, n)
            print(f"\nSpark local[2], csv -> parquet, --explain, {n:,} rows: {rate:,.0f} rows/s")
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"\nthis process peak RSS {own:,.0f} MB "
            "(holds the synthetic table and the bare model's matrices)"
        )
        print(json.dumps({"results": results, "bare": bare}, default=float), file=sys.stderr)


if __name__ == "__main__":
    main()
