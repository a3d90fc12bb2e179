"""The `clinrisk` command: its own commands, training's contributed ones, and `keys create`
(prints a key once, stores only its hash where the service reads keys)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from service.auth import KeyStore, load_keys
from service.cli import PLUGIN_GROUP, app, register_contributions
from tests.conftest import MODELS_DIR


def test_keys_create_prints_a_working_key_and_stores_only_its_hash(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"

    result = CliRunner().invoke(
        app, ["keys", "create", "ehr", "--scopes", "predict,batch", "--keys-file", str(keys_file)]
    )

    assert result.exit_code == 0, result.output
    token = result.output.split()[0]
    assert token not in keys_file.read_text()
    key = KeyStore(load_keys(keys_file)).authenticate(token)
    assert key is not None
    assert key.scopes == frozenset({"predict", "batch"})


def test_keys_create_refuses_unknown_scopes(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["keys", "create", "x", "--scopes", "root", "--keys-file", str(tmp_path / "k.json")]
    )

    assert result.exit_code != 0
    assert not (tmp_path / "k.json").exists()


def test_clinrisk_has_the_service_commands_and_trainings_contributed_ones() -> None:
    result = CliRunner().invoke(app, ["--help"])

    assert result.exit_code == 0, result.output
    for command in ("serve", "score", "keys", "models", "train", "evaluate"):
        assert command in result.output


def test_a_contribution_that_cannot_be_imported_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = importlib.metadata.EntryPoint(
        name="absent", value="no_such_package.cli:register", group=PLUGIN_GROUP
    )
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **_: [missing])
    target = typer.Typer()

    skipped = register_contributions(target)

    assert len(skipped) == 1
    assert skipped[0].startswith("absent")
    assert target.registered_commands == []


def test_models_lists_the_registry() -> None:
    result = CliRunner().invoke(app, ["models", "--models-dir", str(MODELS_DIR)])

    assert result.exit_code == 0, result.output
    for name in ("cvd", "diabetes", "readmission"):
        assert name in result.output
