"""Issue 10, part 3: do discharge-time features that are fair to use lift readmission's
grouped-CV discrimination with the tables kept exact (XGBoost depth <= 2)?

Run ``python -m training.readmission_features [--out FILE]``. It rebuilds the shipped
readmission inputs, adds the candidate features below, and compares the two on the same
repeated grouped (by patient) 5-fold folds of the development part (the test part of the
shipped split is never touched), with the shipped recipe's settings (depth, learning rate,
regularisation, declared directions; trees chosen by the mean CV curve). The result is recorded
whether or not the gain holds (``training/results/readmission_features.json``).

Candidate features (all known at discharge; payer is left out pending a fairness review):
prior-encounter history of the same patient in this health system's records (earlier
readmissions after more than 30 days, total prior length of stay, prior emergency admissions,
prior discharges to a nursing facility, distinct prior diagnoses), the ICD-9 chapter of the
secondary and additional diagnoses, the 3-digit code of the primary diagnosis (its 30 most
frequent codes, the rest "other") and the admitting specialty (its 12 most frequent, the rest
"other", missing "unknown").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from models.columns import columns_for, encode
from models.manifest import Category, FeatureSpec, FeatureType
from training import fit
from training.config import load_config
from training.datasets import (
    DEATH_OR_HOSPICE,
    DISCHARGE_GROUPS,
    SHARED_DATA,
    icd9_chapter,
    load_diabetes130,
    read_table,
)
from training.train import feature_values, split_test

RESULTS = Path(__file__).resolve().parent / "results" / "readmission_features.json"
TOP_CODES = 30
TOP_SPECIALTIES = 12


def _prior_sum(values: pd.Series, patients: pd.Series) -> pd.Series:
    """Sum of ``values`` over the same patient's earlier rows (rows sorted by time)."""
    return (values.groupby(patients).cumsum() - values).astype(float)


def extra_features(path: Path) -> pd.DataFrame:
    """The candidate features, row-aligned with :func:`load_diabetes130` (same filters and
    encounter order)."""
    raw = read_table(path, na_values=["?"], keep_default_na=False, low_memory=False)
    keep = ~raw["discharge_disposition_id"].astype(int).isin(DEATH_OR_HOSPICE) & raw["gender"].isin(
        ["Female", "Male"]
    )
    raw = raw[keep].sort_values("encounter_id").reset_index(drop=True)
    patient = raw["patient_nbr"]
    emergency = raw["admission_type_id"].astype(int).isin([1, 7]).astype(float)
    nursing = (
        raw["discharge_disposition_id"].astype(int).isin(DISCHARGE_GROUPS["skilled_nursing"])
    ).astype(float)
    over_30 = (raw["readmitted"] == ">30").astype(float)
    # Distinct diagnoses recorded in earlier encounters: a running set per patient.
    seen: dict[Any, set[str]] = {}
    distinct = np.zeros(len(raw))
    codes = raw[["diag_1", "diag_2", "diag_3"]].to_numpy(dtype=object)
    for i, (p, row) in enumerate(zip(patient.to_numpy(), codes, strict=True)):
        known = seen.setdefault(p, set())
        distinct[i] = len(known)
        known.update(c for c in row if isinstance(c, str))
    top = raw["diag_1"].fillna("missing").str.split(".").str[0]
    frequent = set(top.value_counts().index[:TOP_CODES])
    specialty = raw["medical_specialty"].fillna("unknown")
    common = set(specialty[specialty != "unknown"].value_counts().index[:TOP_SPECIALTIES])
    return pd.DataFrame(
        {
            "prior_readmissions_over_30d": _prior_sum(over_30, patient),
            "prior_length_of_stay_days": _prior_sum(raw["time_in_hospital"].astype(float), patient),
            "prior_emergency_admissions": _prior_sum(emergency, patient),
            "prior_nursing_discharges": _prior_sum(nursing, patient),
            "prior_distinct_diagnoses": distinct,
            "secondary_diagnosis": raw["diag_2"].map(icd9_chapter),
            "additional_diagnosis": raw["diag_3"].map(icd9_chapter),
            "primary_diagnosis_code": top.where(top.isin(frequent), "other"),
            "admitting_specialty": specialty.where(
                specialty.isin(common) | (specialty == "unknown"), "other"
            ),
        }
    )


def extra_specs(frame: pd.DataFrame) -> list[FeatureSpec]:
    numeric = [
        ("prior_readmissions_over_30d", 1),
        ("prior_length_of_stay_days", 1),
        ("prior_emergency_admissions", 1),
        ("prior_nursing_discharges", 1),
        ("prior_distinct_diagnoses", 1),
    ]
    specs = [
        FeatureSpec(
            name=name,
            label=name,
            description=name,
            type=FeatureType.NUMERIC,
            source="derived",
            direction=direction,
            monotone=direction,
            direction_rationale="Earlier use of care predicts readmission (HOSPITAL, LACE).",
        )
        for name, direction in numeric
    ]
    for name in (
        "secondary_diagnosis",
        "additional_diagnosis",
        "primary_diagnosis_code",
        "admitting_specialty",
    ):
        levels = sorted(frame[name].astype(str).unique())
        specs.append(
            FeatureSpec(
                name=name,
                label=name,
                description=name,
                type=FeatureType.CATEGORICAL,
                source="derived",
                categories=[Category(code=c, label=c) for c in levels],
                direction_rationale="No direction: an association.",
            )
        )
    return specs


def _cv(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    monotone: list[int],
    names: list[str],
    *,
    depth: int,
    repeats: int,
    seed: int,
) -> dict[str, Any]:
    config = load_config("readmission").candidates.xgboost
    aurocs: list[float] = []
    trees: list[int] = []
    for r in range(repeats):
        folds = fit.group_folds(y, groups, n_splits=fit.N_FOLDS, seed=seed + 1 + r)
        cand = fit.cv_xgboost(
            X,
            y,
            folds,
            config.model_copy(update={"depths": [depth]}),
            monotone,
            seed=seed,
            column_names=names,
        )[0]
        aurocs.extend(cand.cv_aurocs)
        trees.append(int(cand.params["n_estimators"]))
    return {
        "depth": depth,
        "auroc_mean": float(np.mean(aurocs)),
        "auroc_sd": float(np.std(aurocs, ddof=1)),
        "folds": len(aurocs),
        "trees": trees,
    }


def run(repeats: int = 2, depths: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    started = time.perf_counter()
    config = load_config("readmission")
    path = SHARED_DATA / config.default_data
    ds = load_diabetes130(path)
    extra = extra_features(path)
    train_mask, _ = split_test(ds, test_fraction=config.test_fraction, seed=config.seed)
    adult = ds.features["age_years"].to_numpy() >= 18
    rows = train_mask & adult
    base_specs = list(config.features)
    all_specs = [*base_specs, *extra_specs(extra)]
    values = {**feature_values(ds, base_specs)}
    for spec in all_specs[len(base_specs) :]:
        column = extra[spec.name]
        values[spec.name] = (
            column.astype(object).to_numpy()
            if spec.type is FeatureType.CATEGORICAL
            else column.to_numpy(dtype=np.float64)
        )
    y = ds.y[rows].astype(int)
    groups = ds.groups[rows]
    out: dict[str, Any] = {"repeats": repeats, "rows": int(rows.sum())}
    for label, specs in (("shipped inputs", base_specs), ("with candidate features", all_specs)):
        columns = columns_for(specs)
        X = encode(columns, values)[rows]
        monotone: list[int] = [
            int(next(s for s in specs if s.name == c.feature).direction)
            if c.category is None
            else 0
            for c in columns
        ]
        names = [c.name for c in columns]
        out[label] = [
            _cv(X, y, groups, monotone, names, depth=d, repeats=repeats, seed=config.seed)
            for d in depths
        ]
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    xgb.set_config(verbosity=0)
    result = run(args.repeats, tuple(args.depths))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
