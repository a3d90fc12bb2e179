"""`clinrisk evaluate` on a local file in the model's own feature columns plus an outcome
(issue 13 part 5): the card's figures on the shipped diabetes model, from held-out BRFSS rows
written as a hospital would export them; bad rows counted with reasons, never a KeyError."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bench import monitoring_drift as simulation
from service.cli import app
from tests.conftest import MODELS_DIR

ROWS = 4000


@pytest.fixture(scope="module")
def local_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    frame, y = simulation.unshifted(ROWS, seed=5)
    frame = frame.astype(object)
    frame["outcome"] = y
    frame.loc[0, "bmi_kg_m2"] = "heavy"  # rejected by the model's rules
    frame.loc[1, "outcome"] = 2  # not an outcome
    frame.loc[2, "age_years"] = 15  # below the model's range (adults)
    frame["diagnosed_diabetes"] = ""  # a context column: unknown is allowed...
    frame.loc[3, "diagnosed_diabetes"] = "true"  # ...known diabetes is outside the population
    path = tmp_path_factory.mktemp("local") / "extract.csv"
    frame.to_csv(path, index=False)
    return path, y


def _evaluate(path: Path, out: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            simulation.MODEL,
            "--data",
            str(path),
            "--models-dir",
            str(MODELS_DIR),
            "--out",
            str(out),
            *extra,
        ],
    )
    return result.exit_code, result.output


def test_a_local_file_in_the_models_features_gets_the_cards_figures(
    local_file: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, _ = local_file
    out = tmp_path / "report.json"

    code, output = _evaluate(path, out)

    assert code == 0, output
    report = json.loads(out.read_text())
    manifest = json.loads(
        (MODELS_DIR / simulation.MODEL / simulation.version() / "manifest.json").read_text()
    )
    data = report["data"]
    assert data["rows"] == ROWS
    reasons = " ".join(data["rejected_reasons"])
    assert data["rejected"] == 2 and "bmi_kg_m2" in reasons and "age_years" in reasons
    assert data["outcome_not_0_or_1"] == 1
    assert data["not_applicable"] == 1
    assert data["evaluated"] == ROWS - 4 == report["overall"]["n"]
    # Held-out rows of the model's own test split: the card's discrimination, within noise.
    assert report["overall"]["auroc"] == pytest.approx(
        manifest["validation"]["test"]["auroc"], abs=0.03
    )
    levels = {(g["factor"], g["level"]) for g in report["subgroups"]}
    assert {("sex", "female"), ("sex", "male"), ("age_band", "70+")} <= levels
    assert [t["tier"] for t in report["tiers"]] == [t["name"] for t in manifest["tiers"][1:]]


def test_a_file_the_model_cannot_read_is_refused_with_the_columns_it_needs(
    local_file: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, _ = local_file
    text = path.read_text().splitlines()
    columns = text[0].split(",")
    drop = columns.index("bmi_kg_m2")
    lacking = tmp_path / "no_bmi.csv"
    lacking.write_text(
        "\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != drop) for line in text)
    )
    neither = tmp_path / "neither.csv"
    neither.write_text("a,b\n1,2\n")

    code, output = _evaluate(lacking, tmp_path / "r.json")
    other_code, other_output = _evaluate(neither, tmp_path / "r2.json")

    assert code == 2 and "bmi_kg_m2" in output and "Traceback" not in output
    assert other_code == 2 and "no 'outcome' column" in other_output
