"""Dataset loaders: read a shared (or hospital) extract and map its coding onto chart features.

Each loader returns a :class:`Dataset` whose ``features`` frame uses the canonical feature names
and units of the model config; the config documents each mapping in the feature's ``source``.
Loaders accept CSV, gzipped CSV or Parquet in the same format as the shared file.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class Dataset:
    features: pd.DataFrame
    """Canonical features, one column per feature name; NaN = missing."""
    y: np.ndarray
    ids: np.ndarray
    """A stable row id (used to hash the test split)."""
    groups: np.ndarray
    """Rows sharing a group never straddle train and test (patient, or duplicate content)."""
    factors: pd.DataFrame
    """Subgroup factors for the fairness audit (strings), not necessarily model inputs."""
    rows_read: int
    exclusions: list[str] = field(default_factory=list)
    patients: np.ndarray | None = None
    """Patient id per row where patients repeat (cluster bootstrap, temporal "new patients")."""
    extras: pd.DataFrame | None = None
    """Source columns published baselines need that are not model inputs (e.g. ICD-9 codes)."""

    def subset(self, keep: np.ndarray) -> Dataset:
        """The rows where ``keep`` is true (row order kept)."""
        return Dataset(
            features=self.features[keep].reset_index(drop=True),
            y=self.y[keep],
            ids=self.ids[keep],
            groups=self.groups[keep],
            factors=self.factors[keep].reset_index(drop=True),
            rows_read=self.rows_read,
            exclusions=self.exclusions,
            patients=None if self.patients is None else self.patients[keep],
            extras=None if self.extras is None else self.extras[keep].reset_index(drop=True),
        )


def read_table(path: Path, **csv_options: object) -> pd.DataFrame:
    """CSV, gzipped CSV or Parquet, by extension."""
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, **csv_options)  # type: ignore[call-overload, no-any-return]


def _content_groups(frame: pd.DataFrame) -> np.ndarray:
    """Identical rows (features and label) share a group, so duplicates stay on one side."""
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def _age_band(age: pd.Series, edges: list[int]) -> pd.Series:
    labels = [f"{lo}-{hi - 1}" for lo, hi in itertools.pairwise(edges)]
    labels[-1] = f"{edges[-2]}+"
    return pd.cut(age, bins=[*edges[:-1], np.inf], right=False, labels=labels).astype(str)


# --- BRFSS 2015 diabetes health indicators -------------------------------------------------

# Audit factors only (never inputs): BRFSS _INCOMG (1 <$10k ... 8 >=$75k) and _EDUCAG groups.
BRFSS_INCOME = {
    1: "<$15k",
    2: "<$15k",
    3: "$15-25k",
    4: "$15-25k",
    5: "$25-50k",
    6: "$25-50k",
    7: "$50-75k",
    8: "$75k+",
}
BRFSS_EDUCATION = {
    1: "no high school diploma",
    2: "no high school diploma",
    3: "no high school diploma",
    4: "high school graduate",
    5: "some college",
    6: "college graduate",
}
FRAMINGHAM_EDUCATION = {
    1: "some high school",
    2: "high school or GED",
    3: "some college or vocational",
    4: "college",
}

# _AGEG5YR codes 1..13 -> midpoint of the band in years (13 = 80 or older: 82 assumed).
BRFSS_AGE_MIDPOINT = {1: 21.0, **{k: 27.0 + 5.0 * (k - 2) for k in range(2, 13)}, 13: 82.0}


def load_brfss(path: Path) -> Dataset:
    raw = read_table(path)
    rows_read = len(raw)
    features = pd.DataFrame(
        {
            "age_years": raw["Age"].astype(int).map(BRFSS_AGE_MIDPOINT),
            "sex_male": raw["Sex"],
            "bmi_kg_m2": raw["BMI"],
            "high_blood_pressure": raw["HighBP"],
            "high_cholesterol": raw["HighChol"],
            "cholesterol_checked_5y": raw["CholCheck"],
            "smoked_100_cigarettes": raw["Smoker"],
            "stroke_history": raw["Stroke"],
            "coronary_disease_or_mi": raw["HeartDiseaseorAttack"],
            "physically_active": raw["PhysActivity"],
            "fruit_daily": raw["Fruits"],
            "vegetables_daily": raw["Veggies"],
            "heavy_alcohol_use": raw["HvyAlcoholConsump"],
            "general_health": raw["GenHlth"],
            "poor_mental_health_days": raw["MentHlth"],
            "poor_physical_health_days": raw["PhysHlth"],
            "difficulty_walking": raw["DiffWalk"],
        }
    ).astype(float)
    y = raw["Diabetes_binary"].astype(int).to_numpy()
    factors = pd.DataFrame(
        {
            "sex": np.where(features["sex_male"] == 1, "male", "female"),
            "age_band": _age_band(features["age_years"], [18, 40, 50, 60, 70, 200]),
            "income": raw["Income"].astype(int).map(BRFSS_INCOME).fillna("unknown"),
            "education": raw["Education"].astype(int).map(BRFSS_EDUCATION).fillna("unknown"),
        }
    )
    return Dataset(
        features=features,
        y=y,
        ids=np.arange(rows_read),
        groups=_content_groups(raw),
        factors=factors,
        rows_read=rows_read,
        exclusions=[
            "none; 24,206 exact duplicate rows kept but grouped so that copies never straddle "
            "train and test"
        ],
    )


# --- Framingham teaching extract -----------------------------------------------------------


def load_framingham(path: Path) -> Dataset:
    raw = read_table(path)
    rows_read = len(raw)
    features = pd.DataFrame(
        {
            "sex_male": raw["male"],
            "age_years": raw["age"],
            "current_smoker": raw["currentSmoker"],
            "cigarettes_per_day": raw["cigsPerDay"],
            "bp_medication": raw["BPMeds"],
            "stroke_history": raw["prevalentStroke"],
            "hypertension": raw["prevalentHyp"],
            "diabetes": raw["diabetes"],
            "total_cholesterol_mg_dl": raw["totChol"],
            "systolic_bp_mm_hg": raw["sysBP"],
            "diastolic_bp_mm_hg": raw["diaBP"],
            "bmi_kg_m2": raw["BMI"],
            "heart_rate_bpm": raw["heartRate"],
            "glucose_mg_dl": raw["glucose"],
        }
    ).astype(float)
    # A smoker's missing cigarettes/day stays missing; a non-smoker smokes 0 a day.
    features.loc[features["current_smoker"] == 0, "cigarettes_per_day"] = 0.0
    y = raw["TenYearCHD"].astype(int).to_numpy()
    factors = pd.DataFrame(
        {
            "sex": np.where(features["sex_male"] == 1, "male", "female"),
            "age_band": _age_band(features["age_years"], [30, 45, 55, 65, 200]),
            "diabetes": np.where(features["diabetes"] == 1, "diabetic", "not diabetic"),
            "education": raw["education"].map(FRAMINGHAM_EDUCATION).fillna("unknown"),
        }
    )
    return Dataset(
        features=features,
        y=y,
        ids=np.arange(rows_read),
        groups=np.arange(rows_read),
        factors=factors,
        rows_read=rows_read,
        exclusions=["none (missing values kept and flagged; the model handles them)"],
    )


# --- Diabetes 130-US hospitals ---------------------------------------------------------------

# Encounters ending in death or hospice cannot be followed by a readmission.
DEATH_OR_HOSPICE = {11, 13, 14, 19, 20, 21}
DISCHARGE_GROUPS = {
    "home": {1},
    "home_health": {6, 8},
    "skilled_nursing": {3, 4, 15, 24},
    "rehab_or_long_term_care": {22, 23},
    "other_inpatient_facility": {2, 5, 9, 10, 27, 28, 29, 30},
    "left_against_advice": {7},
    "outpatient_referral": {12, 16, 17},
    "unknown": {18, 25, 26},
}
ADMISSION_SOURCE_GROUPS = {
    "emergency_room": {7},
    "referral": {1, 2, 3},
    "transfer": {4, 5, 6, 10, 18, 22, 25, 26},
}
ADMISSION_TYPE_GROUPS = {"emergency": {1, 7}, "urgent": {2}, "elective": {3}}
AGE_BAND_MIDPOINT = {f"[{lo}-{lo + 10})": lo + 5.0 for lo in range(0, 100, 10)}
A1C_CODES = {"None": "not_measured", "Norm": "normal", ">7": "above_7", ">8": "above_8"}
GLUCOSE_CODES = {"None": "not_measured", "Norm": "normal", ">200": "above_200", ">300": "above_300"}
INSULIN_CODES = {"No": "none", "Steady": "steady", "Up": "increased", "Down": "decreased"}


def _group_codes(codes: pd.Series, groups: dict[str, set[int]], default: str) -> pd.Series:
    lookup = {code: name for name, members in groups.items() for code in members}
    return codes.astype(int).map(lambda c: lookup.get(c, default))


def icd9_chapter(code: object) -> str:
    """Strack et al.'s grouping of the primary ICD-9 diagnosis."""
    if not isinstance(code, str) or not code:
        return "other"
    if code.startswith(("V", "E")):
        return "other"
    value = float(code)
    if int(value) == 250:
        return "diabetes"
    if 390 <= value <= 459 or int(value) == 785:
        return "circulatory"
    if 460 <= value <= 519 or int(value) == 786:
        return "respiratory"
    if 520 <= value <= 579 or int(value) == 787:
        return "digestive"
    if 800 <= value <= 999:
        return "injury"
    if 710 <= value <= 739:
        return "musculoskeletal"
    if 580 <= value <= 629 or int(value) == 788:
        return "genitourinary"
    if 140 <= value <= 239:
        return "neoplasm"
    return "other"


def load_diabetes130(path: Path) -> Dataset:
    # NOTE: "None" in max_glu_serum / A1Cresult means "not measured" and must not become NaN.
    raw = read_table(path, na_values=["?"], keep_default_na=False, low_memory=False)
    rows_read = len(raw)
    exclusions = []
    dead = raw["discharge_disposition_id"].astype(int).isin(DEATH_OR_HOSPICE)
    exclusions.append(f"{int(dead.sum())} encounters ending in death or hospice")
    unknown_sex = ~raw["gender"].isin(["Female", "Male"])
    exclusions.append(f"{int(unknown_sex.sum())} encounters with sex Unknown/Invalid")
    raw = raw[~dead & ~unknown_sex].sort_values("encounter_id").reset_index(drop=True)

    readmitted_30 = (raw["readmitted"] == "<30").astype(int)
    by_patient = raw.groupby("patient_nbr", sort=False)
    # Earlier encounters of the same patient are known at this discharge (encounter_id order
    # approximates time); their own 30-day outcome is known once the readmission happened.
    prior_encounters = by_patient.cumcount().astype(float)
    prior_readmissions = (
        readmitted_30.groupby(raw["patient_nbr"]).cumsum() - readmitted_30
    ).astype(float)

    features = pd.DataFrame(
        {
            "age_years": raw["age"].map(AGE_BAND_MIDPOINT),
            "sex_male": (raw["gender"] == "Male").astype(float),
            "time_in_hospital_days": raw["time_in_hospital"].astype(float),
            "lab_procedures": raw["num_lab_procedures"].astype(float),
            "procedures": raw["num_procedures"].astype(float),
            "medications": raw["num_medications"].astype(float),
            "outpatient_visits_prior_year": raw["number_outpatient"].astype(float),
            "emergency_visits_prior_year": raw["number_emergency"].astype(float),
            "inpatient_admissions_prior_year": raw["number_inpatient"].astype(float),
            "diagnoses_count": raw["number_diagnoses"].astype(float),
            "prior_encounters": prior_encounters,
            "prior_readmissions_30d": prior_readmissions,
            "hba1c_result": raw["A1Cresult"].map(A1C_CODES),
            "max_glucose_serum": raw["max_glu_serum"].map(GLUCOSE_CODES),
            "insulin": raw["insulin"].map(INSULIN_CODES),
            "diabetes_medication": (raw["diabetesMed"] == "Yes").astype(float),
            "medication_change": (raw["change"] == "Ch").astype(float),
            "discharge_disposition": _group_codes(
                raw["discharge_disposition_id"], DISCHARGE_GROUPS, "unknown"
            ),
            "admission_source": _group_codes(
                raw["admission_source_id"], ADMISSION_SOURCE_GROUPS, "other"
            ),
            "admission_type": _group_codes(
                raw["admission_type_id"], ADMISSION_TYPE_GROUPS, "other"
            ),
            "primary_diagnosis": raw["diag_1"].map(icd9_chapter),
        }
    )
    factors = pd.DataFrame(
        {
            "sex": raw["gender"].str.lower(),
            "age_band": _age_band(features["age_years"], [0, 50, 65, 80, 200]),
            "race": raw["race"].fillna("unknown"),
        }
    )
    return Dataset(
        features=features,
        y=readmitted_30.to_numpy(),
        ids=raw["encounter_id"].to_numpy(),
        groups=raw["patient_nbr"].to_numpy(),
        factors=factors,
        rows_read=rows_read,
        exclusions=exclusions,
        patients=raw["patient_nbr"].to_numpy(),
        extras=raw[["diag_1", "diag_2", "diag_3", "admission_type_id", "admission_source_id"]]
        .astype({"admission_type_id": int, "admission_source_id": int})
        .reset_index(drop=True),
    )


LOADERS: dict[str, Callable[[Path], Dataset]] = {
    "brfss": load_brfss,
    "framingham": load_framingham,
    "diabetes130": load_diabetes130,
}
