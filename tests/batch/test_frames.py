"""The column validator and RowValidator agree; FrameScorer and the single-row path agree."""

from __future__ import annotations

import math
import random
from dataclasses import asdict
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from models.loader import load_artifact
from models.predictor import Predictor
from models.scoring import ScoringModel
from models.tables import (
    NUMBER_TEXT,
    FrameScorer,
    FrameValidator,
    join_flags,
    reason_text,
    top_contributions,
)
from models.validation import InvalidFeatures, RowValidator
from tests.conftest import SHIPPED_VERSION

N_ROWS = 3000
MODELS = ("diabetes", "readmission", "cvd")


def _row_outcomes(validator: RowValidator, rows: list[dict[str, Any]]) -> list[Any]:
    outcomes: list[Any] = []
    for row in rows:
        try:
            outcomes.append(validator.validate(row))
        except InvalidFeatures as exc:
            outcomes.append(exc)
    return outcomes


def _object_columns(columns: dict[str, list[Any]]) -> dict[str, Any]:
    out = {}
    for name, values in columns.items():
        array = np.empty(len(values), dtype=object)
        array[:] = values
        out[name] = array
    return out


def _assert_agree(
    manifest: Any, rows: list[dict[str, Any]], outcomes: list[Any], table: dict[str, Any]
) -> None:
    validator = FrameValidator(manifest.features, manifest.columns)
    frame = validator.validate(table, len(rows))
    accepted_rows = [i for i, o in enumerate(outcomes) if not isinstance(o, InvalidFeatures)]
    assert np.flatnonzero(frame.accepted).tolist() == accepted_rows
    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, InvalidFeatures):
            expected = [(e.field, e.message, e.allowed) for e in outcome.errors]
            actual = [(e.field, e.message, e.allowed) for e in frame.errors[i]]
            assert actual == expected, f"row {i}: {rows[i]}"
    expected_matrix = np.array([outcomes[i].columns for i in accepted_rows], dtype=np.float64)
    assert frame.matrix.shape == expected_matrix.shape
    # exact equality, NaN = missing in the same places
    assert np.array_equal(frame.matrix, expected_matrix, equal_nan=True)
    for position, i in enumerate(accepted_rows):
        assert asdict(validator.quality(frame, i)) == asdict(outcomes[i].quality), rows[i]
        assert position < frame.matrix.shape[0]


@pytest.mark.parametrize("name", MODELS)
def test_column_validator_agrees_with_row_validator_on_random_rows(
    name: str, batch_kit: SimpleNamespace
) -> None:
    manifest = batch_kit.manifest_of(name)
    rows = batch_kit.random_rows(manifest, N_ROWS, seed=MODELS.index(name))
    outcomes = _row_outcomes(RowValidator(manifest), rows)
    rejected = sum(isinstance(o, InvalidFeatures) for o in outcomes)
    assert 0.3 * N_ROWS < rejected < 0.7 * N_ROWS  # both kinds are well represented
    columns = batch_kit.rows_to_columns(manifest, rows)
    # mixed Python objects, as a pandas object column or JSON rows hold them
    _assert_agree(manifest, rows, outcomes, _object_columns(columns))
    # text cells, as a CSV file holds them (Arrow string columns)
    _assert_agree(manifest, rows, outcomes, dict(batch_kit.text_table(columns).to_pydict()))
    text = batch_kit.text_table(columns)
    _assert_agree(manifest, rows, outcomes, {n: text.column(n) for n in text.column_names})


@pytest.mark.parametrize("name", MODELS)
def test_column_validator_agrees_on_typed_columns(name: str, batch_kit: SimpleNamespace) -> None:
    """Typed columns (Parquet, Spark): numbers as float64 with NaN, categories as strings."""
    manifest = batch_kit.manifest_of(name)
    rng = random.Random(7)
    rows = []
    for row in batch_kit.random_rows(manifest, 500, seed=7):
        typed = {
            k: v for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
        for spec in manifest.features:  # categories as valid codes, so the column stays text
            if spec.type.value == "categorical":
                typed[spec.name] = rng.choice([c.code for c in spec.categories])
        rows.append(typed)
    outcomes = _row_outcomes(RowValidator(manifest), rows)
    table: dict[str, Any] = {}
    for spec in manifest.features:
        values = [row.get(spec.name) for row in rows]
        if spec.type.value == "categorical":
            table[spec.name] = pa.array(values, pa.string())
        else:
            table[spec.name] = pa.array(
                [math.nan if v is None else float(v) for v in values], pa.float64()
            )
    _assert_agree(manifest, rows, outcomes, table)


def test_number_grammar_is_exactly_arrows() -> None:
    """The slow path's regex accepts exactly the strings Arrow's float cast accepts."""
    rng = random.Random(3)
    alphabet = [*"0123456789.+-eE ", "inf", "nan", "infinity", "INF", "x", "_", ","]
    strings = sorted(
        {"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6))) for _ in range(20000)}
    )
    matches = pc.match_substring_regex(pa.array(strings), NUMBER_TEXT).to_pylist()
    for text, matched in zip(strings, matches, strict=True):
        try:
            pc.cast(pa.array([text]), pa.float64())
            castable = True
        except pa.ArrowInvalid:
            castable = False
        assert castable == matched, text


def test_a_bad_cell_does_not_change_how_the_rest_of_its_column_reads(
    batch_kit: SimpleNamespace,
) -> None:
    manifest = batch_kit.manifest_of("diabetes")
    validator = FrameValidator(manifest.features, manifest.columns)
    clean = {spec.name: pa.array(["1"] * 4, pa.string()) for spec in manifest.features}
    clean["bmi_kg_m2"] = pa.array(["25"] * 4, pa.string())
    clean["age_years"] = pa.array(["45", "+46", "4.7e1", ".5e2"], pa.string())
    dirty = dict(clean)
    dirty["age_years"] = pa.array(["45", "+46", "4.7e1", "forty"], pa.string())
    a = validator.validate(clean, 4)
    b = validator.validate(dirty, 4)
    assert a.accepted.tolist() == [True, True, True, True]
    assert b.accepted.tolist() == [True, True, True, False]
    assert np.array_equal(a.matrix[:3], b.matrix)
    assert b.errors[3][0].message == "must be a number"
    assert "age_years: must be a number (value: 'forty'" in reason_text(b.errors[3])


def test_text_true_and_false_are_binary_values(batch_kit: SimpleNamespace) -> None:
    manifest = batch_kit.manifest_of("diabetes")
    table: dict[str, Any] = {spec.name: ["1", "1"] for spec in manifest.features}
    table["age_years"] = ["50", "50"]
    table["bmi_kg_m2"] = ["25", "25"]
    table["sex_male"] = ["TRUE", "false"]
    frame = FrameValidator(manifest.features, manifest.columns).validate(table, 2)
    assert frame.accepted.all()
    assert frame.values["sex_male"].tolist() == [1.0, 0.0]


def test_missing_required_column_rejects_every_row(batch_kit: SimpleNamespace) -> None:
    manifest = batch_kit.manifest_of("cvd")
    frame = FrameValidator(manifest.features, manifest.columns).validate({}, 3)
    assert not frame.accepted.any()
    first = frame.errors[0][0]
    assert (first.field, first.message) == ("features.sex_male", "required feature is missing")


@pytest.mark.parametrize("name", MODELS)
def test_frame_scores_equal_single_row_scores(name: str, batch_kit: SimpleNamespace) -> None:
    artifact = load_artifact(batch_kit.models_dir / name / SHIPPED_VERSION)
    loaded = Predictor(artifact)
    scorer = FrameScorer(ScoringModel(artifact))
    manifest = artifact.manifest
    rows = batch_kit.random_rows(manifest, 1000, seed=11)
    columns = batch_kit.rows_to_columns(manifest, rows)
    scored = scorer.score(_object_columns(columns), len(rows), explain=True, top_k=3)
    table = scored.table.to_pylist()
    for i, row in enumerate(rows):
        try:
            single = loaded.predict(row, top_k=3).result
        except InvalidFeatures as exc:
            assert not scored.accepted[i]
            assert table[i]["probability"] is None
            assert table[i]["reject_reason"].startswith(
                exc.errors[0].field.removeprefix("features.")
            )
            continue
        out = table[i]
        assert out["reject_reason"] is None
        assert out["status"] == single["status"]
        if single["status"] == "not_applicable":  # outside the population: no score anywhere
            assert out["probability"] is None and out["tier"] is None
            continue
        assert single["tier"] is not None and single["explanation"] is not None
        assert out["probability"] == pytest.approx(single["probability"], abs=1e-12)
        assert out["tier"] == single["tier"]["name"]
        contributions = single["explanation"]["contributions"]
        for k in range(3):
            assert out[f"top{k + 1}_contribution"] == pytest.approx(
                contributions[k]["contribution"], abs=1e-9
            )
        if len(contributions) > 3:
            assert out["other_contribution"] == pytest.approx(
                contributions[3]["contribution"], abs=1e-9
            )
        quality = single["data_quality"]
        assert out["missing_features"] == ";".join(m["feature"] for m in quality["missing"])
        assert out["out_of_training_range"] == ";".join(
            m["feature"] for m in quality["out_of_training_range"]
        )
        assert out["trustworthy"] is quality["trustworthy"]


@pytest.mark.parametrize("k", [1, 3, 9])
def test_top_contributions_order_like_the_apis_stable_sort(k: int) -> None:
    rng = np.random.default_rng(0)
    contributions = rng.choice([-0.5, -0.25, 0.0, 0.25, 0.5, 0.1], size=(2000, 12))  # many ties
    order, top = top_contributions(contributions, k)
    for row, values in enumerate(contributions.tolist()):
        expected = sorted(range(12), key=lambda j: -abs(values[j]))[:k]
        assert order[row].tolist() == expected
        assert top[row].tolist() == [values[j] for j in expected]


def test_join_flags_lists_flagged_names_in_order() -> None:
    flags = np.array([[True, False, True], [False, False, False], [True, False, True]])
    mask = np.array([False, False, True])
    assert join_flags(flags, ["a", "b", "c"], mask).to_pylist() == ["a;c", "", None]
    wide = np.zeros((2, 70), dtype=bool)
    wide[0, [0, 69]] = True
    names = [f"f{i}" for i in range(70)]
    assert join_flags(wide, names).to_pylist() == ["f0;f69", ""]
