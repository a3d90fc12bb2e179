"""The manifest: what an artifact is, how it was made and how well it validated.

Training writes it; the loader and the service read it. Every field a clinician or an auditor
needs to judge a score (intended use, data, split, metrics, subgroups) lives here, and
``card.md`` is rendered from it.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
FEATURE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureType(StrEnum):
    """How a feature's value is given."""

    NUMERIC = "numeric"
    """A measurement or count on a continuous or integer scale, in ``unit``."""
    BINARY = "binary"
    """0 = no / absent, 1 = yes / present."""
    ORDINAL = "ordinal"
    """An integer scale whose order matters (e.g. self-rated health 1-5)."""
    CATEGORICAL = "categorical"
    """One of ``categories`` (a string code)."""


class AlternativeUnit(_Strict):
    """An accepted non-canonical unit: ``canonical = value * factor + offset``."""

    unit: str
    factor: float
    offset: float = 0.0


class Distribution(_Strict):
    """The feature's distribution in the training part (for out-of-range flags and drift checks)."""

    missing_rate: float
    mean: float | None = None
    quantiles: dict[str, float] = Field(
        default_factory=dict, description="p01, p05, p25, p50, p75, p95, p99"
    )
    category_rates: dict[str, float] = Field(default_factory=dict)


class Category(_Strict):
    """One allowed value of a categorical feature."""

    code: str
    label: str


class FeatureSpec(_Strict):
    """One model input as a chart holds it, in its canonical unit."""

    name: str
    label: str = Field(description="Short clinical label, e.g. 'Systolic BP'.")
    description: str
    type: FeatureType
    unit: str | None = None
    minimum: float | None = Field(default=None, description="Lowest plausible value (inclusive).")
    maximum: float | None = Field(default=None, description="Highest plausible value (inclusive).")
    categories: list[Category] = Field(default_factory=list)
    alternative_units: list[AlternativeUnit] = Field(default_factory=list)
    loinc: str | None = None
    source: str = Field(description="Where the dataset holds it and how it was mapped.")
    monotone: Literal[-1, 0, 1] = 0
    direction: Literal[-1, 0, 1] = Field(
        default=0,
        description=(
            "Clinical direction of the effect on risk: 1 = higher value raises risk,"
            " -1 = lowers it,"
            " 0 = none declared (presented as an association). Training fails when the fitted"
            " effect contradicts it."
        ),
    )
    direction_rationale: str = Field(
        default="", description="One line: why this direction (clinical source)."
    )
    value_labels: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Clinical words for each value of a binary or ordinal feature, keyed by the value"
            " ('0': 'Female', '1': 'Male'; '4': 'Fair')."
        ),
    )
    implies: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description=(
            "Related inputs a value fixes, keyed by the value: {'0': {'cigarettes_per_day': 0}}"
            " (a non-smoker smokes no cigarettes); what-if keeps them consistent."
        ),
    )
    required: bool = True
    modifiable: bool = False
    missing_handling: str | None = Field(
        default=None, description="What the model does when an optional feature is missing."
    )
    distribution: Distribution | None = None

    @field_validator("name")
    @classmethod
    def _snake_case(cls, value: str) -> str:
        if not FEATURE_NAME.match(value):
            raise ValueError(f"feature name {value!r} must be snake_case")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        if self.type is FeatureType.CATEGORICAL and not self.categories:
            raise ValueError(f"categorical feature {self.name!r} needs categories")
        if self.type is not FeatureType.CATEGORICAL and self.categories:
            raise ValueError(f"only categorical features have categories ({self.name!r})")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"feature {self.name!r}: minimum > maximum")
        return self


class ModelColumn(_Strict):
    """One column of the fitted model's input matrix, derived from one feature."""

    name: str
    feature: str
    category: str | None = Field(
        default=None, description="For a one-hot column: the category it indicates."
    )


class Tier(_Strict):
    """A risk band: ``lower <= probability < upper`` (``upper`` None = no upper bound)."""

    name: str
    label: str
    lower: float
    upper: float | None
    action: str = ""


class Calibration(_Strict):
    """Platt recalibration of the model's margin: ``logit(p) = slope * margin + intercept``."""

    method: Literal["platt"] = "platt"
    slope: float
    intercept: float
    fitted_on: str


class Target(_Strict):
    column: str
    definition: str
    positive_rate_train: float
    positive_rate_test: float


class PopulationExclusion(_Strict):
    """Training rows outside the intended population (an applicability rule), left out."""

    rule: str
    description: str
    rows: int


class DatasetRef(_Strict):
    path: str
    sha256: str
    rows_read: int
    rows_used: int
    description: str
    exclusions: list[str] = Field(default_factory=list)
    population_exclusions: list[PopulationExclusion] = Field(default_factory=list)


ClinicalUseStatus = Literal["validated", "evaluation_only", "teaching_data_only"]


class ClinicalUse(_Strict):
    """Whether a score may inform care, and why (issue 10): shown wherever a score is."""

    status: ClinicalUseStatus
    reason: str


DEFAULT_CLINICAL_USE = ClinicalUse(status="evaluation_only", reason="not stated by this artifact")
"""Older artifacts state no status: read conservatively, never as validated."""


class Governance(_Strict):
    """The ONC HTI-1 source attributes a card must state that are not fitted figures."""

    developer: str
    contact: str
    funding: str
    data_licence: str
    data_provenance: str
    data_collection_dates: str
    intended_users: str
    decision_role: str
    outcome_timing: str
    fairness_approach: str
    external_validation: str
    update_plan: str
    monitoring_plan: str


class ModelSpecification(_Strict):
    """The full fitted model where it is short enough to print (linear models)."""

    intercept: float
    coefficients: dict[str, float] = Field(description="Per model column, raw units.")
    means: dict[str, float] = Field(description="Training means (the value a gap is given).")


class Split(_Strict):
    method: str
    seed: int
    test_fraction: float
    grouped_by: str | None
    n_train: int
    n_test: int
    test_ids_sha256: str = Field(description="sha256 of the sorted test row ids, one per line.")
    id_column: str


class ApplicabilityRule(_Strict):
    """One condition of the intended population; a patient failing it is not scored.

    ``feature_range``: ``minimum <= features[feature] <= maximum`` (either bound optional).
    ``context_false``: ``context[context]`` must not be true (unknown = not stated, allowed).
    ``context_required``: ``context[context]`` must be true (unknown fails).
    """

    id: str
    description: str = Field(description="In clinical words, e.g. 'Adults aged 30 to 70'.")
    source: str = Field(description="Clinical source, or why the rule exists.")
    kind: Literal["feature_range", "context_false", "context_required"]
    feature: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    context: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ApplicabilityRule:
        if self.kind == "feature_range":
            if self.feature is None or (self.minimum is None and self.maximum is None):
                raise ValueError(f"rule {self.id!r}: feature_range needs a feature and a bound")
        elif self.context is None or not FEATURE_NAME.match(self.context):
            raise ValueError(f"rule {self.id!r}: {self.kind} needs a snake_case context name")
        return self


class CalibrationBin(_Strict):
    mean_predicted: float
    observed_rate: float
    n: int
    lower: float | None = Field(default=None, description="Lower edge of the predicted-risk bin.")
    upper: float | None = Field(default=None, description="Upper edge of the predicted-risk bin.")
    observed_ci_low: float | None = Field(
        default=None, description="95% Wilson interval of the observed rate (low)."
    )
    observed_ci_high: float | None = Field(
        default=None, description="95% Wilson interval of the observed rate (high)."
    )


class ThresholdMetrics(_Strict):
    tier: str
    threshold: float
    sensitivity: float | None
    specificity: float | None
    ppv: float | None
    npv: float | None
    flagged_fraction: float
    net_benefit: float | None = Field(
        default=None,
        description="Decision-curve net benefit of acting at or above this threshold "
        "(TP/n - FP/n * t/(1-t)); acting on no one scores 0.",
    )
    net_benefit_treat_all: float | None = Field(
        default=None, description="Net benefit of acting on every patient at this threshold."
    )


class SubgroupMetrics(_Strict):
    factor: str
    level: str
    n: int
    positives: int
    auroc: float | None
    calibration_slope: float | None
    calibration_intercept: float | None
    mean_predicted: float
    observed_rate: float
    auroc_ci_low: float | None = None
    auroc_ci_high: float | None = None
    calibration_in_the_large: float | None = Field(
        default=None, description="Intercept with the slope fixed at 1 (0 ideal; < 0 too high)."
    )
    observed_expected: float | None = Field(
        default=None, description="Observed events / sum of predicted risks (1 ideal)."
    )
    suppressed: bool = Field(
        default=False,
        description="Fewer events than the configured minimum: figures withheld, not judged.",
    )
    audit_only: bool = Field(
        default=False,
        description="A factor the model does not read (e.g. income): audited, never an input.",
    )
    feature: str | None = Field(
        default=None, description="The feature that places a patient in this subgroup."
    )
    minimum: float | None = Field(default=None, description="Inclusive lower bound on feature.")
    maximum: float | None = Field(default=None, description="Exclusive upper bound on feature.")
    categories: list[str] = Field(
        default_factory=list, description="Feature values (as strings) that place a patient here."
    )
    reliable: bool = True
    concern: str | None = Field(
        default=None, description="Why estimates are unreliable here (few patients, poor fit)."
    )


class ValidationSummary(_Strict):
    n: int
    positives: int
    prevalence: float
    auroc: float
    auroc_ci_low: float
    auroc_ci_high: float
    auprc: float
    brier: float
    calibration_slope: float
    calibration_intercept: float = Field(
        description="Intercept of the joint slope-and-intercept recalibration fit (not CITL)."
    )
    ece: float
    calibration_bins: list[CalibrationBin]
    calibration_in_the_large: float | None = Field(
        default=None,
        description="Intercept with the slope fixed at 1: 0 ideal, < 0 predictions too high, "
        "> 0 too low.",
    )
    observed_expected: float | None = Field(
        default=None, description="Observed events / sum of predicted risks (1 ideal)."
    )
    auroc_ci_method: str | None = Field(
        default=None, description="How the AUROC interval was obtained (row or cluster bootstrap)."
    )


class Candidate(_Strict):
    """A model family tried on the training part's cross-validation."""

    kind: Literal["xgboost", "logistic"]
    params: dict[str, Any]
    cv_auroc_mean: float
    cv_auroc_std: float
    selected: bool


class Baseline(_Strict):
    name: str
    description: str
    auroc: float
    auroc_ci_low: float
    auroc_ci_high: float
    brier: float | None = None
    auroc_difference_vs_shipped: float | None = None
    difference_p_value: float | None = None
    n: int | None = Field(default=None, description="Test rows the baseline could score.")
    cv_auroc_mean: float | None = Field(
        default=None, description="Mean AUROC over the same repeated-CV validation folds."
    )
    cv_auroc_sd: float | None = None


class RepeatedCV(_Strict):
    """The shipped recipe (family, settings, calibration) re-fitted on repeated CV folds of the
    development part: how much the test figure could move with another split."""

    method: str
    repeats: int
    folds: int
    auroc_mean: float
    auroc_sd: float
    calibration_in_the_large_mean: float
    calibration_in_the_large_sd: float
    calibration_slope_mean: float
    calibration_slope_sd: float
    observed_expected_mean: float
    observed_expected_sd: float


class TemporalCohort(_Strict):
    name: str
    description: str
    n: int
    positives: int
    auroc: float
    auroc_ci_low: float
    auroc_ci_high: float
    calibration_in_the_large: float
    calibration_slope: float
    observed_expected: float


class TemporalValidation(_Strict):
    """Train on the earlier part of the data, test on the later part (the recipe, refitted)."""

    method: str
    n_train: int
    cohorts: list[TemporalCohort]


class Characteristic(_Strict):
    """One row of the participant characteristics table (TRIPOD+AI item 20)."""

    characteristic: str
    development: str
    test: str


class MissingPattern(_Strict):
    """The test part scored with a pattern of unknown inputs (issue 14): how the model does on
    what a typical chart supplies. The headline ``Validation.test`` keeps every input."""

    name: str
    description: str
    missing: list[str] = Field(description="The features left unknown on every test row.")
    test: ValidationSummary
    tiers: list[ThresholdMetrics]
    reference_auroc: float | None = Field(
        default=None,
        description="AUROC on the same rows of a forest trained on the known inputs alone "
        "(what 'unknown' could at best recover).",
    )


class Validation(_Strict):
    test: ValidationSummary
    tiers: list[ThresholdMetrics]
    subgroups: list[SubgroupMetrics]
    candidates: list[Candidate]
    baselines: list[Baseline]
    published_reference: str
    shortfalls: list[str] = Field(default_factory=list)
    repeated_cv: RepeatedCV | None = None
    temporal: TemporalValidation | None = None
    subgroup_min_events: int | None = Field(
        default=None, description="Subgroups with fewer events (or non-events) are suppressed."
    )
    characteristics: list[Characteristic] = Field(default_factory=list)
    missing_patterns: list[MissingPattern] = Field(default_factory=list)


PublishedMetric = Literal[
    "c_statistic",
    "calibration_slope",
    "mean_predicted_risk_percent",
    "observed_risk_percent",
    "observed_incidence_per_1000_person_years",
    "discordance_percent",
    "mean_overestimation_percent",
]
PUBLISHED_METRIC_RANGES: dict[str, tuple[float, float | None]] = {
    "c_statistic": (0.0, 1.0),
    "calibration_slope": (0.0, None),
    "mean_predicted_risk_percent": (0.0, 100.0),
    "observed_risk_percent": (0.0, 100.0),
    "observed_incidence_per_1000_person_years": (0.0, 1000.0),
    # (predicted - observed) relative to observed, as the studies report it: -100% = none predicted
    "discordance_percent": (-100.0, None),
    "mean_overestimation_percent": (-100.0, None),
}
"""Each metric's valid range (inclusive; None = unbounded): a figure outside is a typo."""


class PublishedFigure(_Strict):
    """One validation figure of a published equation, as its source reports it (issue 11).

    Nothing here was reproduced on local data: the figure, its interval and its population are
    the paper's, and the citation says where to check it.
    """

    study: str = Field(description="Short name: first author, year, cohort or setting.")
    citation: str = Field(description="Authors, title, journal year;volume:pages.")
    pmid: str | None = Field(default=None, pattern=r"^[1-9][0-9]{0,8}$")
    doi: str | None = Field(default=None, pattern=r"^10\.[0-9]{4,9}/\S+$")
    validation: Literal["derivation", "external"] = Field(
        description="In the derivation cohorts (by the authors) or in other people's data."
    )
    model: str = Field(
        default="",
        description="The published model the figure is for, when it is not exactly this"
        " equation (e.g. the same paper's laboratory model); empty = this equation.",
    )
    population: str = Field(description="Who and where: cohort, ages, exclusions, years.")
    n: int | None = Field(default=None, ge=1)
    outcome: str = Field(description="The outcome and horizon the figure refers to.")
    metric: PublishedMetric
    value: float
    decimals: int = Field(
        default=2, ge=0, le=6, description="Digits after the point, as published (0.70: 2)."
    )
    interval_low: float | None = None
    interval_high: float | None = None
    interval_kind: str | None = Field(
        default=None, description="e.g. '95% CI', 'interquartile interval across 21 data sets'."
    )
    note: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> PublishedFigure:
        if self.pmid is None and self.doi is None:
            raise ValueError(f"{self.study!r}: a published figure needs a PMID or a DOI")
        low, high = PUBLISHED_METRIC_RANGES[self.metric]
        bounds = [self.value, self.interval_low, self.interval_high]
        if any(b is not None and (b < low or (high is not None and b > high)) for b in bounds):
            raise ValueError(f"{self.study!r}: {self.metric} outside its range [{low}, {high}]")
        interval = (self.interval_low, self.interval_high)
        if (None in interval) != (self.interval_kind is None) or interval.count(None) == 1:
            raise ValueError(f"{self.study!r}: an interval needs both bounds and its kind")
        if self.interval_low is not None and self.interval_high is not None:
            if not self.interval_low <= self.value <= self.interval_high:
                raise ValueError(f"{self.study!r}: the interval does not contain the value")
        return self


class ExplanationInfo(_Strict):
    method: Literal["tree_shap", "linear", "equation"]
    seconds_per_row_batch: float = Field(description="Measured at training time, 10k-row batch.")
    seconds_per_row_single: float = Field(description="Measured at training time, one row.")
    reference_seconds_per_row: float | None = Field(
        default=None, description="XGBoost pred_contribs on the same rows, for comparison."
    )


Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Manifest(_Strict):
    """The validated content of ``manifest.json``."""

    schema_version: Literal[1] = 1
    name: str
    version: str
    title: str
    summary: str
    intended_use: str
    out_of_scope: list[str]
    created_at: datetime
    code_revision: str
    kind: Literal["xgboost", "logistic", "equation"] = Field(
        description="'equation': a published risk equation (models.equations), not fitted here."
    )
    model_file: str
    libraries: dict[str, str]
    # Trained kinds need all four; a published equation has no local data, split or validation
    # (its published validation is in the card, with citations), so none are invented.
    dataset: DatasetRef | None = None
    target: Target | None = None
    features: list[FeatureSpec]
    applicability: list[ApplicabilityRule] = Field(
        default_factory=list, description="Who the model is for; failing any rule = not scored."
    )
    columns: list[ModelColumn]
    hyperparameters: dict[str, Any]
    calibration: Calibration
    tiers: list[Tier]
    tiers_borrowed_from: str | None = Field(
        default=None,
        description="When the tier thresholds come from a guideline for a different outcome: "
        "which, in words (each result then carries a 'tier_thresholds_borrowed' warning).",
    )
    split: Split | None = None
    validation: Validation | None = None
    clinical_use: ClinicalUse = Field(
        default=DEFAULT_CLINICAL_USE,
        description="validated / evaluation_only / teaching_data_only, with the reason.",
    )
    governance: Governance | None = None
    missing_data_policy: str | None = Field(
        default=None, description="Which inputs may be unknown, why, and how training learned it."
    )
    published_validation: list[PublishedFigure] = Field(
        default_factory=list,
        description="A published equation's validation figures with citations (none local).",
    )
    published_validation_missing: list[str] = Field(
        default_factory=list,
        description="Published figures not transcribed yet: which, and where they are published.",
    )
    model_specification: ModelSpecification | None = None
    explanation: ExplanationInfo
    caveats: list[str]
    ethical_considerations: list[str]
    files: dict[str, Sha256] = Field(
        description="sha256 of every other file in the artifact folder (not manifest.json)."
    )

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not SEMVER.match(value):
            raise ValueError(f"version {value!r} is not a semantic version (MAJOR.MINOR.PATCH)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        unknown = {c.feature for c in self.columns} - set(names)
        if unknown:
            raise ValueError(f"columns refer to unknown features: {sorted(unknown)}")
        for rule in self.applicability:
            if rule.feature is not None and rule.feature not in names:
                raise ValueError(f"applicability rule {rule.id!r} refers to unknown feature")
        if self.kind != "equation" and None in (
            self.dataset,
            self.target,
            self.split,
            self.validation,
        ):
            raise ValueError("a trained model needs dataset, target, split and validation")
        if self.model_file not in self.files:
            raise ValueError(f"model_file {self.model_file!r} is not listed in files")
        bounds = [t.lower for t in self.tiers]
        if bounds != sorted(bounds) or (self.tiers and self.tiers[0].lower != 0.0):
            raise ValueError("tiers must start at 0 and be ordered by lower bound")
        return self

    def feature(self, name: str) -> FeatureSpec:
        for spec in self.features:
            if spec.name == name:
                return spec
        raise KeyError(name)


def version_key(version: str) -> tuple[int, int, int]:
    """Sort key for semantic versions ('1.10.0' > '1.9.0')."""
    match = SEMVER.match(version)
    if match is None:
        raise ValueError(f"{version!r} is not a semantic version")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch
