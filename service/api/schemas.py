"""Public request and response schemas (the API contract, and the client's types)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.manifest import (
    Baseline,
    Calibration,
    Candidate,
    FeatureSpec,
    SubgroupMetrics,
    ThresholdMetrics,
    Tier,
    ValidationSummary,
)


class _Public(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    text: str


class Explanation(_Public):
    method: Literal["tree_shap", "linear"]
    base_log_odds: float
    base_probability: float
    contributions: list[Contribution]


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


class PredictResponse(_Public):
    prediction_id: str
    model: ModelRef
    probability: float
    tier: TierPublic
    explanation: Explanation
    data_quality: DataQualityPublic
    elapsed_ms: float


class ProblemError(_Public):
    field: str
    message: str
    value: Any = None
    allowed: str | None = None


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
    kind: Literal["xgboost", "logistic"]
    test_auroc: float
    test_auroc_ci: tuple[float, float]


class ValidationPublic(_Public):
    test: ValidationSummary
    tiers: list[ThresholdMetrics]
    subgroups: list[SubgroupMetrics]
    candidates: list[Candidate]
    baselines: list[Baseline]
    published_reference: str
    shortfalls: list[str]


class ModelDetail(_Public):
    name: str
    version: str
    sha256: str
    title: str
    summary: str
    kind: Literal["xgboost", "logistic"]
    created_at: datetime
    intended_use: str
    out_of_scope: list[str]
    features: list[FeatureSpec]
    tiers: list[Tier]
    calibration: Calibration
    validation: ValidationPublic
    caveats: list[str]
    card_markdown: str
    explanation_method: Literal["tree_shap", "linear"]


class AuditRecordPublic(_Public):
    prediction_id: str
    created_at: datetime
    caller: str
    model_name: str
    model_version: str
    model_sha256: str
    patient_pseudonym: str | None
    input_sha256: str
    probability: float
    tier: str
    latency_ms: float
    channel: str


class AuditPage(_Public):
    records: list[AuditRecordPublic]
    limit: int
    offset: int


class Health(_Public):
    status: Literal["ok", "unavailable"]
    models: dict[str, str] = Field(default_factory=dict)
    audit_store: bool | None = None
