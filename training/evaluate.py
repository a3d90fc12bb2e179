"""External validation: score a labelled dataset with an existing artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.columns import encode
from models.loader import sha256_file
from models.registry import Registry
from models.scoring import ScoringModel
from models.signing import TrustPolicy
from training import metrics
from training.config import load_config
from training.datasets import LOADERS
from training.train import feature_values


def evaluate_artifact(
    name: str,
    data: Path,
    *,
    models_dir: Path,
    version: str | None = None,
    seed: int = 0,
    trust: TrustPolicy | None = None,
) -> dict[str, Any]:
    """Metrics of the artifact the service would serve: verified under ``trust`` (default: the
    environment's trusted keys), so an edited manifest is never evaluated as if it were real."""
    registry: Registry[ScoringModel] = Registry(ScoringModel)
    registry.load_dir(models_dir, trust)
    model = registry.get(name, version)
    manifest = model.manifest
    config = load_config(name)
    ds = LOADERS[config.loader](data)
    X = encode(manifest.columns, feature_values(ds, list(manifest.features)))
    scores = model.score_matrix(X)
    p = scores.probability
    report: dict[str, Any] = {
        "model": {"name": model.name, "version": model.version, "sha256": model.sha256},
        "data": {"path": str(data), "sha256": sha256_file(data), "rows": len(p)},
        "overall": metrics.summarize(ds.y, p, seed=seed),
        "tiers": [
            {"tier": t.name, **metrics.threshold_metrics(ds.y, p, t.lower)}
            for t in manifest.tiers[1:]
        ],
        "subgroups": [
            {"factor": col, **row}
            for col in ds.factors.columns
            for row in metrics.subgroup_metrics(ds.y, p, ds.factors[col].to_numpy(str))
        ],
    }
    return report
