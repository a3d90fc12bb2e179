"""The one strict way to open an artifact folder.

Order matters: parse the manifest, verify the sha256 of every file against it (and refuse files
it does not list), and only then deserialise the very bytes that were hashed. A tampered or
foreign file is therefore never parsed. Boosted trees are read from XGBoost's documented JSON
model format (``model.json``) with :mod:`json`, so loading and scoring need no XGBoost: the
parser checks the document's format version instead of an installed library's, and the manifest
keeps recording the XGBoost release used in training.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from models.errors import ArtifactError
from models.manifest import Manifest
from models.trees import Forest, UnsupportedModel, parse_forest

MANIFEST_FILE = "manifest.json"
TREE_MODEL_FILE = "model.json"
"""A booster in XGBoost's JSON model format (``Booster.save_model("model.json")``)."""
RELEASE = re.compile(r"^(\d+)\.(\d+)\.(\d+)")


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
    forest: Forest | None
    """The boosted trees, parsed from ``model.json`` (kind ``xgboost``)."""
    linear: LinearParameters | None
    card_markdown: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def _verify_files(folder: Path, manifest: Manifest) -> dict[str, bytes]:
    """Every listed file's content, read once and hashed: later steps parse exactly these bytes."""
    present = {p.name for p in folder.iterdir() if p.name != MANIFEST_FILE}
    unlisted = present - set(manifest.files)
    if unlisted:
        raise ArtifactError(folder / sorted(unlisted)[0], "not listed in manifest.json files")
    verified: dict[str, bytes] = {}
    for name, expected in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise ArtifactError(path, "listed in manifest.json but missing")
        content = path.read_bytes()
        actual = hashlib.sha256(content).hexdigest()
        if actual != expected:
            raise ArtifactError(
                path, f"sha256 mismatch: manifest says {expected[:12]}…, file is {actual[:12]}…"
            )
        verified[name] = content
    return verified


def _load_forest(path: Path, content: bytes, manifest: Manifest) -> Forest:
    if path.name != TREE_MODEL_FILE:
        raise ArtifactError(
            path,
            f"boosted trees are read from XGBoost's JSON model format ({TREE_MODEL_FILE}); "
            "retrain the model with this version of clinrisk",
        )
    trained = manifest.libraries.get("xgboost")
    release = RELEASE.match(trained or "")
    if release is None:
        raise ArtifactError(
            path.with_name(MANIFEST_FILE), "does not record the xgboost version used in training"
        )
    try:
        forest = parse_forest(json.loads(content))
        forest.check_compilable()
    except UnsupportedModel as exc:
        raise ArtifactError(path, str(exc)) from None
    written_by = forest.xgboost_version
    if tuple(int(g) for g in release.groups()) != written_by:
        raise ArtifactError(
            path,
            f"written by XGBoost {'.'.join(map(str, written_by))}, but the manifest records "
            f"training with xgboost {trained}",
        )
    columns = [c.name for c in manifest.columns]
    if forest.n_columns != len(columns):
        raise ArtifactError(
            path,
            f"booster has {forest.n_columns} features, manifest lists {len(columns)} columns",
        )
    if forest.feature_names and forest.feature_names != columns:
        raise ArtifactError(path, "feature names differ from the manifest's columns")
    return forest


def _load_linear(path: Path, content: bytes) -> LinearParameters:
    data: dict[str, Any] = json.loads(content)
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
    verified = _verify_files(folder, manifest)
    model_path = folder / manifest.model_file
    content = verified[manifest.model_file]
    forest: Forest | None = None
    linear: LinearParameters | None = None
    try:
        if manifest.kind == "xgboost":
            forest = _load_forest(model_path, content, manifest)
        else:
            linear = _load_linear(model_path, content)
            if linear.columns != [c.name for c in manifest.columns]:
                raise ArtifactError(model_path, "columns differ from the manifest's columns")
    except ArtifactError:
        raise
    except Exception as exc:  # any parse failure of a hash-verified file is still an artifact error
        raise ArtifactError(model_path, f"could not be loaded: {exc!r}") from exc
    try:
        card = verified["card.md"].decode() if "card.md" in verified else ""
    except UnicodeDecodeError as exc:
        raise ArtifactError(folder / "card.md", f"is not UTF-8: {exc}") from None
    return Artifact(
        path=folder,
        manifest=manifest,
        sha256=manifest_sha,
        forest=forest,
        linear=linear,
        card_markdown=card,
    )
