"""Inputs a chart can supply (issue 14 part 6): the diabetes model scores a typical chart.

The served diabetes version leaves the 8 BRFSS questionnaire answers optional and learned where
"unknown" goes in training. Everything here runs the committed artifact on the real BRFSS rows:
the explanation stays exact on rows with unknown inputs (tables against XGBoost's own TreeSHAP),
the typical-chart figures in the manifest are what the artifact does on the untouched test part,
and a chart-only payload is scored with each unknown input flagged and worded honestly.
"""

from __future__ import annotations

import json
import math
from functools import cache

import numpy as np
import pytest
import xgboost as xgb

from models import describe
from models.columns import encode
from models.loader import TREE_MODEL_FILE, Artifact, load_artifact
from models.predictor import Predictor
from models.registry import artifact_folder
from models.scoring import ScoringModel
from models.trees import compile_tables, parse_forest
from service.cds_hooks import fhir
from tests.conftest import MODELS_DIR
from training import fit, metrics
from training.config import load_config
from training.datasets import LOADERS, SHARED_DATA
from training.train import feature_values, masking_for, split_test
from training.validation import population_exclusions

FOLDER = artifact_folder(MODELS_DIR, "diabetes")
# Everything a typical chart holds for the diabetes model (tests/service: read from FHIR).
CHART_PAYLOAD = {
    "age_years": 57,
    "sex_male": 1,
    "bmi_kg_m2": 33,
    "high_blood_pressure": 1,
    "high_cholesterol": 1,
    "cholesterol_checked_5y": 1,
    "smoked_100_cigarettes": 1,
    "stroke_history": 0,
    "coronary_disease_or_mi": 0,
}


@cache
def artifact() -> Artifact:
    return load_artifact(FOLDER)


def optional() -> list[str]:
    return [f.name for f in artifact().manifest.features if not f.required]


@cache
def brfss() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(all rows as model columns, labels, test mask) exactly as training split them."""
    config = load_config("diabetes")
    loaded = LOADERS[config.loader](SHARED_DATA / config.default_data)
    _, test_all = split_test(loaded, test_fraction=config.test_fraction, seed=config.seed)
    ds, _, kept = population_exclusions(loaded, config.applicability)
    manifest = artifact().manifest
    X = encode(manifest.columns, feature_values(ds, list(manifest.features)))
    return X, ds.y.astype(int), test_all[kept]


def hidden_columns() -> list[int]:
    names = set(optional())
    return [j for j, c in enumerate(artifact().manifest.columns) if c.feature in names]


def masked_rows(n: int, *, together: bool, seed: int = 0) -> np.ndarray:
    """Real rows with the optional inputs unknown: all of them, or each with chance 1/2."""
    X, _, _ = brfss()
    rng = np.random.default_rng(seed)
    rows = X[rng.choice(len(X), size=n, replace=False)].copy()
    cols = hidden_columns()
    block = rows[:, cols]
    block[np.ones(block.shape, bool) if together else rng.random(block.shape) < 0.5] = np.nan
    rows[:, cols] = block
    return rows


def test_the_questionnaire_answers_are_optional_and_chart_items_required() -> None:
    manifest = artifact().manifest

    assert set(optional()) == set(fhir.SURVEY_ITEMS)
    required = {f.name for f in manifest.features if f.required}
    assert required == set(CHART_PAYLOAD)
    for spec in manifest.features:
        if not spec.required:
            assert spec.missing_handling and "unrecorded" in spec.missing_handling
            assert "(optional: " in spec.missing_handling  # the reason it may be unknown
    policy = manifest.missing_data_policy or ""
    assert all(spec.label in policy for spec in manifest.features if not spec.required)
    assert "test part was never altered" in policy


@pytest.mark.parametrize("together", [True, False], ids=["typical-chart", "partly-known"])
def test_tables_equal_xgboost_treeshap_on_rows_with_unknown_inputs(together: bool) -> None:
    booster = xgb.Booster(model_file=str(FOLDER / TREE_MODEL_FILE))
    forest = artifact().forest
    assert forest is not None
    rows = masked_rows(2000, together=together)
    dmatrix = xgb.DMatrix(rows, feature_names=booster.feature_names)

    tables = compile_tables(forest)
    ours = tables.contributions(rows)
    reference = booster.predict(dmatrix, pred_contribs=True)
    margin = booster.predict(dmatrix, output_margin=True)

    assert np.isnan(rows).any()
    assert np.max(np.abs(ours - reference[:, :-1])) < 2e-5
    assert np.max(np.abs(tables.base_margin + ours.sum(axis=1) - margin)) < 2e-5
    for i, row in enumerate(rows[:200]):
        assert np.max(np.abs(tables.contributions_one(row.tolist()) - ours[i])) < 1e-12


def test_tables_are_exact_for_a_depth_2_forest_that_learned_missing_branches() -> None:
    """Interactions with an unknown input (a three-feature group's "missing" cell), per tree at
    XGBoost's float32 precision: a depth-2 forest trained the way 1.4.0 was, on real rows."""
    config = load_config("diabetes")
    X, y, test = brfss()
    train_rows = np.flatnonzero(~test)[:6000]
    columns = list(artifact().manifest.columns)
    masking = masking_for(config, columns, config.seed)
    assert masking is not None
    params = fit.xgb_params(
        config.candidates.xgboost, 2, [s.monotone for s in config.features], seed=config.seed
    )
    names = [c.name for c in columns]
    booster = fit.fit_xgboost(
        X[train_rows], y[train_rows], {**params, "n_estimators": 60}, names, masking
    )
    forest = parse_forest(json.loads(booster.save_raw("json")))
    rows = masked_rows(500, together=False, seed=1)
    dmatrix = xgb.DMatrix(rows, feature_names=names)

    assert any(len(t.features()) > 1 for t in forest.trees)
    for start in range(0, len(forest.trees), 3):
        reference = booster[start : start + 1].predict(dmatrix, pred_contribs=True)
        tables = compile_tables(forest.slice(start, start + 1))
        assert np.max(np.abs(tables.contributions(rows) - reference[:, :-1])) < 1e-6, start
    whole = compile_tables(forest)
    margin = booster.predict(dmatrix, output_margin=True)
    assert np.max(np.abs(whole.base_margin + whole.contributions(rows).sum(axis=1) - margin)) < 2e-5


def test_the_typical_chart_figures_are_what_the_artifact_does_on_the_test_part() -> None:
    manifest = artifact().manifest
    assert manifest.validation is not None
    (pattern,) = manifest.validation.missing_patterns
    X, y, test = brfss()
    hidden = X[test].copy()
    hidden[:, hidden_columns()] = np.nan

    scores = ScoringModel(artifact()).score_matrix(hidden)

    assert pattern.missing == optional()
    assert pattern.test.n == manifest.validation.test.n == int(test.sum())
    # Training scored with XGBoost (float32 sums), the service with float64 tables: the
    # probabilities agree to 1e-6, so a handful of near-ties may swap rank.
    assert pattern.test.auroc == pytest.approx(metrics.auroc(y[test], scores.probability), abs=1e-5)
    assert pattern.test.brier == pytest.approx(metrics.brier(y[test], scores.probability), abs=1e-6)
    # Without the questionnaire answers the model knows less, and says so in its figures.
    assert pattern.test.auroc < manifest.validation.test.auroc
    assert pattern.reference_auroc is not None
    assert [t.tier for t in pattern.tiers] == [t.name for t in manifest.tiers[1:]]
    card = artifact().card_markdown or ""
    assert "### With the inputs a chart lacks" in card
    assert f"{pattern.test.auroc:.3f}" in card


def test_a_chart_only_payload_is_scored_with_each_unknown_input_flagged() -> None:
    predictor = Predictor(artifact())

    result = predictor.predict(CHART_PAYLOAD).result

    assert result["status"] == "scored"
    handling = {f.name: f.missing_handling for f in artifact().manifest.features}
    missing = {m["feature"]: m["handling"] for m in result["data_quality"]["missing"]}
    assert missing == {name: handling[name] for name in optional()}
    explanation = result["explanation"]
    p = result["probability"]
    assert explanation is not None and p is not None
    contributions = explanation["contributions"]
    assert {c["feature"] for c in contributions} == {f.name for f in artifact().manifest.features}
    total = explanation["base_log_odds"] + math.fsum(c["contribution"] for c in contributions)
    assert total == pytest.approx(math.log(p / (1 - p)), abs=1e-9)
    for item in contributions:
        if item["feature"] in missing:
            assert item["value"] is None
            if item["direction"] != "no effect":
                assert "not known: in this model an unrecorded value goes with" in item["text"]
                assert "raised" not in item["text"] and "lowered" not in item["text"]


def test_an_unknown_value_reads_as_what_unknown_did_never_as_the_patients_effect() -> None:
    active = next(f for f in load_config("diabetes").features if f.name == "physically_active")

    assert describe.contribution_text(active, None, 1) == (
        "Physically active not known: in this model an unrecorded value goes with higher "
        "predicted risk (not an effect of the patient's own value)"
    )
    assert describe.contribution_text(active, None, 0) == (
        "Physically active not known: no effect on the predicted risk"
    )
    assert describe.contribution_text(active, 1.0, -1) == (
        "Physically active lowered the predicted risk"
    )
