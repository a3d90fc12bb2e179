"""The model registry: the artifact contract shared by training and the service.

An artifact is a folder ``models/<name>/<version>/`` holding ``manifest.json`` (validated by
:class:`models.manifest.Manifest`), ``card.md`` and the fitted model (an XGBoost booster in
XGBoost's JSON model format, ``model.json``, read without XGBoost; or a linear model's
coefficients as JSON). Nothing in an artifact is deserialised before its sha256 matches the
manifest.
"""

from models.errors import ArtifactError
from models.loader import Artifact, load_artifact
from models.manifest import Manifest
from models.registry import Registry

__all__ = ["Artifact", "ArtifactError", "Manifest", "Registry", "load_artifact"]
