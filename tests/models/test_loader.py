"""The verifying loader: every committed artifact loads, and any tampering is refused.

Tests that edit manifest.json re-sign the copy with a test key (``signer``, tests/models/
conftest.py) and trust only that key, so the check under test is the one after the signature.
Signature refusals themselves are in test_signing.py.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from models.errors import ArtifactError
from models.loader import load_artifact, sha256_file
from models.manifest import DEFAULT_CLINICAL_USE
from models.registry import Registry, UnknownModel, artifact_folder
from tests.conftest import MODEL_NAMES, MODELS_DIR, SHIPPED_VERSION
from tests.models.conftest import Signer


@pytest.fixture(params=MODEL_NAMES)
def artifact_copy(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A private copy of one committed artifact, safe to tamper with."""
    folder = tmp_path / request.param / SHIPPED_VERSION
    shutil.copytree(MODELS_DIR / request.param / SHIPPED_VERSION, folder)
    return folder


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_committed_artifact_loads_and_matches_its_manifest(name: str) -> None:
    artifact = load_artifact(MODELS_DIR / name / SHIPPED_VERSION)

    assert artifact.manifest.name == name
    assert artifact.manifest.version == SHIPPED_VERSION
    assert artifact.sha256 == sha256_file(MODELS_DIR / name / SHIPPED_VERSION / "manifest.json")
    assert (artifact.forest is None) != (artifact.linear is None)
    assert (artifact.forest is None) == (artifact.manifest.kind == "logistic")
    assert artifact.card_markdown.startswith("# ")
    assert artifact.signed_by is not None  # the committed release key, see test_signing.py


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


def test_a_signed_manifest_that_breaks_the_schema_is_still_refused(
    artifact_copy: Path, signer: Signer
) -> None:
    path = artifact_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["tiers"] = list(reversed(manifest["tiers"]))
    path.write_text(json.dumps(manifest))
    signer.resign(artifact_copy)

    with pytest.raises(ArtifactError, match="invalid manifest"):
        load_artifact(artifact_copy, signer.trust)


def test_a_manifest_edit_is_refused_and_a_re_signed_one_has_another_identity(
    artifact_copy: Path, signer: Signer
) -> None:
    """Editing the manifest breaks its signature; re-signed by a trusted key it loads, and the
    artifact's identity (the manifest hash reported with every score) is a different one."""
    before = load_artifact(artifact_copy).sha256
    path = artifact_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["caveats"].append("edited")
    path.write_text(json.dumps(manifest))

    with pytest.raises(ArtifactError, match="does not verify"):
        load_artifact(artifact_copy)
    signer.resign(artifact_copy)
    assert load_artifact(artifact_copy, signer.trust).sha256 != before


def test_an_unlisted_file_is_refused(artifact_copy: Path) -> None:
    (artifact_copy / "extra.pkl").write_bytes(b"not listed")

    with pytest.raises(ArtifactError, match="not listed"):
        load_artifact(artifact_copy)


def test_a_missing_file_is_refused(artifact_copy: Path) -> None:
    (artifact_copy / "card.md").unlink()

    with pytest.raises(ArtifactError, match="missing"):
        load_artifact(artifact_copy)


def test_a_signature_cannot_move_an_artifact_to_another_version(artifact_copy: Path) -> None:
    """The name and version are inside the signed manifest and must match the folder."""
    renamed = artifact_copy.with_name("1.0.1")
    artifact_copy.rename(renamed)

    with pytest.raises(ArtifactError, match="differs from the manifest's version"):
        load_artifact(renamed)


def rewrite_model(folder: Path, edit: Callable[[dict[str, Any]], None], signer: Signer) -> Path:
    """Edit model.json, re-pin its hash and re-sign, as a (mis)configured training run would."""
    path = folder / "model.json"
    model = json.loads(path.read_text())
    edit(model)
    path.write_text(json.dumps(model))
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["model.json"] = sha256_file(path)
    manifest_path.write_text(json.dumps(manifest))
    signer.resign(folder)
    return path


@pytest.fixture
def tree_artifact(tmp_path: Path) -> Path:
    folder = tmp_path / "diabetes" / SHIPPED_VERSION
    shutil.copytree(MODELS_DIR / "diabetes" / SHIPPED_VERSION, folder)
    return folder


def test_tree_model_is_read_from_the_json_model_format_without_xgboost() -> None:
    artifact = load_artifact(MODELS_DIR / "diabetes" / SHIPPED_VERSION)

    assert artifact.manifest.model_file == "model.json"
    assert artifact.forest is not None
    assert artifact.forest.n_columns == len(artifact.manifest.columns)
    assert artifact.forest.feature_names == [c.name for c in artifact.manifest.columns]
    # the release that wrote the file is the one the manifest records for training
    written_by = ".".join(map(str, artifact.forest.xgboost_version))
    assert written_by == artifact.manifest.libraries["xgboost"]


def test_a_json_model_format_the_parser_does_not_know_is_refused(
    tree_artifact: Path, signer: Signer
) -> None:
    path = rewrite_model(tree_artifact, lambda m: m.update(version=[9, 0, 0]), signer)

    message = r"written by XGBoost 9\.0\.0; this parser reads"
    with pytest.raises(ArtifactError, match=message) as caught:
        load_artifact(tree_artifact, signer.trust)

    assert caught.value.path == str(path)


def test_a_model_file_from_another_xgboost_than_the_manifest_records_is_refused(
    tree_artifact: Path,
    signer: Signer,
) -> None:
    rewrite_model(tree_artifact, lambda m: m.update(version=[2, 1, 4]), signer)

    with pytest.raises(ArtifactError, match=r"written by XGBoost 2\.1\.4, but the manifest"):
        load_artifact(tree_artifact, signer.trust)


def test_a_manifest_without_the_training_xgboost_version_is_refused(
    tree_artifact: Path, signer: Signer
) -> None:
    path = tree_artifact / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["libraries"]["xgboost"]
    path.write_text(json.dumps(manifest))
    signer.resign(tree_artifact)

    with pytest.raises(ArtifactError, match="does not record the xgboost version") as caught:
        load_artifact(tree_artifact, signer.trust)

    assert caught.value.path == str(path)


def test_a_booster_with_another_objective_is_refused(tree_artifact: Path, signer: Signer) -> None:
    rewrite_model(
        tree_artifact, lambda m: m["learner"]["objective"].update(name="reg:squarederror"), signer
    )

    with pytest.raises(ArtifactError, match="only binary:logistic boosters are supported"):
        load_artifact(tree_artifact, signer.trust)


def test_a_feature_count_other_than_the_manifest_columns_is_refused(
    tree_artifact: Path, signer: Signer
) -> None:
    path = tree_artifact / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["columns"].pop()
    path.write_text(json.dumps(manifest))
    signer.resign(tree_artifact)

    with pytest.raises(ArtifactError, match=r"booster has 17 features, manifest lists 16 columns"):
        load_artifact(tree_artifact, signer.trust)


def test_a_forest_deeper_than_the_lookup_tables_support_is_refused_on_load(
    tree_artifact: Path,
    signer: Signer,
) -> None:
    columns = [
        c["name"] for c in json.loads((tree_artifact / "manifest.json").read_text())["columns"]
    ]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, len(columns)))
    y = (X[:, :6].sum(axis=1) > 0).astype(int)
    deep = xgb.train(
        {"objective": "binary:logistic", "max_depth": 4, "nthread": 1, "seed": 0},
        xgb.DMatrix(X, y, feature_names=columns),
        2,
    )
    rewrite_model(tree_artifact, lambda m: m.update(json.loads(deep.save_raw("json"))), signer)

    with pytest.raises(ArtifactError, match=r"tree 0 splits on \d features; lookup tables support"):
        load_artifact(tree_artifact, signer.trust)


def test_a_model_file_that_is_not_json_is_refused_after_its_hash_matches(
    tree_artifact: Path,
    signer: Signer,
) -> None:
    path = tree_artifact / "model.json"
    path.write_bytes(b"{not json")
    manifest = json.loads((tree_artifact / "manifest.json").read_text())
    manifest["files"]["model.json"] = sha256_file(path)
    (tree_artifact / "manifest.json").write_text(json.dumps(manifest))
    signer.resign(tree_artifact)

    with pytest.raises(ArtifactError, match="could not be loaded: JSONDecodeError") as caught:
        load_artifact(tree_artifact, signer.trust)

    assert caught.value.path == str(path)


def test_a_binary_booster_file_from_before_1_1_0_is_refused_with_the_fix(
    tree_artifact: Path,
    signer: Signer,
) -> None:
    (tree_artifact / "model.json").rename(tree_artifact / "model.ubj")
    path = tree_artifact / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["model_file"] = "model.ubj"
    manifest["files"]["model.ubj"] = manifest["files"].pop("model.json")
    path.write_text(json.dumps(manifest))
    signer.resign(tree_artifact)

    with pytest.raises(ArtifactError, match=r"XGBoost's JSON model format \(model.json\)"):
        load_artifact(tree_artifact, signer.trust)


def test_registry_serves_the_highest_version_unless_pinned(tmp_path: Path, signer: Signer) -> None:
    for version in ("1.1.0", "1.2.0"):
        folder = tmp_path / "cvd" / version
        shutil.copytree(MODELS_DIR / "cvd" / SHIPPED_VERSION, folder)
        path = folder / "manifest.json"
        manifest = json.loads(path.read_text())
        manifest["version"] = version
        path.write_text(json.dumps(manifest))
        signer.resign(folder)
    registry: Registry[str] = Registry(lambda a: a.manifest.version)
    registry.load_dir(tmp_path, signer.trust)
    pinned: Registry[str] = Registry(lambda a: a.manifest.version, pinned={"cvd": "1.1.0"})
    pinned.load_dir(tmp_path, signer.trust)

    assert registry.versions("cvd") == ["1.1.0", "1.2.0"]
    assert registry.get("cvd") == "1.2.0"
    assert pinned.get("cvd") == "1.1.0"
    assert registry.ready
    with pytest.raises(UnknownModel, match=r"no version '9.0.0'. Available: 1.1.0, 1.2.0"):
        registry.get("cvd", "9.0.0")
    with pytest.raises(UnknownModel, match="Available: cvd"):
        registry.get("nope")


def test_the_committed_registry_serves_the_newest_and_keeps_1_2_0_loadable() -> None:
    registry: Registry[str] = Registry(lambda a: a.manifest.version)
    registry.load_dir(MODELS_DIR)
    for name in MODEL_NAMES:
        assert {"1.2.0", SHIPPED_VERSION} <= set(registry.versions(name))
        assert registry.get(name) == artifact_folder(MODELS_DIR, name).name
        assert registry.get(name, "1.2.0") == "1.2.0"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_shipped_model_states_its_clinical_use(name: str) -> None:
    """Issue 10: the status and its reason are in the signed manifest; an older artifact that
    states none is read conservatively as evaluation only."""
    use = load_artifact(MODELS_DIR / name / SHIPPED_VERSION).manifest.clinical_use
    assert use != DEFAULT_CLINICAL_USE
    assert use.status in ("validated", "evaluation_only", "teaching_data_only")
    assert len(use.reason) > 40
    if name == "cvd":
        assert use.status == "evaluation_only" and "teaching extract" in use.reason
    older = load_artifact(MODELS_DIR / name / "1.2.0").manifest
    assert older.clinical_use == DEFAULT_CLINICAL_USE
    assert older.clinical_use.status == "evaluation_only"
    assert older.clinical_use.reason == "not stated by this artifact"


@pytest.mark.parametrize("name", ["ascvd-pce", "ascvd-prevent", "cvd-framingham-2008"])
def test_published_equations_are_validated_externally_not_locally(name: str) -> None:
    manifest = load_artifact(artifact_folder(MODELS_DIR, name)).manifest
    assert manifest.clinical_use.status == "validated"
    assert "Not validated locally" in manifest.clinical_use.reason
