"""Framingham general cardiovascular disease 10-year risk, office-based (BMI) model.

D'Agostino RB Sr, Vasan RS, Pencina MJ, Wolf PA, Cobain M, Massaro JM, Kannel WB. General
cardiovascular risk profile for use in primary care: the Framingham Heart Study.
Circulation 2008;117:743-753. doi:10.1161/CIRCULATIONAHA.107.699579

The non-laboratory ("office") model replaces total and HDL cholesterol by BMI. It is a
sex-specific Cox model:

    risk = 1 - S0(10) ** exp(sum(beta * x) - mean_sum)

with ``x`` = ln(age), ln(BMI), ln(SBP) (coefficient depends on whether the blood pressure is
treated), current smoking (0/1) and diabetes (0/1). Outcome: first CVD event (coronary death,
myocardial infarction, coronary insufficiency, angina, ischaemic or haemorrhagic stroke, TIA,
peripheral artery disease, heart failure). Derived in people aged 30-74 without CVD; this module
does not enforce the age range.

Provenance of the constants
---------------------------
The coefficients, baseline survivals and mean sums below were cross-checked (all digits agree)
against independent public implementations of the published model:

* ``vcastro/CVrisk`` (CRAN package CVrisk), ``data-raw/score_coef.R``, table
  ``frs_simple_coef`` (function ``ascvd_10y_frs_simple``);
* two further public implementations (one Ruby, one Python) found by exact-value code search
  (repositories not recorded).

All three assign the *larger* ln(SBP) coefficient to treated blood pressure in both sexes
(men 1.92672 treated vs 1.85508 untreated; women 2.88267 treated vs 2.81291 untreated), as in
the paper, where treated SBP carries the higher hazard. (Some public JavaScript/Kotlin
calculators swap the two; they are wrong.) The Framingham Heart Study risk-function page
(framinghamheartstudy.org, "Cardiovascular Disease (10-year risk)") lists the model as
"BMI replacing lipids in a simpler model"; its primary (lipid) table, S0(10) = 0.88936 (men) and
0.95012 (women), is a different model and is *not* used here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class OfficeBmiCoefficients:
    """Sex-specific coefficients of the 2008 office-based (BMI) general CVD model."""

    ln_age: float
    ln_bmi: float
    ln_sbp_untreated: float
    ln_sbp_treated: float
    smoker: float
    diabetes: float
    baseline_survival_10y: float
    mean_sum: float


WOMEN = OfficeBmiCoefficients(
    ln_age=2.72107,
    ln_bmi=0.51125,
    ln_sbp_untreated=2.81291,
    ln_sbp_treated=2.88267,
    smoker=0.61868,
    diabetes=0.77763,
    baseline_survival_10y=0.94833,
    mean_sum=26.0145,
)

MEN = OfficeBmiCoefficients(
    ln_age=3.11296,
    ln_bmi=0.79277,
    ln_sbp_untreated=1.85508,
    ln_sbp_treated=1.92672,
    smoker=0.70953,
    diabetes=0.53160,
    baseline_survival_10y=0.88431,
    mean_sum=23.9388,
)


def _as_flag(name: str, values: npt.ArrayLike) -> BoolArray:
    arr = np.asarray(values)
    if arr.dtype != np.bool_ and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must be boolean or 0/1")
    return arr.astype(np.bool_)


def _as_positive(name: str, values: npt.ArrayLike) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if not np.isfinite(arr).all() or (arr <= 0.0).any():
        raise ValueError(f"{name} must be finite and positive")
    return arr


def _pick(male: BoolArray, attribute: str) -> FloatArray:
    out: FloatArray = np.where(male, getattr(MEN, attribute), getattr(WOMEN, attribute))
    return out


def office_bmi_risk(
    *,
    male: npt.ArrayLike,
    age_years: npt.ArrayLike,
    bmi: npt.ArrayLike,
    sbp_mm_hg: npt.ArrayLike,
    bp_treated: npt.ArrayLike,
    smoker: npt.ArrayLike,
    diabetic: npt.ArrayLike,
) -> FloatArray:
    """10-year general CVD risk (a probability in [0, 1]) from the 2008 office-based BMI model.

    All arguments are broadcast against each other (scalars or arrays). ``male``, ``bp_treated``,
    ``smoker`` and ``diabetic`` are booleans or 0/1; ``age_years``, ``bmi`` (kg/m^2) and
    ``sbp_mm_hg`` (systolic blood pressure) must be positive. ``bp_treated`` selects the treated
    or untreated ln(SBP) coefficient.
    """
    male_b = _as_flag("male", male)
    treated_b = _as_flag("bp_treated", bp_treated)
    smoker_b = _as_flag("smoker", smoker)
    diabetic_b = _as_flag("diabetic", diabetic)
    age = _as_positive("age_years", age_years)
    bmi_arr = _as_positive("bmi", bmi)
    sbp = _as_positive("sbp_mm_hg", sbp_mm_hg)

    sbp_coefficient = np.where(
        treated_b, _pick(male_b, "ln_sbp_treated"), _pick(male_b, "ln_sbp_untreated")
    )
    linear = (
        _pick(male_b, "ln_age") * np.log(age)
        + _pick(male_b, "ln_bmi") * np.log(bmi_arr)
        + sbp_coefficient * np.log(sbp)
        + _pick(male_b, "smoker") * smoker_b
        + _pick(male_b, "diabetes") * diabetic_b
    )
    relative = np.exp(linear - _pick(male_b, "mean_sum"))
    risk: FloatArray = np.asarray(
        1.0 - _pick(male_b, "baseline_survival_10y") ** relative, dtype=np.float64
    )
    return risk
