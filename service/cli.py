"""The ``clinrisk`` command line: serve, score, keys, models. Names are a contract tools rely on.

Training contributes its commands (``train``, ``evaluate``) through the ``clinrisk.commands``
entry point group (``pyproject.toml``): each entry point is a callable that adds commands to the
typer app. The serving image installs no training code, so a contribution that cannot be
imported is skipped; the service never imports ``training`` itself.

Every command imports what it needs when it runs: ``clinrisk score`` on a small file must not pay
for a web framework or a training library.
"""

from __future__ import annotations

import importlib.metadata
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from service.batch.job import BatchError, ScoreOptions, ScoreSummary
from service.lifecycle_cli import add_lifecycle_commands
from service.signing_cli import signing_app

PLUGIN_GROUP = "clinrisk.commands"
REPO_ROOT = Path(__file__).resolve().parents[1]
REPO_MODELS = REPO_ROOT / "models"
DEFAULT_KEYS_FILE = REPO_ROOT / "var" / "api_keys.json"

app = typer.Typer(
    help="clinrisk: train, validate, serve and batch-score clinical risk models.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()

ModelsDir = Annotated[
    Path,
    typer.Option(
        "--models-dir",
        help="Model registry folder (default: CLINRISK_MODELS_DIR or the repository's models/).",
        envvar="CLINRISK_MODELS_DIR",
    ),
]


def print_summary(title: str, summary: dict[str, object]) -> None:
    table = Table(title=title, show_header=False)
    for key, value in summary.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


# `clinrisk models` lists; its subcommands govern versions (service/lifecycle_cli.py).
models_app = typer.Typer(help="The registry's models and their lifecycle.")
app.add_typer(models_app, name="models")
add_lifecycle_commands(models_app)


@models_app.callback(invoke_without_command=True)
def list_models(ctx: typer.Context, models_dir: ModelsDir = REPO_MODELS) -> None:
    """List the registry: name, versions, default version, test AUROC."""
    if ctx.invoked_subcommand is not None:
        return
    from models.manifest import Manifest
    from models.registry import Registry

    # The manifests are enough here: nothing is scored, so no model is compiled.
    registry: Registry[Manifest] = Registry(lambda artifact: artifact.manifest)
    registry.load_dir(models_dir)
    table = Table("name", "versions", "default", "test AUROC (95% CI)", "kind")
    for name in registry.names():
        manifest = registry.get(name)
        test = manifest.validation.test if manifest.validation is not None else None
        table.add_row(
            name,
            ", ".join(registry.versions(name)),
            registry.default_version(name),
            f"{test.auroc:.3f} ({test.auroc_ci_low:.3f}-{test.auroc_ci_high:.3f})"
            if test is not None
            else "published equation",
            manifest.kind,
        )
    console.print(table)


keys_app = typer.Typer(
    help="Manage API keys: create, list, revoke, rotate (only their hashes are stored).",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")
db_app = typer.Typer(help="The audit database.", no_args_is_help=True)
app.add_typer(db_app, name="db")


KeysFile = Annotated[
    Path,
    typer.Option(
        "--keys-file", help="Keys file the service reads.", envvar="CLINRISK_API_KEYS_FILE"
    ),
]


def _names(values: list[str] | None) -> list[str]:
    """Repeated and comma-separated option values, as one list."""
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def _check_model_names(models: list[str], models_dir: Path) -> None:
    """A typo in --model would make a key that can score nothing: refuse names the registry
    does not have (skipped when the registry folder is not there, e.g. a keys-only host)."""
    from models.errors import ArtifactError
    from models.manifest import Manifest
    from models.registry import Registry

    registry: Registry[Manifest] = Registry(lambda artifact: artifact.manifest)
    try:
        registry.load_dir(models_dir)
    except ArtifactError:
        return
    known = registry.names()
    unknown = sorted(set(models) - set(known))
    if unknown:
        raise typer.BadParameter(
            f"no model named {', '.join(unknown)} in {models_dir} (known: {', '.join(known)})",
            param_hint="--model",
        )


@contextmanager
def _keys_file_errors(keys_file: Path) -> Iterator[None]:
    from service.auth import KeyFileError, UnknownKey

    try:
        yield
    except KeyFileError as exc:
        console.print(
            f"[red]error:[/red] {keys_file} is not a usable keys file ({exc}); nothing was "
            "changed.",
            highlight=False,
        )
        raise typer.Exit(1) from None
    except UnknownKey as exc:
        console.print(f"[red]error:[/red] {exc} in {keys_file}", highlight=False)
        raise typer.Exit(1) from None


@keys_app.command("create")
def keys_create(
    name_argument: Annotated[
        str | None, typer.Argument(metavar="NAME", help="Who or what the key is for.")
    ] = None,
    name_option: Annotated[
        str | None, typer.Option("--name", help="The same as NAME.", show_default=False)
    ] = None,
    scopes: Annotated[
        list[str] | None,
        typer.Option(
            "--scopes", "--scope", help="predict, batch, admin: comma-separated or repeated."
        ),
    ] = None,
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "--models",
            help="Restrict the key to this model (repeat, or comma-separate). Default: all.",
            show_default=False,
        ),
    ] = None,
    keys_file: KeysFile = DEFAULT_KEYS_FILE,
    models_dir: ModelsDir = REPO_MODELS,
) -> None:
    """Create an API key, print it once and store only its hash where the service reads keys."""
    from service.auth import create_key

    if name_argument and name_option and name_argument != name_option:
        raise typer.BadParameter("give the name once (NAME or --name)", param_hint="--name")
    name = name_argument or name_option
    if not name:
        raise typer.BadParameter("the key needs a name (NAME or --name)", param_hint="NAME")
    model_names = _names(models) or None
    if model_names is not None:
        _check_model_names(model_names, models_dir)
    with _keys_file_errors(keys_file):
        try:
            token = create_key(keys_file, name, _names(scopes) or ["predict"], model_names)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--scopes") from None
    typer.echo(token)
    console.print(
        f"[dim]stored hash in {keys_file}; the key is not shown again[/dim]", highlight=False
    )


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@keys_app.command("list")
def keys_list(
    keys_file: KeysFile = DEFAULT_KEYS_FILE,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per key.")] = False,
) -> None:
    """Every key: id, name, scopes, models, created, revoked. Never a hash or a secret."""
    import json

    from service.auth import load_keys

    with _keys_file_errors(keys_file):
        keys = list(load_keys(keys_file).values())
    now = datetime.now(UTC)
    rows = [
        {
            "key_id": key.key_id,
            "name": key.name,
            "scopes": sorted(key.scopes),
            "models": None if key.models is None else sorted(key.models),
            "created_at": None if key.created_at is None else key.created_at.isoformat(),
            "revoked_at": None if key.revoked_at is None else key.revoked_at.isoformat(),
            "replaced_by": key.replaced_by,
            "active": key.is_active(now),
        }
        for key in keys
    ]
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    # Plain columns, not a rich table: a narrow terminal must never truncate a key id.
    header = ("KEY ID", "NAME", "SCOPES", "MODELS", "CREATED", "REVOKED")
    lines = [header] + [
        (
            key.key_id,
            key.name,
            ",".join(sorted(key.scopes)),
            "all" if key.models is None else ",".join(sorted(key.models)),
            _when(key.created_at),
            _when(key.revoked_at)
            + (" (grace)" if key.revoked_at is not None and key.is_active(now) else "")
            + (f" -> {key.replaced_by}" if key.replaced_by else ""),
        )
        for key in keys
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        typer.echo("  ".join(cells).rstrip())


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[
        str, typer.Argument(metavar="KEY_ID", help="The key id (`clinrisk keys list`).")
    ],
    keys_file: KeysFile = DEFAULT_KEYS_FILE,
) -> None:
    """Refuse a key from now on (the service notices within about a second; no restart)."""
    from service.auth import revoke_key

    with _keys_file_errors(keys_file):
        key = revoke_key(keys_file, key_id)
    typer.echo(f"revoked {key.key_id} ({key.name}) at {_when(key.revoked_at)}")


@keys_app.command("rotate")
def keys_rotate(
    key_id: Annotated[
        str, typer.Argument(metavar="KEY_ID", help="The key id to replace (`clinrisk keys list`).")
    ],
    grace_minutes: Annotated[
        float, typer.Option(min=0, help="Minutes the old key keeps working.")
    ] = 0,
    keys_file: KeysFile = DEFAULT_KEYS_FILE,
) -> None:
    """Replace a key: a new one with the same name, scopes and models (printed once); the old
    one is refused after the grace period."""
    from service.auth import rotate_key

    with _keys_file_errors(keys_file):
        try:
            token, new = rotate_key(keys_file, key_id, timedelta(minutes=grace_minutes))
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="KEY_ID") from None
    typer.echo(token)
    console.print(
        f"[dim]new key {new.key_id} stored in {keys_file}; {key_id} is refused "
        f"{'now' if not grace_minutes else f'after {grace_minutes:g} minutes'}[/dim]",
        highlight=False,
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[
        int, typer.Option(help="Worker processes (parallelism comes from these).")
    ] = 1,
) -> None:
    """Start the HTTP service (configuration from CLINRISK_* environment variables)."""
    import uvicorn

    from service.database import upgrade
    from service.settings import settings_for_serving

    settings = settings_for_serving()
    # Migrated once here, before any worker starts (each worker's start-up finds it at head).
    upgrade(settings.database_url, timeout_seconds=settings.audit_timeout_seconds)
    # One OpenMP thread per worker: concurrent requests would otherwise fight over the cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # No access log: it would carry query strings; the service logs the route template instead.
    uvicorn.run(
        "service.main:app",
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the audit database (CLINRISK_DATABASE_URL) to the newest schema."""
    from service.database import upgrade
    from service.settings import get_settings

    settings = get_settings()
    revision = upgrade(settings.database_url, timeout_seconds=settings.audit_timeout_seconds)
    console.print(f"audit database at revision {revision}")


@app.command()
def score(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="Model name in the registry (or on the service).")
    ],
    input_path: Annotated[
        Path, typer.Argument(metavar="INPUT", help="CSV (.csv, .csv.gz) or Parquet file.")
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="Scored rows: .csv or .parquet (rejects: OUTPUT.rejects.csv)."
        ),
    ],
    version: Annotated[str | None, typer.Option(help="Version (default: the highest).")] = None,
    explain: Annotated[
        bool, typer.Option("--explain/--no-explain", help="Add the top-k contributions.")
    ] = False,
    top_k: Annotated[int, typer.Option(help="Contributions per row with --explain.")] = 3,
    id_column: Annotated[
        str | None, typer.Option(help="Id column to carry through (default: patient_id if any).")
    ] = None,
    chunk_size: Annotated[int, typer.Option(help="Rows per chunk (memory ~ a few chunks).")] = (
        50_000
    ),
    workers: Annotated[
        int, typer.Option(help="Chunks scored at once, on threads (local engine).")
    ] = 2,
    resume: Annotated[
        bool,
        typer.Option("--resume/--no-resume", help="Skip chunks an interrupted run finished."),
    ] = True,
    url: Annotated[
        str | None, typer.Option(help="Score through a running service at this URL.")
    ] = None,
    api_key_env: Annotated[
        str, typer.Option(help="Environment variable holding the API key (with --url).")
    ] = "CLINRISK_API_KEY",
    batch_size: Annotated[int, typer.Option(help="Patients per batch call (with --url).")] = 100,
    concurrency: Annotated[int, typer.Option(help="Batch calls in flight (with --url).")] = 4,
    engine: Annotated[str, typer.Option(help="local or spark.")] = "local",
    master: Annotated[str, typer.Option(help="Spark master (with --engine spark).")] = "local[2]",
    models_dir: ModelsDir = REPO_MODELS,
) -> None:
    """Score a file with a model: locally, through a running service (--url), or with Spark.

    Columns are the model's features in canonical units (`clinrisk models`, or the model card);
    a value in an accepted alternative unit takes a `<feature>_unit` column beside it (e.g.
    glucose_mg_dl_unit = mmol/L). Other columns are ignored. Bad rows go to OUTPUT.rejects.csv
    with their row number, id and reason. Exit code: 0 every row scored, 2 some rows rejected,
    1 failure.
    """
    from service.batch.progress import RichProgress

    options = ScoreOptions(
        explain=explain,
        top_k=top_k,
        id_column=id_column,
        chunk_size=chunk_size,
        workers=workers,
        resume=resume,
    )
    if engine not in ("local", "spark"):
        raise typer.BadParameter("use 'local' or 'spark'", param_hint="--engine")
    if url is not None and engine == "spark":
        raise typer.BadParameter("--url and --engine spark exclude each other", param_hint="--url")
    with _job_failures_reported():
        if url is not None:
            summary = _score_through_service(
                url,
                api_key_env,
                input_path,
                output,
                model_name=name,
                version=version,
                options=options,
                batch_size=batch_size,
                concurrency=concurrency,
            )
        elif engine == "spark":
            from service.batch.spark import score_file_spark

            with console.status("scoring with Spark"):
                summary = score_file_spark(
                    input_path,
                    output,
                    model_name=name,
                    models_dir=models_dir,
                    version=version,
                    options=options,
                    master=master,
                )
        else:
            from service.batch.local import score_file

            summary = score_file(
                input_path,
                output,
                model_name=name,
                models_dir=models_dir,
                version=version,
                options=options,
                progress=RichProgress(),
            )
    _print_score_summary(summary, input_path, output)
    if summary.rows_rejected:
        raise typer.Exit(2)


SCORE_TRACEBACK_ENV = "CLINRISK_TRACEBACK"
"""Set to 1 to see the traceback of an unexpected failure of ``clinrisk score`` (it may show
cells of the input: for a developer's own test files only)."""


def _score_error(message: str) -> None:
    """One line on stderr, never wrapped (a log collector sees one record per failure)."""
    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {message}", highlight=False)


@contextmanager
def _job_failures_reported() -> Iterator[None]:
    """A job's failures as one line on stderr and exit code 1, never a traceback: a traceback
    (or typer's, with its local variables) can show cells of the input. An interruption
    (Ctrl-C, or a scheduler's SIGTERM) keeps the finished chunks and exits 130."""

    def _terminate(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous_handler = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    except KeyboardInterrupt:
        console.print(
            "[yellow]interrupted:[/yellow] finished chunks are kept; run the same command "
            "again to resume. OUTPUT was not written.",
            highlight=False,
        )
        raise typer.Exit(130) from None
    except Exception as exc:
        from models.errors import ArtifactError  # loaded by then: the job imported models
        from models.registry import UnknownModel

        if isinstance(exc, BatchError | UnknownModel | ArtifactError):
            _score_error(" ".join(str(exc).split()))
        elif isinstance(exc, OSError):
            where = f" ({exc.filename})" if exc.filename else ""
            _score_error(f"{exc.strerror or type(exc).__name__}{where}")
        elif os.environ.get(SCORE_TRACEBACK_ENV) == "1":
            raise
        else:
            # NOTE: the exception's text is not shown: it may quote a cell or a line of input.
            _score_error(
                f"the job failed unexpectedly ({type(exc).__name__}); any finished chunks "
                f"are kept. Set {SCORE_TRACEBACK_ENV}=1 to see the traceback."
            )
        raise typer.Exit(1) from None
    finally:
        signal.signal(signal.SIGTERM, previous_handler)


def _score_through_service(
    url: str,
    api_key_env: str,
    input_path: Path,
    output: Path,
    *,
    model_name: str,
    version: str | None,
    options: ScoreOptions,
    batch_size: int,
    concurrency: int,
) -> ScoreSummary:
    from service.batch.progress import RichProgress
    from service.batch.remote import score_file_http
    from service.client import ClinriskClient

    api_key = os.environ.get(api_key_env)
    if not api_key:
        raise BatchError(f"--url needs an API key in the environment variable {api_key_env}")
    with ClinriskClient(url, api_key=api_key) as client:
        return score_file_http(
            input_path,
            output,
            client=client,
            model_name=model_name,
            version=version,
            options=options,
            batch_size=batch_size,
            concurrency=concurrency,
            progress=RichProgress(),
            service_url=url,
        )


def _print_score_summary(summary: ScoreSummary, input_path: Path, output: Path) -> None:
    model = summary.model
    print_summary(
        f"{model['name']} {model['version']}: {input_path.name} -> {output.name}",
        {
            "rows read": f"{summary.rows_read:,}",
            "rows scored": f"{summary.rows_scored:,}",
            "rows rejected": f"{summary.rows_rejected:,}",
            "chunks (resumed)": f"{summary.chunks} ({summary.chunks_resumed})",
            "seconds": f"{summary.seconds:.1f}",
            "rows/s": f"{summary.rows_per_second:,.0f}",
            "output": str(summary.output),
            "rejects": str(summary.rejects),
            "model sha256": model["sha256"][:16] + "…",
            **(
                {"ignored columns": ", ".join(summary.ignored_columns)}
                if summary.ignored_columns
                else {}
            ),
        },
    )


def register_contributions(target: typer.Typer) -> list[str]:
    """Add the commands other installed parts contribute; returns the ones that were skipped."""
    skipped = []
    for entry_point in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        try:
            register = entry_point.load()
        except ImportError as exc:  # e.g. the serving image has no training code
            skipped.append(f"{entry_point.name} ({exc})")
            continue
        register(target)
    return skipped


# Model artifact signing: `clinrisk signing keygen | sign | verify` (service/signing_cli.py).
app.add_typer(signing_app, name="signing")
# --- outcomes (issue 13): `clinrisk outcomes record FILE` -------------------------------------
outcomes_app = typer.Typer(help="Observed outcomes of predictions.", no_args_is_help=True)
app.add_typer(outcomes_app, name="outcomes")


@outcomes_app.command("record")
def outcomes_record(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV or Parquet: prediction_id or patient_id + "
            "model + observed_at, and outcome (0/1)."
        ),
    ],
    rejects: Annotated[
        Path | None, typer.Option(help="Write rejected rows' reasons here (CSV, no identifiers).")
    ] = None,
    models_dir: ModelsDir = REPO_MODELS,
) -> None:
    """Record observed outcomes into the audit database (CLINRISK_DATABASE_URL); patient ids
    are pseudonymised with CLINRISK_PSEUDONYM_KEY. Exit 1 when any row was rejected."""
    import csv
    import getpass

    from models.manifest import Manifest
    from models.registry import Registry
    from service.audit import Pseudonymizer
    from service.database import make_engine, upgrade
    from service.outcomes import OutcomeFileError, OutcomeStore, record_file
    from service.settings import settings_for_serving

    settings = settings_for_serving()
    assert settings.pseudonym_key is not None
    registry: Registry[Manifest] = Registry(lambda artifact: artifact.manifest)
    registry.load_dir(models_dir)
    upgrade(settings.database_url, timeout_seconds=settings.audit_timeout_seconds)
    engine = make_engine(settings.database_url, timeout_seconds=settings.audit_timeout_seconds)
    try:
        summary = record_file(
            file,
            OutcomeStore(engine),
            who=f"cli:{getpass.getuser()}"[:64],
            pseudonymize=Pseudonymizer(settings.pseudonym_key.get_secret_value().encode()),
            models=registry.names(),
        )
    except OutcomeFileError as exc:
        console.print(f"[red]clinrisk outcomes record: {exc}[/red]", highlight=False)
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    counts = summary.as_dict()
    print_summary(
        "outcomes",
        {k: v for k, v in counts.items() if k != "rejected"} | {"rejected": len(summary.rejected)},
    )
    for rejection in summary.rejected[:20]:
        console.print(
            f"row {rejection.row}: {rejection.field}: {rejection.message} "
            f"(allowed: {rejection.allowed})",
            highlight=False,
        )
    if rejects is not None:
        with rejects.open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=["row", "field", "message", "allowed"])
            writer.writeheader()
            writer.writerows(r.as_dict() for r in summary.rejected)
    if summary.rejected:
        raise typer.Exit(1)


register_contributions(app)


def main() -> None:
    """The ``clinrisk`` console script."""
    app()


if __name__ == "__main__":
    main()
