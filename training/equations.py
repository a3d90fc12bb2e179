"""Build the published-equation artifacts (kind ``equation``): ``clinrisk build-equation NAME``.

Nothing here is fitted: each builder writes the published coefficients as data
(``equation.json``, :mod:`models.equations`), a manifest (features with units and conversions,
tiers, applicability) and a card, then signs the folder like any artifact. Rebuilding gives the
same equation, manifest content and card (only ``code_revision`` and the signature change).

Provenance of the constants
---------------------------
``cvd-framingham-2008``
    D'Agostino RB Sr et al. General cardiovascular risk profile for use in primary care: the
    Framingham Heart Study. Circulation 2008;117:743-753. The office-based (BMI) model; the
    constants are :mod:`training.framingham2008`'s (cross-checked there against three public
    implementations, including CRAN CVrisk ``frs_simple_coef``).

``ascvd-pce``
    Goff DC Jr et al. 2013 ACC/AHA guideline on the assessment of cardiovascular risk.
    Circulation 2014;129(25 Suppl 2):S49-S73 / J Am Coll Cardiol 2014;63:2935-2959, Table A of
    the full work-group report (coefficients, race- and sex-specific means and 10-year baseline
    survivals). Digits cross-checked against CRAN ``CVrisk`` (vcastro/CVrisk,
    ``data-raw/score_coef.R``, table ``ascvd_pooled_coef``), all agree. The guideline's worked
    example (Table A: age 55, total cholesterol 213 mg/dL, HDL 50 mg/dL, untreated SBP 120 mmHg,
    non-smoker, no diabetes) gives 2.1% (white women), 3.0% (African American women), 5.3% (white
    men) and 6.1% (African American men); the tests reproduce these. Other races: the guideline
    recommends the white equations (noting they may over- or underestimate risk); so does this
    model, and it says so on the card and in the race input's description.

``ascvd-prevent``
    Khan SS et al. Development and validation of the American Heart Association's PREVENT
    equations. Circulation 2024;149:430-449 (Supplemental Table S12, base model, 10-year ASCVD,
    sex-specific logistic models). Coefficients read from three independent public
    implementations that agree on every digit: the AHA's Stata package as transcribed in one
    (``prevent_beta10_2024.dta``, model ``ascvd_0``/``ascvd_1``), and two that extract them from
    the CRAN package ``preventr`` (sysdata.rda). Transformations and centring follow preventr's
    ``prep_terms`` (martingmayer/preventr ``R/prevent_equations.R``): age (age-55)/10, non-HDL-C
    (mmol/L) - 3.5, (HDL-C - 1.3)/0.3, SBP splines at 110 mmHg, eGFR splines at 60, cholesterol
    mg/dL -> mmol/L by x 0.02586. Test vector: preventr's README example (woman 50, SBP 160
    treated, total 200 / HDL 45 mg/dL, diabetes, non-smoker, no statin, eGFR 90) -> 10-year ASCVD
    0.092 (three decimals).

Published validation (1.2.0, issue 11)
--------------------------------------
Each equation's manifest lists the validation figures its papers and later studies published
(``published_validation``: study, citation with PMID/DOI, population, n, outcome, metric, value,
interval and its kind), and the figures not found (``published_validation_missing``: which, and
where they are published). The card prints both and says that none was reproduced on local
data. The figures are in ``*_PUBLISHED`` below, each read in a stored copy of its source.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from models.equations import FORMAT, FORMAT_VERSION, EquationExplainer, parse_equation
from models.loader import MANIFEST_FILE, load_artifact, sign_artifact
from models.manifest import (
    AlternativeUnit,
    ApplicabilityRule,
    Calibration,
    Category,
    ClinicalUse,
    ExplanationInfo,
    FeatureSpec,
    FeatureType,
    Manifest,
    ModelColumn,
    PublishedFigure,
    Tier,
)
from models.signing import SIGNING_KEY_ENV, TrustPolicy, load_private_key
from training import framingham2008 as fhs

VERSION = "1.2.0"
"""1.2.0: published validation figures with citations in the manifest and card (issue 11);
1.1.0: the manifest states its clinical-use status (issue 10). The equations are unchanged."""
EQUATION_FILE = "equation.json"
CARD_FILE = "card.md"
CREATED_AT = datetime(2026, 11, 29, tzinfo=UTC)
"""Fixed, so a rebuild writes the same manifest content (the equations do not change)."""
MG_DL_PER_MMOL_L = 38.67  # cholesterol, as the other models' alternative units
PREVENT_MMOL_PER_MG = 0.02586  # cholesterol mg/dL -> mmol/L, as PREVENT/preventr convert

ACC_AHA_TIERS = [
    Tier(
        name="low", label="Low (<5%)", lower=0.0, upper=0.05, action="Emphasise healthy lifestyle."
    ),
    Tier(
        name="borderline",
        label="Borderline (5-7.5%)",
        lower=0.05,
        upper=0.075,
        action="Discuss risk enhancers; consider a moderate-intensity statin if present.",
    ),
    Tier(
        name="intermediate",
        label="Intermediate (7.5-20%)",
        lower=0.075,
        upper=0.2,
        action="Moderate-intensity statin discussion; consider a CAC score if unsure.",
    ),
    Tier(
        name="high",
        label="High (>=20%)",
        lower=0.2,
        upper=None,
        action="High-intensity statin discussion; treat blood pressure to target.",
    ),
]


# -- features -------------------------------------------------------------------------------------


def _binary(
    name: str, label: str, description: str, direction: int, rationale: str, *, modifiable: bool
) -> FeatureSpec:
    return FeatureSpec(
        name=name,
        label=label,
        description=description,
        type=FeatureType.BINARY,
        source="Entered by the clinician or read from the record (FHIR).",
        direction=direction,
        direction_rationale=rationale,
        value_labels={"0": "No", "1": "Yes"},
        modifiable=modifiable,
    )


SEX = FeatureSpec(
    name="sex_male",
    label="Sex",
    description="Sex: selects the published sex-specific equation.",
    type=FeatureType.BINARY,
    source="Administrative sex from the record.",
    direction=0,
    direction_rationale="Selects the sex-specific equation; not a risk factor with a direction.",
    value_labels={"0": "Female", "1": "Male"},
)
AGE = FeatureSpec(
    name="age_years",
    label="Age",
    description="Age at the time of the estimate.",
    type=FeatureType.NUMERIC,
    unit="years",
    minimum=18.0,
    maximum=110.0,
    source="Date of birth from the record.",
    direction=1,
    direction_rationale="Risk rises with age in every published cohort.",
)
TOTAL_CHOL = FeatureSpec(
    name="total_cholesterol_mg_dl",
    label="Total cholesterol",
    description="Serum total cholesterol.",
    type=FeatureType.NUMERIC,
    unit="mg/dL",
    minimum=50.0,
    maximum=1000.0,
    alternative_units=[AlternativeUnit(unit="mmol/L", factor=MG_DL_PER_MMOL_L)],
    loinc="2093-3",
    source="Latest lipid panel.",
    direction=1,
    direction_rationale="Higher cholesterol raises atherosclerotic risk (causal, trial evidence).",
    modifiable=True,
)
HDL = FeatureSpec(
    name="hdl_cholesterol_mg_dl",
    label="HDL cholesterol",
    description="Serum HDL cholesterol.",
    type=FeatureType.NUMERIC,
    unit="mg/dL",
    minimum=5.0,
    maximum=300.0,
    alternative_units=[AlternativeUnit(unit="mmol/L", factor=MG_DL_PER_MMOL_L)],
    loinc="2085-9",
    source="Latest lipid panel.",
    direction=-1,
    direction_rationale="Higher HDL cholesterol is associated with lower risk in the equations.",
    modifiable=True,
)
SBP = FeatureSpec(
    name="systolic_bp_mm_hg",
    label="Systolic BP",
    description="Systolic blood pressure (office measurement).",
    type=FeatureType.NUMERIC,
    unit="mmHg",
    minimum=50.0,
    maximum=300.0,
    loinc="8480-6",
    source="Latest office measurement.",
    direction=1,
    direction_rationale="Higher systolic pressure raises cardiovascular risk (trial evidence).",
    modifiable=True,
)
BP_MED = _binary(
    "bp_medication",
    "Treated for high blood pressure",
    "Currently taking antihypertensive medication.",
    1,
    "Treated hypertension marks higher risk at the same measured pressure (published equations).",
    modifiable=False,
)
SMOKER = _binary(
    "current_smoker",
    "Current smoker",
    "Currently smokes cigarettes (PREVENT: within the last 30 days).",
    1,
    "Smoking raises cardiovascular risk; stopping lowers it.",
    modifiable=True,
)
DIABETES = _binary(
    "diabetes",
    "Diabetes",
    "Diagnosed diabetes mellitus.",
    1,
    "Diabetes raises atherosclerotic risk.",
    modifiable=False,
)


def _columns(features: list[FeatureSpec]) -> list[ModelColumn]:
    out: list[ModelColumn] = []
    for f in features:
        if f.type is FeatureType.CATEGORICAL:
            out += [
                ModelColumn(name=f"{f.name}_{c.code}", feature=f.name, category=c.code)
                for c in f.categories
            ]
        else:
            out.append(ModelColumn(name=f.name, feature=f.name))
    return out


# -- equation documents -------------------------------------------------------------------------


def _f(column: str, transform: str = "identity", **kw: float) -> dict[str, Any]:
    return {"column": column, "transform": transform, **kw}


def _term(name: str, coefficient: float, *factors: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "coefficient": coefficient, "factors": list(factors)}


ATTRIBUTION = (
    "base = the scale's value for the reference patient; each term contributes"
    " coefficient x (term(patient) - term(reference)); a term of several inputs is split by the"
    " Shapley rule against the reference (own effects, the pure interaction split equally); a"
    " change of equation variant, evaluated at the reference patient, is split equally between"
    " the selector inputs that differ from the reference."
)


def framingham_equation() -> dict[str, Any]:
    def variant(name: str, label: str, male: int, c: fhs.OfficeBmiCoefficients) -> dict[str, Any]:
        return {
            "name": name,
            "label": label,
            "when": {"sex_male": male},
            "baseline_survival": c.baseline_survival_10y,
            "mean_linear_predictor": c.mean_sum,
            "terms": [
                _term("ln age", c.ln_age, _f("age_years", "ln")),
                _term("ln BMI", c.ln_bmi, _f("bmi_kg_m2", "ln")),
                _term(
                    "ln SBP (treated)",
                    c.ln_sbp_treated,
                    _f("systolic_bp_mm_hg", "ln"),
                    _f("bp_medication"),
                ),
                _term(
                    "ln SBP (untreated)",
                    c.ln_sbp_untreated,
                    _f("systolic_bp_mm_hg", "ln"),
                    _f("bp_medication", "one_minus"),
                ),
                _term("smoker", c.smoker, _f("current_smoker")),
                _term("diabetes", c.diabetes, _f("diabetes")),
            ],
        }

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": "cvd-framingham-2008",
        "form": "cox",
        "outcome": "First cardiovascular event within 10 years (coronary death, myocardial"
        " infarction, coronary insufficiency, angina, stroke, TIA, peripheral artery disease,"
        " heart failure)",
        "horizon_years": 10,
        "citation": "D'Agostino RB Sr, Vasan RS, Pencina MJ, et al. General cardiovascular risk"
        " profile for use in primary care: the Framingham Heart Study. Circulation"
        " 2008;117:743-753. doi:10.1161/CIRCULATIONAHA.107.699579 (office-based BMI model)",
        "provenance": "training/framingham2008.py (cross-checked against CRAN CVrisk"
        " frs_simple_coef and two further public implementations)",
        "selectors": ["sex_male"],
        "reference": {
            "sex_male": 0,
            "age_years": 55,
            "bmi_kg_m2": 25,
            "systolic_bp_mm_hg": 120,
            "bp_medication": 0,
            "current_smoker": 0,
            "diabetes": 0,
        },
        "reference_variant": "women",
        "variants": [
            variant("women", "Women", 0, fhs.WOMEN),
            variant("men", "Men", 1, fhs.MEN),
        ],
        "units": {"age_years": "years", "bmi_kg_m2": "kg/m2", "systolic_bp_mm_hg": "mmHg"},
        "attribution": ATTRIBUTION,
    }


# Goff et al. 2014, Table A (cross-checked with CVrisk ascvd_pooled_coef); 0 = term absent.
PCE = {
    "white_women": {
        "ln_age": -29.799,
        "ln_age_sq": 4.884,
        "ln_tc": 13.540,
        "ln_age_ln_tc": -3.114,
        "ln_hdl": -13.578,
        "ln_age_ln_hdl": 3.149,
        "ln_sbp_t": 2.019,
        "ln_age_ln_sbp_t": 0.0,
        "ln_sbp_u": 1.957,
        "ln_age_ln_sbp_u": 0.0,
        "smoker": 7.574,
        "ln_age_smoker": -1.665,
        "diabetes": 0.661,
        "mean": -29.18,
        "s0": 0.9665,
    },
    "aa_women": {
        "ln_age": 17.114,
        "ln_age_sq": 0.0,
        "ln_tc": 0.940,
        "ln_age_ln_tc": 0.0,
        "ln_hdl": -18.920,
        "ln_age_ln_hdl": 4.475,
        "ln_sbp_t": 29.291,
        "ln_age_ln_sbp_t": -6.432,
        "ln_sbp_u": 27.820,
        "ln_age_ln_sbp_u": -6.087,
        "smoker": 0.691,
        "ln_age_smoker": 0.0,
        "diabetes": 0.874,
        "mean": 86.61,
        "s0": 0.9533,
    },
    "white_men": {
        "ln_age": 12.344,
        "ln_age_sq": 0.0,
        "ln_tc": 11.853,
        "ln_age_ln_tc": -2.664,
        "ln_hdl": -7.990,
        "ln_age_ln_hdl": 1.769,
        "ln_sbp_t": 1.797,
        "ln_age_ln_sbp_t": 0.0,
        "ln_sbp_u": 1.764,
        "ln_age_ln_sbp_u": 0.0,
        "smoker": 7.837,
        "ln_age_smoker": -1.795,
        "diabetes": 0.658,
        "mean": 61.18,
        "s0": 0.9144,
    },
    "aa_men": {
        "ln_age": 2.469,
        "ln_age_sq": 0.0,
        "ln_tc": 0.302,
        "ln_age_ln_tc": 0.0,
        "ln_hdl": -0.307,
        "ln_age_ln_hdl": 0.0,
        "ln_sbp_t": 1.916,
        "ln_age_ln_sbp_t": 0.0,
        "ln_sbp_u": 1.809,
        "ln_age_ln_sbp_u": 0.0,
        "smoker": 0.549,
        "ln_age_smoker": 0.0,
        "diabetes": 0.645,
        "mean": 19.54,
        "s0": 0.8954,
    },
}


def pce_equation() -> dict[str, Any]:
    age, tc, hdl, sbp = (
        _f("age_years", "ln"),
        _f("total_cholesterol_mg_dl", "ln"),
        _f("hdl_cholesterol_mg_dl", "ln"),
        _f("systolic_bp_mm_hg", "ln"),
    )
    treated, untreated = _f("bp_medication"), _f("bp_medication", "one_minus")
    smoker, diabetes = _f("current_smoker"), _f("diabetes")

    def variant(name: str, label: str, male: int, aa: int) -> dict[str, Any]:
        c = PCE[name]
        terms = [
            _term("ln age", c["ln_age"], age),
            _term("ln age squared", c["ln_age_sq"], age, age),
            _term("ln total cholesterol", c["ln_tc"], tc),
            _term("ln age x ln total cholesterol", c["ln_age_ln_tc"], age, tc),
            _term("ln HDL-C", c["ln_hdl"], hdl),
            _term("ln age x ln HDL-C", c["ln_age_ln_hdl"], age, hdl),
            _term("ln treated SBP", c["ln_sbp_t"], sbp, treated),
            _term("ln age x ln treated SBP", c["ln_age_ln_sbp_t"], age, sbp, treated),
            _term("ln untreated SBP", c["ln_sbp_u"], sbp, untreated),
            _term("ln age x ln untreated SBP", c["ln_age_ln_sbp_u"], age, sbp, untreated),
            _term("current smoker", c["smoker"], smoker),
            _term("ln age x current smoker", c["ln_age_smoker"], age, smoker),
            _term("diabetes", c["diabetes"], diabetes),
        ]
        return {
            "name": name,
            "label": label,
            "when": {"sex_male": male, "race_african_american": aa},
            "baseline_survival": c["s0"],
            "mean_linear_predictor": c["mean"],
            "terms": [t for t in terms if t["coefficient"] != 0.0],
        }

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": "ascvd-pce",
        "form": "cox",
        "outcome": "First hard ASCVD event within 10 years (nonfatal myocardial infarction,"
        " coronary heart disease death, fatal or nonfatal stroke)",
        "horizon_years": 10,
        "citation": "Goff DC Jr, Lloyd-Jones DM, Bennett G, et al. 2013 ACC/AHA guideline on the"
        " assessment of cardiovascular risk. Circulation 2014;129(25 Suppl 2):S49-S73;"
        " J Am Coll Cardiol 2014;63:2935-2959 (pooled cohort equations, Table A)",
        "provenance": "Table A of the guideline's work-group report; every digit cross-checked"
        " against CRAN CVrisk (vcastro/CVrisk data-raw/score_coef.R, ascvd_pooled_coef)",
        "selectors": ["sex_male", "race_african_american"],
        "reference": {
            "sex_male": 0,
            "race_white": 1,
            "race_african_american": 0,
            "race_other": 0,
            "age_years": 55,
            "total_cholesterol_mg_dl": 213,
            "hdl_cholesterol_mg_dl": 50,
            "systolic_bp_mm_hg": 120,
            "bp_medication": 0,
            "current_smoker": 0,
            "diabetes": 0,
        },
        "reference_variant": "white_women",
        # White and other races use the white equations (the guideline's advice); the first
        # matching variant wins.
        "variants": [
            variant("white_women", "White (and other) women", 0, 0),
            variant("aa_women", "African American women", 0, 1),
            variant("white_men", "White (and other) men", 1, 0),
            variant("aa_men", "African American men", 1, 1),
        ],
        "units": {
            "age_years": "years",
            "total_cholesterol_mg_dl": "mg/dL",
            "hdl_cholesterol_mg_dl": "mg/dL",
            "systolic_bp_mm_hg": "mmHg",
        },
        "attribution": ATTRIBUTION,
    }


# Khan et al. 2024, base model, 10-year ASCVD (see the module docstring for provenance).
PREVENT_ASCVD_10Y = {
    "women": {
        "age": 0.7198830,
        "non_hdl": 0.1176967,
        "hdl": -0.1511850,
        "sbp_lt_110": -0.0835358,
        "sbp_gte_110": 0.3592852,
        "dm": 0.8348585,
        "smoking": 0.4831078,
        "egfr_lt_60": 0.4864619,
        "egfr_gte_60": 0.0397779,
        "bp_tx": 0.2265309,
        "statin": -0.0592374,
        "bp_tx_sbp_gte_110": -0.0395762,
        "statin_non_hdl": 0.0844423,
        "age_non_hdl": -0.0567839,
        "age_hdl": 0.0325692,
        "age_sbp_gte_110": -0.1035985,
        "age_dm": -0.2417542,
        "age_smoking": -0.0791142,
        "age_egfr_lt_60": -0.1671492,
        "constant": -3.8199750,
    },
    "men": {
        "age": 0.7099847,
        "non_hdl": 0.1658663,
        "hdl": -0.1144285,
        "sbp_lt_110": -0.2837212,
        "sbp_gte_110": 0.3239977,
        "dm": 0.7189597,
        "smoking": 0.3956973,
        "egfr_lt_60": 0.3690075,
        "egfr_gte_60": 0.0203619,
        "bp_tx": 0.2036522,
        "statin": -0.0865581,
        "bp_tx_sbp_gte_110": -0.0322916,
        "statin_non_hdl": 0.1145630,
        "age_non_hdl": -0.0300005,
        "age_hdl": 0.0232747,
        "age_sbp_gte_110": -0.0927024,
        "age_dm": -0.2018525,
        "age_smoking": -0.0970527,
        "age_egfr_lt_60": -0.1217081,
        "constant": -3.5006550,
    },
}


def prevent_equation() -> dict[str, Any]:
    k = PREVENT_MMOL_PER_MG
    age = _f("age_years", shift=55, scale=10)
    # non-HDL-C (mmol/L) - 3.5 = (k*TC - 3.5) + (-k*HDL): a sum, written as two product terms
    # so that each cholesterol value is its own input.
    nh_tc = _f("total_cholesterol_mg_dl", shift=3.5 / k, scale=1 / k)
    nh_hdl = _f("hdl_cholesterol_mg_dl", scale=-1 / k)
    hdl = _f("hdl_cholesterol_mg_dl", shift=1.3 / k, scale=0.3 / k)
    sbp_lt = _f("systolic_bp_mm_hg", "min", knot=110, shift=110, scale=20)
    sbp_gte = _f("systolic_bp_mm_hg", "max", knot=110, shift=130, scale=20)
    egfr_lt = _f("egfr_ml_min_1_73m2", "min", knot=60, shift=60, scale=-15)
    egfr_gte = _f("egfr_ml_min_1_73m2", "max", knot=60, shift=90, scale=-15)
    dm, smoking, bp_tx, statin = (
        _f("diabetes"),
        _f("current_smoker"),
        _f("bp_medication"),
        _f("statin"),
    )

    def variant(name: str, label: str, male: int) -> dict[str, Any]:
        c = PREVENT_ASCVD_10Y[name]
        return {
            "name": name,
            "label": label,
            "when": {"sex_male": male},
            "intercept": c["constant"],
            "terms": [
                _term("age", c["age"], age),
                _term("non-HDL-C (total)", c["non_hdl"], nh_tc),
                _term("non-HDL-C (minus HDL)", c["non_hdl"], nh_hdl),
                _term("HDL-C", c["hdl"], hdl),
                _term("SBP below 110", c["sbp_lt_110"], sbp_lt),
                _term("SBP 110 and above", c["sbp_gte_110"], sbp_gte),
                _term("diabetes", c["dm"], dm),
                _term("current smoking", c["smoking"], smoking),
                _term("eGFR below 60", c["egfr_lt_60"], egfr_lt),
                _term("eGFR 60 and above", c["egfr_gte_60"], egfr_gte),
                _term("antihypertensive", c["bp_tx"], bp_tx),
                _term("statin", c["statin"], statin),
                _term("antihypertensive x SBP>=110", c["bp_tx_sbp_gte_110"], bp_tx, sbp_gte),
                _term("statin x non-HDL-C (total)", c["statin_non_hdl"], statin, nh_tc),
                _term("statin x non-HDL-C (minus HDL)", c["statin_non_hdl"], statin, nh_hdl),
                _term("age x non-HDL-C (total)", c["age_non_hdl"], age, nh_tc),
                _term("age x non-HDL-C (minus HDL)", c["age_non_hdl"], age, nh_hdl),
                _term("age x HDL-C", c["age_hdl"], age, hdl),
                _term("age x SBP>=110", c["age_sbp_gte_110"], age, sbp_gte),
                _term("age x diabetes", c["age_dm"], age, dm),
                _term("age x smoking", c["age_smoking"], age, smoking),
                _term("age x eGFR<60", c["age_egfr_lt_60"], age, egfr_lt),
            ],
        }

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": "ascvd-prevent",
        "form": "logistic",
        "outcome": "First ASCVD event within 10 years (coronary heart disease or stroke), AHA"
        " PREVENT base model",
        "horizon_years": 10,
        "citation": "Khan SS, Matsushita K, Sang Y, et al. Development and validation of the"
        " American Heart Association's PREVENT equations. Circulation 2024;149:430-449"
        " (base model, 10-year ASCVD; Supplemental Table S12)",
        "provenance": "AHA PREVENT Stata package coefficients (prevent_beta10_2024.dta, ascvd) as"
        " transcribed by three independent public implementations that agree on every digit;"
        " transformations as in CRAN preventr prep_terms",
        "selectors": ["sex_male"],
        # PREVENT's centring values: the reference patient's terms are all 0, so the base is
        # the women's published constant.
        "reference": {
            "sex_male": 0,
            "age_years": 55,
            "total_cholesterol_mg_dl": (3.5 + 1.3) / k,
            "hdl_cholesterol_mg_dl": 1.3 / k,
            "systolic_bp_mm_hg": 130,
            "egfr_ml_min_1_73m2": 90,
            "bp_medication": 0,
            "statin": 0,
            "current_smoker": 0,
            "diabetes": 0,
        },
        "reference_variant": "women",
        "variants": [variant("women", "Women", 0), variant("men", "Men", 1)],
        "units": {
            "age_years": "years",
            "total_cholesterol_mg_dl": "mg/dL (x 0.02586 = mmol/L inside the equation)",
            "hdl_cholesterol_mg_dl": "mg/dL (x 0.02586 = mmol/L inside the equation)",
            "systolic_bp_mm_hg": "mmHg",
            "egfr_ml_min_1_73m2": "mL/min/1.73 m2",
        },
        "attribution": ATTRIBUTION,
    }


# -- manifests ----------------------------------------------------------------------------------

NO_ASCVD = ApplicabilityRule(
    id="no_established_ascvd",
    description="No established coronary heart disease or other atherosclerotic cardiovascular"
    " disease",
    source="Primary prevention only: the equations were derived in people free of"
    " cardiovascular disease; with established ASCVD treatment follows secondary prevention"
    " (2019 ACC/AHA Guideline on the Primary Prevention of Cardiovascular Disease).",
    kind="context_false",
    context="established_ascvd",
)
NOT_DECEASED = ApplicabilityRule(
    id="not_deceased",
    description="Living patient",
    source="A 10-year risk is meaningless for a patient recorded as deceased.",
    kind="context_false",
    context="deceased",
)


def _range(feature: str, low: float, high: float, words: str, source: str) -> ApplicabilityRule:
    return ApplicabilityRule(
        id=f"{feature}_{low:g}_to_{high:g}".replace(".", "_"),
        description=words,
        source=source,
        kind="feature_range",
        feature=feature,
        minimum=low,
        maximum=high,
    )


@dataclass(frozen=True)
class Spec:
    name: str
    title: str
    summary: str
    intended_use: str
    out_of_scope: list[str]
    features: list[FeatureSpec]
    applicability: list[ApplicabilityRule]
    tiers_borrowed_from: str | None
    caveats: list[str]
    card: str
    equation: dict[str, Any]
    published_validation: list[PublishedFigure]
    published_validation_missing: list[str]


BMI = FeatureSpec(
    name="bmi_kg_m2",
    label="BMI",
    description="Body-mass index.",
    type=FeatureType.NUMERIC,
    unit="kg/m2",
    minimum=10.0,
    maximum=100.0,
    source="Latest height and weight.",
    direction=1,
    direction_rationale="Higher BMI raises cardiovascular risk in the Framingham office model.",
    modifiable=True,
)
RACE = FeatureSpec(
    name="race",
    label="Race",
    description="Selects the published race-specific equation: African American, or white."
    " Other races use the white equations, as the 2013 ACC/AHA guideline advises (they may over-"
    " or underestimate risk).",
    type=FeatureType.CATEGORICAL,
    categories=[
        Category(code="white", label="White"),
        Category(code="african_american", label="African American"),
        Category(code="other", label="Other (white equations used)"),
    ],
    source="Self-reported race from the record.",
    direction=0,
    direction_rationale="Selects the race-specific equation; not a risk factor with a direction.",
)
STATIN = _binary(
    "statin",
    "Statin",
    "Currently taking a statin.",
    0,
    "PREVENT models statin use with an interaction on non-HDL cholesterol; no single direction.",
    modifiable=False,
)
EGFR = FeatureSpec(
    name="egfr_ml_min_1_73m2",
    label="eGFR",
    description="Estimated glomerular filtration rate; from creatinine use the race-free"
    " CKD-EPI 2021 equation (models.equations.ckd_epi_2021).",
    type=FeatureType.NUMERIC,
    unit="mL/min/1.73m2",
    minimum=1.0,
    maximum=200.0,
    loinc="98979-8",
    source="Latest eGFR, or CKD-EPI 2021 from serum creatinine.",
    direction=-1,
    direction_rationale="Lower kidney function raises cardiovascular risk (PREVENT).",
)

CARD_COMMON_CAUTION = (
    "- **No local validation.** Nothing was fitted or validated on local data: every figure in"
    " this card is the published one, with its citation. How well the equation fits *this*"
    " population is for monitoring (observed vs. predicted), not claimed here.\n"
    "- The explanation is exact on the equation's own scale: base (the reference patient) plus"
    " the contributions equals the scale's value; the response states the mapping to"
    " probability. Interaction terms are split by the Shapley rule against the reference patient"
    " (own effects, pure interaction split equally).\n"
)


# -- published validation -----------------------------------------------------------------------
# Every figure below was read in a stored public copy of its source (the abstract, or a journal's
# summary of the paper) during issue 11, with the page it came from; none is from memory, none
# was reproduced on local data. A figure not found is named in *_MISSING with where it is
# published, never filled in.

D_AGOSTINO_2008 = (
    "D'Agostino RB Sr, Vasan RS, Pencina MJ, Wolf PA, Cobain M, Massaro JM, Kannel WB. General"
    " cardiovascular risk profile for use in primary care: the Framingham Heart Study."
    " Circulation 2008;117:743-753"
)
D_AGOSTINO_DOI = "10.1161/CIRCULATIONAHA.107.699579"
FRAMINGHAM_LIPID_MODEL = (
    "The same paper's laboratory (total and HDL cholesterol) general CVD model, not the"
    " office-based BMI model served here"
)


def _framingham_derivation(sex: str, n: int, c: float) -> PublishedFigure:
    return PublishedFigure(
        study="D'Agostino 2008, Framingham derivation",
        citation=D_AGOSTINO_2008,
        doi=D_AGOSTINO_DOI,
        validation="derivation",
        model=FRAMINGHAM_LIPID_MODEL,
        population=f"Framingham Heart Study original and offspring participants aged 30-74 free"
        f" of CVD at a routine examination, {sex}",
        n=n,
        outcome="First CVD event (general CVD), 12 years of follow-up",
        metric="c_statistic",
        value=c,
        decimals=3,
        note="From the abstract, which gives no figure for the BMI model (see below).",
    )


FRAMINGHAM_PUBLISHED = [
    # Abstract: 8491 participants, 4522 women; 3969 men (as the FHS calculator page states).
    _framingham_derivation("men", 3969, 0.763),
    _framingham_derivation("women", 4522, 0.793),
]
FRAMINGHAM_MISSING = [
    "C statistics (and calibration) of the office-based (BMI, non-laboratory) model by sex in"
    " the derivation cohort: to be read in the body of D'Agostino et al., Circulation"
    " 2008;117:743-753 (doi:10.1161/CIRCULATIONAHA.107.699579), whose abstract gives only the"
    " laboratory model's; the full text was not found in a readable source here. (Version"
    " 1.1.0's card quoted 0.749 / 0.785 for it 'from the abstract'; the abstract does not give"
    " them, so they are withdrawn.)",
    "External validation of the office-based (BMI) model: no study with a citation was found"
    " here; external studies found validate the laboratory model only.",
]

GOFF_2014 = (
    "Goff DC Jr, Lloyd-Jones DM, Bennett G, et al. 2013 ACC/AHA guideline on the assessment of"
    " cardiovascular risk. Circulation 2014;129(25 Suppl 2):S49-S73"
)
MUNTNER_2014 = (
    "Muntner P, Colantonio LD, Cushman M, Goff DC Jr, Howard G, Howard VJ, Kissela B, Levitan"
    " EB, Lloyd-Jones DM, Safford MM. Validation of the atherosclerotic cardiovascular disease"
    " Pooled Cohort risk equations. JAMA 2014;311(14):1406-1415"
)
REGARDS = (
    "REGARDS, US adults aged 45-79 enrolled 2003-2007, followed to 2010: no clinical ASCVD or"
    " diabetes, LDL-C 70-189 mg/dL, not taking statins (those for whom the risk may start a"
    " statin discussion)"
)
REGARDS_OUTCOME = (
    "Adjudicated ASCVD (nonfatal MI, CHD death, nonfatal or fatal stroke) over 5 years (not yet"
    " 10 years of follow-up); 338 events"
)
YADLOWSKY_2018 = (
    "Yadlowsky S, Hayward RA, Sussman JB, McClelland RL, Min YI, Basu S. Clinical implications of"
    " revised pooled cohort equations for estimating atherosclerotic cardiovascular disease risk."
    " Ann Intern Med 2018;169(1):20-29"
)
MESA_2025 = (
    "PREVENT risk score vs the Pooled Cohort Equations in MESA. JACC Adv 2025;4(6 Pt 1):101825"
    " (authors DeFilippis AP, Hershey MS, Huang S, McClelland RL, Murphy BS, Nam Y, Post WS)"
)
MESA_DOI, MESA_PMID = "10.1016/j.jacadv.2025.101825", "40424675"
MESA = "MESA (Multi-Ethnic Study of Atherosclerosis), US, without CVD at baseline"
MESA_OUTCOME = "ASCVD within 10 years"


def _muntner(
    metric: Any, value: float, low: float, high: float, note: str, decimals: int
) -> PublishedFigure:
    return PublishedFigure(
        study="Muntner 2014, REGARDS",
        citation=MUNTNER_2014,
        pmid="24682252",
        doi="10.1001/jama.2014.2630",
        validation="external",
        population=REGARDS,
        n=10997,
        outcome=REGARDS_OUTCOME,
        metric=metric,
        value=value,
        interval_low=low,
        interval_high=high,
        interval_kind="95% CI",
        decimals=decimals,
        note=note,
    )


PCE_PUBLISHED = [
    _muntner("c_statistic", 0.72, 0.70, 0.75, "C-index.", 2),
    _muntner(
        "observed_incidence_per_1000_person_years",
        1.9,
        1.3,
        2.7,
        "Participants with 10-year predicted risk < 5%: the equations predicted 1.9 per"
        " 1,000 person-years.",
        1,
    ),
    _muntner(
        "observed_incidence_per_1000_person_years",
        12.0,
        10.6,
        13.6,
        "Participants with 10-year predicted risk >= 10%: the equations predicted 15.1 per"
        " 1,000 person-years.",
        1,
    ),
    PublishedFigure(
        study="Yadlowsky 2018, six US cohorts",
        citation=YADLOWSKY_2018,
        pmid="29868850",
        doi="10.7326/M17-3011",
        validation="external",
        population="Adults aged 40-79 without prior CVD from ARIC, CHS, CARDIA, Framingham"
        " offspring, JHS and MESA",
        n=26689,
        outcome="Nonfatal MI, CHD death, fatal or nonfatal stroke within 10 years",
        metric="mean_overestimation_percent",
        value=20.0,
        decimals=0,
        note="Average across risk groups. Misestimation was most marked in black adults (33% of"
        " eligible black adults had estimates < 70% or > 250% of a white adult's with the same"
        " risk factors).",
    ),
    PublishedFigure(
        study="MESA 2025 (PREVENT vs PCE)",
        citation=MESA_2025,
        pmid=MESA_PMID,
        doi=MESA_DOI,
        validation="external",
        population=MESA,
        n=6098,
        outcome=MESA_OUTCOME,
        metric="mean_predicted_risk_percent",
        value=10.8,
        decimals=1,
        note="Observed 10-year ASCVD rate 6.0% (next figure) against 10.8% predicted by the PCE.",
    ),
    PublishedFigure(
        study="MESA 2025 (PREVENT vs PCE)",
        citation=MESA_2025,
        pmid=MESA_PMID,
        doi=MESA_DOI,
        validation="external",
        population=MESA,
        n=6098,
        outcome=MESA_OUTCOME,
        metric="observed_risk_percent",
        value=6.0,
        decimals=1,
    ),
]
PCE_MISSING = [
    "C statistics and calibration of the equations in the derivation cohorts, by race-sex group,"
    " and the work group's external validation: Goff et al., Circulation 2014;129(25 Suppl"
    " 2):S49-S73 (PMID 24222018), full work-group report; not found in a readable source here."
    " (Version 1.1.0's card said 'roughly 0.71-0.82' with no source; withdrawn.)",
]

KHAN_2024 = (
    "Khan SS, Matsushita K, Sang Y, et al. Development and validation of the American Heart"
    " Association's PREVENT equations. Circulation 2024;149:430-449"
)
KHAN_POPULATION = (
    "{sex} among 3,330,085 US adults (both sexes) aged 30-79 without known CVD in 21 data sets"
    " additional to the 25 of the derivation"
)
KHAN_NOTE = (
    "Median over the 21 validation data sets. Outcome total CVD; the paper reports results"
    " 'similar' for ASCVD (the outcome served here) and heart failure."
)
CHO_2025 = (
    "Cho SMJ, et al. AHA PREVENT equations and cardiovascular disease risk in diverse health"
    " care populations. J Am Coll Cardiol 2025;86(3):181-192"
)
CHO_DOI = "10.1016/j.jacc.2025.04.066"


def _khan(sex: str, metric: Any, value: float, low: float, high: float) -> PublishedFigure:
    return PublishedFigure(
        study="Khan 2024, PREVENT external validation",
        citation=KHAN_2024,
        pmid="37947085",
        doi="10.1161/CIRCULATIONAHA.123.067626",
        validation="external",
        model="PREVENT base model, total CVD equation (this artifact serves its ASCVD equation)",
        population=KHAN_POPULATION.format(sex=sex),
        n=None,  # the paper's total is for both sexes
        outcome="Total CVD (ASCVD and heart failure); mean follow-up 4.8 years (SD 3.1) over"
        " all 6,612,004 adults of the paper",
        metric=metric,
        value=value,
        interval_low=low,
        interval_high=high,
        interval_kind="interquartile interval across data sets",
        decimals=3 if metric == "c_statistic" else 2,
        note=KHAN_NOTE,
    )


def _cho(system: str, n: int, c: float, low: float, high: float, disc: float) -> PublishedFigure:
    return PublishedFigure(
        study=f"Cho 2025, {system}",
        citation=CHO_2025,
        doi=CHO_DOI,
        validation="external",
        population=f"{system} electronic health records, adults aged 30-79 without prior ASCVD,"
        " 2010-2014",
        n=n,
        outcome="First ASCVD event within 10 years",
        metric="c_statistic",
        value=c,
        interval_low=low,
        interval_high=high,
        interval_kind="95% CI",
        note=f"Time-dependent Harrell's C-index. Calibration: discordance {disc:+.1f}% between"
        " the predicted and the observed incidence (negative = PREVENT below the observed).",
    )


PREVENT_PUBLISHED = [
    _khan("Women", "c_statistic", 0.794, 0.763, 0.809),
    _khan("Men", "c_statistic", 0.757, 0.727, 0.778),
    _khan("Women", "calibration_slope", 1.03, 0.81, 1.16),
    _khan("Men", "calibration_slope", 0.94, 0.81, 1.13),
    _cho("Mass General Brigham", 136654, 0.70, 0.70, 0.70, -71.0),
    _cho("Mount Sinai Health", 43321, 0.74, 0.73, 0.75, -36.2),
    _cho("Penn Medicine", 56889, 0.69, 0.68, 0.70, +1.3),
    _cho("Vanderbilt University Medical Center", 33456, 0.73, 0.72, 0.74, -40.0),
    PublishedFigure(
        study="MESA 2025 (PREVENT vs PCE)",
        citation=MESA_2025,
        pmid=MESA_PMID,
        doi=MESA_DOI,
        validation="external",
        population=MESA,
        n=6098,
        outcome=MESA_OUTCOME,
        metric="mean_predicted_risk_percent",
        value=5.7,
        decimals=1,
        note="Observed 10-year ASCVD rate 6.0% (next figure); the PCE predicted 10.8% in the same"
        " people. Discordance (observed vs PREVENT) 3.3% in women, -11.6% in men.",
    ),
    PublishedFigure(
        study="MESA 2025 (PREVENT vs PCE)",
        citation=MESA_2025,
        pmid=MESA_PMID,
        doi=MESA_DOI,
        validation="external",
        population=MESA,
        n=6098,
        outcome=MESA_OUTCOME,
        metric="observed_risk_percent",
        value=6.0,
        decimals=1,
    ),
]
PREVENT_MISSING = [
    "C statistics and calibration of the 10-year ASCVD equation itself in the external"
    " validation (the paper's abstract gives total CVD and calls ASCVD 'similar'): Khan et al.,"
    " Circulation 2024;149:430-449 (PMID 37947085), results tables and supplement; not found in"
    " a readable source here.",
]


def framingham_spec() -> Spec:
    src = (
        "D'Agostino et al., Circulation 2008: derived in Framingham participants aged 30-74"
        " free of cardiovascular disease."
    )
    return Spec(
        name="cvd-framingham-2008",
        title="Framingham general cardiovascular disease risk (2008, office-based BMI model)",
        summary="Published 10-year risk of a first cardiovascular event from age, sex, BMI,"
        " systolic BP and its treatment, smoking and diabetes (no laboratory values).",
        intended_use="Primary-prevention estimate of 10-year general cardiovascular risk in"
        " adults aged 30-74 without cardiovascular disease when no lipid panel is at hand.",
        out_of_scope=[
            "Patients with established cardiovascular disease",
            "Ages below 30 or above 74",
            "Treatment decisions by itself; ACC/AHA tiers were defined for ASCVD risk (PCE)",
        ],
        features=[SEX, AGE, BMI, SBP, BP_MED, SMOKER, DIABETES],
        applicability=[
            _range("age_years", 30, 74, "Adults aged 30 to 74", src),
            _range("systolic_bp_mm_hg", 90, 200, "Systolic BP 90 to 200 mmHg", src),
            _range("bmi_kg_m2", 15, 50, "BMI 15 to 50 kg/m2", src),
            NO_ASCVD,
            NOT_DECEASED,
        ],
        tiers_borrowed_from="The tier thresholds (5%, 7.5%, 20%) are the ACC/AHA thresholds for"
        " 10-year ASCVD risk; this equation estimates general CVD (which includes heart failure,"
        " angina, TIA and peripheral artery disease), higher than ASCVD for the same patient: the"
        " tier may overstate the guideline's category.",
        caveats=[
            "Framingham (largely white, US) derivation cohort; it overestimates risk in many"
            " contemporary and non-US populations.",
            "General CVD outcome, not hard ASCVD: not the outcome the ACC/AHA tiers were set for.",
        ],
        card="""## Derivation
Framingham Heart Study original and offspring cohorts, 8,491 participants aged 30-74 free of
CVD at baseline, 1,174 first CVD events over 12 years (D'Agostino et al., Circulation 2008;
117:743-753).

## Intended use and cautions
Primary prevention, adults 30-74 without cardiovascular disease, when lipids are not
available. General CVD (including heart failure and angina) is broader than the hard ASCVD
outcome the ACC/AHA tiers were defined for.
""",
        equation=framingham_equation(),
        published_validation=FRAMINGHAM_PUBLISHED,
        published_validation_missing=FRAMINGHAM_MISSING,
    )


def pce_spec() -> Spec:
    src = "Goff et al. 2014: the pooled cohort equations were derived and validated for ages 40-79."
    rng = "Goff et al. 2014 / ACC/AHA risk estimator: the equations' accepted input range."
    return Spec(
        name="ascvd-pce",
        title="ACC/AHA pooled cohort equations (2013): 10-year hard ASCVD risk",
        summary="Published 10-year risk of a first hard ASCVD event (nonfatal MI, CHD death,"
        " stroke) from age, sex, race, total and HDL cholesterol, systolic BP and its treatment,"
        " smoking and diabetes.",
        intended_use="Primary-prevention ASCVD risk estimate for statin and blood-pressure"
        " decisions in adults aged 40-79 without ASCVD (2013 / 2018 / 2019 ACC/AHA guidelines).",
        out_of_scope=[
            "Patients with established ASCVD (secondary prevention)",
            "LDL cholesterol 190 mg/dL or more (statin indicated regardless of risk)",
            "Ages below 40 or above 79",
        ],
        features=[SEX, RACE, AGE, TOTAL_CHOL, HDL, SBP, BP_MED, SMOKER, DIABETES],
        applicability=[
            _range("age_years", 40, 79, "Adults aged 40 to 79", src),
            _range("total_cholesterol_mg_dl", 130, 320, "Total cholesterol 130 to 320 mg/dL", rng),
            _range("hdl_cholesterol_mg_dl", 20, 100, "HDL cholesterol 20 to 100 mg/dL", rng),
            _range("systolic_bp_mm_hg", 90, 200, "Systolic BP 90 to 200 mmHg", rng),
            NO_ASCVD,
            NOT_DECEASED,
        ],
        tiers_borrowed_from=None,
        caveats=[
            "Overestimates risk in many contemporary US populations (e.g. Kaiser Permanente"
            " Northern California, Rana et al. JACC 2016; MESA, DeFilippis et al. Ann Intern Med"
            " 2015).",
            "Other races than white or African American use the white equations, as the guideline"
            " advises; risk may be over- or underestimated (e.g. East Asian, Hispanic patients).",
        ],
        card="""## Derivation
Pooled cohorts ARIC, CHS, CARDIA and the Framingham original and offspring studies: white and
African American adults aged 40-79 free of ASCVD (Goff et al., Circulation 2014; 2013 ACC/AHA
risk-assessment guideline, work-group report Table A).

## Race
Race-specific equations exist for white and African American adults. For other races the
guideline advises the white equations, noting that risk may be over- or underestimated; this
model does the same and says so in the race input.

## Intended use and cautions
Primary prevention, adults 40-79 without ASCVD. Tiers are the ACC/AHA thresholds this equation
was used to define (5%, 7.5%, 20%).
""",
        equation=pce_equation(),
        published_validation=PCE_PUBLISHED,
        published_validation_missing=PCE_MISSING,
    )


def prevent_spec() -> Spec:
    src = "Khan et al. 2024: PREVENT was derived and validated for ages 30-79."
    rng = "Khan et al. 2024 and the AHA PREVENT calculator's accepted input ranges."
    return Spec(
        name="ascvd-prevent",
        title="AHA PREVENT base model: 10-year ASCVD risk",
        summary="Published 10-year risk of a first ASCVD event (CHD or stroke) from age, sex,"
        " total and HDL cholesterol, systolic BP, antihypertensive and statin use, diabetes,"
        " smoking and eGFR; sex-specific, race-free.",
        intended_use="Primary-prevention ASCVD risk estimate for adults aged 30-79 without"
        " cardiovascular disease (AHA PREVENT, successor to the pooled cohort equations).",
        out_of_scope=[
            "Patients with established cardiovascular disease",
            "Ages below 30 or above 79",
            "eGFR below 15 (kidney failure)",
        ],
        features=[SEX, AGE, TOTAL_CHOL, HDL, SBP, BP_MED, STATIN, DIABETES, SMOKER, EGFR],
        applicability=[
            _range("age_years", 30, 79, "Adults aged 30 to 79", src),
            _range("total_cholesterol_mg_dl", 130, 320, "Total cholesterol 130 to 320 mg/dL", rng),
            _range("hdl_cholesterol_mg_dl", 20, 100, "HDL cholesterol 20 to 100 mg/dL", rng),
            _range("systolic_bp_mm_hg", 90, 200, "Systolic BP 90 to 200 mmHg", rng),
            _range("egfr_ml_min_1_73m2", 15, 140, "eGFR 15 to 140 mL/min/1.73m2", rng),
            NO_ASCVD,
            NOT_DECEASED,
        ],
        tiers_borrowed_from="The tier thresholds (5%, 7.5%, 20%) were defined with the pooled"
        " cohort equations (2019 ACC/AHA guideline); PREVENT estimates are on average lower for"
        " the same patient, so a patient may fall in a lower tier than with the PCE.",
        caveats=[
            "Derived in US cohorts and health systems; calibration elsewhere is unknown.",
            "Base model only (no HbA1c, UACR or social deprivation index).",
        ],
        card="""## Derivation
3,281,919 US adults aged 30-79 without known CVD from 25 data sets (1992-2017; cohort studies
and health-system records, CKD Prognosis Consortium); sex-specific, race-free models, adjusted
for the competing risk of non-CVD death (Khan et al., Circulation 2024;149:430-449, abstract).

## Compared with the PCE
PREVENT estimates are on average lower than the pooled cohort equations' for the same patients
(in MESA 5.7% against 10.8%, with 6.0% observed: see the published validation below).

## Intended use and cautions
Primary prevention, adults 30-79 without CVD. eGFR from creatinine by the race-free CKD-EPI
2021 equation. The ACC/AHA tiers were defined with the PCE and are borrowed here.
""",
        equation=prevent_equation(),
        published_validation=PREVENT_PUBLISHED,
        published_validation_missing=PREVENT_MISSING,
    )


# Issue 10: validated externally by their authors and others, never locally (no local data).
_NOT_LOCAL = (
    " Not validated locally: this service has no outcome data for its own population, so a"
    " deploying site should check calibration on its patients before relying on the numbers."
)
CLINICAL_USE = {
    "cvd-framingham-2008": ClinicalUse(
        status="validated",
        reason="Published equation (D'Agostino et al., Circulation 2008), validated in its"
        " derivation cohort and externally in published cohorts; it predicts general"
        " cardiovascular disease." + _NOT_LOCAL,
    ),
    "ascvd-pce": ClinicalUse(
        status="validated",
        reason="Published equation recommended by the 2013 and 2019 ACC/AHA guidelines (Goff et"
        " al. 2013), validated externally in published cohorts, where it often over-estimates"
        " risk in contemporary populations." + _NOT_LOCAL,
    ),
    "ascvd-prevent": ClinicalUse(
        status="validated",
        reason="Published AHA PREVENT equation (Khan et al., Circulation 2024), derived and"
        " externally validated by its authors in large US data sets." + _NOT_LOCAL,
    ),
}

SPECS = {
    "cvd-framingham-2008": framingham_spec,
    "ascvd-pce": pce_spec,
    "ascvd-prevent": prevent_spec,
}


def _timing(equation_bytes: bytes, columns: list[ModelColumn]) -> tuple[float, float]:
    """Seconds per row of the exact explanation: a 10k-row batch and one row, measured here."""
    eq = parse_equation(equation_bytes)
    explainer = EquationExplainer(eq, [c.name for c in columns], [c.feature for c in columns])
    ref = np.array([[eq.reference.get(c.name, 0.0) for c in columns]])
    batch = np.repeat(ref, 10_000, axis=0)
    start = time.perf_counter()
    explainer.contributions(batch)
    per_batch = (time.perf_counter() - start) / 10_000
    start = time.perf_counter()
    for _ in range(100):
        explainer.contributions_one(list(ref[0]))
    return per_batch, (time.perf_counter() - start) / 100


METRIC_WORDS = {
    "c_statistic": ("C statistic ", ""),
    "calibration_slope": ("calibration slope ", ""),
    "mean_predicted_risk_percent": ("mean predicted risk ", "%"),
    "observed_risk_percent": ("observed risk ", "%"),
    "observed_incidence_per_1000_person_years": ("observed incidence ", " per 1,000 person-years"),
    "discordance_percent": ("discordance ", "%"),
    "mean_overestimation_percent": ("mean overestimation ", "%"),
}
"""Words before and after a metric's value in the card."""
VALIDATION_WORDS = {
    "derivation": "in the derivation cohort, by its authors",
    "external": "external validation",
}
NOT_REPRODUCED = (
    "None of these figures was reproduced on local data here: each is its source's own, for the"
    " population and outcome it names, and the citation says where to check it. Local validity"
    " comes from monitoring observed against predicted risk on this service's own patients (live"
    " validation, issue 13), not from this card."
)


def figure_text(f: PublishedFigure) -> str:
    """The figure as the card prints it: metric, value and interval at the published precision."""
    d, (before, after) = f.decimals, METRIC_WORDS[f.metric]
    text = f"{before}{f.value:.{d}f}{after}"
    if f.interval_low is not None and f.interval_high is not None:
        text += f" ({f.interval_kind} {f.interval_low:.{d}f} to {f.interval_high:.{d}f})"
    return text


def source_text(f: PublishedFigure) -> str:
    ids = [f"PMID {f.pmid}" if f.pmid else "", f"doi:{f.doi}" if f.doi else ""]
    return f"{f.citation}. {'; '.join(i for i in ids if i)}"


def _published_section(manifest: Manifest) -> str:
    lines = ["## Published validation", NOT_REPRODUCED, ""]
    for f in manifest.published_validation:
        n = f" (n = {f.n:,})" if f.n is not None else ""
        lines.append(
            f"- **{f.study}** ({VALIDATION_WORDS[f.validation]}): {figure_text(f)}."
            f" Population: {f.population}{n}. Outcome: {f.outcome}."
            + (f" Model: {f.model}." if f.model else "")
            + (f" {f.note}" if f.note else "")
            + f" Source: {source_text(f)}."
        )
    if manifest.published_validation_missing:
        lines += ["", "### Not transcribed here (published elsewhere)"]
        lines += [f"- {m}" for m in manifest.published_validation_missing]
    return "\n".join(lines) + "\n\n"


def _card(spec: Spec, manifest: Manifest) -> str:
    eq = spec.equation
    use = manifest.clinical_use
    rules = "\n".join(f"- {r.description} ({r.source})" for r in spec.applicability)
    caveats = "\n".join(f"- {c}" for c in spec.caveats)
    return (
        f"# {spec.title} ({spec.name} {manifest.version})\n\n"
        f"{spec.summary}\n\n"
        f"**Clinical-use status:** {use.status.replace('_', ' ')}. {use.reason}  \n"
        f"**Kind:** published equation ({eq['form']}), not fitted or recalibrated here.  \n"
        f"**Outcome:** {eq['outcome']}.  \n"
        f"**Source:** {eq['citation']}.  \n"
        f"**Provenance of the constants:** {eq['provenance']}.\n\n"
        f"## Who it is for\n{spec.intended_use}\n\n{rules}\n\n"
        f"{spec.card}\n"
        f"{_published_section(manifest)}"
        f"## Local validation\nNot done here (no local data): the manifest carries no dataset,"
        f" split or validation block, and no local figure is claimed.\n\n"
        f"## Cautions\n{CARD_COMMON_CAUTION}{caveats}\n"
    )


def build(name: str, out_dir: Path, *, signing_key: Path | None = None) -> Path:
    """Write ``out_dir/NAME/VERSION`` (equation, card, manifest) and sign it."""
    from training.train import code_revision

    spec = SPECS[name]()
    folder = out_dir / name / VERSION
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():
        stale.unlink()
    equation_bytes = (json.dumps(spec.equation, indent=2) + "\n").encode()
    parse_equation(equation_bytes)  # never write what the loader would refuse
    (folder / EQUATION_FILE).write_bytes(equation_bytes)
    columns = _columns(spec.features)
    per_batch, per_row = _timing(equation_bytes, columns)

    def manifest_with(card_sha: str) -> Manifest:
        return Manifest(
            name=name,
            version=VERSION,
            title=spec.title,
            summary=spec.summary,
            intended_use=spec.intended_use,
            out_of_scope=spec.out_of_scope,
            created_at=CREATED_AT,
            code_revision=code_revision(),
            kind="equation",
            model_file=EQUATION_FILE,
            libraries={"numpy": metadata.version("numpy")},
            features=spec.features,
            applicability=spec.applicability,
            columns=columns,
            hyperparameters={},
            calibration=Calibration(
                slope=1.0,
                intercept=0.0,
                fitted_on="none: the published equation, not recalibrated",
            ),
            tiers=ACC_AHA_TIERS,
            tiers_borrowed_from=spec.tiers_borrowed_from,
            clinical_use=CLINICAL_USE[name],
            published_validation=spec.published_validation,
            published_validation_missing=spec.published_validation_missing,
            explanation=ExplanationInfo(
                method="equation",
                seconds_per_row_batch=per_batch,
                seconds_per_row_single=per_row,
            ),
            caveats=spec.caveats,
            ethical_considerations=[
                "Published equations carry the biases of their derivation cohorts; the card"
                " names them.",
                "Sex selects the published equation; no other identity is used beyond what the"
                " published equation requires.",
            ],
            files={
                EQUATION_FILE: hashlib.sha256(equation_bytes).hexdigest(),
                CARD_FILE: card_sha,
            },
        )

    card = _card(spec, manifest_with("0" * 64)).encode()
    (folder / CARD_FILE).write_bytes(card)
    manifest = manifest_with(hashlib.sha256(card).hexdigest())
    (folder / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
    env_key = os.environ.get(SIGNING_KEY_ENV)
    key_file = signing_key or (Path(env_key) if env_key else None)
    if key_file is not None:
        sign_artifact(folder, load_private_key(key_file))
    else:
        load_artifact(folder, TrustPolicy(allow_unsigned=True))
    return folder
