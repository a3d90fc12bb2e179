"""Shared fixtures for the training tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from models.manifest import (
    Baseline,
    Calibration,
    CalibrationBin,
    Candidate,
    Category,
    DatasetRef,
    Distribution,
    ExplanationInfo,
    FeatureSpec,
    FeatureType,
    Manifest,
    ModelColumn,
    Split,
    SubgroupMetrics,
    Target,
    ThresholdMetrics,
    Tier,
    Validation,
    ValidationSummary,
)
from models.signing import TrustPolicy, generate_private_key, write_key_pair


@pytest.fixture
def sample_manifest() -> Manifest:
    """A complete, valid manifest of a small XGBoost model with two inputs."""
    features = [
        FeatureSpec(
            name="systolic_bp",
            label="Systolic BP",
            description="Seated systolic blood pressure, mean of two readings.",
            type=FeatureType.NUMERIC,
            unit="mmHg",
            minimum=70.0,
            maximum=260.0,
            loinc="8480-6",
            source="column sysBP, no conversion",
            monotone=1,
            modifiable=True,
            distribution=Distribution(
                missing_rate=0.0, mean=132.4, quantiles={"p01": 94.0, "p50": 128.0, "p99": 215.0}
            ),
        ),
        FeatureSpec(
            name="smoking_status",
            label="Smoking status",
            description="Current tobacco use as recorded at the visit.",
            type=FeatureType.CATEGORICAL,
            categories=[
                Category(code="never", label="Never smoked"),
                Category(code="former", label="Former smoker"),
                Category(code="current", label="Current smoker"),
            ],
            source="column smoker mapped 0 -> never, 1 -> current; former from cigsPerDay history",
            required=False,
            missing_handling="follows the forest's learned missing-value branch",
            distribution=Distribution(
                missing_rate=0.02,
                category_rates={"never": 0.5, "former": 0.2, "current": 0.28},
            ),
        ),
    ]
    columns = [
        ModelColumn(name="systolic_bp", feature="systolic_bp"),
        *(
            ModelColumn(name=f"smoking_status={code}", feature="smoking_status", category=code)
            for code in ("never", "former", "current")
        ),
    ]
    tiers = [
        Tier(name="low", label="Low", lower=0.0, upper=0.05, action="Lifestyle advice."),
        Tier(
            name="elevated",
            label="Elevated",
            lower=0.05,
            upper=0.2,
            action="Discuss statin therapy.",
        ),
        Tier(name="high", label="High", lower=0.2, upper=None, action="Start a statin."),
    ]
    validation = Validation(
        test=ValidationSummary(
            n=8000,
            positives=960,
            prevalence=0.12,
            auroc=0.8251,
            auroc_ci_low=0.8208,
            auroc_ci_high=0.8293,
            auprc=0.412,
            brier=0.0893,
            calibration_slope=0.97,
            calibration_intercept=-0.02,
            ece=0.011,
            calibration_bins=[
                CalibrationBin(mean_predicted=0.031, observed_rate=0.028, n=4000),
                CalibrationBin(mean_predicted=0.209, observed_rate=0.212, n=4000),
            ],
        ),
        tiers=[
            ThresholdMetrics(
                tier="elevated",
                threshold=0.05,
                sensitivity=0.91,
                specificity=0.52,
                ppv=0.2,
                npv=0.97,
                flagged_fraction=0.55,
            ),
            ThresholdMetrics(
                tier="high",
                threshold=0.2,
                sensitivity=0.48,
                specificity=0.9,
                ppv=0.39,
                npv=0.93,
                flagged_fraction=0.15,
            ),
        ],
        subgroups=[
            SubgroupMetrics(
                factor="sex",
                level="female",
                n=4100,
                positives=400,
                auroc=0.83,
                calibration_slope=1.02,
                calibration_intercept=0.01,
                mean_predicted=0.1,
                observed_rate=0.098,
            ),
            SubgroupMetrics(
                factor="sex",
                level="male",
                n=3880,
                positives=558,
                auroc=0.81,
                calibration_slope=0.95,
                calibration_intercept=-0.03,
                mean_predicted=0.14,
                observed_rate=0.144,
            ),
            SubgroupMetrics(
                factor="age_band",
                level="90+",
                n=20,
                positives=2,
                auroc=None,
                calibration_slope=None,
                calibration_intercept=None,
                mean_predicted=0.3,
                observed_rate=0.1,
            ),
        ],
        candidates=[
            Candidate(
                kind="xgboost",
                params={"max_depth": 2, "eta": 0.05, "n_estimators": 300},
                cv_auroc_mean=0.823,
                cv_auroc_std=0.006,
                selected=True,
            ),
            Candidate(
                kind="logistic",
                params={"C": 1.0},
                cv_auroc_mean=0.816,
                cv_auroc_std=0.007,
                selected=False,
            ),
        ],
        baselines=[
            Baseline(
                name="Framingham 2008",
                description="Published office-based (BMI) 10-year CVD equation.",
                auroc=0.79,
                auroc_ci_low=0.78,
                auroc_ci_high=0.80,
                brier=0.095,
                auroc_difference_vs_shipped=0.035,
                difference_p_value=0.0004,
            )
        ],
        published_reference="D'Agostino et al. (2008) report a C statistic of 0.76 to 0.79.",
        shortfalls=["Few patients aged 90 or over; no subgroup estimate for them."],
    )
    return Manifest(
        name="cvd",
        version="1.2.0",
        title="10-year coronary heart disease risk",
        summary="Probability of coronary heart disease within 10 years.",
        intended_use="Adults aged 30 to 74 without known cardiovascular disease, in primary care.",
        out_of_scope=[
            "Patients with established cardiovascular disease.",
            "Pregnancy.",
        ],
        created_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        code_revision="0123abc",
        kind="xgboost",
        model_file="model.json",
        libraries={"xgboost": "3.0.0", "numpy": "2.1.0"},
        dataset=DatasetRef(
            path="framingham/framingham.csv",
            sha256="a" * 64,
            rows_read=42000,
            rows_used=40000,
            description="Framingham Heart Study teaching data set.",
            exclusions=["2000 rows with prevalent CHD at baseline."],
        ),
        target=Target(
            column="TenYearCHD",
            definition="Coronary heart disease within 10 years of the exam",
            positive_rate_train=0.121,
            positive_rate_test=0.12,
        ),
        features=features,
        columns=columns,
        hyperparameters={"max_depth": 2, "eta": 0.05, "n_estimators": 300},
        calibration=Calibration(
            slope=1.01, intercept=-0.05, fitted_on="out-of-fold margins of the 5-fold CV"
        ),
        tiers=tiers,
        split=Split(
            method="random split of rows",
            seed=20240101,
            test_fraction=0.2,
            grouped_by=None,
            n_train=32000,
            n_test=8000,
            test_ids_sha256="b" * 64,
            id_column="row number in the file (0-based)",
        ),
        validation=validation,
        explanation=ExplanationInfo(
            method="tree_shap",
            seconds_per_row_batch=1.5e-6,
            seconds_per_row_single=2.4e-5,
            reference_seconds_per_row=4.1e-5,
        ),
        caveats=["Recalibrate locally before use outside the derivation population."],
        ethical_considerations=["The cohort is mostly white; check calibration locally."],
        files={"model.json": "c" * 64, "card.md": "d" * 64},
    )


@dataclass(frozen=True)
class TrainingKey:
    """A signing key pair for training runs: the private key in a file, as in production."""

    private_file: Path
    public_file: Path
    key_id: str
    trust: TrustPolicy
    """Trusts only this key."""


@pytest.fixture(scope="session")
def training_key(tmp_path_factory: pytest.TempPathFactory) -> TrainingKey:
    folder = tmp_path_factory.mktemp("signing")
    key = generate_private_key()
    signer = write_key_pair(key, folder / "training.pem", folder / "training.pub")
    trust = TrustPolicy.trusting(key.public_key())
    return TrainingKey(folder / "training.pem", folder / "training.pub", signer, trust)
