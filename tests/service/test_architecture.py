"""Layering: the service and the registry never import the offline training code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from service.settings import REPO_ROOT


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", ["service", "models"])
def test_package_does_not_import_training(package: str) -> None:
    offenders = [
        str(path.relative_to(REPO_ROOT))
        for path in (REPO_ROOT / package).rglob("*.py")
        if any(m == "training" or m.startswith("training.") for m in imported_modules(path))
    ]

    assert offenders == []


def test_models_package_does_not_import_the_service() -> None:
    offenders = [
        str(path.relative_to(REPO_ROOT))
        for path in (REPO_ROOT / "models").rglob("*.py")
        if any(m == "service" or m.startswith("service.") for m in imported_modules(path))
    ]

    assert offenders == []
