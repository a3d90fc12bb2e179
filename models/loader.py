"""The one strict way to open an artifact folder.

Order matters: read the manifest's bytes once and verify their Ed25519 signature
(``manifest.sig``, :mod:`models.signing`) against the trusted keys, then parse exactly those
bytes, verify the sha256 of every file against them (and refuse files they do not list), and only
then deserialise the very bytes that were hashed. A tampered or foreign file is therefore never
parsed, and an edited manifest is refused before anything in it is believed.

Boosted trees are read from XGBoost's documented JSON model format (``model.json``) with
:mod:`json`, so loading and scoring need no XGBoost: the parser checks the document's format
version instead of an installed library's, and the manifest keeps recording the XGBoost release
used in training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from models.equations import Equation, EquationError, parse_equation
from models.errors import ArtifactError
from models.manifest import Manifest
from models.signing import SIGNATURE_FILE, TrustPolicy, default_policy, signature_document
from models.trees import Forest, UnsupportedModel, parse_forest

MANIFEST_FILE = "manifest.json"
TREE_MODEL_FILE = "model.json"
"""A booster in XGBoost's JSON model format (``Booster.save_model("model.json")``)."""
RELEASE = re.compile(r"^(\d+)\.(\d+)\.(\d+)")
log = logging.getLogger(__name__)


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
    signed_by: str | None = None
    """Id of the trusted key whose signature verified; ``None`` only if unsigned was allowed."""
    equation: Equation | None = None
    """A published equation, parsed from ``equation.json`` (kind ``equation``)."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_manifest(folder: Path) -> bytes:
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ArtifactError(manifest_path, "missing: every artifact folder needs a manifest.json")
    return manifest_path.read_bytes()


def _parse_manifest(folder: Path, raw: bytes) -> tuple[Manifest, str]:
    manifest_path = folder / MANIFEST_FILE
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
    present = {p.name for p in folder.iterdir() if p.name not in (MANIFEST_FILE, SIGNATURE_FILE)}
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


def load_artifact(folder: Path, trust: TrustPolicy | None = None) -> Artifact:
    """Verify and load one artifact folder, or raise :class:`ArtifactError` naming the file.

    ``trust`` says which keys may sign; by default the environment's
    (:func:`models.signing.default_policy`: the committed release key unless configured).
    """
    folder = folder.resolve()
    policy = trust if trust is not None else default_policy()
    raw = _read_manifest(folder)
    signed_by = policy.verify(folder / MANIFEST_FILE, raw)
    artifact = _load_verified(folder, raw, signed_by)
    if signed_by is None:
        # Only reachable with allow_unsigned: say so wherever it happens, it must not go unseen.
        log.warning("loaded an UNSIGNED model artifact (unsigned models allowed): %s", folder)
    return artifact


def sign_artifact(folder: Path, key: Ed25519PrivateKey) -> Path:
    """Sign an artifact folder's manifest.json with ``key``; returns the ``manifest.sig`` path.

    The artifact is checked first (file hashes, model parse), so a broken or tampered artifact is
    never signed; an existing signature is replaced. manifest.json itself is not touched.
    """
    folder = folder.resolve()
    raw = _read_manifest(folder)
    _load_verified(folder, raw, None)
    sig_path = folder / SIGNATURE_FILE
    partial = sig_path.with_name(f".{SIGNATURE_FILE}.partial")
    partial.write_bytes(signature_document(key, raw))
    os.replace(partial, sig_path)  # a reader sees the old signature or the new, never half
    # Read back through the verifying loader: the manifest may not change under our feet.
    load_artifact(folder, TrustPolicy.trusting(key.public_key()))
    return sig_path


def _load_verified(folder: Path, raw: bytes, signed_by: str | None) -> Artifact:
    """The artifact described by these (already signature-checked) manifest bytes."""
    manifest, manifest_sha = _parse_manifest(folder, raw)
    verified = _verify_files(folder, manifest)
    model_path = folder / manifest.model_file
    content = verified[manifest.model_file]
    forest: Forest | None = None
    linear: LinearParameters | None = None
    equation: Equation | None = None
    try:
        if manifest.kind == "xgboost":
            forest = _load_forest(model_path, content, manifest)
        elif manifest.kind == "equation":
            equation = parse_equation(content)
            unknown = equation.columns - {c.name for c in manifest.columns}
            if unknown:
                raise ArtifactError(
                    model_path, f"uses columns the manifest lacks: {sorted(unknown)}"
                )
        else:
            linear = _load_linear(model_path, content)
            if linear.columns != [c.name for c in manifest.columns]:
                raise ArtifactError(model_path, "columns differ from the manifest's columns")
    except ArtifactError:
        raise
    except EquationError as exc:
        raise ArtifactError(model_path, f"invalid equation: {exc}") from None
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
        signed_by=signed_by,
        equation=equation,
    )
