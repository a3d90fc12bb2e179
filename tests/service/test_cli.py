"""`clinrisk keys create`: prints a key once, stores only its hash where the service reads keys."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from service.auth import KeyStore, load_keys
from service.cli import app


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
