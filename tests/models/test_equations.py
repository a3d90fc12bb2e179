"""Published equations as a model kind: published examples, exact explanations, loading, serving.

Published vectors (each cited in training/equations.py's docstring):

* PCE, 2013 ACC/AHA guideline worked example (Goff 2014, Table A): age 55, TC 213, HDL 50,
  untreated SBP 120, non-smoker, no diabetes -> white women 2.1%, African American women 3.0%,
  white men 5.3%, African American men 6.1% (one decimal).
* PREVENT, preventr README (martingmayer/preventr): woman 50, SBP 160 treated, TC 200, HDL 45,
  no statin, diabetes, non-smoker, eGFR 90 -> 10-year ASCVD 0.092 (three decimals).
* Framingham 2008 office model, CRAN CVrisk test: man 55, BMI 30, SBP 140 untreated,
  non-smoker, no diabetes -> 16.75% (two decimals); and training/framingham2008.py exactly.

Published validation figures (training/equations.py, issue 11) are checked on the shipped
artifacts for what can be checked without the paper: a PMID or DOI, a value inside its metric's
range and inside its interval, and a card line that prints it.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from models.equations import (
    EquationError,
    EquationExplainer,
    ckd_epi_2021,
    inverse_link,
    link,
    parse_equation,
)
from models.errors import ArtifactError
from models.loader import load_artifact
from models.manifest import PublishedFigure
from models.predictor import Predictor
from models.registry import artifact_folder
from service.app import create_app
from service.cds_hooks import fhir
from service.settings import Settings
from tests.conftest import MODELS_DIR, Keys, running_server
from training import equations as equation_builds
from training import framingham2008

EQUATIONS = ("ascvd-pce", "ascvd-prevent", "cvd-framingham-2008")
SYNTHEA = MODELS_DIR.parent.parent / "shared" / "data" / "synthea_fhir_r4"
TODAY = date(2022, 6, 1)


def predictor(name: str) -> Predictor:
    return Predictor(load_artifact(artifact_folder(MODELS_DIR, name)))


PREDICTORS = {name: predictor(name) for name in EQUATIONS}


def pce_patient(male: int, race: str, **over: Any) -> dict[str, Any]:
    base = {
        "sex_male": male,
        "race": race,
        "age_years": 55,
        "total_cholesterol_mg_dl": 213,
        "hdl_cholesterol_mg_dl": 50,
        "systolic_bp_mm_hg": 120,
        "bp_medication": 0,
        "current_smoker": 0,
        "diabetes": 0,
    }
    return base | over


PREVENT_EXAMPLE = {
    "sex_male": 0,
    "age_years": 50,
    "total_cholesterol_mg_dl": 200,
    "hdl_cholesterol_mg_dl": 45,
    "systolic_bp_mm_hg": 160,
    "bp_medication": 1,
    "statin": 0,
    "diabetes": 1,
    "current_smoker": 0,
    "egfr_ml_min_1_73m2": 90,
}


def probability(name: str, features: dict[str, Any]) -> float:
    result = PREDICTORS[name].predict(features).result
    assert result["status"] == "scored"
    assert result["probability"] is not None
    return result["probability"]


# -- published examples --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("male", "race", "published"),
    [(0, "white", 2.1), (0, "african_american", 3.0), (1, "african_american", 6.1)],
)
def test_pce_reproduces_the_guideline_worked_example(
    male: int, race: str, published: float
) -> None:
    assert round(100 * probability("ascvd-pce", pce_patient(male, race)), 1) == published


def test_pce_white_man_of_the_worked_example() -> None:
    # The guideline prints 5.3%, computed from its table's rounded intermediate products; the
    # equation with exact logarithms gives 5.38%. Within the printed precision's rounding step.
    risk = 100 * probability("ascvd-pce", pce_patient(1, "white"))
    assert abs(risk - 5.3) < 0.1
    assert round(risk, 2) == 5.38


def test_pce_other_races_use_the_white_equations() -> None:
    for male in (0, 1):
        white = probability("ascvd-pce", pce_patient(male, "white"))
        assert probability("ascvd-pce", pce_patient(male, "other")) == white


def test_prevent_reproduces_the_preventr_example() -> None:
    assert round(probability("ascvd-prevent", PREVENT_EXAMPLE), 3) == 0.092


def test_prevent_reference_patient_is_the_published_constant() -> None:
    # PREVENT's centring values make every term 0: the risk is logistic(constant).
    k = 0.02586
    for male, constant in ((0, -3.8199750), (1, -3.5006550)):
        reference = PREVENT_EXAMPLE | {
            "sex_male": male,
            "age_years": 55,
            "total_cholesterol_mg_dl": 4.8 / k,
            "hdl_cholesterol_mg_dl": 1.3 / k,
            "systolic_bp_mm_hg": 130,
            "bp_medication": 0,
            "diabetes": 0,
        }
        p = probability("ascvd-prevent", reference)
        assert p == pytest.approx(1 / (1 + math.exp(-constant)), rel=1e-12)


def test_framingham_reproduces_cvrisk_and_the_validation_module() -> None:
    patient = {
        "sex_male": 1,
        "age_years": 55,
        "bmi_kg_m2": 30,
        "systolic_bp_mm_hg": 140,
        "bp_medication": 0,
        "current_smoker": 0,
        "diabetes": 0,
    }
    assert round(100 * probability("cvd-framingham-2008", patient), 2) == 16.75
    rng = np.random.default_rng(7)
    for _ in range(50):
        values = {
            "sex_male": int(rng.integers(0, 2)),
            "age_years": float(rng.uniform(30, 74)),
            "bmi_kg_m2": float(rng.uniform(16, 45)),
            "systolic_bp_mm_hg": float(rng.uniform(95, 195)),
            "bp_medication": int(rng.integers(0, 2)),
            "current_smoker": int(rng.integers(0, 2)),
            "diabetes": int(rng.integers(0, 2)),
        }
        expected = framingham2008.office_bmi_risk(
            male=values["sex_male"],
            age_years=values["age_years"],
            bmi=values["bmi_kg_m2"],
            sbp_mm_hg=values["systolic_bp_mm_hg"],
            bp_treated=values["bp_medication"],
            smoker=values["current_smoker"],
            diabetic=values["diabetes"],
        )
        assert probability("cvd-framingham-2008", values) == pytest.approx(float(expected), 1e-12)


def test_ckd_epi_2021() -> None:
    # Inker et al. 2021, creatinine equation, by hand for a woman of 50 with 1.0 mg/dL.
    woman = 142 * (1.0 / 0.7) ** -1.2 * 0.9938**50 * 1.012
    assert ckd_epi_2021(1.0, 50, male=False) == pytest.approx(woman, rel=1e-12)
    assert ckd_epi_2021(0.9, 40, male=True) == pytest.approx(142 * 0.9938**40, rel=1e-12)
    assert round(ckd_epi_2021(1.0, 50, male=True)) == 92


# -- exactness -----------------------------------------------------------------------------------


def check_exact(name: str, features: dict[str, Any]) -> None:
    """base + sum(contributions) == the equation's own z; probability == mapping(z)."""
    p = PREDICTORS[name]
    result = p.predict(features, research_use=True).result
    explanation = result["explanation"]
    assert explanation is not None and result["probability"] is not None
    assert explanation["method"] == "equation"
    z = explanation["base_log_odds"] + math.fsum(
        c["contribution"] for c in explanation["contributions"]
    )
    row = p.validator.validate(features).columns
    explainer = p.core.explainer
    assert isinstance(explainer, EquationExplainer)
    direct = float(explainer.linear(np.asarray([row], dtype=np.float64))[0])
    assert z == pytest.approx(direct, abs=1e-9)
    form = explainer.equation.form
    assert result["probability"] == pytest.approx(
        float(inverse_link(form, np.array([direct]))[0]), rel=1e-9
    )
    assert explanation["scale"] == ("log_odds" if form == "logistic" else "log_cumulative_hazard")
    assert "exp" in explanation["probability_mapping"]


def random_patient(name: str, rng: np.random.Generator) -> dict[str, Any]:
    values: dict[str, Any] = {
        "sex_male": int(rng.integers(0, 2)),
        "age_years": float(rng.uniform(30, 79)),
        "systolic_bp_mm_hg": float(rng.uniform(90, 200)),
        "bp_medication": int(rng.integers(0, 2)),
        "current_smoker": int(rng.integers(0, 2)),
        "diabetes": int(rng.integers(0, 2)),
    }
    if name == "cvd-framingham-2008":
        return values | {"bmi_kg_m2": float(rng.uniform(15, 50))}
    values |= {
        "total_cholesterol_mg_dl": float(rng.uniform(130, 320)),
        "hdl_cholesterol_mg_dl": float(rng.uniform(20, 100)),
    }
    if name == "ascvd-pce":
        return values | {"race": str(rng.choice(["white", "african_american", "other"]))}
    return values | {
        "statin": int(rng.integers(0, 2)),
        "egfr_ml_min_1_73m2": float(rng.uniform(15, 140)),
    }


@pytest.mark.parametrize("name", EQUATIONS)
def test_explanation_is_exact_on_random_in_range_patients(name: str) -> None:
    rng = np.random.default_rng(11)
    for _ in range(200):
        check_exact(name, random_patient(name, rng))


@pytest.mark.parametrize("name", EQUATIONS)
def test_batch_and_single_agree_exactly(name: str) -> None:
    rng = np.random.default_rng(3)
    patients = [random_patient(name, rng) for _ in range(40)]
    p = PREDICTORS[name]
    many = p.predict_many(
        patients, top_k=[None] * len(patients), research_use=[True] * len(patients)
    )
    for patient, scored in zip(patients, many, strict=True):
        assert not isinstance(scored, list)
        one = p.predict(patient, research_use=True).result
        assert scored.result["probability"] == pytest.approx(one["probability"], rel=1e-12)


def test_interaction_split_is_the_stated_rule() -> None:
    # A PCE white woman differing from the reference only in age and treated SBP: the treated
    # SBP term has no age factor in this variant, so age gets nothing from it; bp_medication and
    # SBP share its change by the Shapley rule (own effects + half the interaction each).
    p = PREDICTORS["ascvd-pce"]
    explainer = p.core.explainer
    assert isinstance(explainer, EquationExplainer)
    features = pce_patient(0, "white", systolic_bp_mm_hg=150, bp_medication=1)
    row = np.asarray([p.validator.validate(features).columns])
    out = explainer.contributions(row)[0]
    col = {c: i for i, c in enumerate(explainer.columns)}
    beta_t, beta_u = 2.019, 1.957
    ln150, ln120 = math.log(150), math.log(120)
    # term_t = beta_t * lnSBP * treated: ref (ln120, 0) -> (ln150, 1)
    # term_u = beta_u * lnSBP * (1 - treated): ref (ln120, 1) -> (ln150, 0)
    sbp_t = beta_t * 0.5 * ((ln150 * 0 - ln120 * 0) + (ln150 * 1 - ln120 * 1))
    bp_t = beta_t * 0.5 * ((ln120 * 1 - 0) + (ln150 * 1 - ln150 * 0))
    sbp_u = beta_u * 0.5 * ((ln150 - ln120) * 1 + (ln150 - ln120) * 0)
    bp_u = beta_u * 0.5 * ((ln120 * 0 - ln120 * 1) + (ln150 * 0 - ln150 * 1))
    assert out[col["systolic_bp_mm_hg"]] == pytest.approx(sbp_t + sbp_u, abs=1e-12)
    assert out[col["bp_medication"]] == pytest.approx(bp_t + bp_u, abs=1e-12)
    assert out[col["age_years"]] == 0.0


def test_a_change_of_variant_is_split_between_the_differing_selectors() -> None:
    p = PREDICTORS["ascvd-pce"]
    result = p.predict(pce_patient(1, "african_american")).result
    assert result["explanation"] is not None
    by = {c["feature"]: c["contribution"] for c in result["explanation"]["contributions"]}
    assert by["sex_male"] == pytest.approx(by["race"], abs=1e-12)
    assert by["age_years"] == by["total_cholesterol_mg_dl"] == 0.0  # at the reference values
    white_woman = p.predict(pce_patient(0, "white")).result["explanation"]
    assert white_woman is not None
    assert all(c["contribution"] == 0.0 for c in white_woman["contributions"])
    assert white_woman["base_probability"] == pytest.approx(
        probability("ascvd-pce", pce_patient(0, "white")), rel=1e-12
    )


def synthea_bundles() -> list[Path]:
    return sorted(SYNTHEA.glob("*.json"))


@pytest.mark.skipif(not SYNTHEA.is_dir(), reason="shared Synthea data not present")
@pytest.mark.parametrize("name", EQUATIONS)
def test_explanation_is_exact_on_every_synthea_patient(name: str) -> None:
    """The chart's values where FHIR has them (fhir.extract_features); an input the extraction
    does not read (medications, race, eGFR) takes the equation's reference value."""
    p = PREDICTORS[name]
    equation = p.core.explainer.equation  # type: ignore[attr-defined]
    bundles = synthea_bundles()
    assert len(bundles) == 18
    used = 0
    for path in bundles:
        resources = [e["resource"] for e in json.loads(path.read_text())["entry"]]
        patient = next(r for r in resources if r["resourceType"] == "Patient")
        observations = [r for r in resources if r["resourceType"] == "Observation"]
        conditions = [r for r in resources if r["resourceType"] == "Condition"]
        extraction = fhir.extract_features(p.specs, patient, observations, conditions, today=TODAY)
        features: dict[str, Any] = {}
        for spec in p.specs:
            value = extraction.features.get(spec.name)
            if value is None:
                value = "white" if spec.name == "race" else equation.reference[spec.name]
            features[spec.name] = value
        used += len(extraction.features)
        check_exact(name, features)
    assert used > 18 * 3  # the charts really supplied values


# -- the artifact --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EQUATIONS)
def test_artifact_is_signed_and_declares_no_local_validation(name: str) -> None:
    artifact = load_artifact(artifact_folder(MODELS_DIR, name))
    assert artifact.signed_by is not None
    m = artifact.manifest
    assert m.kind == "equation" and m.validation is None and m.dataset is None
    assert artifact.equation is not None
    assert {r.context for r in m.applicability} >= {"established_ascvd"}
    assert "Not done here" in artifact.card_markdown


# -- published validation (issue 11) ------------------------------------------------------------

# Independent of models.manifest's own table: what each metric can be, as the literature uses it.
METRIC_RANGE = {
    "c_statistic": (0.5, 1.0),
    "calibration_slope": (0.0, 5.0),
    "mean_predicted_risk_percent": (0.0, 100.0),
    "observed_risk_percent": (0.0, 100.0),
    "observed_incidence_per_1000_person_years": (0.0, 1000.0),
    "discordance_percent": (-100.0, 1000.0),
    "mean_overestimation_percent": (-100.0, 1000.0),
}


def published(name: str) -> list[PublishedFigure]:
    return PREDICTORS[name].manifest.published_validation


@pytest.mark.parametrize("name", EQUATIONS)
def test_the_served_equation_is_the_version_with_published_figures(name: str) -> None:
    m = PREDICTORS[name].manifest
    assert m.version == equation_builds.VERSION == "1.2.0"
    assert m.published_validation, "every equation cites at least one published figure"
    assert m.published_validation_missing, "what was not transcribed is said, with its source"


@pytest.mark.parametrize("name", EQUATIONS)
def test_every_published_figure_has_a_citation_a_valid_value_and_its_interval(name: str) -> None:
    for f in published(name):
        assert f.pmid is not None or f.doi is not None, f.study
        assert f.pmid is None or f.pmid.isdigit()
        assert f.doi is None or f.doi.startswith("10.")
        # journal year;volume:pages (or an article number) is in the citation
        assert re.search(r"(19|20)\d\d;\d+(\(.+?\))?:[A-Z]?\d+", f.citation), f.citation
        low, high = METRIC_RANGE[f.metric]
        assert low <= f.value <= high, (f.study, f.metric, f.value)
        if f.interval_low is not None or f.interval_high is not None:
            assert f.interval_low is not None and f.interval_high is not None
            assert f.interval_low <= f.value <= f.interval_high, f.study
            assert f.interval_kind
        assert f.population.strip() and f.outcome.strip()
        assert f.n is None or f.n > 0


@pytest.mark.parametrize("name", EQUATIONS)
def test_the_card_prints_every_published_figure_with_its_source(name: str) -> None:
    card = PREDICTORS[name].card_markdown
    section = card.split("## Published validation\n", 1)[1].split("\n## ", 1)[0]
    items = [line for line in section.splitlines() if line.startswith("- **")]
    figures = published(name)
    assert len(items) == len(figures)
    for line, f in zip(items, figures, strict=True):
        assert line.startswith(f"- **{f.study}**")
        assert f"{f.value:.{f.decimals}f}" in line
        for bound in (f.interval_low, f.interval_high):
            assert bound is None or f"{bound:.{f.decimals}f}" in line
        assert f.pmid is None or f"PMID {f.pmid}" in line
        assert f.doi is None or f"doi:{f.doi}" in line
        assert f.citation in line and f.outcome in line
        assert f.n is None or f"{f.n:,}" in line
    for missing in PREDICTORS[name].manifest.published_validation_missing:
        assert f"- {missing}" in section


@pytest.mark.parametrize("name", EQUATIONS)
def test_the_card_says_no_published_figure_was_reproduced_here(name: str) -> None:
    card = PREDICTORS[name].card_markdown
    section = card.split("## Published validation\n", 1)[1].split("\n## ", 1)[0]
    assert "None of these figures was reproduced on local data here" in section
    assert "monitoring" in section and "issue 13" in section
    assert "to be transcribed" not in card  # the 1.1.0 placeholder is gone


@pytest.mark.parametrize("name", EQUATIONS)
def test_the_shipped_card_is_what_the_builder_renders(name: str, tmp_path: Path) -> None:
    folder = equation_builds.build(name, tmp_path)
    shipped = artifact_folder(MODELS_DIR, name)
    for file in ("card.md", "equation.json"):
        assert (folder / file).read_bytes() == (shipped / file).read_bytes(), file


def test_an_older_equation_artifact_still_loads_without_published_figures() -> None:
    old = load_artifact(artifact_folder(MODELS_DIR, "ascvd-pce", "1.1.0")).manifest
    assert old.published_validation == [] and old.published_validation_missing == []


def _figure(**over: Any) -> dict[str, Any]:
    return {
        "study": "S",
        "citation": "A. T. J 2020;1:1-2",
        "pmid": "1",
        "validation": "external",
        "population": "P",
        "outcome": "O",
        "metric": "c_statistic",
        "value": 0.7,
        "interval_low": 0.6,
        "interval_high": 0.8,
        "interval_kind": "95% CI",
    } | over


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"pmid": None}, "PMID or a DOI"),
        ({"value": 1.2, "interval_high": 1.3}, "outside its range"),
        ({"value": 0.9}, "does not contain"),
        ({"interval_high": None}, "both bounds"),
        ({"interval_kind": None}, "both bounds"),
        ({"doi": "doi.org/x"}, "pattern"),
    ],
)
def test_a_published_figure_that_cannot_be_right_is_refused(
    over: dict[str, Any], match: str
) -> None:
    PublishedFigure.model_validate(_figure())
    with pytest.raises(ValueError, match=match):
        PublishedFigure.model_validate(_figure(**over))


def test_a_tampered_equation_file_is_refused(tmp_path: Path) -> None:
    source = artifact_folder(MODELS_DIR, "ascvd-pce")
    folder = tmp_path / "ascvd-pce" / source.name
    shutil.copytree(source, folder)
    path = folder / "equation.json"
    doc = json.loads(path.read_text())
    doc["variants"][0]["terms"][0]["coefficient"] += 0.001
    path.write_text(json.dumps(doc, indent=2) + "\n")
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        load_artifact(folder)


def test_the_equation_parser_is_strict() -> None:
    doc = json.loads((artifact_folder(MODELS_DIR, "ascvd-pce") / "equation.json").read_text())
    parse_equation(json.dumps(doc).encode())
    for broken, match in [
        ({**doc, "extra": 1}, "unknown keys"),
        ({**doc, "form": "weibull"}, "form"),
        ({**doc, "reference_variant": "aa_men"}, "another variant"),
    ]:
        with pytest.raises(EquationError, match=match):
            parse_equation(json.dumps(broken).encode())
    bad_term = json.loads(json.dumps(doc))
    bad_term["variants"][0]["terms"][0]["factors"][0]["transform"] = "sqrt"
    with pytest.raises(EquationError, match="transform"):
        parse_equation(json.dumps(bad_term).encode())


def test_link_inverts_the_mapping() -> None:
    for form in ("cox", "logistic"):
        for p in (0.001, 0.05, 0.5, 0.9):
            assert float(inverse_link(form, np.array([link(form, p)]))[0]) == pytest.approx(p)  # type: ignore[arg-type]


# -- served --------------------------------------------------------------------------------------


def test_served_over_http(settings: Settings, keys: Keys) -> None:
    with (
        running_server(create_app(settings)) as url,
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        headers = {"Authorization": f"Bearer {keys.predict}"}
        response = http.post(
            "/v1/models/ascvd-pce/predict",
            json={"patient_id": "p-1", "features": pce_patient(0, "african_american")},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert round(100 * body["probability"], 1) == 3.0
        assert body["explanation"]["method"] == "equation"
        assert body["explanation"]["scale"] == "log_cumulative_hazard"
        assert body["tier"]["name"] == "low"
        # mmol/L cholesterol is converted (213 mg/dL = 5.508 mmol/L)
        mmol = pce_patient(0, "african_american") | {
            "total_cholesterol_mg_dl": {"value": 213 / 38.67, "unit": "mmol/L"}
        }
        converted = http.post(
            "/v1/models/ascvd-pce/predict",
            json={"patient_id": "p-1", "features": mmol},
            headers=headers,
        ).json()
        assert converted["probability"] == pytest.approx(body["probability"], rel=1e-9)
        # outside the equation's ages: not scored, says why
        young = http.post(
            "/v1/models/ascvd-pce/predict",
            json={"patient_id": "p-2", "features": pce_patient(0, "white", age_years=30)},
            headers=headers,
        ).json()
        assert young["status"] == "not_applicable" and young["probability"] is None
        assert young["applicability"]["failed"][0]["id"].startswith("age_years")
        listed = http.get("/v1/models", headers=headers).json()
        names = {m["name"] for m in listed}
        assert set(EQUATIONS) <= names
