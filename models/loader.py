"""The one strict way to open an artifact folder.

Order matters: parse the manifest, verify the sha256 of every file against it (and refuse files
it does not list), check the library versions the model file needs, and only then deserialise.
A tampered or foreign file is therefore never parsed by XGBoost or anything else.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import xgboost
from pydantic import ValidationError

from models.errors import ArtifactError
from models.manifest import Manifest

MANIFEST_FILE = "manifest.json"
# Libraries whose exact major.minor must match the training environment, per model kind.
PINNED_LIBRARIES = {"xgboost": ("xgboost",), "logistic": ()}


@dataclass(frozen=True)
class LinearParameters:
    """A fitted logistic model in canonical units: ``margin = intercept + coefficients · x``."""

    columns: list[str]
    coefficients: list[float]
    intercept: float
    means: list[float]


@dataclass(frozen=True)
class Artifact:
    """A verified artifact: its manifest, the hash that identifies it, and the fitted model."""

    path: Path
    manifest: Manifest
    sha256: str
    """sha256 of manifest.json, which itself pins every other file: the artifact's identity."""
    booster: xgboost.Booster | None
    linear: LinearParameters | None
    card_markdown: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def _parse_manifest(folder: Path) -> tuple[Manifest, str]:
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ArtifactError(manifest_path, "missing: every artifact folder needs a manifest.json")
    raw = manifest_path.read_bytes()
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ArtifactError(
            manifest_path, f"invalid manifest at '{where}': {first['msg']}"
        ) from None
    if manifest.version != folder.name:
        raise ArtifactError(
            manifest_path,
            f"folder name '{folder.name}' differs from the manifest's version '{manifest.version}'",
        )
    if manifest.name != folder.parent.name:
        raise ArtifactError(
            manifest_path,
            f"parent folder '{folder.parent.name}' differs from the manifest's name "
            f"'{manifest.name}'",
        )
    return manifest, hashlib.sha256(raw).hexdigest()


def _verify_files(folder: Path, manifest: Manifest) -> None:
    present = {p.name for p in folder.iterdir() if p.name != MANIFEST_FILE}
    unlisted = present - set(manifest.files)
    if unlisted:
        raise ArtifactError(folder / sorted(unlisted)[0], "not listed in manifest.json files")
    for name, expected in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise ArtifactError(path, "listed in manifest.json but missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactError(
                path, f"sha256 mismatch: manifest says {expected[:12]}…, file is {actual[:12]}…"
            )


def _check_libraries(folder: Path, manifest: Manifest) -> None:
    for library in PINNED_LIBRARIES[manifest.kind]:
        trained = manifest.libraries.get(library)
        if trained is None:
            raise ArtifactError(folder / MANIFEST_FILE, f"does not record the {library} version")
        installed = metadata.version(library)
        if _major_minor(installed) != _major_minor(trained):
            raise ArtifactError(
                folder / manifest.model_file,
                f"trained with {library} {trained}, but {installed} is installed; "
                "install the locked environment (requirements.lock)",
            )


def _load_linear(path: Path) -> LinearParameters:
    data: dict[str, Any] = json.loads(path.read_text())
    params = LinearParameters(
        columns=list(data["columns"]),
        coefficients=[float(v) for v in data["coefficients"]],
        intercept=float(data["intercept"]),
        means=[float(v) for v in data["means"]],
    )
    if not len(params.columns) == len(params.coefficients) == len(params.means):
        raise ArtifactError(path, "columns, coefficients and means differ in length")
    return params


def load_artifact(folder: Path) -> Artifact:
    """Verify and load one artifact folder, or raise :class:`ArtifactError` naming the file."""
    folder = folder.resolve()
    manifest, manifest_sha = _parse_manifest(folder)
    _verify_files(folder, manifest)
    _check_libraries(folder, manifest)
    model_path = folder / manifest.model_file
    expected_columns = [c.name for c in manifest.columns]
    booster: xgboost.Booster | None = None
    linear: LinearParameters | None = None
    try:
        if manifest.kind == "xgboost":
            booster = xgboost.Booster()
            booster.load_model(bytearray(model_path.read_bytes()))
            if booster.num_features() != len(expected_columns):
                raise ArtifactError(
                    model_path,
                    f"booster has {booster.num_features()} features, "
                    f"manifest lists {len(expected_columns)} columns",
                )
        else:
            linear = _load_linear(model_path)
            if linear.columns != expected_columns:
                raise ArtifactError(model_path, "columns differ from the manifest's columns")
    except ArtifactError:
        raise
    except Exception as exc:  # any parse failure of a hash-verified file is still an artifact error
        raise ArtifactError(model_path, f"could not be loaded: {exc}") from exc
    card_path = folder / "card.md"
    card = card_path.read_text() if "card.md" in manifest.files else ""
    return Artifact(
        path=folder,
        manifest=manifest,
        sha256=manifest_sha,
        booster=booster,
        linear=linear,
        card_markdown=card,
    )
