"""Versioned models in memory: ``{name: {version: model}}`` with a default per name.

The default is the pinned version when one is configured, else the highest semantic version.
``reload`` builds every new model before swapping, so a ready registry stays ready.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Generic, TypeVar

from models.errors import ArtifactError
from models.loader import Artifact, load_artifact
from models.manifest import SEMVER, version_key
from models.signing import TrustPolicy

M = TypeVar("M")


class UnknownModel(LookupError):
    """No model (or no such version) in the registry; the message lists what exists."""


def discover(models_dir: Path) -> list[Path]:
    """Artifact folders under ``models_dir`` (``<name>/<semver>/manifest.json``)."""
    if not models_dir.is_dir():
        raise ArtifactError(models_dir, "models directory does not exist")
    return sorted(
        p.parent for p in models_dir.glob("*/*/manifest.json") if SEMVER.match(p.parent.name)
    )


def artifact_folder(models_dir: Path, name: str, version: str | None = None) -> Path:
    """The artifact folder for ``name`` (highest semantic version unless ``version`` is given)."""
    folders = discover(models_dir)
    versions = sorted((p.name for p in folders if p.parent.name == name), key=version_key)
    if not versions:
        known = ", ".join(sorted({p.parent.name for p in folders})) or "none"
        raise UnknownModel(f"No model named '{name}' in {models_dir}. Available: {known}.")
    chosen = version or versions[-1]
    if chosen not in versions:
        raise UnknownModel(
            f"Model '{name}' has no version '{chosen}'. Available: {', '.join(versions)}."
        )
    return models_dir / name / chosen


class Registry(Generic[M]):
    """Holds one built model ``M`` per (name, version); thread-safe reads and swaps."""

    def __init__(
        self, build: Callable[[Artifact], M], *, pinned: Mapping[str, str] | None = None
    ) -> None:
        self._build = build
        self._pinned = dict(pinned or {})
        self._models: dict[str, dict[str, M]] = {}
        # Versions oldest first, sorted once per load (every scoring request asks).
        self._versions: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def load_dir(self, models_dir: Path, trust: TrustPolicy | None = None) -> None:
        """Load (or reload) every artifact under ``models_dir``; all or nothing: one artifact
        whose signature ``trust`` refuses (default: the environment's) keeps them all out."""
        fresh: dict[str, dict[str, M]] = {}
        for folder in discover(models_dir):
            artifact = load_artifact(folder, trust)
            fresh.setdefault(artifact.manifest.name, {})[artifact.manifest.version] = self._build(
                artifact
            )
        for name, version in self._pinned.items():
            if version not in fresh.get(name, {}):
                raise ArtifactError(
                    models_dir / name, f"pinned default version '{version}' is not present"
                )
        versions = {name: sorted(found, key=version_key) for name, found in fresh.items()}
        with self._lock:
            self._models, self._versions = fresh, versions

    def names(self) -> list[str]:
        return sorted(self._models)

    def versions(self, name: str) -> list[str]:
        return list(self._versions.get(name, ()))

    def default_version(self, name: str) -> str:
        versions = self.versions(name)
        if not versions:
            raise UnknownModel(self._unknown_name(name))
        return self._pinned.get(name, versions[-1])

    def get(self, name: str, version: str | None = None) -> M:
        by_version = self._models.get(name)
        if by_version is None:
            raise UnknownModel(self._unknown_name(name))
        chosen = version or self.default_version(name)
        model = by_version.get(chosen)
        if model is None:
            available = ", ".join(self.versions(name))
            raise UnknownModel(f"Model '{name}' has no version '{chosen}'. Available: {available}.")
        return model

    @property
    def ready(self) -> bool:
        return bool(self._models) and all(
            self.default_version(name) in self._models[name] for name in self._models
        )

    def _unknown_name(self, name: str) -> str:
        known = ", ".join(self.names()) or "none"
        return f"No model named '{name}'. Available: {known}."
