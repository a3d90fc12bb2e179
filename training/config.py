"""Model configs: a model's definition is data (``training/configs/<name>.toml``), not code."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.manifest import ApplicabilityRule, ClinicalUse, FeatureSpec, FeatureType, Governance

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


class ValidationConfig(BaseModel):
    """How the figures that hold up are obtained (issue 10)."""

    model_config = ConfigDict(extra="forbid")
    cv_repeats: int = Field(default=5, ge=1, description="Repeats of the 5-fold CV of the recipe.")
    subgroup_min_events: int = Field(
        default=10, ge=1, description="Fewer events (or non-events): subgroup figures withheld."
    )
    temporal_train_fraction: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Train on this earliest fraction of rows (id order = time), test on the rest.",
    )


class MissingnessConfig(BaseModel):
    """Issue 14: forest candidates learn where an unknown optional input goes (XGBoost's learned
    default branch) from masked copies of the training rows, instead of never seeing one."""

    model_config = ConfigDict(extra="forbid")
    independent_rate: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="A second copy hides each optional input independently with this chance.",
    )
    typical_pattern: str = Field(
        description="In words: the chart this pattern stands for (every optional input unknown)."
    )
    required_rationale: str = Field(description="Why the other inputs stay required.")


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
    # Issue 10: what a governance board needs beside the figures (carried into the manifest).
    clinical_use: ClinicalUse
    governance: Governance
    validation: ValidationConfig = Field(default_factory=lambda: ValidationConfig())
    missingness: MissingnessConfig | None = None

    @model_validator(mode="after")
    def _directions(self) -> ModelConfig:
        """Every feature states its clinical direction and why; the direction IS the training
        constraint (``monotone``), for both model kinds, so the two never disagree."""
        names = {f.name for f in self.features}
        features = []
        for f in self.features:
            where = f"feature {f.name!r}"
            if not f.direction_rationale.strip():
                raise ValueError(f"{where}: direction_rationale is required (one clinical line)")
            if f.direction and f.type is FeatureType.CATEGORICAL:
                raise ValueError(f"{where}: a categorical feature has no direction (use 0)")
            if f.monotone not in (0, f.direction):
                raise ValueError(
                    f"{where}: monotone {f.monotone} contradicts direction {f.direction}; "
                    "declare the direction only (it sets the training constraint)"
                )
            if f.value_labels and f.type not in (FeatureType.BINARY, FeatureType.ORDINAL):
                raise ValueError(f"{where}: value_labels are for binary and ordinal features")
            if (
                f.type is FeatureType.BINARY
                and f.value_labels
                and set(f.value_labels) != {"0", "1"}
            ):
                raise ValueError(f"{where}: binary value_labels need exactly '0' and '1'")
            for value, fixed in f.implies.items():
                unknown = set(fixed) - names
                if unknown:
                    raise ValueError(f"{where}: implies unknown features {sorted(unknown)}")
                if f.type is not FeatureType.CATEGORICAL:
                    try:
                        float(value)
                    except ValueError:
                        raise ValueError(f"{where}: implies key {value!r} is not a value") from None
            features.append(f.model_copy(update={"monotone": f.direction}))
        self.features = features
        return self

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
