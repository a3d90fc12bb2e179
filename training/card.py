"""Render an artifact's ``card.md`` from its manifest.

The card follows the sections of a model card (Mitchell et al., "Model Cards for Model
Reporting", FAT* 2019): model details, intended use, factors, metrics, evaluation data,
training data, quantitative analyses, ethical considerations, caveats and recommendations. It
adds an inputs table so a clinician can see exactly what the model reads.

:func:`render_card` is a pure function of the manifest: no I/O, no clock, and the same manifest
always gives the same text (the card's sha256 is recorded in the manifest's ``files``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from models.manifest import (
    ApplicabilityRule,
    Baseline,
    CalibrationBin,
    Candidate,
    FeatureSpec,
    FeatureType,
    Manifest,
    SubgroupMetrics,
    ThresholdMetrics,
    Tier,
)

DASH = "—"
EN_DASH = "\u2013"  # for ranges such as a confidence interval
TIMES = "\u00d7"
MINUS = "\u2212"
NA_SUBGROUP = "n/a (too few events)"

METRIC_MEANINGS: tuple[tuple[str, str], ...] = (
    (
        "AUROC",
        "The probability that a randomly chosen patient who had the outcome received a higher "
        "score than a randomly chosen patient who did not; 0.5 is chance and 1.0 is perfect "
        "ranking.",
    ),
    (
        "AUPRC",
        "The average positive predictive value across all sensitivity levels; compare it with "
        "the prevalence, which is what an uninformative score achieves.",
    ),
    (
        "Brier score",
        "The mean squared difference between the predicted probability and what happened "
        "(0 or 1); lower is better, and it rewards both ranking and calibration.",
    ),
    (
        "Calibration slope",
        "How much the predictions need to be stretched or shrunk to match observed risk; 1 is "
        "ideal, below 1 means predictions are too extreme, above 1 too timid.",
    ),
    (
        "Calibration intercept",
        "The intercept of the same logistic recalibration fit (jointly with the slope); 0 is "
        "ideal, and it shows whether predicted risks are systematically too high or too low.",
    ),
    (
        "ECE (expected calibration error)",
        "The average gap between predicted and observed risk over ten equal-sized groups of "
        "patients ordered by predicted risk, in probability units; 0 is perfect.",
    ),
)


# --------------------------------------------------------------------------------------------
# Number and cell formatting


def _cell(text: object) -> str:
    """Make a value safe for one Markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip()


def _num(value: float) -> str:
    """A plain number without spurious trailing zeros (``90``, ``7.5``, ``0.0001``)."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def _auc(value: float) -> str:
    return f"{value:.3f}"


def _auc_ci(value: float, low: float, high: float) -> str:
    return f"{value:.3f} ({low:.3f}{EN_DASH}{high:.3f})"


def _pct(probability: float) -> str:
    return f"{probability * 100:.1f}%"


def _pct_or_dash(probability: float | None) -> str:
    return DASH if probability is None else _pct(probability)


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def _p_value(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _microseconds(seconds: float) -> str:
    us = seconds * 1e6
    if us >= 100:
        return f"{us:,.0f} µs"
    if us >= 10:
        return f"{us:.1f} µs"
    return f"{us:.2f} µs"


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{key}={_param(value)}" for key, value in params.items()) or DASH


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = [
        "| " + " | ".join(_cell(h) for h in header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines.extend("| " + " | ".join(_cell(v) for v in row) + " |" for row in rows)
    return lines


def _bullets(items: Sequence[str], empty: str = "None recorded.") -> list[str]:
    if not items:
        return [empty]
    return [f"- {item}" for item in items]


# --------------------------------------------------------------------------------------------
# Sections


def _model_kind(manifest: Manifest) -> str:
    hp = manifest.hyperparameters
    if manifest.kind == "xgboost":
        text = "gradient-boosted trees (XGBoost)"
        trees, depth = hp.get("n_estimators"), hp.get("max_depth")
        if trees is not None and depth is not None:
            text += f", {_param(trees)} trees of depth {_param(depth)}"
        elif trees is not None:
            text += f", {_param(trees)} trees"
        elif depth is not None:
            text += f", trees of depth {_param(depth)}"
        return text
    text = "regularised logistic regression"
    if "C" in hp:
        text += f" (inverse regularisation strength C = {_param(hp['C'])})"
    return text


def _explanation(manifest: Manifest) -> str:
    info = manifest.explanation
    if info.method == "tree_shap":
        method = (
            "exact TreeSHAP contributions of each input to the log-odds, summing with the "
            "baseline to the model's margin"
        )
    else:
        method = (
            f"exact linear contributions (coefficient {TIMES} (value {MINUS} training mean)) "
            "of each input to the log-odds"
        )
    timing = (
        f"measured time per row {_microseconds(info.seconds_per_row_batch)} in a 10,000-row "
        f"batch and {_microseconds(info.seconds_per_row_single)} for a single row"
    )
    if info.reference_seconds_per_row is not None:
        timing += (
            f" (XGBoost `pred_contribs` on the same rows: "
            f"{_microseconds(info.reference_seconds_per_row)} per row)"
        )
    return f"{method}; {timing}."


def _model_details(manifest: Manifest) -> list[str]:
    cal = manifest.calibration
    lines = [
        "## Model details",
        "",
        f"- **Model:** {_model_kind(manifest)}.",
        f"- **Hyperparameters:** {_params(manifest.hyperparameters)}.",
        f"- **Created:** {manifest.created_at.isoformat()}.",
        f"- **Code revision:** `{manifest.code_revision}`.",
        f"- **Model file:** `{manifest.model_file}`.",
        (
            "- **Calibration:** Platt (logistic) recalibration of the margin, "
            f"slope {cal.slope:.3f}, intercept {cal.intercept:.3f}, fitted on {cal.fitted_on} "
            f"(logit(p) = {cal.slope:.3f} {TIMES} margin {'+' if cal.intercept >= 0 else '-'} "
            f"{abs(cal.intercept):.3f})."
        ),
        f"- **Explanations:** {_explanation(manifest)}",
    ]
    if manifest.libraries:
        libs = ", ".join(f"{name} {version}" for name, version in manifest.libraries.items())
        lines.append(f"- **Libraries:** {libs}.")
    return lines


def _intended_use(manifest: Manifest) -> list[str]:
    return [
        "## Intended use",
        "",
        manifest.intended_use,
        "",
        "**Out of scope:**",
        "",
        *_bullets(manifest.out_of_scope),
    ]


def _unit(spec: FeatureSpec) -> str:
    if spec.unit is None:
        return DASH
    if spec.alternative_units:
        others = ", ".join(alt.unit for alt in spec.alternative_units)
        return f"{spec.unit} (also accepts {others})"
    return spec.unit


def _range(spec: FeatureSpec) -> str:
    if spec.type is FeatureType.CATEGORICAL:
        return "; ".join(f"{c.label} (`{c.code}`)" for c in spec.categories)
    if spec.type is FeatureType.BINARY:
        return "0 = no, 1 = yes"
    lo, hi = spec.minimum, spec.maximum
    if lo is not None and hi is not None:
        return f"{_num(lo)}{EN_DASH}{_num(hi)}"
    if lo is not None:
        return f"≥ {_num(lo)}"
    if hi is not None:
        return f"≤ {_num(hi)}"
    return DASH


def _required(spec: FeatureSpec) -> str:
    if spec.required:
        return "required"
    if spec.missing_handling:
        return f"optional ({spec.missing_handling})"
    return "optional"


def _inputs(manifest: Manifest) -> list[str]:
    rows = [
        (
            spec.label,
            f"`{spec.name}`",
            spec.description,
            spec.type.value,
            _unit(spec),
            _range(spec),
            _required(spec),
            spec.loinc or DASH,
            spec.source,
        )
        for spec in manifest.features
    ]
    header = (
        "Feature",
        "Name",
        "Description",
        "Type",
        "Unit",
        "Plausible range / categories",
        "Required",
        "LOINC",
        "Source mapping",
    )
    return ["## Inputs", "", *_table(header, rows)]


def _factors(manifest: Manifest) -> list[str]:
    assert manifest.validation is not None, "cards are rendered for trained models"
    levels: dict[str, list[str]] = {}
    for sub in manifest.validation.subgroups:
        levels.setdefault(sub.factor, []).append(sub.level)
    lines = ["## Factors", ""]
    if not levels:
        return [*lines, "No subgroup factors were evaluated."]
    lines.append(
        "Performance is reported separately for each level of these factors on the test part "
        "(see *Subgroups* below):"
    )
    lines.append("")
    lines.extend(f"- **{factor}:** {', '.join(values)}" for factor, values in levels.items())
    return lines


def _metrics() -> list[str]:
    lines = ["## Metrics", ""]
    lines.extend(f"- **{name}:** {meaning}" for name, meaning in METRIC_MEANINGS)
    return lines


def _evaluation_data(manifest: Manifest) -> list[str]:
    split, target = manifest.split, manifest.target
    assert split is not None and target is not None, "cards are rendered for trained models"
    grouping = (
        f"grouped by {split.grouped_by} (no group appears in both parts)"
        if split.grouped_by
        else "not grouped"
    )
    return [
        "## Evaluation data",
        "",
        f"- **Split:** {split.method}, seed {split.seed}, test fraction "
        f"{_pct(split.test_fraction)}, {grouping}.",
        f"- **Sizes:** {split.n_train:,} training rows, {split.n_test:,} test rows. The test part "
        "was not used for model selection, fitting or calibration.",
        f"- **Test ids** ({split.id_column}): sorted, one per line, they hash to sha256 "
        f"`{split.test_ids_sha256}`.",
        f"- **Target:** {target.definition} (column `{target.column}`).",
        f"- **Prevalence:** {_pct(target.positive_rate_train)} in the training part, "
        f"{_pct(target.positive_rate_test)} in the test part.",
    ]


def _training_data(manifest: Manifest) -> list[str]:
    ds = manifest.dataset
    assert ds is not None, "cards are rendered for trained models"
    lines = [
        "## Training data",
        "",
        ds.description,
        "",
        f"- **File:** `{ds.path}`, sha256 `{ds.sha256}`.",
        f"- **Rows:** {ds.rows_read:,} read, {ds.rows_used:,} used.",
    ]
    if ds.exclusions:
        lines.extend(["", "**Exclusions:**", "", *_bullets(ds.exclusions)])
    return lines


def _tier_range(tier: Tier) -> str:
    if tier.upper is None:
        return f"≥ {_pct(tier.lower)}"
    if tier.lower <= 0.0:
        return f"< {_pct(tier.upper)}"
    return f"{_pct(tier.lower)} to < {_pct(tier.upper)}"


def _rule_condition(rule: ApplicabilityRule) -> str:
    if rule.kind == "feature_range":
        bounds = []
        if rule.minimum is not None:
            bounds.append(f"{rule.feature} >= {_num(rule.minimum)}")
        if rule.maximum is not None:
            bounds.append(f"{rule.feature} <= {_num(rule.maximum)}")
        return " and ".join(bounds)
    if rule.kind == "context_false":
        return f"context `{rule.context}` not true (not stated: assumed, with a warning)"
    return f"context `{rule.context}` must be true"


def _who_for(manifest: Manifest) -> list[str]:
    """Issue 14: the intended population as rules; a patient failing one gets no score."""
    lines = ["## Who this model is for", ""]
    if not manifest.applicability:
        return [*lines, "No applicability rules were declared."]
    lines += [
        "Every front door (API, batch files, CDS Hooks, page) checks these rules. A patient "
        'failing any of them gets a "not applicable" answer naming the rule and no probability '
        "(an audited research opt-in may still score).",
        "",
        *_table(
            ("Rule", "Checked as", "Source"),
            ((r.description, _rule_condition(r), r.source) for r in manifest.applicability),
        ),
    ]
    return lines


def _tiers_table(manifest: Manifest) -> list[str]:
    assert manifest.validation is not None, "cards are rendered for trained models"
    by_name: dict[str, ThresholdMetrics] = {t.tier: t for t in manifest.validation.tiers}
    rows = []
    for tier in manifest.tiers:
        tm = by_name.get(tier.name)
        rows.append(
            (
                tier.label,
                _tier_range(tier),
                tier.action or DASH,
                _pct_or_dash(tm.sensitivity if tm else None),
                _pct_or_dash(tm.specificity if tm else None),
                _pct_or_dash(tm.ppv if tm else None),
                _pct(tm.flagged_fraction) if tm else DASH,
            )
        )
    return [
        "### Risk tiers",
        "",
        'Sensitivity, specificity and PPV on the test part for the rule "flag if the predicted '
        "probability is at or above the tier's lower bound\", i.e. this tier or higher.",
        "",
        *_table(
            (
                "Tier",
                "Predicted probability",
                "Recommended action",
                "Sensitivity",
                "Specificity",
                "PPV",
                "Flagged",
            ),
            rows,
        ),
        *(
            ["", f"**Borrowed thresholds:** {manifest.tiers_borrowed_from}"]
            if manifest.tiers_borrowed_from
            else []
        ),
    ]


def _subgroup_row(sub: SubgroupMetrics) -> tuple[object, ...]:
    return (
        sub.factor,
        sub.level,
        f"{sub.n:,}",
        f"{sub.positives:,}",
        _auc(sub.auroc) if sub.auroc is not None else NA_SUBGROUP,
        f"{sub.calibration_slope:.2f}" if sub.calibration_slope is not None else DASH,
        f"{_pct(sub.mean_predicted)} / {_pct(sub.observed_rate)}",
        "yes" if sub.reliable else f"no: {sub.concern}",
    )


def _candidate_row(cand: Candidate) -> tuple[object, ...]:
    kind = "XGBoost" if cand.kind == "xgboost" else "logistic regression"
    return (
        kind,
        _params(cand.params),
        f"{cand.cv_auroc_mean:.3f} ± {cand.cv_auroc_std:.3f}",
        "✓" if cand.selected else "",
    )


def _baseline_row(base: Baseline) -> tuple[object, ...]:
    diff = DASH
    if base.auroc_difference_vs_shipped is not None:
        diff = _signed(base.auroc_difference_vs_shipped)
        if base.difference_p_value is not None:
            diff += f" ({_p_value(base.difference_p_value)})"
    return (
        base.name,
        base.description,
        _auc_ci(base.auroc, base.auroc_ci_low, base.auroc_ci_high),
        f"{base.brier:.3f}" if base.brier is not None else DASH,
        diff,
    )


def _bin_range(b: CalibrationBin) -> str:
    if b.lower is None or b.upper is None:
        return DASH
    return f"{_pct(b.lower)} to {_pct(b.upper)}"


def _observed(b: CalibrationBin) -> str:
    if b.observed_ci_low is None or b.observed_ci_high is None:
        return _pct(b.observed_rate)
    return f"{_pct(b.observed_rate)} ({_pct(b.observed_ci_low)} to {_pct(b.observed_ci_high)})"


def _quantitative(manifest: Manifest) -> list[str]:
    val = manifest.validation
    assert val is not None, "cards are rendered for trained models"
    test = val.test
    lines = [
        "## Quantitative analyses",
        "",
        "### Test metrics",
        "",
        f"On the held-out test part: {test.n:,} patients, {test.positives:,} with the outcome "
        f"(prevalence {_pct(test.prevalence)}).",
        "",
        *_table(
            ("Metric", "Value"),
            [
                ("AUROC (95% CI)", _auc_ci(test.auroc, test.auroc_ci_low, test.auroc_ci_high)),
                ("AUPRC", f"{test.auprc:.3f}"),
                ("Brier score", f"{test.brier:.3f}"),
                ("Calibration slope", f"{test.calibration_slope:.2f}"),
                ("Calibration intercept", f"{test.calibration_intercept:.2f}"),
                ("ECE", f"{test.ece:.3f}"),
            ],
        ),
        "",
        *_tiers_table(manifest),
        "",
        "### Calibration",
        "",
    ]
    if test.calibration_bins:
        lines.append(
            "Test patients in equal-sized groups ordered by predicted risk: mean predicted risk "
            "against the observed event rate with its 95% Wilson interval. Each scored result "
            "quotes the row its probability falls in."
        )
        lines.append("")
        lines.extend(
            _table(
                ("Group", "Predicted risk range", "Patients", "Predicted", "Observed (95% CI)"),
                (
                    (
                        i,
                        _bin_range(b),
                        f"{b.n:,}",
                        _pct(b.mean_predicted),
                        _observed(b),
                    )
                    for i, b in enumerate(test.calibration_bins, start=1)
                ),
            )
        )
    else:
        lines.append("No calibration bins were recorded.")
    lines.extend(["", "### Subgroups", ""])
    if val.subgroups:
        lines.extend(
            _table(
                (
                    "Factor",
                    "Level",
                    "n",
                    "Events",
                    "AUROC",
                    "Calibration slope",
                    "Predicted / observed",
                    "Reliable",
                ),
                (_subgroup_row(s) for s in val.subgroups),
            )
        )
    else:
        lines.append("No subgroup analyses were recorded.")
    lines.extend(["", "### Model selection", ""])
    if val.candidates:
        lines.append("Candidates compared by 5-fold cross-validation on the training part.")
        lines.append("")
        lines.extend(
            _table(
                ("Kind", "Parameters", "CV AUROC (mean ± sd)", "Selected"),
                (_candidate_row(c) for c in val.candidates),
            )
        )
    else:
        lines.append("No candidate comparison was recorded.")
    lines.extend(["", "### Baselines", ""])
    if val.baselines:
        lines.append(
            "Simpler or published scores on the same test patients. The difference is the "
            "shipped model's AUROC minus the baseline's (positive: the shipped model "
            "discriminates better), with a paired bootstrap p-value."
        )
        lines.append("")
        lines.extend(
            _table(
                ("Baseline", "Description", "AUROC (95% CI)", "Brier", "Difference vs shipped"),
                (_baseline_row(b) for b in val.baselines),
            )
        )
    else:
        lines.append("No baselines were evaluated.")
    if val.published_reference:
        lines.extend(["", f"**Published reference:** {val.published_reference}"])
    if val.shortfalls:
        lines.extend(["", "### Where this model falls short", "", *_bullets(val.shortfalls)])
    return lines


def render_card(manifest: Manifest) -> str:
    """The Markdown model card of ``manifest``; deterministic, no I/O."""
    sections: list[list[str]] = [
        [f"# {manifest.title} — {manifest.name} {manifest.version}", "", manifest.summary],
        _model_details(manifest),
        _intended_use(manifest),
        _who_for(manifest),
        _inputs(manifest),
        _factors(manifest),
        _metrics(),
        _evaluation_data(manifest),
        _training_data(manifest),
        _quantitative(manifest),
        ["## Ethical considerations", "", *_bullets(manifest.ethical_considerations)],
        ["## Caveats and recommendations", "", *_bullets(manifest.caveats)],
    ]
    return "\n\n".join("\n".join(section) for section in sections) + "\n"
