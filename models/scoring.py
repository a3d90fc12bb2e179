"""The scoring core: column matrix -> calibrated probability, tier and exact contributions.

Every front door (HTTP single and batch, ``clinrisk score``, Spark, the clinician page) ends here.
Contributions are in calibrated log-odds: with Platt recalibration ``logit(p) = a*m + b`` of the
margin ``m = base + sum(phi)``, the calibrated base is ``a*base + b`` and each contribution is
``a*phi``, so ``base_log_odds + sum(contributions) == logit(p)`` exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from models.equations import EquationExplainer, inverse_link
from models.loader import Artifact, LinearParameters
from models.manifest import Manifest, Tier
from models.trees import TreeTables, compile_tables

Float = npt.NDArray[np.float64]


class Explainer(Protocol):
    """Exact per-column contributions to the model's margin."""

    @property
    def method(self) -> Literal["tree_shap", "linear", "equation"]: ...

    @property
    def base_margin(self) -> float: ...

    def contributions(self, matrix: Float) -> Float: ...

    def contributions_one(self, row: list[float]) -> Float: ...


@dataclass(frozen=True)
class TreeExplainer:
    tables: TreeTables

    @property
    def method(self) -> Literal["tree_shap", "linear"]:
        return "tree_shap"

    @property
    def base_margin(self) -> float:
        return self.tables.base_margin

    def contributions(self, matrix: Float) -> Float:
        return self.tables.contributions(matrix)

    def contributions_one(self, row: list[float]) -> Float:
        return self.tables.contributions_one(row)


class LinearExplainer:
    """``phi_i = w_i * (x_i - mean_i)``; a missing value is imputed at the mean (phi = 0)."""

    def __init__(self, params: LinearParameters) -> None:
        self.coefficients = np.asarray(params.coefficients, dtype=np.float64)
        self.means = np.asarray(params.means, dtype=np.float64)
        self._base_margin = float(params.intercept + self.coefficients @ self.means)

    @property
    def method(self) -> Literal["tree_shap", "linear"]:
        return "linear"

    @property
    def base_margin(self) -> float:
        return self._base_margin

    def contributions(self, matrix: Float) -> Float:
        out: Float = np.nan_to_num((matrix - self.means) * self.coefficients, nan=0.0)
        return out

    def contributions_one(self, row: list[float]) -> Float:
        out: Float = self.contributions(np.asarray([row], dtype=np.float64))[0]
        return out


def build_explainer(artifact: Artifact) -> Explainer:
    if artifact.forest is not None:
        return TreeExplainer(compile_tables(artifact.forest))
    if artifact.linear is not None:
        return LinearExplainer(artifact.linear)
    if artifact.equation is not None:
        columns = artifact.manifest.columns
        return EquationExplainer(
            artifact.equation, [c.name for c in columns], [c.feature for c in columns]
        )
    raise ValueError(f"artifact {artifact.path} holds no model")


@dataclass(frozen=True)
class BatchScores:
    probability: Float
    log_odds: Float
    base_log_odds: float
    contributions: Float
    """(rows x features), calibrated log-odds, in manifest feature order."""
    tier_index: npt.NDArray[np.intp]


def sigmoid(z: Float) -> Float:
    out: Float = 1.0 / (1.0 + np.exp(-z))
    return out


class ScoringModel:
    """A verified artifact ready to score: explainer compiled, calibration and tiers resolved."""

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self.manifest: Manifest = artifact.manifest
        self.name = self.manifest.name
        self.version = self.manifest.version
        self.sha256 = artifact.sha256
        self.explainer = build_explainer(artifact)
        features = [f.name for f in self.manifest.features]
        self.feature_names = features
        self.column_names = [c.name for c in self.manifest.columns]
        # (columns x features) 0/1: sums one-hot columns back onto their feature
        self.column_to_feature = np.zeros((len(self.column_names), len(features)))
        for j, column in enumerate(self.manifest.columns):
            self.column_to_feature[j, features.index(column.feature)] = 1.0
        self._column_feature_index = np.array(
            [features.index(c.feature) for c in self.manifest.columns], dtype=np.intp
        )
        calibration = self.manifest.calibration
        self.slope = calibration.slope
        self.intercept = calibration.intercept
        self.base_log_odds = self.slope * self.explainer.base_margin + self.intercept
        self.tiers: list[Tier] = list(self.manifest.tiers)
        self._tier_lowers = np.array([t.lower for t in self.tiers[1:]], dtype=np.float64)
        # The scale's mapping to probability: the logistic for trained models and logistic
        # equations, 1 - exp(-exp(z)) for Cox-type equations (models.equations).
        equation = artifact.equation
        self.form: Literal["logistic", "cox"] = "logistic" if equation is None else equation.form
        self.scale = "log_odds" if equation is None else equation.scale
        self.probability_mapping = (
            "p = 1 / (1 + exp(-z)), z = calibrated log-odds"
            if equation is None
            else equation.mapping
        )

    @property
    def method(self) -> Literal["tree_shap", "linear", "equation"]:
        return self.explainer.method

    def to_probability(self, z: Float) -> Float:
        """Probability from the explanation's scale (``base + sum(contributions)``)."""
        return sigmoid(z) if self.form == "logistic" else inverse_link(self.form, z)

    def score_matrix(self, matrix: Float) -> BatchScores:
        """Score a (rows x columns) matrix; NaN = missing (already validated)."""
        column_contribs = self.explainer.contributions(matrix) * self.slope
        contributions: Float = column_contribs @ self.column_to_feature
        log_odds = self.base_log_odds + column_contribs.sum(axis=1)
        probability = self.to_probability(log_odds)
        tier_index = np.searchsorted(self._tier_lowers, probability, side="right").astype(np.intp)
        return BatchScores(probability, log_odds, self.base_log_odds, contributions, tier_index)

    def score_one(self, row: list[float]) -> tuple[float, Float, int]:
        """(probability, feature contributions, tier index) for one row of column values."""
        column_contribs = self.explainer.contributions_one(row) * self.slope
        contributions: Float = np.bincount(
            self._column_feature_index, column_contribs, minlength=len(self.feature_names)
        ).astype(np.float64)
        log_odds = self.base_log_odds + float(column_contribs.sum())
        if self.form == "logistic":
            probability = 1.0 / (1.0 + math.exp(-log_odds))
        else:
            probability = -math.expm1(-math.exp(log_odds))
        tier = int(np.searchsorted(self._tier_lowers, probability, side="right"))
        return probability, contributions, tier
