"""Serving image dependencies: install the runtime lock in a throwaway venv, list sizes.

    .venv/bin/python bench/image_deps.py [--root DIR] [--lock FILE] [--with-project]

Builds a fresh virtualenv in a temporary folder (as the Dockerfile's build stage does), runs
``pip install -r requirements-runtime.lock`` in it (and ``pip install --no-deps ROOT`` with
``--with-project``), then prints every installed distribution with its installed size: the sum
of the sizes on disk of the files its RECORD lists. ML training libraries (XGBoost,
scikit-learn, SciPy, NVIDIA's NCCL/CUDA wheels) are flagged: issue 9 wants none of them in the
serving image. The venv's own tooling (pip, setuptools, wheel) is listed but not counted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
TOOLING = {"pip", "setuptools", "wheel"}
TRAINING_ONLY = {"xgboost", "scikit-learn", "scipy"}

# Runs inside the fresh venv: every distribution, its version and the bytes of its RECORD files.
SIZES = """
import json, sys
from importlib.metadata import distributions
out = []
for dist in distributions():
    size, files = 0, 0
    for f in dist.files or []:
        path = f.locate()
        try:
            size += path.stat().st_size
            files += 1
        except OSError:
            pass
    out.append({"name": dist.metadata["Name"], "version": dist.version, "bytes": size,
                "files": files})
print(json.dumps(out))
"""


def flag(name: str) -> str:
    key = name.lower().replace("_", "-")
    if key in TRAINING_ONLY:
        return "TRAINING-ONLY"
    if key.startswith("nvidia-"):
        return "CUDA/NCCL"
    return ""


def install(pip: list[str], *what: str) -> None:
    """pip install, its chatter shown only when it fails."""
    done = subprocess.run([*pip, *what], capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"pip install {' '.join(what)} failed:\n{done.stdout}{done.stderr}")


def du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=HERE, help="checkout whose lock to install")
    parser.add_argument("--lock", type=Path, help="default: ROOT/requirements-runtime.lock")
    parser.add_argument("--with-project", action="store_true", help="also pip install ROOT")
    parser.add_argument("--json", type=Path, help="also write the list here")
    args = parser.parse_args()
    root = args.root.resolve()
    lock = (args.lock or root / "requirements-runtime.lock").resolve()
    pinned = [
        line.split("==")[0].strip()
        for line in lock.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    print(f"lock {lock}: {len(pinned)} pinned distributions")

    with tempfile.TemporaryDirectory(prefix="clinrisk-image-") as tmp:
        venv = Path(tmp) / "venv"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        install(pip, "-r", str(lock))
        if args.with_project:
            install(pip, "--no-deps", str(root))
        print(f"venv built and installed in {time.perf_counter() - started:.0f} s")
        # -I: isolated (no cwd, no PYTHONPATH, no user site on sys.path), the venv alone
        done = subprocess.run(
            [python, "-I", "-c", SIZES], capture_output=True, text=True, check=True, cwd=tmp
        )
        dists = sorted(json.loads(done.stdout), key=lambda d: -d["bytes"])
        site = next((venv / "lib").glob("python*/site-packages"))
        site_bytes = du(site)

    counted = [d for d in dists if d["name"].lower() not in TOOLING]
    total = sum(d["bytes"] for d in counted)
    flagged = [d for d in counted if flag(d["name"])]
    print(f"\n{'distribution':<28}{'version':<14}{'MB':>9}{'files':>8}  flag")
    for d in dists:
        tooling = d["name"].lower() in TOOLING
        note = "venv tooling, not counted" if tooling else flag(d["name"])
        print(f"{d['name']:<28}{d['version']:<14}{d['bytes'] / 1e6:>9.1f}{d['files']:>8}  {note}")
    print(
        f"\n{len(counted)} distributions, {total / 1e6:,.0f} MB installed "
        f"(site-packages on disk {site_bytes / 1e6:,.0f} MB with tooling)"
    )
    if flagged:
        flagged_bytes = sum(d["bytes"] for d in flagged)
        names = ", ".join(f"{d['name']} {d['bytes'] / 1e6:,.0f} MB" for d in flagged)
        print(
            f"ML training libraries in the serving image: {flagged_bytes / 1e6:,.0f} MB ({names})"
        )
    else:
        print("ML training libraries in the serving image: none")
    if args.json:
        args.json.write_text(json.dumps({"lock": str(lock), "dists": dists}, indent=2))


if __name__ == "__main__":
    main()
