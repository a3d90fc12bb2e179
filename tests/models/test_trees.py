"""Lookup tables compiled from the artifact's JSON model equal XGBoost's own TreeSHAP.

XGBoost is a training (and test) dependency only: here it reads the very ``model.json`` the
service parses without it, and its ``pred_contribs`` is the reference for the tables.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from models.columns import encode
from models.loader import TREE_MODEL_FILE, load_artifact
from models.trees import Forest, ForestTooDeep, UnsupportedModel, compile_tables, parse_forest
from tests.conftest import MODELS_DIR, SHIPPED_VERSION
from training.config import load_config
from training.datasets import LOADERS, SHARED_DATA
from training.train import feature_values

TREE_MODELS = ("diabetes", "readmission")
VERSION = SHIPPED_VERSION


@cache
def all_rows(name: str) -> np.ndarray:
    """The model's own dataset (with its missing values), as model columns."""
    config = load_config(name)
    manifest = load_artifact(MODELS_DIR / name / VERSION).manifest
    ds = LOADERS[config.loader](SHARED_DATA / config.default_data)
    return encode(manifest.columns, feature_values(ds, list(manifest.features)))


def real_rows(name: str, n: int) -> np.ndarray:
    matrix = all_rows(name)
    return matrix[np.random.default_rng(0).choice(len(matrix), size=n, replace=False)]


def model_path(name: str) -> str:
    return str(MODELS_DIR / name / VERSION / TREE_MODEL_FILE)


def forest(name: str) -> Forest:
    loaded = load_artifact(MODELS_DIR / name / VERSION).forest
    assert loaded is not None
    return loaded


def document(name: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads((MODELS_DIR / name / VERSION / TREE_MODEL_FILE).read_text())
    return parsed


@pytest.mark.parametrize("name", TREE_MODELS)
def test_tables_equal_xgboost_treeshap_tree_by_tree(name: str) -> None:
    """Per tree, XGBoost's float32 arithmetic is exact enough to compare at 1e-6."""
    booster = xgb.Booster(model_file=model_path(name))
    ours_forest = forest(name)
    rows = real_rows(name, 500)
    dmatrix = xgb.DMatrix(rows, feature_names=booster.feature_names)
    assert booster.num_boosted_rounds() == len(ours_forest.trees)
    for start in range(0, booster.num_boosted_rounds(), 7):
        reference = booster[start : start + 1].predict(dmatrix, pred_contribs=True)
        tables = compile_tables(ours_forest.slice(start, start + 1))
        ours = tables.contributions(rows)
        assert np.max(np.abs(ours - reference[:, :-1])) < 1e-6, f"tree {start}"
        assert abs(tables.base_margin - float(reference[0, -1])) < 1e-6


@pytest.mark.parametrize("name", TREE_MODELS)
def test_whole_forest_tables_equal_pred_contribs_and_the_sum_of_trees(name: str) -> None:
    booster = xgb.Booster(model_file=model_path(name))
    ours_forest = forest(name)
    rows = real_rows(name, 2000)
    tables = compile_tables(ours_forest)
    ours = tables.contributions(rows)
    per_tree = sum(
        compile_tables(ours_forest.slice(i, i + 1)).contributions(rows)
        for i in range(len(ours_forest.trees))
    )
    dmatrix = xgb.DMatrix(rows, feature_names=booster.feature_names)
    reference = booster.predict(dmatrix, pred_contribs=True)
    margin = booster.predict(dmatrix, output_margin=True)

    # Grouping trees into tables is exact (float64 throughout).
    assert np.max(np.abs(ours - per_tree)) < 1e-9
    # XGBoost accumulates hundreds of trees in float32, so the whole forest agrees to ~1e-5.
    assert np.max(np.abs(ours - reference[:, :-1])) < 2e-5
    assert np.max(np.abs(tables.base_margin + ours.sum(axis=1) - margin)) < 2e-5


@pytest.mark.parametrize("name", TREE_MODELS)
def test_single_row_lookup_equals_the_batch_lookup(name: str) -> None:
    tables = compile_tables(forest(name))
    rows = real_rows(name, 300)

    batch = tables.contributions(rows)

    for i, row in enumerate(rows):
        assert np.max(np.abs(tables.contributions_one(row.tolist()) - batch[i])) < 1e-12


def test_the_parsed_forest_describes_the_booster_xgboost_reads() -> None:
    booster = xgb.Booster(model_file=model_path("readmission"))
    parsed = forest("readmission")

    assert parsed.n_columns == booster.num_features()
    assert parsed.feature_names == booster.feature_names
    assert ".".join(map(str, parsed.xgboost_version)) == xgb.__version__


def trees_of(model: dict[str, Any]) -> list[dict[str, Any]]:
    trees: list[dict[str, Any]] = model["learner"]["gradient_booster"]["model"]["trees"]
    return trees


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(version=[1, 7, 6]), r"written by XGBoost 1\.7\.6"),
        (lambda d: d.update(version=[4, 0, 0]), r"XGBoost >= 2\.0\.0, < 4\.0\.0"),
        (lambda d: d.update(version="3.2.0"), r"'version' must be \[major, minor, patch\]"),
        (
            lambda d: d["learner"]["objective"].update(name="reg:squarederror"),
            "only binary:logistic",
        ),
        (lambda d: d["learner"]["gradient_booster"].update(name="dart"), "only gbtree"),
        (
            lambda d: d["learner"]["learner_model_param"].update(num_class="3"),
            "single-target, single-class",
        ),
        (lambda d: trees_of(d)[5]["split_type"].__setitem__(0, 1), "tree 5 has categorical"),
        (lambda d: trees_of(d)[2]["sum_hessian"].pop(), "tree 2: node arrays differ in length"),
        (
            lambda d: trees_of(d)[0]["split_indices"].__setitem__(0, 99),
            "tree 0: node 0 points outside",
        ),
        (lambda d: trees_of(d).pop(), "differs from num_trees"),
    ],
)
def test_a_model_the_tables_cannot_reproduce_is_refused_by_the_parser(
    edit: Any, message: str
) -> None:
    edited = copy.deepcopy(document("diabetes"))
    edit(edited)

    with pytest.raises(UnsupportedModel, match=message):
        parse_forest(edited)


def test_trees_deeper_than_the_tables_support_are_refused_at_compile_time() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 4))
    y = (X.sum(axis=1) > 0).astype(int)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 4, "nthread": 1, "seed": 0},
        xgb.DMatrix(X, y),
        3,
    )

    with pytest.raises(ForestTooDeep, match="lookup tables support at most 3"):
        compile_tables(parse_forest(json.loads(booster.save_raw("json"))))
