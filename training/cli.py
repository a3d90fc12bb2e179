"""Training's ``clinrisk`` commands: ``train`` and ``evaluate``.

The ``clinrisk`` command itself belongs to the service (``service.cli``); these commands join it
through the ``clinrisk.commands`` entry point (``register``), so the service never imports
training and a serving image without training simply has no ``train``. Command and option names
are a contract other tools rely on.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()
REPO_MODELS = Path(__file__).resolve().parents[1] / "models"

ModelsDir = Annotated[
    Path,
    typer.Option(
        "--models-dir",
        help="Model registry folder (default: CLINRISK_MODELS_DIR or the repository's models/).",
        envvar="CLINRISK_MODELS_DIR",
    ),
]


def _auroc_ci(test: dict[str, float]) -> str:
    return f"{test['auroc']:.3f} ({test['auroc_ci_low']:.3f}-{test['auroc_ci_high']:.3f})"


def _test_rows(test: dict[str, float]) -> dict[str, object]:
    return {
        "AUROC": _auroc_ci(test),
        "AUPRC": test["auprc"],
        "Brier": test["brier"],
        "calibration slope": test["calibration_slope"],
        "calibration intercept": test["calibration_intercept"],
        "ECE": test["ece"],
    }


def _signer(folder: Path) -> str:
    sig = folder / "manifest.sig"
    if not sig.is_file():
        return "UNSIGNED (the service refuses it unless unsigned models are allowed)"
    return str(json.loads(sig.read_text())["key_id"])


def _print_summary(title: str, summary: dict[str, object]) -> None:
    table = Table(title=title, show_header=False)
    for key, value in summary.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


def train(
    name: Annotated[str, typer.Argument(help="Model config name (training/configs/NAME.toml).")],
    data: Annotated[
        Path | None,
        typer.Option(help="Dataset in the shared file's format (CSV, .csv.gz or Parquet)."),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Registry folder to write the artifact into.")
    ] = REPO_MODELS,
    version: Annotated[str, typer.Option(help="Semantic version of the new artifact.")] = "1.3.0",
    seed: Annotated[int | None, typer.Option(help="Seed (default: the config's).")] = None,
    signing_key: Annotated[
        Path | None,
        typer.Option(
            help="Private Ed25519 key (PEM) that signs the artifact; without one it is written "
            "unsigned, which the service refuses (README: Model signing).",
            envvar="CLINRISK_SIGNING_KEY_FILE",
        ),
    ] = None,
) -> None:
    """Train one model, validate it on a held-out test part and write its (signed) artifact."""
    from training.config import load_config
    from training.train import train as run_training

    config = load_config(name)
    start = time.perf_counter()
    with console.status("training") as status:

        def report(message: str) -> None:
            status.update(message)
            console.log(message)

        folder = run_training(
            config,
            data_path=data,
            out_dir=out,
            version=version,
            seed=seed,
            progress=report,
            signing_key=signing_key,
        )
    manifest = json.loads((folder / "manifest.json").read_text())
    test = manifest["validation"]["test"]
    _print_summary(
        f"{name} {version}: {manifest['kind']} (test part, n={test['n']})",
        {
            **_test_rows(test),
            **{
                f"baseline: {b['name']}": f"AUROC {b['auroc']:.3f}"
                for b in manifest["validation"]["baselines"]
            },
            "signature": _signer(folder),
            "seconds": round(time.perf_counter() - start, 1),
        },
    )


def evaluate(
    name: Annotated[str, typer.Argument(help="Model name in the registry.")],
    data: Annotated[Path, typer.Option(help="Labelled dataset in the training file's format.")],
    version: Annotated[str | None, typer.Option(help="Version (default: the default).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the metrics report as JSON here.")] = None,
    models_dir: ModelsDir = REPO_MODELS,
    outcome: Annotated[
        str, typer.Option(help="The 0/1 outcome column of a file in the model's own features.")
    ] = "outcome",
) -> None:
    """Score a labelled dataset with an existing artifact and print the validation metrics: a
    local file in the model's own feature columns plus an outcome column (as `clinrisk score`
    reads them), or the original training file."""
    from service.batch.job import BatchError
    from training.evaluate import evaluate_artifact
    from training.local_evaluate import LocalFileError, evaluate_feature_file, header

    try:
        if outcome in header(data):
            report = evaluate_feature_file(
                name, data, models_dir=models_dir, version=version, outcome=outcome
            )
        else:
            report = evaluate_artifact(name, data, models_dir=models_dir, version=version)
    except (LocalFileError, BatchError) as exc:
        console.print(f"[red]clinrisk evaluate: {exc}[/red]", highlight=False)
        raise typer.Exit(2) from None
    except KeyError as exc:  # the training file's loader met a column it needs missing
        console.print(
            f"[red]clinrisk evaluate: '{data.name}' has no '{outcome}' column and is not the "
            f"training file either (no column {exc}).[/red]",
            highlight=False,
        )
        raise typer.Exit(2) from None
    test = report["overall"]
    _print_summary(
        f"{name} {report['model']['version']} on {data.name} (n={test['n']})",
        _test_rows(test),
    )
    if out is not None:
        out.write_text(json.dumps(report, indent=2, default=str))
        console.print(f"report written to {out}")


def recalibrate(
    name: Annotated[str, typer.Argument(help="Model name in the registry.")],
    data: Annotated[
        Path, typer.Option(help="Local outcomes: the model's own feature columns + 'outcome'.")
    ],
    method: Annotated[
        str, typer.Option(help="intercept (calibration-in-the-large) or slope (both).")
    ] = "intercept",
    version: Annotated[str | None, typer.Option(help="Version to start from.")] = None,
    new_version: Annotated[str | None, typer.Option(help="Default: the next patch.")] = None,
    out: Annotated[Path, typer.Option(help="Registry folder to write into.")] = REPO_MODELS,
    signing_key: Annotated[
        Path | None,
        typer.Option(help="Private Ed25519 key (PEM).", envvar="CLINRISK_SIGNING_KEY_FILE"),
    ] = None,
    models_dir: ModelsDir = REPO_MODELS,
) -> None:
    """Fit a logistic recalibration on local outcomes and write a new candidate version (exact
    explanations, the local data recorded in its card); approve it with `clinrisk models`."""
    from service.batch.job import BatchError
    from training.local_evaluate import LocalFileError
    from training.recalibrate import recalibrate as run

    try:
        folder, figures = run(
            name,
            data,
            models_dir=models_dir,
            out_dir=out,
            version=version,
            new_version=new_version,
            method=method,
            signing_key=signing_key,
        )
    except (LocalFileError, BatchError, ValueError) as exc:
        console.print(f"[red]clinrisk recalibrate: {exc}[/red]", highlight=False)
        raise typer.Exit(2) from None
    console.print(f"{name} {figures['version']}: {folder} ({_signer(folder)}), a candidate")
    for when in ("before", "after"):
        f = figures[when]
        console.print(
            f"  {when}: AUROC {f['auroc']:.3f}, calibration slope {f['calibration_slope']:.3f}, "
            f"intercept {f['calibration_intercept']:.3f} (n={f['n']})",
            highlight=False,
        )


def build_equation(
    name: Annotated[str, typer.Argument(help="ascvd-pce, ascvd-prevent or cvd-framingham-2008.")],
    out: Annotated[
        Path, typer.Option(help="Registry folder to write the artifact into.")
    ] = REPO_MODELS,
    signing_key: Annotated[
        Path | None,
        typer.Option(
            help="Private Ed25519 key (PEM) that signs the artifact (README: Model signing).",
            envvar="CLINRISK_SIGNING_KEY_FILE",
        ),
    ] = None,
) -> None:
    """Write a published risk equation's artifact (nothing is fitted: training/equations.py)."""
    from training.equations import SPECS, build

    if name not in SPECS:
        raise typer.BadParameter(f"{name!r} is not one of {', '.join(sorted(SPECS))}")
    folder = build(name, out, signing_key=signing_key)
    console.print(f"{name}: {folder} ({_signer(folder)})")


def register(app: typer.Typer) -> None:
    """Add ``train``, ``evaluate``, ``build-equation`` and ``recalibrate`` to ``clinrisk`` (the
    ``clinrisk.commands`` entry point)."""
    app.command()(train)
    app.command()(evaluate)
    app.command("build-equation")(build_equation)
    app.command()(recalibrate)
