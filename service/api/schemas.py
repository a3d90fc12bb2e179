"""Public request and response schemas: the API contract, and the client's types.

This module is the wire format shared by the server and ``service.client``, so it imports
pydantic and nothing else of the project: a hospital script that only calls the API must not
load numpy, pandas or the scoring core (``python -c "import service.client"`` stays light).

The public part of a model's manifest (features, tiers, calibration, validation) is declared
here as well, under the names the OpenAPI document has always used. The server fills them from
its ``models.manifest`` objects by attribute (``from_attributes``): the artifact format can grow
fields without changing the contract, and a field leaves the contract only when it leaves here.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Public(BaseModel):
    # NOTE: validators are built on first use (defer_build), not at import: a client script
    # builds only the few it uses, and the import stays light (~20 ms of ~45 ms saved).
    model_config = ConfigDict(extra="forbid", defer_build=True)


class _FromManifest(BaseModel):
    # NOTE: read from the artifact's manifest objects by attribute, so only these fields travel.
    model_config = ConfigDict(extra="forbid", frozen=True, from_attributes=True, defer_build=True)


# ---------------------------------------------------------------------------------------------
# A model's public manifest (the artifact's own types are models.manifest)


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


class AlternativeUnit(_FromManifest):
    """An accepted non-canonical unit: ``canonical = value * factor + offset``."""

    unit: str
    factor: float
    offset: float = 0.0


class Distribution(_FromManifest):
    """The feature's distribution in the training part (for out-of-range flags and drift checks)."""

    missing_rate: float
    mean: float | None = None
    quantiles: dict[str, float] = Field(
        default_factory=dict, description="p01, p05, p25, p50, p75, p95, p99"
    )
    category_rates: dict[str, float] = Field(default_factory=dict)


class Category(_FromManifest):
    """One allowed value of a categorical feature."""

    code: str
    label: str


class FeatureSpec(_FromManifest):
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
        description="Clinical direction: 1 = a higher value raises risk, -1 = lowers it, "
        "0 = none declared (shown as an association).",
    )
    direction_rationale: str = Field(default="", description="Why this direction, one line.")
    required: bool = True
    modifiable: bool = False
    missing_handling: str | None = Field(
        default=None, description="What the model does when an optional feature is missing."
    )
    distribution: Distribution | None = None


class Tier(_FromManifest):
    """A risk band: ``lower <= probability < upper`` (``upper`` None = no upper bound)."""

    name: str
    label: str
    lower: float
    upper: float | None
    action: str = ""


class Calibration(_FromManifest):
    """Platt recalibration of the model's margin: ``logit(p) = slope * margin + intercept``."""

    method: Literal["platt"] = "platt"
    slope: float
    intercept: float
    fitted_on: str


class ApplicabilityRule(_FromManifest):
    """One condition of the intended population; a patient failing it is not scored."""

    id: str
    description: str = Field(description="In clinical words, e.g. 'Adults aged 30 to 70'.")
    source: str = Field(description="Clinical source, or why the rule exists.")
    kind: Literal["feature_range", "context_false", "context_required"] = Field(
        description="feature_range: minimum <= features[feature] <= maximum; context_false: "
        "context[context] must not be true (not stated = assumed to hold, with a warning); "
        "context_required: context[context] must be true."
    )
    feature: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    context: str | None = None


class CalibrationBin(_FromManifest):
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


class ThresholdMetrics(_FromManifest):
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


class SubgroupMetrics(_FromManifest):
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
        default=None,
        description="Intercept with the slope fixed at 1: 0 ideal, < 0 predictions too high, "
        "> 0 too low.",
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
    categories: list[str] = Field(default_factory=list)
    reliable: bool = True
    concern: str | None = Field(default=None, description="Why the figures are unreliable.")


class ValidationSummary(_FromManifest):
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


class Candidate(_FromManifest):
    """A model family tried on the training part's cross-validation."""

    kind: Literal["xgboost", "logistic"]
    params: dict[str, Any]
    cv_auroc_mean: float
    cv_auroc_std: float
    selected: bool


class Baseline(_FromManifest):
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


class RepeatedCV(_FromManifest):
    """The shipped recipe re-fitted on repeated CV folds of the development part: how much the
    test figure could move with another split."""

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


class TemporalCohort(_FromManifest):
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


class TemporalValidation(_FromManifest):
    """Trained on the earlier part of the data, tested on the later part."""

    method: str
    n_train: int
    cohorts: list[TemporalCohort]


class Characteristic(_FromManifest):
    """One row of the participant characteristics table (TRIPOD+AI item 20)."""

    characteristic: str
    development: str
    test: str


# ---------------------------------------------------------------------------------------------
# Requests and responses


class Measurement(_Public):
    """A value in an accepted alternative unit, converted exactly to the canonical unit."""

    value: float
    unit: str


class PredictRequest(_Public):
    """One patient. ``features`` holds the model's features (see the model's Features schema)."""

    patient_id: str | None = Field(
        default=None,
        max_length=256,
        description="Optional; stored only as a keyed pseudonym in the audit trail.",
    )
    features: dict[str, float | bool | str | Measurement | None]
    top_k: int | None = Field(
        default=None,
        ge=1,
        description="Return only the k largest contributions plus one 'other_features' entry.",
    )
    context: dict[str, bool | None] | None = Field(
        default=None,
        description="Facts that decide whether the model applies (not model inputs), named by "
        'the model\'s applicability rules, e.g. {"established_ascvd": false}.',
    )
    research_use: bool | None = Field(
        default=None,
        description="Score a patient outside the intended population anyway (keys with the "
        "'research' or 'admin' scope only; audited as research).",
    )


class BatchPredictRequest(_Public):
    """Several patients; each gets its own result or its own error."""

    items: list[PredictRequest]
    top_k: int | None = Field(default=None, ge=1)


class ModelRef(_Public):
    name: str
    version: str
    sha256: str = Field(
        description="sha256 of the artifact's manifest.json (which pins every file)."
    )


class ClinicalUsePublic(_Public):
    """Whether the model's scores may inform care, from its manifest, shown with every score."""

    status: Literal["validated", "evaluation_only", "teaching_data_only"] = Field(
        description="validated: validated for clinical use; evaluation_only: for evaluating "
        "the model, not for care decisions; teaching_data_only: fitted to teaching data."
    )
    reason: str


class TierPublic(_Public):
    name: str
    label: str
    lower: float
    upper: float | None
    action: str


class Contribution(_Public):
    feature: str
    label: str
    value: float | str | None
    unit: str | None
    contribution: float = Field(description="Contribution to the log-odds of the probability.")
    direction: Literal["raised", "lowered", "no effect"]
    basis: Literal["declared_direction", "association", "value_unknown", "combined"] = Field(
        description="How to read it: the input has a declared clinical direction the model is "
        "held to (declared_direction); medicine gives it none, so it is an association of the "
        "training data (association); its value was not known, so it is what 'unknown' goes "
        "with in the model (value_unknown); or the inputs beyond top_k together (combined)."
    )
    text: str


class Explanation(_Public):
    method: Literal["tree_shap", "linear", "equation"]
    base_log_odds: float = Field(
        description="Base on `scale` (log-odds, or log cumulative hazard for a Cox equation)."
    )
    base_probability: float
    contributions: list[Contribution]
    scale: Literal["log_odds", "log_cumulative_hazard"] = "log_odds"
    probability_mapping: str = Field(
        default="p = 1 / (1 + exp(-z))",
        description="How base + sum(contributions) (z) maps to the probability.",
    )


class MissingPublic(_Public):
    feature: str
    handling: str


class OutOfRangePublic(_Public):
    feature: str
    value: float
    training_p01: float
    training_p99: float


class UnitConversionPublic(_Public):
    feature: str
    value: float
    unit: str
    converted_value: float
    canonical_unit: str


class DataQualityPublic(_Public):
    missing: list[MissingPublic]
    out_of_training_range: list[OutOfRangePublic]
    unit_conversions: list[UnitConversionPublic]
    trustworthy: bool = Field(description="False when any input was missing or out of range.")


class FailedRule(_Public):
    id: str
    description: str
    source: str
    detail: str = Field(description="The value that failed, in clinical words.")


class ApplicabilityPublic(_Public):
    applicable: bool
    research_use: bool
    failed: list[FailedRule]


class UncertaintyPublic(_Public):
    """How often a similar prediction came true on the untouched test part."""

    statement: str
    observed_rate: float
    ci_low: float
    ci_high: float
    n: int
    bin: list[float] = Field(description="[lower, upper) of the predicted-risk bin.")


class WarningPublic(_Public):
    code: str = Field(
        description="e.g. subgroup_unreliable, tier_thresholds_borrowed, "
        "value_outside_training_range, applicability_not_stated, research_use"
    )
    message: str


class PredictResponse(_Public):
    """One answer. With status "not_applicable" the patient is outside the model's intended
    population: probability, tier and explanation are null and applicability says why."""

    prediction_id: str
    model: ModelRef
    clinical_use: ClinicalUsePublic
    status: Literal["scored", "not_applicable"]
    probability: float | None
    tier: TierPublic | None
    explanation: Explanation | None
    applicability: ApplicabilityPublic
    uncertainty: UncertaintyPublic | None
    warnings: list[WarningPublic]
    data_quality: DataQualityPublic
    elapsed_ms: float


class ProblemError(_Public):
    field: str
    message: str
    value: Any = None
    allowed: str | None = None
    code: str | None = Field(
        default=None, description="Machine-readable reason (e.g. 'out_of_range'), when known."
    )


class Problem(_Public):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[ProblemError] = Field(default_factory=list)


class BatchItemResult(_Public):
    index: int
    result: PredictResponse | None = None
    error: Problem | None = None


class BatchPredictResponse(_Public):
    model: ModelRef
    results: list[BatchItemResult]
    succeeded: int
    failed: int
    elapsed_ms: float


class ModelSummary(_Public):
    name: str
    title: str
    versions: list[str]
    default_version: str
    intended_use: str
    kind: Literal["xgboost", "logistic", "equation"]
    clinical_use: ClinicalUsePublic
    test_auroc: float | None = Field(description="Null for a published equation (no local test).")
    test_auroc_ci: tuple[float, float] | None


class MissingPattern(_FromManifest):
    """The test part scored with the inputs a typical chart lacks left unknown (issue 14)."""

    name: str
    description: str
    missing: list[str] = Field(description="The features left unknown on every test row.")
    test: ValidationSummary
    tiers: list[ThresholdMetrics]
    reference_auroc: float | None = Field(
        default=None,
        description="AUROC on the same rows of a model trained on the known inputs alone.",
    )


class PublishedFigure(_FromManifest):
    """A published equation's validation figure as its source reports it; none reproduced
    locally (issue 11)."""

    study: str
    citation: str
    pmid: str | None = None
    doi: str | None = None
    validation: Literal["derivation", "external"]
    model: str = Field(
        default="", description="The published model the figure is for; empty = this equation."
    )
    population: str
    n: int | None = None
    outcome: str
    metric: Literal[
        "c_statistic",
        "calibration_slope",
        "mean_predicted_risk_percent",
        "observed_risk_percent",
        "observed_incidence_per_1000_person_years",
        "discordance_percent",
        "mean_overestimation_percent",
    ]
    value: float
    decimals: int = Field(default=2, description="Digits after the point, as published.")
    interval_low: float | None = None
    interval_high: float | None = None
    interval_kind: str | None = None
    note: str = ""


class ValidationPublic(_Public):
    test: ValidationSummary
    tiers: list[ThresholdMetrics]
    subgroups: list[SubgroupMetrics]
    candidates: list[Candidate]
    baselines: list[Baseline]
    published_reference: str
    shortfalls: list[str]
    repeated_cv: RepeatedCV | None = None
    temporal: TemporalValidation | None = None
    subgroup_min_events: int | None = Field(
        default=None, description="Subgroups with fewer events (or non-events) are suppressed."
    )
    characteristics: list[Characteristic] = Field(default_factory=list)
    missing_patterns: list[MissingPattern] = Field(
        default_factory=list,
        description="Test figures with inputs a typical chart lacks left unknown.",
    )


class ModelDetail(_Public):
    name: str
    version: str
    sha256: str
    clinical_use: ClinicalUsePublic
    title: str
    summary: str
    kind: Literal["xgboost", "logistic", "equation"]
    created_at: datetime
    intended_use: str
    out_of_scope: list[str]
    applicability: list[ApplicabilityRule] = Field(
        default_factory=list, description="Who the model is for; failing a rule = no score."
    )
    features: list[FeatureSpec]
    tiers: list[Tier]
    tiers_borrowed_from: str | None = None
    calibration: Calibration
    validation: ValidationPublic | None = Field(
        description="Local validation; null for a published equation (its card cites the papers)."
    )
    caveats: list[str]
    missing_data_policy: str | None = Field(
        default=None, description="Which inputs may be unknown, why, and how the model treats it."
    )
    published_validation: list[PublishedFigure] = Field(
        default_factory=list,
        description="A published equation's validation figures with citations (none local).",
    )
    published_validation_missing: list[str] = Field(
        default_factory=list,
        description="Published figures not transcribed yet, and where they are published.",
    )
    card_markdown: str
    explanation_method: Literal["tree_shap", "linear", "equation"]


class AuditRecordPublic(_Public):
    prediction_id: str
    created_at: datetime
    caller: str
    model_name: str
    model_version: str
    model_sha256: str
    patient_pseudonym: str | None = Field(
        description="HMAC-SHA256 of the patient id under the service's pseudonym key."
    )
    input_sha256: str = Field(
        description="HMAC-SHA256, under the same key, of the canonical validated input: the "
        "same input gives the same value, and the input cannot be recovered by trying values."
    )
    probability: float | None = Field(description="Null for a not-applicable answer.")
    tier: str | None
    latency_ms: float
    channel: str = Field(
        description="e.g. single, batch, cds-hooks; '+research' when scored "
        "outside the intended population by research opt-in."
    )
    status: Literal["scored", "not_applicable"] = "scored"


class AuditPage(_Public):
    records: list[AuditRecordPublic]
    limit: int
    offset: int


class Health(_Public):
    status: Literal["ok", "unavailable"]
    models: dict[str, str] = Field(default_factory=dict)
    audit_store: bool | None = Field(
        default=None, description="Whether a prediction could be audited now (a write probe)."
    )
