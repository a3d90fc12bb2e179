"""Published baselines from their definitions: hand-computed test vectors (issue 10)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.baselines import (
    BASELINES,
    ada_risk_points,
    charlson_conditions,
    charlson_index,
    lace_points,
)


def _ada_row(**values: float) -> dict[str, float]:
    row = {
        "age_years": 35.0,
        "sex_male": 0.0,
        "high_blood_pressure": 0.0,
        "physically_active": 1.0,
        "bmi_kg_m2": 22.0,
    }
    row.update(values)
    return row


def test_ada_risk_test_points() -> None:
    """Bang et al. 2009: age 40-49 = 1, male = 1, hypertension = 1, inactive = 1,
    BMI 30-39.9 = 2 -> 6 (at or above 5, the ADA's "high risk" cut-off)."""
    frame = pd.DataFrame(
        [
            _ada_row(),  # 0: young, female, no risk factor
            _ada_row(
                age_years=47.0,
                sex_male=1.0,
                high_blood_pressure=1.0,
                physically_active=0.0,
                bmi_kg_m2=32.0,
            ),
            _ada_row(age_years=62.0, bmi_kg_m2=41.0),  # 3 + 3
            _ada_row(age_years=52.0, bmi_kg_m2=25.0),  # 2 + 1
            _ada_row(age_years=40.0, bmi_kg_m2=29.9),  # band edges: 1 + 1
            _ada_row(bmi_kg_m2=float("nan")),
        ]
    )
    points = ada_risk_points(frame)
    np.testing.assert_array_equal(points[:5], [0, 6, 6, 3, 2])
    assert np.isnan(points[5])


def test_charlson_mapping_follows_deyo() -> None:
    assert charlson_conditions("428") == {"heart_failure"}
    assert charlson_conditions("410") == {"myocardial_infarction"}
    assert charlson_conditions("250.01") == {"diabetes"}
    assert charlson_conditions("250.4") == {"diabetes_complicated"}
    assert charlson_conditions("197") == {"metastatic"}
    assert charlson_conditions("496") == {"chronic_pulmonary"}
    assert charlson_conditions("585") == {"renal"}
    assert charlson_conditions("V57") == set()
    assert charlson_conditions(None) == set()
    assert charlson_conditions("401") == set()  # hypertension is not a Charlson condition
    # A complication supersedes the uncomplicated form; metastasis supersedes the tumour.
    assert charlson_index(["250.01", "250.6"]) == 2
    assert charlson_index(["174", "197"]) == 6
    assert charlson_index(["428", "496", "V57"]) == 2


def _lace_row(**values: object) -> dict[str, object]:
    row: dict[str, object] = {
        "time_in_hospital_days": 1.0,
        "admission_type_id": 3,
        "admission_source_id": 1,
        "diag_1": "V57",
        "diag_2": None,
        "diag_3": None,
        "emergency_visits_prior_year": 0.0,
    }
    row.update(values)
    return row


def test_lace_points() -> None:
    """van Walraven et al. 2010: LOS 5 days = 4, emergent = 3, Charlson 2 = 2, one ED visit = 1
    -> 10; Charlson >= 4 scores 5; LOS >= 14 scores 7; ED visits are capped at 4."""
    frame = pd.DataFrame(
        [
            _lace_row(),  # 1 day: 1
            _lace_row(
                time_in_hospital_days=5.0,
                admission_type_id=1,
                diag_1="428",
                diag_2="496",
                emergency_visits_prior_year=1.0,
            ),
            _lace_row(
                time_in_hospital_days=14.0,
                admission_source_id=7,
                diag_1="197",
                emergency_visits_prior_year=9.0,
            ),
            _lace_row(time_in_hospital_days=3.0, diag_1="250.6"),
        ]
    )
    np.testing.assert_array_equal(lace_points(frame), [1, 10, 7 + 3 + 5 + 4, 3 + 2])


def test_point_scores_are_not_compared_as_probabilities() -> None:
    assert not next(b for b in BASELINES["diabetes"]).probability
    assert not next(b for b in BASELINES["readmission"]).probability
    framingham = BASELINES["cvd"][0]
    assert framingham.probability
    assert "CHD only" in framingham.description


@pytest.mark.parametrize("name", ["cvd", "diabetes", "readmission"])
def test_every_model_has_an_established_baseline(name: str) -> None:
    assert BASELINES[name]


def test_points_are_ranked_within_zero_and_one() -> None:
    lace = BASELINES["readmission"][0]
    frame = pd.DataFrame(
        [
            _lace_row(
                time_in_hospital_days=14.0,
                diag_1="197",
                admission_type_id=1,
                emergency_visits_prior_year=9.0,
            )
        ]
    )
    assert lace.ranking(frame)[0] == pytest.approx(19 / 19)
