"""Layering: who may import whom, proven on the source (AST) and on a fresh interpreter.

- ``service`` and ``models`` never import the offline ``training`` code (training joins the
  ``clinrisk`` command through an entry point instead);
- ``models`` (the scoring core) imports neither the service nor a web framework;
- the HTTP client, its wire schemas, the FHIR extraction, the batch jobs and the command line
  load no web framework when imported, and the client loads no numpy or pandas either.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.settings import REPO_ROOT

WEB = ("fastapi", "starlette", "uvicorn")
ML = ("numpy", "pandas", "pyarrow", "xgboost", "sklearn", "scipy")


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, wherever the import statement is."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    for node in body:
        if isinstance(node, ast.If):
            if not _is_type_checking(node):
                yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _module_level(block)
        else:
            yield node


def module_level_imports(path: Path) -> set[str]:
    """What importing ``path`` imports: not inside functions or ``if TYPE_CHECKING:``."""
    names: set[str] = set()
    for node in _module_level(ast.parse(path.read_text()).body):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _source(module: str) -> Path | None:
    base = REPO_ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def import_closure(module: str) -> set[str]:
    """``module`` and every module importing it loads (the project's own modules followed)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run
        path = _source(name)
        if path is not None:
            todo.extend(module_level_imports(path))
    return seen


def _offenders(modules: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in forbidden)


@pytest.mark.parametrize("package", ["service", "models"])
def test_package_does_not_import_training(package: str) -> None:
    offenders = [
        str(path.relative_to(REPO_ROOT))
        for path in (REPO_ROOT / package).rglob("*.py")
        if any(m == "training" or m.startswith("training.") for m in imported_modules(path))
    ]

    assert offenders == []


def test_models_package_imports_neither_the_service_nor_a_web_framework() -> None:
    offenders = [
        str(path.relative_to(REPO_ROOT))
        for path in (REPO_ROOT / "models").rglob("*.py")
        if _offenders(imported_modules(path), ("service", *WEB))
    ]

    assert offenders == []


def test_the_client_and_its_schemas_load_neither_the_ml_stack_nor_the_scoring_core() -> None:
    closure = import_closure("service.client")

    assert "service.api.schemas" in closure
    assert _offenders(closure, (*WEB, *ML, "models", "training")) == []


@pytest.mark.parametrize(
    "module",
    [
        "service.cds_hooks.fhir",
        "service.cds_hooks.cards",
        "service.batch.local",
        "service.batch.remote",
        "service.batch.spark",
        "service.cli",
    ],
)
def test_batch_jobs_fhir_extraction_and_command_line_load_no_web_framework(module: str) -> None:
    assert _offenders(import_closure(module), WEB) == []


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    return {line.split(".")[0] for line in done.stdout.splitlines()}


def test_a_fresh_interpreter_imports_the_client_without_numpy_pandas_or_fastapi() -> None:
    loaded = _loaded_after("import service.client")

    assert "httpx" in loaded
    assert loaded.isdisjoint({"numpy", "pandas", "fastapi", "starlette", "models"})


def test_a_fresh_interpreter_imports_the_command_line_without_the_web_or_training_stack() -> None:
    loaded = _loaded_after("import service.cli")

    assert "typer" in loaded
    assert loaded.isdisjoint({"fastapi", "uvicorn", "xgboost", "sklearn", "numpy", "pandas"})


def test_the_batch_packages_names_are_loaded_only_when_used() -> None:
    loaded = _loaded_after("from service.batch import BatchError, ScoreOptions, ScoreSummary")

    assert loaded.isdisjoint({"numpy", "pyarrow", "httpx", "models"})
