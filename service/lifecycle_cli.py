"""``clinrisk models approve | set-state | lifecycle`` (issue 13 part 4): the governed version
changes of :mod:`service.lifecycle` from the command line, on the audit database
(``CLINRISK_DATABASE_URL``). The decision is recorded as ``cli:<user>``; the evidence is
attached exactly as the admin API does."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()
REPO_MODELS = Path(__file__).resolve().parents[1] / "models"
# The same option as service/cli.py's (which imports this module, so it cannot be imported here).
ModelsDir = Annotated[
    Path,
    typer.Option(
        "--models-dir",
        help="Model registry folder (default: CLINRISK_MODELS_DIR or the repository's models/).",
        envvar="CLINRISK_MODELS_DIR",
    ),
]

Reason = Annotated[str, typer.Option("--reason", help="Why (recorded with the decision).")]
Note = Annotated[
    str | None, typer.Option("--note", help="Further evidence in words (e.g. a minutes link).")
]


def _context(models_dir: Path, name: str, version: str | None) -> tuple[Any, Any, Any]:
    from models.manifest import Manifest
    from models.registry import Registry, UnknownModel
    from service.database import make_engine, upgrade
    from service.settings import get_settings

    settings = get_settings()
    registry: Registry[Manifest] = Registry(lambda artifact: artifact.manifest)
    # Decisions concern verified artifacts only: the service's own trust policy.
    registry.load_dir(models_dir, trust=settings.trust_policy())
    try:
        manifest = registry.get(name, version)
    except UnknownModel as exc:
        console.print(f"[red]clinrisk models: {exc}[/red]", highlight=False)
        raise typer.Exit(2) from None
    upgrade(settings.database_url, timeout_seconds=settings.audit_timeout_seconds)
    engine = make_engine(settings.database_url, timeout_seconds=settings.audit_timeout_seconds)
    return settings, registry, (manifest, engine)


def _decide(
    models_dir: Path, name: str, version: str, state: str, reason: str, note: str | None
) -> None:
    from service import lifecycle
    from service.api.monitoring import drift_thresholds

    if not reason.strip():
        console.print("[red]clinrisk models: --reason must say why[/red]", highlight=False)
        raise typer.Exit(2)
    settings, _, (manifest, engine) = _context(models_dir, name, version)
    try:
        events = lifecycle.decide(
            engine,
            manifest,
            state,
            who=f"cli:{getpass.getuser()}",
            reason=reason.strip(),
            note=note,
            min_group=settings.monitoring_min_group,
            days=settings.drift_window_days,
            thresholds=drift_thresholds(settings),
        )
    except lifecycle.TransitionRefused as exc:
        console.print(f"[red]clinrisk models: {exc}[/red]", highlight=False)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    for event in events:
        console.print(
            f"{event.model_name} {event.model_version}: {event.from_state} -> {event.to_state} "
            f"by {event.changed_by} at {event.changed_at.isoformat()} ({event.reason})",
            highlight=False,
        )


def add_lifecycle_commands(group: typer.Typer) -> None:
    """Add the lifecycle commands to the ``clinrisk models`` group."""

    @group.command("approve")
    def approve(
        name: str,
        version: str,
        reason: Reason,
        note: Note = None,
        models_dir: ModelsDir = REPO_MODELS,
    ) -> None:
        """Approve a shadow version: it becomes the model's approved version (the previous one
        is retired), with the evidence attached and the decision audited."""
        _decide(models_dir, name, version, "approved", reason, note)

    @group.command("set-state")
    def set_state(
        name: str,
        version: str,
        state: Annotated[str, typer.Argument(help="candidate, shadow, approved or retired")],
        reason: Reason,
        note: Note = None,
        models_dir: ModelsDir = REPO_MODELS,
    ) -> None:
        """Move a version to another lifecycle state (audited, with the evidence)."""
        from service.lifecycle import STATES

        if state not in STATES:
            console.print(
                f"[red]clinrisk models: '{state}' is not a state ({', '.join(STATES)})[/red]",
                highlight=False,
            )
            raise typer.Exit(2)
        _decide(models_dir, name, version, state, reason, note)

    @group.command("lifecycle")
    def show(name: str, models_dir: ModelsDir = REPO_MODELS) -> None:
        """Each version's state, since when, by whom and why; and the approved version."""
        from service import lifecycle

        _, registry, (_, engine) = _context(models_dir, name, None)
        try:
            with engine.connect() as connection:
                rows = lifecycle.summary(connection, name, registry.versions(name))
                approved = lifecycle.approved_version(connection, name)
        finally:
            engine.dispose()
        table = Table("version", "state", "since", "by", "reason")
        for row in rows:
            table.add_row(
                row["version"], row["state"], row["since"] or "", row["by"] or "", row["reason"]
            )
        console.print(table)
        console.print(
            f"approved: {approved or 'none'}; served by default: {registry.default_version(name)}",
            highlight=False,
        )
