"""Local validation (issue 13 part 5): ``clinrisk evaluate NAME --data FILE`` on a hospital's
own extract, in the model's own feature columns (exactly as ``clinrisk score`` reads them:
canonical names, optional ``<feature>_unit`` columns, context columns) plus an outcome column
(0/1), reporting the same figures as the model card.

Rows are scored by the service's column path (validation, units, intended population); a row
the model rejects or does not apply to, or whose outcome is not 0/1, is left out and counted
with its reason, never guessed. Subgroups are the manifest's, placed by the same membership rule
as live validation (``models.applicability.in_subgroup``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from models.applicability import in_subgroup
from models.loader import sha256_file
from models.manifest import Manifest
from models.predictor import Predictor
from models.registry import Registry
from models.signing import TrustPolicy
from training import metrics

OUTCOME = "outcome"


class LocalFileError(ValueError):
    """The file cannot be evaluated; the message names what is missing and what is allowed."""


def header(path: Path) -> list[str]:
    from service.batch.files import input_schema

    return list(input_schema(path).names)


def is_feature_file(columns: list[str], manifest: Manifest, outcome: str = OUTCOME) -> bool:
    """A file in the model's own feature columns: the outcome and every required feature."""
    required = [f.name for f in manifest.features if f.required]
    return outcome in columns and all(name in columns for name in required)


def missing_columns(columns: list[str], manifest: Manifest, outcome: str = OUTCOME) -> list[str]:
    wanted = [outcome, *(f.name for f in manifest.features if f.required)]
    return [c for c in wanted if c not in columns]


def _read(path: Path, columns: list[str]) -> pa.Table:
    from service.batch.files import iter_chunks
    from service.batch.progress import NoProgress

    tables = [c.table for c in iter_chunks(path, columns, 100_000, NoProgress())]
    return pa.concat_tables(tables) if tables else pa.table({c: [] for c in columns})


def _outcomes(column: Any) -> tuple[np.ndarray, np.ndarray]:
    """Outcome per row (0/1) and whether it is valid ("0", "1", 0, 1, true, false)."""
    values = column.to_pylist()
    y = np.zeros(len(values), dtype=np.int64)
    valid = np.zeros(len(values), dtype=bool)
    for i, value in enumerate(values):
        text = str(value).strip().lower() if value is not None else ""
        if text in ("1", "1.0", "true"):
            y[i], valid[i] = 1, True
        elif text in ("0", "0.0", "false"):
            valid[i] = True
    return y, valid


def _value(cell: Any) -> Any:
    if cell is None:
        return None
    try:
        return float(cell)
    except (TypeError, ValueError):
        return str(cell)


@dataclass(frozen=True)
class LocalScores:
    """A local file scored: outcomes and risks of the evaluable rows, and what was left out."""

    y: npt.NDArray[np.int64]
    p: npt.NDArray[np.float64]
    keep: npt.NDArray[np.bool_]
    inputs: dict[str, Any]
    data: dict[str, Any]


def score_local(model: Predictor, data: Path, outcome: str = OUTCOME) -> LocalScores:
    """Score a local file in ``model``'s own columns (raises LocalFileError naming what is
    missing); rows rejected, not applicable or without a 0/1 outcome are counted, not kept."""
    manifest = model.manifest
    columns = header(data)
    if not is_feature_file(columns, manifest, outcome):
        lacking = ", ".join(missing_columns(columns, manifest, outcome))
        raise LocalFileError(
            f"'{data.name}' lacks the column(s) {lacking}: "
            f"a local file needs the model's features ({', '.join(model.feature_names)}) and "
            f"'{outcome}' (0/1)."
        )
    table = _read(data, columns)
    n = table.num_rows
    y, valid = _outcomes(table.column(outcome))
    inputs = {c: table.column(c) for c in columns if c != outcome}
    scored = model.score_table(inputs, n, explain=False, top_k=1)
    probability = scored.table.column("probability").to_numpy(zero_copy_only=False)
    status = scored.table.column("status").to_pylist()
    applicable = np.array([s == "scored" for s in status]) & scored.accepted
    keep = applicable & valid & ~np.isnan(probability.astype(np.float64))
    reasons = Counter(
        str(r).split(":")[0]
        for r, a in zip(
            scored.table.column("reject_reason").to_pylist(), scored.accepted, strict=True
        )
        if not a and r
    )
    y_kept, p_kept = y[keep], probability[keep].astype(np.float64)
    if len(y_kept) == 0 or y_kept.min() == y_kept.max():
        raise LocalFileError(
            f"'{data.name}' has {int(keep.sum())} evaluable rows and needs both outcomes "
            "(events and non-events) among them."
        )
    counts = {
        "path": str(data),
        "name": data.name,
        "sha256": sha256_file(data),
        "format": "the model's own feature columns",
        "rows": n,
        "evaluated": int(keep.sum()),
        "events": int(y_kept.sum()),
        "rejected": int((~scored.accepted).sum()),
        "rejected_reasons": dict(reasons.most_common(10)),
        "not_applicable": int((scored.accepted & ~applicable).sum()),
        "outcome_not_0_or_1": int((scored.accepted & applicable & ~valid).sum()),
    }
    return LocalScores(y_kept, p_kept, keep, inputs, counts)


def evaluate_feature_file(
    name: str,
    data: Path,
    *,
    models_dir: Path,
    version: str | None = None,
    outcome: str = OUTCOME,
    seed: int = 0,
    trust: TrustPolicy | None = None,
) -> dict[str, Any]:
    """The card's figures on a local file in the model's own columns (module docstring)."""
    registry: Registry[Predictor] = Registry(Predictor)
    registry.load_dir(models_dir, trust)
    model = registry.get(name, version)
    return report(model, score_local(model, data, outcome), seed=seed)


def report(model: Predictor, local: LocalScores, *, seed: int = 0) -> dict[str, Any]:
    manifest = model.manifest
    y_kept, p_kept, keep, inputs = local.y, local.p, local.keep, local.inputs
    n = len(keep)
    groups = manifest.validation.subgroups if manifest.validation is not None else []
    cells: dict[str, list[Any]] = {}
    subgroups = []
    for factor in dict.fromkeys(g.factor for g in groups):
        members = [g for g in groups if g.factor == factor and g.feature in inputs]
        if not members:
            continue  # the manifest cannot place a patient in this factor's groups
        for g in members:
            feature = g.feature or ""
            if feature not in cells:
                cells[feature] = [_value(v) for v in inputs[feature].to_pylist()]
        labels = np.array(
            [
                next(
                    (g.level for g in members if in_subgroup(g, cells[g.feature or ""][i])),
                    "not placed",
                )
                for i in range(n)
            ],
            dtype=str,
        )
        for row in metrics.subgroup_metrics(y_kept, p_kept, labels[keep]):
            subgroups.append({"factor": factor, **row})
    return {
        "model": {"name": model.name, "version": model.version, "sha256": model.sha256},
        "data": local.data,
        "overall": metrics.summarize(y_kept, p_kept, seed=seed),
        "tiers": [
            {"tier": t.name, **metrics.threshold_metrics(y_kept, p_kept, t.lower)}
            for t in manifest.tiers[1:]
        ],
        "subgroups": subgroups,
    }
