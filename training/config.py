"""Model configs: a model's definition is data (``training/configs/<name>.toml``), not code."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from models.manifest import ApplicabilityRule, FeatureSpec

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class TierLevel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    label: str
    action: str = ""
    lower: float | None = None
    """For fixed tiers: the lower probability bound."""
    target_sensitivity: float | None = None
    """For sensitivity tiers: the lower bound is the training-OOF threshold reaching it."""


class TierConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Literal["fixed", "sensitivity"]
    levels: list[TierLevel]
    # Issue 14: thresholds taken from a guideline for another outcome; every result says so.
    borrowed_from: str | None = None


class XGBoostCandidates(BaseModel):
    model_config = ConfigDict(extra="forbid")
    depths: list[int]
    learning_rate: float
    max_trees: int
    min_child_weight: float = 1.0
    reg_lambda: float = 1.0
    depth_tolerance: float = Field(
        default=0.002, description="Prefer a shallower forest unless deeper gains this CV AUROC."
    )


class LogisticCandidates(BaseModel):
    model_config = ConfigDict(extra="forbid")
    C: list[float]


class Candidates(BaseModel):
    model_config = ConfigDict(extra="forbid")
    xgboost: XGBoostCandidates
    logistic: LogisticCandidates


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    title: str
    summary: str
    intended_use: str
    out_of_scope: list[str]
    loader: str
    default_data: str
    dataset_description: str
    published_reference: str
    seed: int
    test_fraction: float
    target_column: str
    target_definition: str
    caveats: list[str]
    ethical_considerations: list[str]
    tiers: TierConfig
    candidates: Candidates
    features: list[FeatureSpec]
    # Who the model is for (issue 14): carried unchanged into the manifest and card.
    applicability: list[ApplicabilityRule] = Field(default_factory=list)


def load_config(name: str, config_dir: Path = CONFIG_DIR) -> ModelConfig:
    path = config_dir / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in config_dir.glob("*.toml")))
        raise FileNotFoundError(f"No model config '{name}' in {config_dir}. Known: {known}.")
    with path.open("rb") as handle:
        return ModelConfig.model_validate(tomllib.load(handle))


def available_configs(config_dir: Path = CONFIG_DIR) -> list[str]:
    return sorted(p.stem for p in config_dir.glob("*.toml"))
