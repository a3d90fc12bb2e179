"""Established scores clinicians know, computed from their published definitions on the same
test rows (and the same repeated-CV folds) as the shipped model.

Each baseline reads the canonical features plus ``Dataset.extras`` (source columns that are not
model inputs, e.g. the ICD-9 codes LACE needs) and returns one value per row, NaN where an input
it needs is missing. A points score (ADA, LACE) is not a probability: only its ranking (AUROC)
is compared, never its Brier score or calibration. Each description names what the data lack
and how it was approximated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.framingham2008 import office_bmi_risk


@dataclass(frozen=True)
class PublishedBaseline:
    name: str
    description: str
    predict: Callable[[pd.DataFrame], np.ndarray]
    """Risk or points per row from canonical features (+ extras); NaN where an input is missing."""
    probability: bool = True
    """False for a points score: its Brier score is not computed."""
    max_points: float = 1.0
    """A points score's maximum: metrics read ``points / max_points`` (same ranking, in [0, 1])."""

    def ranking(self, frame: pd.DataFrame) -> np.ndarray:
        """Values in [0, 1] with the score's ranking (NaN where an input is missing)."""
        return np.asarray(self.predict(frame), dtype=np.float64) / self.max_points


def _framingham_office(features: pd.DataFrame) -> np.ndarray:
    inputs = {
        "male": "sex_male",
        "age_years": "age_years",
        "bmi": "bmi_kg_m2",
        "sbp_mm_hg": "systolic_bp_mm_hg",
        "bp_treated": "bp_medication",
        "smoker": "current_smoker",
        "diabetic": "diabetes",
    }
    complete = features[list(inputs.values())].notna().all(axis=1).to_numpy()
    risk = np.full(len(features), np.nan)
    rows = features[complete]
    risk[complete] = office_bmi_risk(**{arg: rows[col].to_numpy() for arg, col in inputs.items()})
    return risk


# --- ADA diabetes risk test -------------------------------------------------------------------


def ada_risk_points(features: pd.DataFrame) -> np.ndarray:
    """ADA type 2 diabetes risk test (Bang H et al., Ann Intern Med 2009;151:775-783), the items
    BRFSS holds: age < 40 / 40-49 / 50-59 / >= 60 -> 0/1/2/3; male 1; hypertension 1; not
    physically active 1; BMI < 25 / 25-29.9 / 30-39.9 / >= 40 -> 0/1/2/3 (the published weight
    chart's BMI bands). Gestational diabetes (1 point, women) and a first-degree relative with
    diabetes (1 point) are not in BRFSS and count 0, so the maximum here is 9 of 11."""
    age = features["age_years"].to_numpy(dtype=float)
    bmi = features["bmi_kg_m2"].to_numpy(dtype=float)
    points = (
        np.select([age < 40, age < 50, age < 60], [0, 1, 2], default=3)
        + features["sex_male"].to_numpy(dtype=float)
        + features["high_blood_pressure"].to_numpy(dtype=float)
        + (1.0 - features["physically_active"].to_numpy(dtype=float))
        + np.select([bmi < 25, bmi < 30, bmi < 40], [0, 1, 2], default=3)
    ).astype(np.float64)
    needed = ["age_years", "bmi_kg_m2", "sex_male", "high_blood_pressure", "physically_active"]
    points[features[needed].isna().any(axis=1).to_numpy()] = np.nan
    return np.asarray(points, dtype=np.float64)


# --- LACE index ---------------------------------------------------------------------------------

# Charlson conditions by ICD-9-CM (Deyo et al., J Clin Epidemiol 1992;45:613-619), matched on the
# codes Diabetes-130 holds: (weight, 3-digit prefixes, (low, high) code ranges inclusive).
_CHARLSON: dict[str, tuple[int, tuple[str, ...], tuple[tuple[float, float], ...]]] = {
    "myocardial_infarction": (1, ("410", "412"), ()),
    "heart_failure": (1, ("428",), ()),
    "peripheral_vascular": (1, ("440", "441"), ((443.9, 443.9), (785.4, 785.4))),
    "cerebrovascular": (1, (), ((430, 438.99),)),
    "dementia": (1, ("290",), ()),
    "chronic_pulmonary": (1, (), ((490, 496.99), (500, 505.99), (506.4, 506.4))),
    "rheumatologic": (1, ("710", "714", "725"), ()),
    "peptic_ulcer": (1, (), ((531, 534.99),)),
    "mild_liver": (1, (), ((571.2, 571.2), (571.4, 571.69))),
    "diabetes": (1, (), ((250.0, 250.39), (250.7, 250.79))),
    "diabetes_complicated": (2, (), ((250.4, 250.69),)),
    "hemiplegia": (2, ("342",), ((344.1, 344.1),)),
    "renal": (2, ("582", "585", "586", "588"), ((583.0, 583.79),)),
    "malignancy": (2, (), ((140, 172.99), (174, 195.89), (200, 208.99))),
    "severe_liver": (3, (), ((572.2, 572.89), (456.0, 456.21))),
    "metastatic": (6, (), ((196, 199.99),)),
    "aids": (6, ("042", "043", "044"), ()),
}
# A condition and its more severe form count once, at the higher weight.
_SUPERSEDED = {
    "diabetes": "diabetes_complicated",
    "mild_liver": "severe_liver",
    "malignancy": "metastatic",
}


def charlson_conditions(code: object) -> set[str]:
    """The Charlson conditions one ICD-9-CM code indicates (V and E codes: none)."""
    if not isinstance(code, str) or not code or code[0] in "VE":
        return set()
    try:
        value = float(code)
    except ValueError:
        return set()
    prefix = code.split(".")[0].zfill(3)
    found = set()
    for name, (_, prefixes, ranges) in _CHARLSON.items():
        if prefix in prefixes or any(lo <= value <= hi for lo, hi in ranges):
            found.add(name)
    return found


def charlson_index(codes: list[object]) -> int:
    """Charlson comorbidity index from a list of ICD-9-CM codes (Deyo weights, hierarchy)."""
    conditions: set[str] = set()
    for code in codes:
        conditions |= charlson_conditions(code)
    for mild, severe in _SUPERSEDED.items():
        if severe in conditions:
            conditions.discard(mild)
    return sum(_CHARLSON[c][0] for c in conditions)


def lace_points(features: pd.DataFrame) -> np.ndarray:
    """LACE index (van Walraven C et al., CMAJ 2010;182:551-557) from what Diabetes-130 holds.

    L: length of stay in days, 1 / 2 / 3 / 4-6 / 7-13 / >= 14 -> 1/2/3/4/5/7 (< 1 day: 0).
    A: acute (emergent) admission 3 -- approximated by admission type emergency or trauma
    (ids 1, 7) or admission from the emergency room (source 7).
    C: Charlson index 0/1/2/3/>=4 -> 0/1/2/3/5 -- approximated from the three recorded
    diagnoses (diag_1-3, Deyo ICD-9 mapping), not the full comorbidity history.
    E: emergency visits in the previous 6 months, capped at 4 -- approximated by the visits in
    the previous year (number_emergency).
    """
    los = features["time_in_hospital_days"].to_numpy(dtype=float)
    length = np.select(
        [los < 1, los < 2, los < 3, los < 4, los < 7, los < 14], [0, 1, 2, 3, 4, 5], default=7
    )
    acute = (
        features["admission_type_id"].isin([1, 7]) | (features["admission_source_id"] == 7)
    ).to_numpy()
    diagnoses = features[["diag_1", "diag_2", "diag_3"]].to_numpy(dtype=object)
    charlson = np.array([charlson_index(list(row)) for row in diagnoses])
    comorbidity = np.minimum(charlson, 4) + (charlson >= 4)
    emergency = np.minimum(features["emergency_visits_prior_year"].to_numpy(dtype=float), 4)
    return np.asarray(length + 3 * acute + comorbidity + emergency, dtype=np.float64)


BASELINES: dict[str, list[PublishedBaseline]] = {
    "cvd": [
        PublishedBaseline(
            name="Framingham 2008 office (BMI) equation",
            description=(
                "D'Agostino et al., Circulation 2008;117:743-753, non-laboratory model, "
                "published coefficients, not refitted. Label mismatch: it predicts general CVD "
                "(coronary disease, stroke, peripheral artery disease, heart failure) while the "
                "label here is CHD only, so only its ranking (AUROC) is comparable, not its "
                "calibration or Brier score; the teaching extract may overlap its derivation "
                "cohort, which would favour it"
            ),
            predict=_framingham_office,
        )
    ],
    "diabetes": [
        PublishedBaseline(
            name="ADA diabetes risk test",
            description=(
                "Bang et al., Ann Intern Med 2009;151:775-783 (the American Diabetes "
                "Association's risk test), points 0-11 from age, sex, hypertension, physical "
                "activity and BMI; missing in BRFSS and counted 0: gestational diabetes and "
                "family history (maximum here 9). Its label (undiagnosed diabetes) differs "
                "from this one (diagnosed diabetes or prediabetes)"
            ),
            predict=ada_risk_points,
            probability=False,
            max_points=11.0,
        )
    ],
    "readmission": [
        PublishedBaseline(
            name="LACE index",
            description=(
                "van Walraven et al., CMAJ 2010;182:551-557, points 0-19 for 30-day death or "
                "readmission; approximated: acuity (emergency admission type or source), "
                "Charlson index (from the three recorded diagnoses only) and emergency visits "
                "(prior year instead of 6 months)"
            ),
            predict=lace_points,
            probability=False,
            max_points=19.0,
        )
    ],
}
