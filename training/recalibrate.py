"""Local recalibration (issue 13 part 5): ``clinrisk recalibrate NAME --data FILE`` fits a
logistic recalibration on local outcomes and writes a new *candidate* version, which then goes
through the lifecycle's approval (``clinrisk models set-state … shadow``, ``… approve``).

The local file is in the model's own feature columns plus the outcome (as ``clinrisk evaluate``
reads it). With the served calibrated log-odds ``z = a*m + b`` (``m`` the model's margin), the
fit is ``logit P(y) = alpha + beta*z`` (``--method intercept``: beta fixed at 1, the
calibration-in-the-large; ``--method slope``: both). The new version's calibration is again
Platt on the same margin, ``slope' = beta*a`` and ``intercept' = beta*b + alpha``, so its
explanations stay exact: contributions are ``beta*a*phi`` and still add up to the new log-odds
(models/scoring.py). The ranking of patients does not change (a monotone map): discrimination
is the original's; calibration and the tier figures are not, and the card says so.

The model file is copied byte for byte; the manifest gets the new version, calibration (its
``fitted_on`` names the local file by sha256, rows and events), a caveat, and the card a section
on the local data. The artifact is signed when a key is given (else it loads only where unsigned
artifacts are allowed).
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.loader import load_artifact, sha256_file, sign_artifact
from models.manifest import Manifest
from models.predictor import Predictor
from models.registry import Registry
from models.signing import TrustPolicy, load_private_key
from training import metrics
from training.local_evaluate import OUTCOME, LocalFileError, report, score_local

METHODS = ("intercept", "slope")


def next_patch(version: str) -> str:
    major, minor, patch = (int(p) for p in version.split("."))
    return f"{major}.{minor}.{patch + 1}"


def recalibrate(
    name: str,
    data: Path,
    *,
    models_dir: Path,
    out_dir: Path,
    version: str | None = None,
    new_version: str | None = None,
    method: str = "intercept",
    outcome: str = OUTCOME,
    signing_key: Path | None = None,
    trust: TrustPolicy | None = None,
    now: datetime | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Write the recalibrated candidate version; returns its folder and the figures before and
    after on the local file."""
    if method not in METHODS:
        raise LocalFileError(f"--method must be one of {', '.join(METHODS)}, not '{method}'")
    registry: Registry[Predictor] = Registry(Predictor)
    registry.load_dir(models_dir, trust)
    model = registry.get(name, version)
    manifest = model.manifest
    if manifest.kind == "equation":
        raise LocalFileError(
            f"'{name}' is a published equation: recalibrating it would make it another model; "
            "validate it locally with `clinrisk evaluate` instead"
        )
    local = score_local(model, data, outcome)
    if method == "intercept":
        alpha, beta = metrics.calibration_in_the_large(local.y, local.p), 1.0
    else:
        beta, alpha = metrics.calibration_slope_intercept(local.y, local.p)
    old = manifest.calibration
    target_version = new_version or next_patch(manifest.version)
    target = out_dir / name / target_version
    if target.exists():
        raise LocalFileError(f"'{target}' exists already: choose another --new-version")
    source = _folder(models_dir, name, manifest.version)
    when = (now or datetime.now(UTC)).replace(microsecond=0)
    record = {
        "file": local.data["name"],
        "sha256": local.data["sha256"],
        "evaluated_rows": local.data["evaluated"],
        "events": local.data["events"],
        "method": "intercept only" if method == "intercept" else "intercept and slope",
        "alpha": alpha,
        "beta": beta,
        "date": when.date().isoformat(),
    }
    fitted_on = (
        f"{old.fitted_on}; then recalibrated ({record['method']}: alpha {alpha:.4f}, beta "
        f"{beta:.4f}) on local outcomes '{record['file']}' (sha256 {record['sha256']}, "
        f"{record['evaluated_rows']} rows, {record['events']} events) on {record['date']}"
    )
    raw = json.loads((source / "manifest.json").read_text())
    raw["version"] = target_version
    raw["created_at"] = when.isoformat()
    raw["calibration"] = {
        **raw["calibration"],
        "slope": beta * old.slope,
        "intercept": beta * old.intercept + alpha,
        "fitted_on": fitted_on,
    }
    raw["caveats"] = [
        *raw["caveats"],
        f"Version {target_version} is {manifest.version} recalibrated on local outcomes "
        f"({record['evaluated_rows']} patients, {record['events']} events, {record['date']}). "
        "The validation figures in this manifest are the original model's on its test split: "
        "its discrimination (AUROC) is unchanged by the recalibration, its calibration and tier "
        "figures are not; see the card's local recalibration section.",
    ]
    Manifest.model_validate(raw)  # the schema holds before anything is written
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("manifest.sig"))
    try:
        card = target / "card.md"
        before = report(model, local)
        card.write_text(card.read_text() + _card_section(manifest, target_version, record, before))
        raw["files"] = {**raw["files"], "card.md": sha256_file(card)}
        (target / "manifest.json").write_text(json.dumps(raw, indent=2) + "\n")
        if signing_key is not None:
            sign_artifact(target, load_private_key(signing_key))
        after = _after(target, data, outcome, signing_key)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # never leave half an artifact
        raise
    return target, {
        "source_version": manifest.version,
        "version": target_version,
        "local": record,
        "before": _figures(before),
        "after": _figures(after),
    }


def _folder(models_dir: Path, name: str, version: str) -> Path:
    from models.registry import artifact_folder

    return artifact_folder(models_dir, name, version)


def _after(target: Path, data: Path, outcome: str, signing_key: Path | None) -> dict[str, Any]:
    """The new version, verified and loaded as the service loads an artifact (its signature
    against the signing key's public half), on the same local file."""
    if signing_key is not None:
        policy = TrustPolicy.trusting(load_private_key(signing_key).public_key())
    else:
        policy = TrustPolicy.trusting(allow_unsigned=True)
    model = Predictor(load_artifact(target, policy))
    return report(model, score_local(model, data, outcome))


def _figures(result: dict[str, Any]) -> dict[str, Any]:
    overall = result["overall"]
    return {
        k: overall.get(k)
        for k in ("n", "auroc", "calibration_slope", "calibration_intercept", "brier")
    } | {"tiers": [{k: t.get(k) for k in ("tier", "ppv", "sensitivity")} for t in result["tiers"]]}


def _card_section(
    manifest: Manifest, version: str, record: dict[str, Any], before: dict[str, Any]
) -> str:
    overall = before["overall"]
    return (
        f"\n\n## Local recalibration ({version})\n\n"
        f"This version is {manifest.name} {manifest.version} recalibrated on local outcomes: "
        f"`{record['file']}` (sha256 `{record['sha256']}`), {record['evaluated_rows']} patients "
        f"with a known outcome, {record['events']} events, on {record['date']}. Method: "
        f"logistic recalibration, {record['method']}: logit(new risk) = "
        f"{record['alpha']:.4f} + {record['beta']:.4f} x logit(original risk).\n\n"
        f"Before recalibration, on these patients: AUROC {overall['auroc']:.3f}, calibration "
        f"slope {overall['calibration_slope']:.3f}, intercept "
        f"{overall['calibration_intercept']:.3f}. The order of patients, hence the AUROC, is "
        "unchanged; risks and tier figures change. The validation tables above are those of the "
        f"original model on its own test split. The explanations stay exact: each contribution "
        f"is the original's times {record['beta']:.4f}.\n\n"
        "This version starts as a candidate: it is served only after an approval recorded "
        "with who, when, why and the evidence (`clinrisk models approve`).\n"
    )
