from __future__ import annotations

import math

import numpy as np
import pytest

from training.framingham2008 import MEN, WOMEN, office_bmi_risk


def _risk(**overrides: object) -> float:
    args: dict[str, object] = {
        "male": True,
        "age_years": 55,
        "bmi": 30.0,
        "sbp_mm_hg": 140.0,
        "bp_treated": False,
        "smoker": False,
        "diabetic": False,
    }
    args.update(overrides)
    return float(office_bmi_risk(**args))  # type: ignore[arg-type]


def test_published_coefficients() -> None:
    assert (MEN.ln_age, MEN.ln_bmi, MEN.ln_sbp_untreated, MEN.ln_sbp_treated) == (
        3.11296,
        0.79277,
        1.85508,
        1.92672,
    )
    assert (MEN.smoker, MEN.diabetes, MEN.baseline_survival_10y, MEN.mean_sum) == (
        0.70953,
        0.53160,
        0.88431,
        23.9388,
    )
    assert (WOMEN.ln_age, WOMEN.ln_bmi, WOMEN.ln_sbp_untreated, WOMEN.ln_sbp_treated) == (
        2.72107,
        0.51125,
        2.81291,
        2.88267,
    )
    assert (WOMEN.smoker, WOMEN.diabetes, WOMEN.baseline_survival_10y, WOMEN.mean_sum) == (
        0.61868,
        0.77763,
        0.94833,
        26.0145,
    )


def test_worked_example_cvrisk_package() -> None:
    # Test vector from the CRAN package CVrisk (github.com/vcastro/CVrisk,
    # tests/testthat/test-ascvd_10y_frs_simple.R and the ascvd_10y_frs_simple() help example):
    # male, 55 y, BMI 30, SBP 140 untreated, non-smoker, no diabetes -> 16.75 % (rounded to 2 dp;
    # CVrisk clamps to [1, 30] %, which does not bind here).
    assert round(100 * _risk(), 2) == 16.75


def test_hand_computed_woman() -> None:
    # Independent scalar evaluation of the published formula: woman, 60 y, BMI 28,
    # treated SBP 150, smoker, no diabetes.
    lp = 2.72107 * math.log(60) + 0.51125 * math.log(28) + 2.88267 * math.log(150) + 0.61868
    expected = 1 - 0.94833 ** math.exp(lp - 26.0145)
    got = _risk(male=False, age_years=60, bmi=28.0, sbp_mm_hg=150.0, bp_treated=True, smoker=True)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got == pytest.approx(0.29683, abs=1e-5)


def test_vectorised_and_broadcast() -> None:
    risk = office_bmi_risk(
        male=np.array([1, 0, 1]),
        age_years=np.array([55, 60, 40]),
        bmi=30.0,
        sbp_mm_hg=np.array([140.0, 150.0, 120.0]),
        bp_treated=np.array([0, 1, 0]),
        smoker=np.array([False, True, False]),
        diabetic=0,
    )
    assert risk.shape == (3,)
    assert risk.dtype == np.float64
    assert risk[0] == pytest.approx(_risk())
    assert risk[1] == pytest.approx(
        _risk(male=False, age_years=60, sbp_mm_hg=150.0, bp_treated=True, smoker=True)
    )
    assert np.all((risk >= 0) & (risk <= 1))


@pytest.mark.parametrize("male", [True, False])
def test_monotone_in_age_sbp_bmi(male: bool) -> None:
    ages = np.arange(30, 75)
    r_age = office_bmi_risk(
        male=male,
        age_years=ages,
        bmi=27.0,
        sbp_mm_hg=130.0,
        bp_treated=False,
        smoker=False,
        diabetic=False,
    )
    assert np.all(np.diff(r_age) > 0)
    sbps = np.arange(90.0, 200.0, 5.0)
    r_sbp = office_bmi_risk(
        male=male,
        age_years=50,
        bmi=27.0,
        sbp_mm_hg=sbps,
        bp_treated=False,
        smoker=False,
        diabetic=False,
    )
    assert np.all(np.diff(r_sbp) > 0)
    bmis = np.arange(18.0, 45.0)
    r_bmi = office_bmi_risk(
        male=male,
        age_years=50,
        bmi=bmis,
        sbp_mm_hg=130.0,
        bp_treated=False,
        smoker=False,
        diabetic=False,
    )
    assert np.all(np.diff(r_bmi) > 0)


@pytest.mark.parametrize("male", [True, False])
def test_smoking_diabetes_and_treatment_raise_risk(male: bool) -> None:
    base = _risk(male=male, age_years=50)
    assert _risk(male=male, age_years=50, smoker=True) > base
    assert _risk(male=male, age_years=50, diabetic=True) > base
    # same SBP value: treated carries the larger coefficient
    assert _risk(male=male, age_years=50, bp_treated=True) > base


def test_men_higher_than_women_at_equal_profile() -> None:
    assert _risk(male=True) > _risk(male=False)


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError):
        _risk(age_years=0)
    with pytest.raises(ValueError):
        _risk(sbp_mm_hg=float("nan"))
    with pytest.raises(ValueError):
        _risk(smoker=2)
