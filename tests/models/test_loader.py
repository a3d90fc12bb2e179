"""The verifying loader: every committed artifact loads, and any tampering is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from models.errors import ArtifactError
from models.loader import load_artifact, sha256_file
from models.registry import Registry, UnknownModel
from tests.conftest import MODEL_NAMES, MODELS_DIR


@pytest.fixture(params=MODEL_NAMES)
def artifact_copy(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A private copy of one committed artifact, safe to tamper with."""
    folder = tmp_path / request.param / "1.0.0"
    shutil.copytree(MODELS_DIR / request.param / "1.0.0", folder)
    return folder


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_committed_artifact_loads_and_matches_its_manifest(name: str) -> None:
    artifact = load_artifact(MODELS_DIR / name / "1.0.0")

    assert artifact.manifest.name == name
    assert artifact.manifest.version == "1.0.0"
    assert artifact.sha256 == sha256_file(MODELS_DIR / name / "1.0.0" / "manifest.json")
    assert (artifact.booster is None) != (artifact.linear is None)
    assert artifact.card_markdown.startswith("# ")


def test_every_listed_file_is_refused_after_a_one_byte_change(artifact_copy: Path) -> None:
    manifest = json.loads((artifact_copy / "manifest.json").read_text())
    for name in manifest["files"]:
        path = artifact_copy / name
        original = path.read_bytes()
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))

        with pytest.raises(ArtifactError, match="sha256 mismatch") as caught:
            load_artifact(artifact_copy)

        assert caught.value.path == str(path)
        path.write_bytes(original)
    load_artifact(artifact_copy)


def test_a_manifest_edit_that_breaks_the_schema_is_refused(artifact_copy: Path) -> None:
    path = artifact_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["tiers"] = list(reversed(manifest["tiers"]))
    path.write_text(json.dumps(manifest))

    with pytest.raises(ArtifactError, match="invalid manifest"):
        load_artifact(artifact_copy)


def test_a_manifest_that_repoints_a_hash_still_cannot_swap_the_model(artifact_copy: Path) -> None:
    """Replacing the model file AND its hash changes the manifest, so the artifact's identity
    (the manifest hash reported with every score) changes too."""
    before = load_artifact(artifact_copy).sha256
    path = artifact_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["caveats"].append("edited")
    path.write_text(json.dumps(manifest))

    assert load_artifact(artifact_copy).sha256 != before


def test_an_unlisted_file_is_refused(artifact_copy: Path) -> None:
    (artifact_copy / "extra.pkl").write_bytes(b"not listed")

    with pytest.raises(ArtifactError, match="not listed"):
        load_artifact(artifact_copy)


def test_a_missing_file_is_refused(artifact_copy: Path) -> None:
    (artifact_copy / "card.md").unlink()

    with pytest.raises(ArtifactError, match="missing"):
        load_artifact(artifact_copy)


def test_folder_name_must_equal_the_manifest_version(artifact_copy: Path) -> None:
    renamed = artifact_copy.with_name("1.0.1")
    artifact_copy.rename(renamed)

    with pytest.raises(ArtifactError, match="differs from the manifest's version"):
        load_artifact(renamed)


def test_a_different_xgboost_minor_version_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "diabetes" / "1.0.0"
    shutil.copytree(MODELS_DIR / "diabetes" / "1.0.0", folder)
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["libraries"]["xgboost"] = "1.0.0"
    path.write_text(json.dumps(manifest))

    with pytest.raises(ArtifactError, match=r"trained with xgboost 1\.0\.0"):
        load_artifact(folder)


def test_registry_serves_the_highest_version_unless_pinned(tmp_path: Path) -> None:
    for version in ("1.0.0", "1.2.0"):
        folder = tmp_path / "cvd" / version
        shutil.copytree(MODELS_DIR / "cvd" / "1.0.0", folder)
        if version != "1.0.0":
            path = folder / "manifest.json"
            manifest = json.loads(path.read_text())
            manifest["version"] = version
            path.write_text(json.dumps(manifest))
    registry: Registry[str] = Registry(lambda a: a.manifest.version)
    registry.load_dir(tmp_path)
    pinned: Registry[str] = Registry(lambda a: a.manifest.version, pinned={"cvd": "1.0.0"})
    pinned.load_dir(tmp_path)

    assert registry.versions("cvd") == ["1.0.0", "1.2.0"]
    assert registry.get("cvd") == "1.2.0"
    assert pinned.get("cvd") == "1.0.0"
    assert registry.ready
    with pytest.raises(UnknownModel, match=r"no version '9.0.0'. Available: 1.0.0, 1.2.0"):
        registry.get("cvd", "9.0.0")
    with pytest.raises(UnknownModel, match="Available: cvd"):
        registry.get("nope")
