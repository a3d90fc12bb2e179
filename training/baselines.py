"""Published risk equations computed on the same test rows as the shipped model."""

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
    """Risk per row from canonical features; NaN where an input it needs is missing."""


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


BASELINES: dict[str, list[PublishedBaseline]] = {
    "cvd": [
        PublishedBaseline(
            name="Framingham 2008 office (BMI) equation",
            description=(
                "D'Agostino et al., Circulation 2008;117:743-753, non-laboratory model for "
                "10-year general CVD, published coefficients, not refitted"
            ),
            predict=_framingham_office,
        )
    ]
}
