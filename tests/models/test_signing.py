"""Signed artifacts (issue 15, finding 9): an edited manifest.json never loads.

The attack of the finding: one byte of the calibration slope (1.0787 -> 3.0787), or two bytes of
a tier threshold, edited in manifest.json. Each is refused by the loader, by the registry, by the
batch path, and the real service does not start with it.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from models.errors import ArtifactError
from models.loader import load_artifact, sha256_file, sign_artifact
from models.predictor import load_predictor
from models.registry import Registry
from models.signing import (
    ALLOW_UNSIGNED_ENV,
    DEFAULT_TRUSTED_KEYS,
    SIGNATURE_FILE,
    TRUSTED_KEYS_ENV,
    KeyFileError,
    TrustPolicy,
    default_policy,
    generate_private_key,
    key_id,
    load_public_key,
    public_pem,
    write_key_pair,
)
from service.app import create_app
from service.cli import app as cli
from service.settings import REPO_ROOT, Settings
from tests.conftest import MODEL_NAMES, MODELS_DIR, SHIPPED_VERSION, Keys, running_server
from tests.models.conftest import Signer

# The diabetes manifest the tamper tests copy (SHIPPED_VERSION), as its JSON spells its values.
_DIABETES = load_artifact(MODELS_DIR / "diabetes" / SHIPPED_VERSION).manifest
_SLOPE = repr(_DIABETES.calibration.slope)
_HIGH = repr(_DIABETES.tiers[-1].lower)
assert _SLOPE[0] != "3" and _HIGH.startswith("0.") and _HIGH[2] != "9"
SLOPE = f'"slope": {_SLOPE}'
SLOPE_EDITED = f'"slope": 3{_SLOPE[1:]}'  # one byte
# The high tier's lower bound and the elevated tier's upper bound: two bytes, tiers still valid.
TIER = f'"upper": {_HIGH}'
TIER_EDITED = f'"upper": 0.9{_HIGH[3:]}'
HIGH = f'"lower": {_HIGH}'
HIGH_EDITED = f'"lower": 0.9{_HIGH[3:]}'


@pytest.fixture(autouse=True)
def _environment_trusts_the_release_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see the defaults, whatever the shell running them sets."""
    monkeypatch.delenv(TRUSTED_KEYS_ENV, raising=False)
    monkeypatch.delenv(ALLOW_UNSIGNED_ENV, raising=False)


def copy_registry(tmp_path: Path, names: tuple[str, ...] = MODEL_NAMES) -> Path:
    registry = tmp_path / "models"
    for name in names:
        shutil.copytree(MODELS_DIR / name / SHIPPED_VERSION, registry / name / SHIPPED_VERSION)
    return registry


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1
    path.write_text(text.replace(old, new))


def tamper_slope(registry: Path) -> Path:
    manifest = registry / "diabetes" / SHIPPED_VERSION / "manifest.json"
    before = manifest.read_bytes()
    edit(manifest, SLOPE, SLOPE_EDITED)
    after = manifest.read_bytes()
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert len(changed) == 1  # exactly the finding's one-byte edit
    return manifest.parent


def tamper_tiers(registry: Path) -> Path:
    manifest = registry / "diabetes" / SHIPPED_VERSION / "manifest.json"
    edit(manifest, TIER, TIER_EDITED)
    edit(manifest, HIGH, HIGH_EDITED)
    return manifest.parent


def service_settings(tmp_path: Path, keys: Keys, models_dir: Path, **extra: object) -> Settings:
    return Settings(
        models_dir=models_dir,
        database_url=f"sqlite:///{tmp_path / 'audit.db'}",
        api_keys_file=keys.file,
        pseudonym_key="test-pseudonym-key",  # type: ignore[arg-type]
        **extra,  # type: ignore[arg-type]
    )


# --- the committed artifacts ---------------------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_committed_artifacts_are_signed_by_the_committed_release_key(name: str) -> None:
    release = {key_id(load_public_key(p)) for p in DEFAULT_TRUSTED_KEYS.glob("*.pub")}

    artifact = load_artifact(MODELS_DIR / name / SHIPPED_VERSION)

    assert artifact.signed_by in release
    assert default_policy().allow_unsigned is False
    assert Settings().trust_policy().fingerprint == default_policy().fingerprint


# A PEM private key header of any kind; built from parts so this file does not match itself.
PEM_PRIVATE_KEY = re.compile(b"-----BEGIN [A-Z ]*" + b"PRIVATE KEY-----")


def test_only_public_keys_are_committed_and_private_keys_are_ignored() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, tracked):
        path = REPO_ROOT / name.decode()
        if path.is_file() and path.stat().st_size < 1 << 20:
            assert PEM_PRIVATE_KEY.search(path.read_bytes()) is None, path
    for candidate in ("release-signing.pem", "models/trusted_keys/oops.pem", "signing.key"):
        ignored = subprocess.run(["git", "check-ignore", "-q", candidate], cwd=REPO_ROOT)
        assert ignored.returncode == 0, f"{candidate} would not be ignored by git"


# --- the attack of the finding ----------------------------------------------------------------


@pytest.mark.parametrize("tamper", [tamper_slope, tamper_tiers])
def test_the_findings_manifest_edits_are_refused_by_the_loader(
    tmp_path: Path, tamper: Callable[[Path], Path]
) -> None:
    folder = tamper(copy_registry(tmp_path, ("diabetes",)))

    with pytest.raises(ArtifactError, match="does not verify") as caught:
        load_artifact(folder)

    assert caught.value.path == str(folder / SIGNATURE_FILE)
    # Not even a lenient policy loads a manifest its signature does not cover.
    with pytest.raises(ArtifactError, match="does not verify"):
        load_artifact(folder, TrustPolicy(default_policy().keys, allow_unsigned=True))


def test_the_edit_would_have_changed_the_model_were_it_not_refused(tmp_path: Path) -> None:
    """The refusal is what stops the attack: stripped of its signature and with unsigned models
    allowed (development), the edited slope is what scores."""
    folder = tamper_slope(copy_registry(tmp_path, ("diabetes",)))
    (folder / SIGNATURE_FILE).unlink()

    with pytest.raises(ArtifactError, match="unsigned"):
        load_artifact(folder)
    lenient = load_artifact(folder, TrustPolicy(default_policy().keys, allow_unsigned=True))
    assert lenient.manifest.calibration.slope == pytest.approx(float(SLOPE_EDITED.split(": ")[1]))
    assert lenient.signed_by is None


def test_the_registry_and_the_batch_path_refuse_the_edit(tmp_path: Path) -> None:
    registry_dir = copy_registry(tmp_path)
    folder = tamper_tiers(registry_dir)
    registry: Registry[str] = Registry(lambda a: a.manifest.name)

    with pytest.raises(ArtifactError, match="does not verify"):
        registry.load_dir(registry_dir)
    assert not registry.ready  # all or nothing: the intact models are not served either
    with pytest.raises(ArtifactError, match="does not verify"):
        load_predictor(folder)  # what `clinrisk score` and every Spark executor call


def test_clinrisk_score_refuses_the_edited_model(tmp_path: Path) -> None:
    registry_dir = copy_registry(tmp_path, ("diabetes",))
    tamper_slope(registry_dir)
    source = tmp_path / "in.csv"
    source.write_text("age_years\n50\n")

    result = CliRunner().invoke(
        cli,
        [
            "score",
            "diabetes",
            str(source),
            "-o",
            str(tmp_path / "out.csv"),
            "--models-dir",
            str(registry_dir),
        ],
    )

    assert result.exit_code == 1, result.output
    assert "does not verify" in " ".join(result.output.split())
    assert not (tmp_path / "out.csv").exists()


def test_the_service_does_not_start_with_the_edited_model(tmp_path: Path, keys: Keys) -> None:
    registry_dir = tamper_slope(copy_registry(tmp_path)).parents[1]
    settings = service_settings(tmp_path, keys, registry_dir)

    with pytest.raises(ArtifactError, match="does not verify"), TestClient(create_app(settings)):
        pass
    # The real server, as deployed: the process exits before it ever listens, so no readiness
    # probe can answer 200 and no patient is scored with the edited slope.
    env = {
        **os.environ,
        "CLINRISK_MODELS_DIR": str(registry_dir),
        "CLINRISK_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
        "CLINRISK_API_KEYS_FILE": str(keys.file),
        "CLINRISK_PSEUDONYM_KEY": "test-pseudonym-key",
    }
    served = subprocess.run(
        [sys.executable, "-m", "uvicorn", "service.main:app", "--port", "0"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode != 0
    assert "manifest.sig: signature by trusted key" in served.stderr
    assert "Application startup complete" not in served.stderr


def test_the_service_serves_an_artifact_re_signed_by_a_key_it_is_configured_to_trust(
    tmp_path: Path, keys: Keys, signer: Signer
) -> None:
    registry_dir = copy_registry(tmp_path)
    folder = tamper_tiers(registry_dir)
    signer.resign(folder)
    public = tmp_path / "test-signer.pub"
    public.write_bytes(public_pem(signer.key.public_key()))
    release_only = service_settings(tmp_path, keys, registry_dir)
    both = service_settings(
        tmp_path, keys, registry_dir, trusted_keys=f"{DEFAULT_TRUSTED_KEYS}{os.pathsep}{public}"
    )

    with (
        pytest.raises(ArtifactError, match="which is not trusted"),
        TestClient(create_app(release_only)),
    ):
        pass
    with running_server(create_app(both)) as url:
        ready = httpx.get(f"{url}/health/ready", timeout=10)
        assert ready.status_code == 200, ready.text


# --- who may sign -------------------------------------------------------------------------------


def test_a_signature_by_an_untrusted_key_is_refused(tmp_path: Path) -> None:
    folder = copy_registry(tmp_path, ("cvd",)) / "cvd" / SHIPPED_VERSION
    stranger = generate_private_key()
    sign_artifact(folder, stranger)

    with pytest.raises(
        ArtifactError,
        match=rf"signed by key '{key_id(stranger.public_key())}', "
        r"which is not trusted \(trusted: ed25519:",
    ):
        load_artifact(folder)
    with pytest.raises(ArtifactError, match="not trusted"):
        load_artifact(folder, TrustPolicy(default_policy().keys, allow_unsigned=True))


def test_an_unsigned_artifact_is_refused_unless_explicitly_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = copy_registry(tmp_path, ("cvd",)) / "cvd" / SHIPPED_VERSION
    (folder / SIGNATURE_FILE).unlink()

    with pytest.raises(ArtifactError, match=r"missing: the artifact is unsigned") as caught:
        load_artifact(folder)
    assert ALLOW_UNSIGNED_ENV in caught.value.reason  # the message names the way out
    monkeypatch.setenv(ALLOW_UNSIGNED_ENV, "true")
    assert load_artifact(folder).signed_by is None
    monkeypatch.setenv(ALLOW_UNSIGNED_ENV, "maybe")
    with pytest.raises(KeyFileError, match="'maybe' is not a boolean"):
        load_artifact(folder)


def test_the_service_loads_unsigned_artifacts_only_when_configured_to(
    tmp_path: Path, keys: Keys
) -> None:
    registry_dir = copy_registry(tmp_path)
    for name in MODEL_NAMES:
        (registry_dir / name / SHIPPED_VERSION / SIGNATURE_FILE).unlink()

    with (
        pytest.raises(ArtifactError, match="unsigned"),
        TestClient(create_app(service_settings(tmp_path, keys, registry_dir))),
    ):
        pass
    development = service_settings(tmp_path, keys, registry_dir, allow_unsigned_models=True)
    with TestClient(create_app(development)) as client:
        assert client.get("/health/ready").status_code == 200


def test_re_signing_with_a_trusted_key_keeps_the_artifact_identity(
    tmp_path: Path, signer: Signer
) -> None:
    folder = copy_registry(tmp_path, ("readmission",)) / "readmission" / SHIPPED_VERSION
    before = sha256_file(folder / "manifest.json")

    sign_artifact(folder, signer.key)

    with pytest.raises(ArtifactError, match="not trusted"):
        load_artifact(folder)  # the release key alone does not trust the test key
    artifact = load_artifact(folder, signer.trust)
    assert artifact.sha256 == before == sha256_file(folder / "manifest.json")
    assert artifact.signed_by == key_id(signer.key.public_key())


def test_a_tampered_artifact_is_never_signed(tmp_path: Path, signer: Signer) -> None:
    folder = copy_registry(tmp_path, ("cvd",)) / "cvd" / SHIPPED_VERSION
    card = folder / "card.md"
    card.write_text(card.read_text() + "edited\n")
    signature = (folder / SIGNATURE_FILE).read_bytes()

    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        sign_artifact(folder, signer.key)
    assert (folder / SIGNATURE_FILE).read_bytes() == signature


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"not json", "is not a JSON signature document"),
        (b'{"algorithm": "RSA", "key_id": "k", "signature": "AA=="}', "only Ed25519 is"),
        (b'{"algorithm": "Ed25519", "key_id": "k", "signature": "%%%"}', "is not base64"),
        (b'{"algorithm": "Ed25519", "key_id": "k", "signature": "AA=="}', "64 bytes, not 1"),
        (b'{"algorithm": "Ed25519", "key_id": "k"}', "exactly"),
    ],
)
def test_a_malformed_signature_file_is_refused(tmp_path: Path, content: bytes, reason: str) -> None:
    folder = copy_registry(tmp_path, ("cvd",)) / "cvd" / SHIPPED_VERSION
    (folder / SIGNATURE_FILE).write_bytes(content)

    with pytest.raises(ArtifactError, match=reason):
        load_artifact(folder, TrustPolicy(default_policy().keys, allow_unsigned=True))


def test_a_predictor_loaded_leniently_is_not_handed_to_a_strict_caller(tmp_path: Path) -> None:
    folder = copy_registry(tmp_path, ("cvd",)) / "cvd" / SHIPPED_VERSION
    (folder / SIGNATURE_FILE).unlink()

    load_predictor(folder, trust=TrustPolicy(default_policy().keys, allow_unsigned=True))
    with pytest.raises(ArtifactError, match="unsigned"):
        load_predictor(folder)


# --- trusted keys configuration -----------------------------------------------------------------


def test_trusted_keys_come_from_files_and_folders_in_the_environment(tmp_path: Path) -> None:
    first, second = generate_private_key(), generate_private_key()
    write_key_pair(first, tmp_path / "a.pem", tmp_path / "keys" / "a.pub")
    write_key_pair(second, tmp_path / "b.pem", tmp_path / "b.pub")

    policy = TrustPolicy.from_env(
        {TRUSTED_KEYS_ENV: f"{tmp_path / 'keys'}{os.pathsep}{tmp_path / 'b.pub'}"}
    )

    assert set(policy.keys) == {key_id(first.public_key()), key_id(second.public_key())}
    assert policy.allow_unsigned is False
    assert set(TrustPolicy.from_env({}).keys) == set(default_policy().keys)


def test_a_wrong_trust_setting_stops_the_service_naming_the_file(
    tmp_path: Path, keys: Keys
) -> None:
    key = generate_private_key()
    write_key_pair(key, tmp_path / "signing.pem", tmp_path / "signing.pub")

    with pytest.raises(KeyFileError, match="does not exist"):
        TrustPolicy.from_env({TRUSTED_KEYS_ENV: str(tmp_path / "missing.pub")})
    with pytest.raises(KeyFileError, match="holds a PRIVATE key"):
        TrustPolicy.from_paths([tmp_path / "signing.pem"])
    with pytest.raises(ValueError, match=r"missing\.pub: trusted key file or folder does not"):
        service_settings(tmp_path, keys, MODELS_DIR, trusted_keys=str(tmp_path / "missing.pub"))


def test_a_private_key_is_written_readable_by_its_owner_only_and_never_overwritten(
    tmp_path: Path,
) -> None:
    key = generate_private_key()
    write_key_pair(key, tmp_path / "k.pem", tmp_path / "k.pub")

    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    with pytest.raises(KeyFileError, match="exists already"):
        write_key_pair(generate_private_key(), tmp_path / "k.pem", tmp_path / "other.pub")


# --- the clinrisk signing commands ---------------------------------------------------------------


def test_keygen_sign_and_verify_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    private, public = tmp_path / "secret" / "signing.pem", tmp_path / "signing.pub"
    registry_dir = copy_registry(tmp_path, ("cvd",))
    folder = registry_dir / "cvd" / SHIPPED_VERSION

    created = runner.invoke(
        cli, ["signing", "keygen", "--private-key", str(private), "--public-key", str(public)]
    )
    in_repo = runner.invoke(
        cli,
        [
            "signing",
            "keygen",
            "--private-key",
            str(REPO_ROOT / "x.pem"),
            "--public-key",
            str(tmp_path / "x.pub"),
        ],
    )
    signed = runner.invoke(
        cli, ["signing", "sign", str(folder)], env={"CLINRISK_SIGNING_KEY_FILE": str(private)}
    )
    refused = runner.invoke(cli, ["signing", "verify", "--models-dir", str(registry_dir)])
    monkeypatch.setenv(TRUSTED_KEYS_ENV, str(public))
    verified = runner.invoke(cli, ["signing", "verify", "--models-dir", str(registry_dir)])

    assert created.exit_code == 0, created.output
    key = created.output.split()[0]
    assert key == key_id(load_public_key(public))
    assert in_repo.exit_code == 2 and not (REPO_ROOT / "x.pem").exists()
    # rich wraps the message in a box as wide as the terminal: compare the words only
    assert "inside the repository" in " ".join(in_repo.output.replace("│", " ").split())
    assert signed.exit_code == 0, signed.output
    assert "not among the trusted keys" in " ".join(signed.output.split())
    assert refused.exit_code == 1
    assert "not trusted" in " ".join(refused.output.split())
    assert verified.exit_code == 0, verified.output
    assert f"signed by {key}" in " ".join(verified.output.split())
