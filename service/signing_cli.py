"""``clinrisk signing``: create a signing key pair, sign artifact folders, verify them.

A sub-app of its own (added to ``clinrisk`` in ``service/cli.py``) so the ``models`` listing
keeps its name. Key handling is described in README.md, "Model signing".
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

signing_app = typer.Typer(
    help="Sign model artifacts (Ed25519) and verify them against the trusted keys.",
    no_args_is_help=True,
)
console = Console()
REPO_ROOT = Path(__file__).resolve().parents[1]


@signing_app.command("keygen")
def keygen(
    private_key: Annotated[
        Path,
        typer.Option(
            "--private-key",
            help="Where to write the private key (PEM, mode 600). Keep it OUT of the repository: "
            "a secret store or HSM in production.",
        ),
    ],
    public_key: Annotated[
        Path,
        typer.Option(
            "--public-key",
            help="Where to write the public key; trust it with CLINRISK_TRUSTED_KEYS or by "
            "committing it to models/trusted_keys/ (NAME.pub).",
        ),
    ],
) -> None:
    """Create an Ed25519 key pair for signing model artifacts; prints its key id."""
    from models.signing import KeyFileError, generate_private_key, write_key_pair

    if private_key.resolve().is_relative_to(REPO_ROOT):
        raise typer.BadParameter(
            f"{private_key} is inside the repository; private keys never belong there",
            param_hint="--private-key",
        )
    try:
        key_id = write_key_pair(generate_private_key(), private_key, public_key)
    except KeyFileError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(key_id)
    console.print(
        f"[dim]private key: {private_key} (mode 600); public key: {public_key}[/dim]",
        highlight=False,
    )


@signing_app.command("sign")
def sign(
    folders: Annotated[
        list[Path], typer.Argument(metavar="FOLDER...", help="Artifact folders (NAME/VERSION).")
    ],
    key: Annotated[
        Path,
        typer.Option(
            "--key", help="Private signing key (PEM).", envvar="CLINRISK_SIGNING_KEY_FILE"
        ),
    ],
) -> None:
    """Sign artifact folders: writes manifest.sig beside manifest.json, which stays unchanged.

    Each artifact is verified (file hashes, model) before it is signed; a previous signature is
    replaced (key rotation).
    """
    from models.errors import ArtifactError
    from models.loader import sign_artifact
    from models.signing import KeyFileError, default_policy, key_id, load_private_key

    try:
        private = load_private_key(key)
    except KeyFileError as exc:
        raise typer.BadParameter(str(exc), param_hint="--key") from None
    signer = key_id(private.public_key())
    for folder in folders:
        try:
            written = sign_artifact(folder, private)
        except ArtifactError as exc:
            console.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None
        console.print(f"signed {folder} with {signer}: {written}", highlight=False)
    try:
        trusted = signer in default_policy().keys
    except KeyFileError:  # a broken trust setting is reported by `clinrisk signing verify`
        trusted = False
    if not trusted:
        console.print(
            f"[yellow]note:[/yellow] {signer} is not among the trusted keys here; a service "
            "trusting the default or CLINRISK_TRUSTED_KEYS will refuse these artifacts until "
            "its public key is added",
            highlight=False,
        )


@signing_app.command("verify")
def verify(
    folders: Annotated[
        list[Path] | None,
        typer.Argument(metavar="[FOLDER...]", help="Artifact folders (default: every one)."),
    ] = None,
    models_dir: Annotated[
        Path,
        typer.Option(
            "--models-dir", help="Registry folder to verify.", envvar="CLINRISK_MODELS_DIR"
        ),
    ] = REPO_ROOT / "models",
) -> None:
    """Verify artifacts as the service would: CLINRISK_TRUSTED_KEYS and
    CLINRISK_ALLOW_UNSIGNED_MODELS decide.

    Exit code 0 when every artifact verifies, 1 otherwise.
    """
    from models.errors import ArtifactError
    from models.loader import load_artifact
    from models.registry import discover
    from models.signing import KeyFileError, default_policy

    try:
        policy = default_policy()
        targets = folders or discover(models_dir)
    except (KeyFileError, ArtifactError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    failed = False
    for folder in targets:
        try:
            artifact = load_artifact(folder, policy)
        except ArtifactError as exc:
            failed = True
            console.print(f"[red]refused[/red] {folder}: {exc.reason}", highlight=False)
            continue
        signer = artifact.signed_by or "[yellow]UNSIGNED (allowed)[/yellow]"
        console.print(f"ok {folder}: signed by {signer}, sha256 {artifact.sha256[:16]}…")
    if failed:
        raise typer.Exit(1)
