"""Render an artifact's ``card.md`` from its manifest.

The card is structured per TRIPOD+AI (Collins et al., BMJ 2024;385:e078378: source of data,
participants, outcome, predictors, sample size, missing data, analysis, participant flow and
characteristics, model specification, performance, fairness, limitations) and states the ONC
HTI-1 source attributes for predictive decision support (developer, funding, intended users and
decision role, data provenance and licence, collection dates, fairness, external validation,
update and monitoring). Every section in :data:`REQUIRED_SECTIONS` is always present and never
empty: what the manifest does not hold is written "Not available" with the reason.

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
NA_SUBGROUP = "suppressed (too few events)"
NOT_RECORDED = "not recorded by this artifact (built before the governance fields, 1.3.0)"

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
        "Calibration-in-the-large",
        "The intercept of a logistic recalibration with the slope fixed at 1: 0 is ideal, a "
        "negative value means predicted risks are on average too high, a positive value too "
        "low.",
    ),
    (
        "Observed/expected (O/E)",
        "Observed events divided by the sum of predicted risks; 1 is ideal, below 1 the model "
        "predicts more events than happened.",
    ),
    (
        "Calibration intercept (joint fit)",
        "The intercept of the logistic recalibration fitted jointly with the slope; it depends "
        "on the slope and does not by itself say whether risks are too high or too low (use "
        "calibration-in-the-large for that).",
    ),
    (
        "Net benefit",
        "Decision-curve net benefit of acting at a threshold t: true positives minus false "
        "positives weighted by t/(1-t), per patient; compare it with acting on everyone and on "
        "no one (0).",
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
# Sections (kept from the model-card layout)


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


def _bin_range(b: CalibrationBin) -> str:
    if b.lower is None or b.upper is None:
        return DASH
    return f"{_pct(b.lower)} to {_pct(b.upper)}"


def _observed(b: CalibrationBin) -> str:
    if b.observed_ci_low is None or b.observed_ci_high is None:
        return _pct(b.observed_rate)
    return f"{_pct(b.observed_rate)} ({_pct(b.observed_ci_low)} to {_pct(b.observed_ci_high)})"


def _candidate_row(cand: Candidate) -> tuple[object, ...]:
    kind = "XGBoost" if cand.kind == "xgboost" else "logistic regression"
    return (
        kind,
        _params(cand.params),
        f"{cand.cv_auroc_mean:.3f} ± {cand.cv_auroc_std:.3f}",
        "✓" if cand.selected else "",
    )


# --------------------------------------------------------------------------------------------
# TRIPOD+AI / HTI-1 sections


def _unit_of_rows(manifest: Manifest) -> str:
    """What a row is: an encounter where patients repeat (readmission), else a patient."""
    grouped = manifest.split.grouped_by if manifest.split else None
    return "encounters" if grouped == "patient_nbr" else "patients"


def _not_available(reason: str) -> str:
    return f"Not available: {reason}."


def _governance(manifest: Manifest, field: str) -> str:
    if manifest.governance is None:
        return _not_available(NOT_RECORDED)
    value: str = getattr(manifest.governance, field)
    return value


def _details(manifest: Manifest) -> list[str]:
    use = manifest.clinical_use
    status = use.status.replace("_", " ")
    lines = [
        "## Model details and clinical-use status",
        "",
        f"- **Clinical-use status:** **{status}**. {use.reason}",
        f"- **Developer:** {_governance(manifest, 'developer')}",
        f"- **Contact:** {_governance(manifest, 'contact')}",
        f"- **Funding:** {_governance(manifest, 'funding')}",
        f"- **Model:** {_model_kind(manifest)}; version {manifest.version}.",
        f"- **Hyperparameters:** {_params(manifest.hyperparameters)}.",
        f"- **Created:** {manifest.created_at.isoformat()}.",
        f"- **Code revision:** `{manifest.code_revision}`.",
        f"- **Model file:** `{manifest.model_file}`.",
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
        f"- **Intended users:** {_governance(manifest, 'intended_users')}",
        f"- **Decision role:** {_governance(manifest, 'decision_role')}",
        "",
        "**Out of scope (cautioned uses):**",
        "",
        *_bullets(manifest.out_of_scope),
    ]


def _data_source(manifest: Manifest) -> list[str]:
    ds = manifest.dataset
    assert ds is not None, "cards are rendered for trained models"
    return [
        "## Data source, licence and provenance",
        "",
        ds.description,
        "",
        f"- **Provenance:** {_governance(manifest, 'data_provenance')}",
        f"- **Licence:** {_governance(manifest, 'data_licence')}",
        f"- **Collection dates:** {_governance(manifest, 'data_collection_dates')}",
        f"- **File:** `{ds.path}`, sha256 `{ds.sha256}`.",
    ]


def _participants(manifest: Manifest) -> list[str]:
    ds, split = manifest.dataset, manifest.split
    assert ds is not None and split is not None, "cards are rendered for trained models"
    grouping = (
        f"grouped by {split.grouped_by} (no group appears in both parts)"
        if split.grouped_by
        else "not grouped"
    )
    lines = [
        "## Participants and flow",
        "",
        f"- **Read:** {ds.rows_read:,} rows.",
        "- **Excluded while loading:** " + ("; ".join(ds.exclusions) or "none") + ".",
    ]
    if ds.population_exclusions:
        counted = "; ".join(
            f"{e.rows:,} failing '{e.description}' (rule `{e.rule}`)"
            for e in ds.population_exclusions
        )
        lines.append(f"- **Outside the intended population (excluded):** {counted}.")
    else:
        lines.append(
            "- **Outside the intended population:** "
            + _not_available("this artifact does not count rows excluded by its rules")
        )
    lines += [
        f"- **Used:** {ds.rows_used:,} rows: {split.n_train:,} development, {split.n_test:,} test.",
        f"- **Split:** {split.method}, seed {split.seed}, test fraction "
        f"{_pct(split.test_fraction)}, {grouping}. The test part was not used for model "
        "selection, fitting or calibration.",
        f"- **Test ids** ({split.id_column}): sorted, one per line, they hash to sha256 "
        f"`{split.test_ids_sha256}`.",
    ]
    return lines


def _outcome(manifest: Manifest) -> list[str]:
    target = manifest.target
    assert target is not None, "cards are rendered for trained models"
    return [
        "## Outcome",
        "",
        f"- **Definition:** {target.definition} (column `{target.column}`).",
        f"- **Timing:** {_governance(manifest, 'outcome_timing')}",
        f"- **Prevalence:** {_pct(target.positive_rate_train)} in the development part, "
        f"{_pct(target.positive_rate_test)} in the test part.",
    ]


def _predictors(manifest: Manifest) -> list[str]:
    gaps = [
        f"- **{s.label}:** {s.missing_handling}"
        for s in manifest.features
        if not s.required and s.missing_handling
    ]
    return [
        *_inputs(manifest),
        "",
        "**Missing data:** a required input must be given (the service refuses the request "
        "otherwise); an optional one may be left out:",
        "",
        *(gaps or ["- Every input is required."]),
        *(
            ["", f"**Policy:** {manifest.missing_data_policy}"]
            if manifest.missing_data_policy
            else []
        ),
    ]


def _characteristics(manifest: Manifest) -> list[str]:
    val = manifest.validation
    assert val is not None, "cards are rendered for trained models"
    lines = ["## Participant characteristics", ""]
    if not val.characteristics:
        return [*lines, _not_available("this artifact does not record them")]
    return [
        *lines,
        "Counts (share of the part) unless stated.",
        "",
        *_table(
            ("Characteristic", "Development", "Test"),
            ((c.characteristic, c.development, c.test) for c in val.characteristics),
        ),
    ]


def _sample_size(manifest: Manifest) -> list[str]:
    val, split, target = manifest.validation, manifest.split, manifest.target
    assert val is not None and split is not None and target is not None
    dev_events = round(target.positive_rate_train * split.n_train)
    parameters = len(manifest.columns)
    return [
        "## Sample size and events",
        "",
        f"- **Development:** {split.n_train:,} rows, about {dev_events:,} events; "
        f"{parameters} model columns, so about {dev_events / max(parameters, 1):,.0f} events "
        "per candidate column.",
        f"- **Test:** {val.test.n:,} rows, {val.test.positives:,} events. The AUROC interval's "
        f"width ({val.test.auroc_ci_high - val.test.auroc_ci_low:.3f}) shows what this size "
        "allows.",
        "- No formal sample-size calculation was made: the data set was given.",
    ]


def _analysis(manifest: Manifest) -> list[str]:
    val = manifest.validation
    assert val is not None, "cards are rendered for trained models"
    cal = manifest.calibration
    lines = [
        "## Analytical methods",
        "",
        "- **Model selection:** candidates compared by 5-fold cross-validation on the "
        "development part (table below); the better family was refitted on the whole "
        "development part.",
        (
            "- **Calibration:** Platt (logistic) recalibration of the margin, "
            f"slope {cal.slope:.3f}, intercept {cal.intercept:.3f}, fitted on {cal.fitted_on}."
        ),
        "- **Clinical directions:** every input declares its clinical direction; both model "
        "families are fitted under it (monotone constraints, sign-bounded coefficients).",
        "- **Repeated cross-validation:** "
        + (val.repeated_cv.method + "." if val.repeated_cv else _not_available(NOT_RECORDED)),
        "- **Test part:** " + (val.test.auroc_ci_method or "percentile bootstrap over rows") + ".",
        "",
        *(
            _table(
                ("Kind", "Parameters", "CV AUROC (mean ± sd)", "Selected"),
                (_candidate_row(c) for c in val.candidates),
            )
            if val.candidates
            else [_not_available("no candidate comparison was recorded")]
        ),
        "",
        "**Metrics used:**",
        "",
        *(f"- **{name}:** {meaning}" for name, meaning in METRIC_MEANINGS),
    ]
    return lines


def _full_model(manifest: Manifest) -> list[str]:
    spec = manifest.model_specification
    lines = ["## Full model", ""]
    if spec is not None:
        lines += [
            f"logit(p_raw) = intercept + sum of coefficient {TIMES} value (raw units; a missing "
            "optional value takes the training mean), then the Platt calibration above.",
            "",
            *_table(
                ("Column", "Coefficient", "Training mean"),
                [
                    ("(intercept)", f"{spec.intercept:.6g}", DASH),
                    *(
                        (name, f"{coef:.6g}", f"{spec.means.get(name, float('nan')):.6g}")
                        for name, coef in spec.coefficients.items()
                    ),
                ],
            ),
        ]
        return lines
    if manifest.kind == "xgboost":
        return [
            *lines,
            f"{_model_kind(manifest)}: the complete forest is the model file "
            f"`{manifest.model_file}` (XGBoost's documented JSON format, sha256 in the "
            "manifest); too long to print here. Each score's explanation is exact "
            "(TreeSHAP), so the model's reasoning for any patient can be read in full.",
        ]
    return [*lines, _not_available("this artifact does not record its coefficients")]


def _performance(manifest: Manifest) -> list[str]:
    val = manifest.validation
    assert val is not None, "cards are rendered for trained models"
    test = val.test

    def opt(value: float | None, fmt: str) -> str:
        return _not_available(NOT_RECORDED) if value is None else format(value, fmt)

    lines = [
        "## Performance",
        "",
        "### Held-out test part",
        "",
        f"{test.n:,} {_unit_of_rows(manifest)}, {test.positives:,} with the outcome "
        f"(prevalence {_pct(test.prevalence)}).",
        "",
        *_table(
            ("Metric", "Value"),
            [
                ("AUROC (95% CI)", _auc_ci(test.auroc, test.auroc_ci_low, test.auroc_ci_high)),
                ("AUPRC", f"{test.auprc:.3f}"),
                ("Brier score", f"{test.brier:.3f}"),
                ("Calibration-in-the-large", opt(test.calibration_in_the_large, "+.3f")),
                ("Calibration slope", f"{test.calibration_slope:.2f}"),
                ("Observed/expected", opt(test.observed_expected, ".3f")),
                (
                    "Calibration intercept (joint fit with slope)",
                    f"{test.calibration_intercept:.2f}",
                ),
                ("ECE", f"{test.ece:.3f}"),
            ],
        ),
        "",
        "### Repeated cross-validation",
        "",
    ]
    cv = val.repeated_cv
    if cv is None:
        lines.append(_not_available(NOT_RECORDED))
    else:
        lines += [
            f"{cv.method}. The single test figure above is one draw; this is the spread.",
            "",
            *_table(
                ("Metric", "Mean ± SD"),
                [
                    ("AUROC", f"{cv.auroc_mean:.3f} ± {cv.auroc_sd:.3f}"),
                    (
                        "Calibration-in-the-large",
                        f"{cv.calibration_in_the_large_mean:+.3f} ± "
                        f"{cv.calibration_in_the_large_sd:.3f}",
                    ),
                    (
                        "Calibration slope",
                        f"{cv.calibration_slope_mean:.2f} ± {cv.calibration_slope_sd:.2f}",
                    ),
                    (
                        "Observed/expected",
                        f"{cv.observed_expected_mean:.3f} ± {cv.observed_expected_sd:.3f}",
                    ),
                ],
            ),
        ]
    lines += ["", "### Temporal validation", ""]
    temporal = val.temporal
    if temporal is None:
        lines.append(_not_available("the data hold no time order usable for a temporal split"))
    else:
        lines += [
            f"{temporal.method}; {temporal.n_train:,} training encounters.",
            "",
            *_table(
                ("Cohort", "n", "Events", "AUROC (95% CI)", "CITL", "Slope", "O/E"),
                (
                    (
                        f"{c.name}: {c.description}",
                        f"{c.n:,}",
                        f"{c.positives:,}",
                        _auc_ci(c.auroc, c.auroc_ci_low, c.auroc_ci_high),
                        f"{c.calibration_in_the_large:+.2f}",
                        f"{c.calibration_slope:.2f}",
                        f"{c.observed_expected:.2f}",
                    )
                    for c in temporal.cohorts
                ),
            ),
        ]
    lines += _missing_patterns(manifest)
    lines += ["", *_tiers_table(manifest), "", "### Calibration curve", ""]
    if test.calibration_bins:
        lines += [
            f"Test {_unit_of_rows(manifest)} in equal-sized groups ordered by predicted risk: "
            "mean predicted risk "
            "against the observed event rate with its 95% Wilson interval. Each scored result "
            "quotes the row its probability falls in.",
            "",
            *_table(
                ("Group", "Predicted risk range", "Patients", "Predicted", "Observed (95% CI)"),
                (
                    (i, _bin_range(b), f"{b.n:,}", _pct(b.mean_predicted), _observed(b))
                    for i, b in enumerate(test.calibration_bins, start=1)
                ),
            ),
        ]
    else:
        lines.append(_not_available("no calibration bins were recorded"))
    if val.published_reference:
        lines += ["", f"**Published reference:** {val.published_reference}"]
    return lines


def _missing_patterns(manifest: Manifest) -> list[str]:
    """The test part again with the inputs a chart lacks unknown, beside every input known."""
    val = manifest.validation
    assert val is not None, "cards are rendered for trained models"
    if not val.missing_patterns:
        return []
    full = val.test
    lines = ["", "### With the inputs a chart lacks", ""]
    for pattern in val.missing_patterns:
        test = pattern.test
        unknown = ", ".join(manifest.feature(n).label.lower() for n in pattern.missing)
        rows: list[tuple[object, ...]] = [
            (
                "AUROC (95% CI)",
                _auc_ci(full.auroc, full.auroc_ci_low, full.auroc_ci_high),
                _auc_ci(test.auroc, test.auroc_ci_low, test.auroc_ci_high),
            ),
            ("AUPRC", f"{full.auprc:.3f}", f"{test.auprc:.3f}"),
            ("Brier score", f"{full.brier:.3f}", f"{test.brier:.3f}"),
            (
                "Calibration-in-the-large",
                _signed_or_dash(full.calibration_in_the_large),
                _signed_or_dash(test.calibration_in_the_large),
            ),
            ("Calibration slope", f"{full.calibration_slope:.2f}", f"{test.calibration_slope:.2f}"),
            (
                "Observed/expected",
                _ratio_or_dash(full.observed_expected),
                _ratio_or_dash(test.observed_expected),
            ),
        ]
        known = {t.tier: t for t in val.tiers}
        labels = {t.name: t.label for t in manifest.tiers}
        for tm in pattern.tiers:
            k = known.get(tm.tier)
            label = labels.get(tm.tier, tm.tier)
            rows += [
                (
                    f"{label} or higher: flagged",
                    _pct(k.flagged_fraction) if k else DASH,
                    _pct(tm.flagged_fraction),
                ),
                (
                    f"{label} or higher: sensitivity",
                    _pct_or_dash(k.sensitivity if k else None),
                    _pct_or_dash(tm.sensitivity),
                ),
                (
                    f"{label} or higher: PPV",
                    _pct_or_dash(k.ppv if k else None),
                    _pct_or_dash(tm.ppv),
                ),
            ]
        lines += [
            f"{pattern.description} The same {test.n:,} test "
            f"{_unit_of_rows(manifest)} scored with {unknown} unknown on every row; the test "
            "part was never used in training, with or without them.",
            "",
            *_table(("Metric", "Every input known", f"{pattern.name.capitalize()}"), rows),
        ]
        if pattern.reference_auroc is not None:
            lines += [
                "",
                f"A forest refitted on the known inputs alone reaches AUROC "
                f"{_auc(pattern.reference_auroc)} on the same rows: the most that leaving "
                "these answers unknown could recover.",
            ]
    return lines


def _signed_or_dash(value: float | None) -> str:
    return DASH if value is None else f"{value:+.3f}"


def _ratio_or_dash(value: float | None) -> str:
    return DASH if value is None else f"{value:.3f}"


def _net_benefit(tm: ThresholdMetrics | None) -> str:
    if tm is None or tm.net_benefit is None or tm.net_benefit_treat_all is None:
        return DASH
    return f"{tm.net_benefit:.4f} (all: {tm.net_benefit_treat_all:.4f})"


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
                _net_benefit(tm),
            )
        )
    return [
        "### Risk tiers and net benefit",
        "",
        'On the test part, for the rule "act if the predicted probability is at or above the '
        "tier's lower bound\" (this tier or higher). Net benefit at that threshold beside acting "
        "on everyone (acting on no one: 0); higher is better.",
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
                "Net benefit (treat all)",
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
    if sub.suppressed or sub.auroc is None:
        auroc = NA_SUBGROUP
    elif sub.auroc_ci_low is not None and sub.auroc_ci_high is not None:
        auroc = _auc_ci(sub.auroc, sub.auroc_ci_low, sub.auroc_ci_high)
    else:
        auroc = _auc(sub.auroc)
    return (
        sub.factor.replace("_", " ") + (" (audit only)" if sub.audit_only else ""),
        sub.level,
        f"{sub.n:,}",
        f"{sub.positives:,}",
        auroc,
        f"{sub.calibration_in_the_large:+.2f}"
        if sub.calibration_in_the_large is not None
        else DASH,
        f"{sub.calibration_slope:.2f}" if sub.calibration_slope is not None else DASH,
        f"{sub.observed_expected:.2f}" if sub.observed_expected is not None else DASH,
        f"{_pct(sub.mean_predicted)} / {_pct(sub.observed_rate)}",
        "yes" if sub.reliable else f"no: {sub.concern}",
    )


def _fairness(manifest: Manifest) -> list[str]:
    val = manifest.validation
    assert val is not None, "cards are rendered for trained models"
    minimum = (
        f"fewer than {val.subgroup_min_events} events or non-events (or fewer than 30 "
        f"{_unit_of_rows(manifest)})"
        if val.subgroup_min_events
        else "too few events"
    )
    lines = [
        "## Fairness and subgroups",
        "",
        f"**Approach:** {_governance(manifest, 'fairness_approach')}",
        "",
        f"Per subgroup of the test part; figures are withheld (suppressed) with {minimum}. "
        "AUROC with its 95% bootstrap interval; CITL = calibration-in-the-large. Age bands are "
        "judged by their calibration, not by their AUROC: age carries much of the "
        "discrimination, so a lower AUROC within a band is expected. An 'audit only' factor is "
        "not a model input.",
        "",
    ]
    if not val.subgroups:
        return [*lines, _not_available("no subgroup analyses were recorded")]
    return [
        *lines,
        *_table(
            (
                "Factor",
                "Level",
                "n",
                "Events",
                "AUROC (95% CI)",
                "CITL",
                "Slope",
                "O/E",
                "Predicted / observed",
                "Reliable",
            ),
            (_subgroup_row(s) for s in val.subgroups),
        ),
    ]


def _baseline_row(base: Baseline) -> tuple[object, ...]:
    diff = DASH
    if base.auroc_difference_vs_shipped is not None:
        diff = _signed(base.auroc_difference_vs_shipped)
        if base.difference_p_value is not None:
            diff += f" ({_p_value(base.difference_p_value)})"
    cv = (
        f"{base.cv_auroc_mean:.3f} ± {base.cv_auroc_sd or 0:.3f}"
        if base.cv_auroc_mean is not None
        else DASH
    )
    return (
        base.name,
        base.description,
        _auc_ci(base.auroc, base.auroc_ci_low, base.auroc_ci_high),
        cv,
        f"{base.brier:.3f}" if base.brier is not None else "not a probability",
        diff,
    )


def _baselines(manifest: Manifest) -> list[str]:
    val = manifest.validation
    assert val is not None, "cards are rendered for trained models"
    lines = ["## Baselines", ""]
    if not val.baselines:
        return [*lines, _not_available("no baseline was evaluated")]
    shipped_cv = (
        f" The shipped recipe's repeated-CV AUROC is {val.repeated_cv.auroc_mean:.3f} ± "
        f"{val.repeated_cv.auroc_sd:.3f}."
        if val.repeated_cv
        else ""
    )
    return [
        *lines,
        f"Established scores and the other candidate family on the same test "
        f"{_unit_of_rows(manifest)} (and "
        "the same repeated-CV folds). The difference is the shipped model's AUROC minus the "
        "baseline's on the test part (positive: the shipped model discriminates better), with "
        "a paired bootstrap p-value." + shipped_cv,
        "",
        *_table(
            (
                "Baseline",
                "Definition and what was approximated",
                "Test AUROC (95% CI)",
                "CV AUROC (mean ± SD)",
                "Brier",
                "Difference vs shipped",
            ),
            (_baseline_row(b) for b in val.baselines),
        ),
    ]


def _limitations(manifest: Manifest) -> list[str]:
    val = manifest.validation
    assert val is not None, "cards are rendered for trained models"
    return [
        "## Known limitations",
        "",
        *_bullets([*val.shortfalls, *manifest.caveats], empty="None recorded."),
    ]


def render_card(manifest: Manifest) -> str:
    """The Markdown model card of ``manifest``; deterministic, no I/O."""
    sections: list[list[str]] = [
        [f"# {manifest.title} — {manifest.name} {manifest.version}", "", manifest.summary],
        _details(manifest),
        _intended_use(manifest),
        _who_for(manifest),
        _data_source(manifest),
        _participants(manifest),
        _outcome(manifest),
        _predictors(manifest),
        _characteristics(manifest),
        _sample_size(manifest),
        _analysis(manifest),
        _full_model(manifest),
        _performance(manifest),
        _fairness(manifest),
        _baselines(manifest),
        ["## Explanations", "", _explanation(manifest)],
        _limitations(manifest),
        [
            "## External validation",
            "",
            _governance(manifest, "external_validation"),
        ],
        ["## Ethical considerations", "", *_bullets(manifest.ethical_considerations)],
        [
            "## Update and monitoring plan",
            "",
            f"- **Updates:** {_governance(manifest, 'update_plan')}",
            f"- **Monitoring:** {_governance(manifest, 'monitoring_plan')}",
        ],
    ]
    return "\n\n".join("\n".join(section) for section in sections) + "\n"


REQUIRED_SECTIONS: tuple[str, ...] = (
    "## Model details and clinical-use status",
    "## Intended use",
    "## Who this model is for",
    "## Data source, licence and provenance",
    "## Participants and flow",
    "## Outcome",
    "## Inputs",
    "## Participant characteristics",
    "## Sample size and events",
    "## Analytical methods",
    "## Full model",
    "## Performance",
    "### Held-out test part",
    "### Repeated cross-validation",
    "### Temporal validation",
    "### Risk tiers and net benefit",
    "### Calibration curve",
    "## Fairness and subgroups",
    "## Baselines",
    "## Explanations",
    "## Known limitations",
    "## External validation",
    "## Ethical considerations",
    "## Update and monitoring plan",
)
"""Headings every card has, in this order, each followed by content (TRIPOD+AI, HTI-1)."""
