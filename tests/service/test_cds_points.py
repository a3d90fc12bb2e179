"""Percentage points on the card are the risk with the input minus the risk without it, on the
explanation's own scale: log-odds (PREVENT, trained models) and log cumulative hazard (PCE)."""

from __future__ import annotations

from typing import Any

import pytest

from models.predictor import load_predictor
from models.registry import artifact_folder
from service.cds_hooks.points import points
from tests.conftest import MODELS_DIR

# An African American man: the PCE variant without interaction terms, so removing diabetes
# (the reference value is 0) removes exactly its contribution.
PCE_MAN: dict[str, Any] = {
    "sex_male": 1,
    "race": "african_american",
    "age_years": 55,
    "total_cholesterol_mg_dl": 213,
    "hdl_cholesterol_mg_dl": 50,
    "systolic_bp_mm_hg": 120,
    "bp_medication": 0,
    "current_smoker": 0,
    "diabetes": 1,
}
PREVENT_WOMAN: dict[str, Any] = {
    "sex_male": 0,
    "age_years": 55,
    "total_cholesterol_mg_dl": 213,
    "hdl_cholesterol_mg_dl": 50,
    "systolic_bp_mm_hg": 140,
    "bp_medication": 0,
    "statin": 0,
    "diabetes": 1,
    "current_smoker": 0,
    "egfr_ml_min_1_73m2": 90,
}


@pytest.mark.parametrize(
    ("name", "features", "scale"),
    [
        ("ascvd-pce", PCE_MAN, "log_cumulative_hazard"),
        ("ascvd-prevent", PREVENT_WOMAN, "log_odds"),
    ],
)
def test_points_equal_the_risk_difference_without_the_input(
    name: str, features: dict[str, Any], scale: str
) -> None:
    model = load_predictor(artifact_folder(MODELS_DIR, name))
    result = dict(model.predict(features).result)
    assert result["explanation"]["scale"] == scale
    (diabetes,) = [c for c in result["explanation"]["contributions"] if c["feature"] == "diabetes"]
    without = model.predict({**features, "diabetes": 0}).result["probability"]
    assert without is not None

    expected = (result["probability"] - without) * 100
    # Diabetes enters both equations without an interaction here, so the difference is exact.
    assert points(result, diabetes["contribution"]) == pytest.approx(expected, abs=1e-9)
    assert expected > 1  # diabetes raises the risk by whole percentage points here
