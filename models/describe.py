"""Clinical language: the one place that says how a value, a risk, a change and a contribution
read to a clinician.

Every front door (REST results, CDS Hooks cards, what-if curves, files) words values through
this module, so "Female" (never "Male sex: no"), "Self-rated health: Fair" (never "4"),
"20 cigarettes per day" (never "Cigarettes per day 20 cigarettes/day"), "168 mmHg" (never
"167.676 mmHg") and changes in percentage points (never log-odds) are decided once.

Labels come from the manifest (so from the training configs): feature labels, category labels,
and ``value_labels`` for binary and ordinal values. A feature whose ``direction`` is 0 has no
clinical direction, so its effect is worded as an association of the training data, never as
"raised/lowered the risk".
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

from models.manifest import FeatureSpec, FeatureType

Value = float | str | None
Sign = Literal[-1, 0, 1]


class UnitStyle(NamedTuple):
    text: str
    """How the unit reads after a number ("" = a bare count)."""
    decimals: int
    """Decimals a clinician records for it."""
    space: bool = True


# Units as the manifests spell them -> how they read and how they are rounded.
UNITS: dict[str, UnitStyle] = {
    "mmHg": UnitStyle("mmHg", 0),
    "mg/dL": UnitStyle("mg/dL", 0),
    "mmol/L": UnitStyle("mmol/L", 1),
    "kg/m2": UnitStyle("kg/m²", 1),
    "years": UnitStyle("years", 0),
    "days": UnitStyle("days", 0),
    "cigarettes/day": UnitStyle("cigarettes per day", 0),
    "beats/min": UnitStyle("beats per minute", 0),
    "count": UnitStyle("", 0),
    "%": UnitStyle("%", 1, space=False),
}
# A unit the table does not know keeps its spelling, with up to one decimal.
DEFAULT_DECIMALS = 1


def unit_style(unit: str | None) -> UnitStyle:
    if unit is None:
        return UnitStyle("", DEFAULT_DECIMALS)
    return UNITS.get(unit, UnitStyle(unit, DEFAULT_DECIMALS))


def number(value: float, decimals: int) -> str:
    """Rounded for the unit; -0 reads as 0."""
    text = f"{round(float(value), decimals) + 0.0:.{decimals}f}"
    return "0" if text in ("-0", "-0.0") else text


def quantity(value: float, unit: str | None) -> str:
    """ "168 mmHg", "43.1 kg/m²", "20 cigarettes per day", "3" (a count)."""
    style = unit_style(unit)
    shown = number(value, style.decimals)
    if not style.text:
        return shown
    return f"{shown}{' ' if style.space else ''}{style.text}"


def value_key(value: float | str) -> str:
    """The manifest's key for a binary/ordinal value: 1.0 -> "1"."""
    if isinstance(value, str):
        return value
    return f"{float(value):g}"


def value_text(spec: FeatureSpec, value: Value) -> str:
    """The value alone, as a chart would show it: "Female", "Fair", "above 8%", "168 mmHg"."""
    if value is None:
        return "not known"
    if spec.type is FeatureType.CATEGORICAL:
        return next((c.label for c in spec.categories if c.code == value), str(value))
    if spec.type in (FeatureType.BINARY, FeatureType.ORDINAL):
        label = spec.value_labels.get(value_key(value))
        if label is not None:
            return label
        if spec.type is FeatureType.BINARY:
            return "yes" if float(value) == 1.0 else "no"
        return number(float(value), 0)
    return quantity(float(value), spec.unit)


def describe_value(spec: FeatureSpec, value: Value) -> str:
    """The value with what it is: "Female", "Self-rated health: Fair", "Systolic BP 168 mmHg",
    "20 cigarettes per day", "Poor mental health days: 3", "Glucose not known"."""
    if value is None:
        return f"{spec.label} not known"
    shown = value_text(spec, value)
    if spec.type is FeatureType.BINARY:
        # A binary value label already names the finding ("Current smoker", "Female").
        return shown if spec.value_labels else f"{spec.label}: {shown}"
    if spec.type in (FeatureType.CATEGORICAL, FeatureType.ORDINAL):
        return f"{spec.label}: {shown}"
    style = unit_style(spec.unit)
    label = spec.label.lower()
    if style.text and label == style.text.lower():
        return shown  # "20 cigarettes per day", not "Cigarettes per day 20 cigarettes per day"
    if style.text and label.endswith(style.text.lower()):
        return f"{spec.label}: {number(float(value), style.decimals)}"  # "... days: 3"
    if not style.text:
        return f"{spec.label}: {shown}"
    return f"{spec.label} {shown}"


def effect_words(sign: int, direction: int) -> str:
    """How a contribution of ``sign`` reads for a feature of declared ``direction``."""
    if sign == 0:
        return "no effect on the predicted risk"
    if direction == 0:
        higher = "higher" if sign > 0 else "lower"
        return f"is associated with {higher} predicted risk in the training data"
    return "raised the predicted risk" if sign > 0 else "lowered the predicted risk"


def contribution_text(spec: FeatureSpec, value: Value, sign: int) -> str:
    """ "Systolic BP 168 mmHg raised the predicted risk"; for a feature without a clinical
    direction, "Heart rate 80 beats per minute is associated with higher predicted risk in the
    training data"."""
    described = describe_value(spec, value)
    if sign == 0:
        return f"{described}: no effect on the predicted risk"
    if value is None:
        return unknown_effect_text(spec, sign)
    return f"{described} {effect_words(sign, spec.direction)}"


def unknown_effect_text(spec: FeatureSpec, sign: int) -> str:
    """What "not known" did in the model, worded so it never reads as an effect of the
    patient's actual value (which nobody knows): "Physically active not known: in this model an
    unrecorded value goes with higher predicted risk (not an effect of the patient's own value)".
    """
    higher = "higher" if sign > 0 else "lower"
    return (
        f"{spec.label} not known: in this model an unrecorded value goes with {higher} "
        "predicted risk (not an effect of the patient's own value)"
    )


def others_text(count: int, sign: int) -> str:
    """The remainder of a top-k explanation, worded without claiming a cause."""
    inputs = "input" if count == 1 else "inputs"
    if sign == 0:
        return f"{count} other {inputs} together: no effect on the predicted risk"
    higher = "higher" if sign > 0 else "lower"
    return f"{count} other {inputs} together go with {higher} predicted risk"


def probability_text(probability: float) -> str:
    """A risk as a clinician reads it: "12.3%"; below 0.1% as "<0.1%"."""
    if probability < 0.001:
        return "<0.1%"
    return f"{probability * 100:.1f}%"


def points_change(probability: float, contribution: float) -> float:
    """Percentage points this contribution adds to ``probability``: the risk with it minus the
    risk without it (the other inputs unchanged), on the probability scale clinicians read."""
    p = min(max(probability, 1e-12), 1 - 1e-12)
    log_odds = math.log(p / (1 - p))
    without = 1.0 / (1.0 + math.exp(-(log_odds - contribution)))
    return (probability - without) * 100.0


def points_text(points: float) -> str:
    """ "+3.2 percentage points", "-0.4 percentage points", "<0.1 percentage points"."""
    if abs(points) < 0.05:
        return "<0.1 percentage points"
    return f"{points:+.1f} percentage points"


def change_text(before: float, after: float) -> str:
    """A what-if change: "from 18.2% to 12.9% (-5.3 percentage points)"."""
    return (
        f"from {probability_text(before)} to {probability_text(after)} "
        f"({points_text((after - before) * 100.0)})"
    )


def missing_text(spec: FeatureSpec, handling: str | None) -> str:
    """Why an unknown value still lets the model score, in clinical words."""
    return f"{spec.label} not known: {handling or 'the model scores without it'}"
