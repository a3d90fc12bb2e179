"""Published risk equations as a model kind (``equation``): parsed strictly, scored exactly.

An equation artifact holds the equation as data (``equation.json``, listed and hashed in the
manifest like every artifact file): its form, one coefficient set per variant (sex- or
race-specific equations are variants selected by the values of "selector" columns), and a
reference patient. Nothing is fitted here; the numbers are the published ones, with the citation
and the provenance of every constant in the file itself.

The scale of the explanation is the equation's own linear scale, shifted so that one mapping to
probability holds for every variant:

* ``form = "logistic"``: ``z = intercept_v + sum(beta * term)``, the log-odds;
  ``p = 1 / (1 + exp(-z))``.
* ``form = "cox"``: ``z = ln(-ln S0_v) + sum(beta * term) - mean_v``, the log cumulative hazard
  at the horizon (the Cox linear predictor centred on the variant's mean and shifted by its
  baseline survival); ``p = 1 - exp(-exp(z))``, which is ``1 - S0_v ** exp(lp - mean_v)``.

Attribution (exact: ``base + sum(contributions) == z`` for every patient):

* ``base`` is ``z`` of the reference patient in the reference variant.
* Each term contributes ``beta * (term(x) - term(x_ref))``. A term of one input goes to that input.
  A term of several inputs (an interaction such as ln(age) x ln(total cholesterol), or treated
  SBP = bp_treated x ln(SBP)) is split by the Shapley rule against the reference patient: each
  input gets its own effect with the others at their reference values, and what is left (the
  pure interaction) is split equally between the interacting inputs.
* The change of variant (e.g. the male equation instead of the female one), evaluated at the
  reference patient, is split equally between the selector inputs whose value differs from the
  reference patient's.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Float = npt.NDArray[np.float64]
FORMAT = "clinrisk-equation"
FORMAT_VERSION = 1
Transform = Literal["identity", "ln", "min", "max", "one_minus"]
TRANSFORMS: tuple[Transform, ...] = ("identity", "ln", "min", "max", "one_minus")
Form = Literal["cox", "logistic"]
COX_MAPPING = "p = 1 - exp(-exp(z)), z = ln(-ln S0) + linear predictor - mean (Cox model)"
LOGISTIC_MAPPING = "p = 1 / (1 + exp(-z)), z = log-odds (logistic model)"


class EquationError(ValueError):
    """The equation document is malformed; the message names where."""


@dataclass(frozen=True)
class Factor:
    """``(g(x[column]) - shift) / scale`` with ``g`` the transform (min/max against ``knot``)."""

    column: str
    transform: Transform
    knot: float | None
    shift: float
    scale: float

    def apply(self, x: Float) -> Float:
        if self.transform == "ln":
            g: Float = np.log(x)
        elif self.transform == "min":
            g = np.minimum(x, float(self.knot or 0.0))
        elif self.transform == "max":
            g = np.maximum(x, float(self.knot or 0.0))
        elif self.transform == "one_minus":
            g = 1.0 - x
        else:
            g = x
        out: Float = (g - self.shift) / self.scale
        return out


@dataclass(frozen=True)
class Term:
    name: str
    coefficient: float
    factors: tuple[Factor, ...]


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    when: dict[str, float]
    offset: float
    """``ln(-ln S0) - mean`` (cox) or the intercept (logistic)."""
    terms: tuple[Term, ...]
    constants: dict[str, float]
    """The published constants as given (baseline_survival, mean_linear_predictor, intercept)."""


@dataclass(frozen=True)
class Equation:
    name: str
    form: Form
    outcome: str
    horizon_years: float
    citation: str
    provenance: str
    selectors: tuple[str, ...]
    reference: dict[str, float]
    reference_variant: str
    variants: tuple[Variant, ...]
    units: dict[str, str]

    @property
    def mapping(self) -> str:
        return COX_MAPPING if self.form == "cox" else LOGISTIC_MAPPING

    @property
    def scale(self) -> str:
        return "log_cumulative_hazard" if self.form == "cox" else "log_odds"

    @property
    def columns(self) -> set[str]:
        used = {f.column for v in self.variants for t in v.terms for f in t.factors}
        return used | set(self.selectors)


def inverse_link(form: Form, z: Float) -> Float:
    """The equation's probability from its linear scale ``z``."""
    if form == "cox":
        out: Float = -np.expm1(-np.exp(z))
    else:
        out = 1.0 / (1.0 + np.exp(-z))
    return out


def link(form: Form, p: float) -> float:
    """Inverse of :func:`inverse_link` (for tests and cards)."""
    if form == "cox":
        return math.log(-math.log1p(-p))
    return math.log(p / (1.0 - p))


# -- strict parsing ------------------------------------------------------------------------------


def _obj(
    value: Any, where: str, keys: set[str], optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EquationError(f"{where}: expected an object")
    missing = keys - value.keys()
    if missing:
        raise EquationError(f"{where}: missing {sorted(missing)}")
    unknown = value.keys() - keys - optional
    if unknown:
        raise EquationError(f"{where}: unknown keys {sorted(unknown)}")
    return value


def _num(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise EquationError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise EquationError(f"{where}: expected a non-empty string")
    return value


def _factor(raw: Any, where: str) -> Factor:
    data = _obj(raw, where, {"column", "transform"}, frozenset({"knot", "shift", "scale"}))
    transform = data["transform"]
    if transform not in TRANSFORMS:
        raise EquationError(f"{where}.transform: {transform!r} is not one of {TRANSFORMS}")
    knot = data.get("knot")
    if (transform in ("min", "max")) != (knot is not None):
        raise EquationError(f"{where}: a knot is required for min/max and only for them")
    scale = _num(data.get("scale", 1.0), f"{where}.scale")
    if scale == 0.0:
        raise EquationError(f"{where}.scale: must not be 0")
    return Factor(
        column=_str(data["column"], f"{where}.column"),
        transform=transform,
        knot=None if knot is None else _num(knot, f"{where}.knot"),
        shift=_num(data.get("shift", 0.0), f"{where}.shift"),
        scale=scale,
    )


def _variant(raw: Any, where: str, form: Form) -> Variant:
    constants_keys = (
        {"baseline_survival", "mean_linear_predictor"} if form == "cox" else {"intercept"}
    )
    data = _obj(raw, where, {"name", "label", "when", "terms"} | constants_keys)
    constants = {k: _num(data[k], f"{where}.{k}") for k in sorted(constants_keys)}
    if form == "cox":
        s0 = constants["baseline_survival"]
        if not 0.0 < s0 < 1.0:
            raise EquationError(f"{where}.baseline_survival: must be in (0, 1)")
        offset = math.log(-math.log(s0)) - constants["mean_linear_predictor"]
    else:
        offset = constants["intercept"]
    when = data["when"]
    if not isinstance(when, dict):
        raise EquationError(f"{where}.when: expected an object")
    terms: list[Term] = []
    if not isinstance(data["terms"], list) or not data["terms"]:
        raise EquationError(f"{where}.terms: expected a non-empty list")
    for i, term_raw in enumerate(data["terms"]):
        tw = f"{where}.terms[{i}]"
        term = _obj(term_raw, tw, {"name", "coefficient", "factors"})
        if not isinstance(term["factors"], list) or not term["factors"]:
            raise EquationError(f"{tw}.factors: expected a non-empty list")
        terms.append(
            Term(
                name=_str(term["name"], f"{tw}.name"),
                coefficient=_num(term["coefficient"], f"{tw}.coefficient"),
                factors=tuple(
                    _factor(f, f"{tw}.factors[{j}]") for j, f in enumerate(term["factors"])
                ),
            )
        )
    return Variant(
        name=_str(data["name"], f"{where}.name"),
        label=_str(data["label"], f"{where}.label"),
        when={str(k): _num(v, f"{where}.when.{k}") for k, v in when.items()},
        offset=offset,
        terms=tuple(terms),
        constants=constants,
    )


def parse_equation(content: bytes) -> Equation:
    """Parse an ``equation.json`` document strictly (unknown keys, wrong types: refused)."""
    try:
        raw = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EquationError(f"not JSON: {exc}") from None
    data = _obj(
        raw,
        "equation",
        {
            "format",
            "format_version",
            "name",
            "form",
            "outcome",
            "horizon_years",
            "citation",
            "provenance",
            "selectors",
            "reference",
            "reference_variant",
            "variants",
            "units",
            "attribution",
        },
    )
    if data["format"] != FORMAT or data["format_version"] != FORMAT_VERSION:
        raise EquationError(f"equation: format must be {FORMAT!r} version {FORMAT_VERSION}")
    form = data["form"]
    if form not in ("cox", "logistic"):
        raise EquationError(f"equation.form: {form!r} is not 'cox' or 'logistic'")
    selectors = data["selectors"]
    if not isinstance(selectors, list) or not all(isinstance(s, str) for s in selectors):
        raise EquationError("equation.selectors: expected a list of column names")
    reference = data["reference"]
    if not isinstance(reference, dict):
        raise EquationError("equation.reference: expected an object")
    units = data["units"]
    if not isinstance(units, dict) or not all(isinstance(v, str) for v in units.values()):
        raise EquationError("equation.units: expected an object of strings")
    if not isinstance(data["variants"], list) or not data["variants"]:
        raise EquationError("equation.variants: expected a non-empty list")
    variants = tuple(
        _variant(v, f"equation.variants[{i}]", form) for i, v in enumerate(data["variants"])
    )
    equation = Equation(
        name=_str(data["name"], "equation.name"),
        form=form,
        outcome=_str(data["outcome"], "equation.outcome"),
        horizon_years=_num(data["horizon_years"], "equation.horizon_years"),
        citation=_str(data["citation"], "equation.citation"),
        provenance=_str(data["provenance"], "equation.provenance"),
        selectors=tuple(selectors),
        reference={str(k): _num(v, f"equation.reference.{k}") for k, v in reference.items()},
        reference_variant=_str(data["reference_variant"], "equation.reference_variant"),
        variants=variants,
        units={str(k): str(v) for k, v in units.items()},
    )
    _check(equation)
    return equation


def _check(eq: Equation) -> None:
    names = [v.name for v in eq.variants]
    if len(set(names)) != len(names):
        raise EquationError("equation.variants: names must be unique")
    missing = eq.columns - set(eq.reference)
    if missing:
        raise EquationError(f"equation.reference: no reference value for {sorted(missing)}")
    for v in eq.variants:
        if set(v.when) - set(eq.selectors):
            raise EquationError(f"variant {v.name!r}: 'when' names a column that is no selector")
    ref = np.array([[eq.reference[c] for c in eq.selectors]], dtype=np.float64)
    chosen = select_variants(eq, ref, list(eq.selectors))
    if eq.variants[int(chosen[0])].name != eq.reference_variant:
        raise EquationError("equation.reference: the reference patient selects another variant")


def select_variants(eq: Equation, matrix: Float, columns: list[str]) -> npt.NDArray[np.intp]:
    """Index of the first variant whose ``when`` matches each row (every row must match one)."""
    chosen = np.full(matrix.shape[0], -1, dtype=np.intp)
    for i, variant in enumerate(eq.variants):
        match = np.ones(matrix.shape[0], dtype=np.bool_)
        for column, value in variant.when.items():
            match &= matrix[:, columns.index(column)] == value
        chosen = np.where((chosen < 0) & match, i, chosen)
    if (chosen < 0).any():
        raise EquationError("a row matches no variant of the equation")
    return chosen


# -- the scoring core's explainer ----------------------------------------------------------------


class EquationExplainer:
    """Exact contributions of each input to the equation's scale ``z`` (see the module doc).

    Works on the model's column matrix (manifest column order); each feature's contribution is
    placed on its first column, so the scoring core's column-to-feature sum gives it unchanged.
    """

    def __init__(self, equation: Equation, columns: list[str], column_features: list[str]) -> None:
        unknown = equation.columns - set(columns)
        if unknown:
            raise EquationError(f"equation uses columns the manifest lacks: {sorted(unknown)}")
        self.equation = equation
        self.columns = columns
        self.column_features = column_features
        features = list(dict.fromkeys(column_features))
        # first column of each feature: where its contribution is put
        self._feature_slot = {f: column_features.index(f) for f in features}
        self._ref = np.array([equation.reference.get(c, 0.0) for c in columns], dtype=np.float64)
        ref_variant = next(v for v in equation.variants if v.name == equation.reference_variant)
        self._base = ref_variant.offset + math.fsum(
            t.coefficient * self._term_value_ref(t) for t in ref_variant.terms
        )
        # each variant's value at the reference patient, relative to the base
        self._variant_shift = [
            v.offset
            + math.fsum(t.coefficient * self._term_value_ref(t) for t in v.terms)
            - self._base
            for v in equation.variants
        ]

    @property
    def method(self) -> Literal["equation"]:
        return "equation"

    @property
    def base_margin(self) -> float:
        return self._base

    def _term_value_ref(self, term: Term) -> float:
        value = 1.0
        for f in term.factors:
            value *= float(f.apply(np.array([self.equation.reference[f.column]]))[0])
        return value

    def _factor_values(self, factor: Factor, matrix: Float) -> tuple[Float, float]:
        j = self.columns.index(factor.column)
        patient = factor.apply(matrix[:, j])
        reference = float(factor.apply(self._ref[j : j + 1])[0])
        return patient, reference

    def linear(self, matrix: Float) -> Float:
        """``z`` computed directly from the equation (no attribution): the check of exactness."""
        chosen = select_variants(self.equation, matrix, self.columns)
        z = np.zeros(matrix.shape[0], dtype=np.float64)
        for i, variant in enumerate(self.equation.variants):
            rows = chosen == i
            if not rows.any():
                continue
            sub = matrix[rows]
            total = np.full(sub.shape[0], variant.offset)
            for term in variant.terms:
                value = np.ones(sub.shape[0])
                for f in term.factors:
                    value = value * f.apply(sub[:, self.columns.index(f.column)])
                total = total + term.coefficient * value
            z[rows] = total
        return z

    def contributions(self, matrix: Float) -> Float:
        n = matrix.shape[0]
        out: Float = np.zeros((n, len(self.columns)), dtype=np.float64)
        chosen = select_variants(self.equation, matrix, self.columns)
        # the change of variant, split equally between the selector inputs that differ
        shift = np.asarray(self._variant_shift, dtype=np.float64)[chosen]
        selector_features = list(
            dict.fromkeys(
                self.column_features[self.columns.index(s)] for s in self.equation.selectors
            )
        )
        differs = np.zeros((n, len(selector_features)), dtype=np.bool_)
        for s in self.equation.selectors:
            j = self.columns.index(s)
            k = selector_features.index(self.column_features[j])
            differs[:, k] |= matrix[:, j] != self._ref[j]
        n_differ = differs.sum(axis=1)
        share = np.divide(shift, n_differ, out=np.zeros(n), where=n_differ > 0)
        for k, feature in enumerate(selector_features):
            out[:, self._feature_slot[feature]] += np.where(differs[:, k], share, 0.0)
        for i, variant in enumerate(self.equation.variants):
            rows = np.flatnonzero(chosen == i)
            if not len(rows):
                continue
            sub = matrix[rows]
            for term in variant.terms:
                self._attribute(term, sub, rows, out)
        return out

    def _attribute(self, term: Term, sub: Float, rows: npt.NDArray[np.intp], out: Float) -> None:
        """Baseline Shapley values of one product term over its distinct input features."""
        by_feature: dict[str, list[tuple[Float, float]]] = {}
        for f in term.factors:
            feature = self.column_features[self.columns.index(f.column)]
            by_feature.setdefault(feature, []).append(self._factor_values(f, sub))
        features = list(by_feature)
        k = len(features)
        patient = {
            feat: np.prod(np.vstack([p for p, _ in parts]), axis=0)
            for feat, parts in by_feature.items()
        }
        reference = {feat: math.prod(r for _, r in parts) for feat, parts in by_feature.items()}

        def value(subset: tuple[str, ...]) -> Float:
            v = np.full(sub.shape[0], 1.0)
            for feat in features:
                v = v * (patient[feat] if feat in subset else reference[feat])
            return v

        for i, feat in enumerate(features):
            others = features[:i] + features[i + 1 :]
            phi = np.zeros(sub.shape[0])
            for size in range(k):
                weight = math.factorial(size) * math.factorial(k - size - 1) / math.factorial(k)
                for subset in itertools.combinations(others, size):
                    phi = phi + weight * (value((*subset, feat)) - value(subset))
            out[rows, self._feature_slot[feat]] += term.coefficient * phi

    def contributions_one(self, row: list[float]) -> Float:
        out: Float = self.contributions(np.asarray([row], dtype=np.float64))[0]
        return out


# -- eGFR ----------------------------------------------------------------------------------------


def ckd_epi_2021(creatinine_mg_dl: float, age_years: float, male: bool) -> float:
    """eGFR (mL/min/1.73 m^2) from serum creatinine, race-free CKD-EPI 2021.

    Inker LA, Eneanya ND, Coresh J, et al. New creatinine- and cystatin C-based equations to
    estimate GFR without race. N Engl J Med 2021;385:1737-1749 (creatinine equation):
    142 * min(Scr/k, 1)^a * max(Scr/k, 1)^-1.200 * 0.9938^age * (1.012 if female), with
    k = 0.7 (female) / 0.9 (male), a = -0.241 (female) / -0.302 (male).
    """
    if creatinine_mg_dl <= 0 or age_years <= 0:
        raise ValueError("creatinine and age must be positive")
    kappa, alpha = (0.9, -0.302) if male else (0.7, -0.241)
    ratio = creatinine_mg_dl / kappa
    egfr = float(142.0 * min(ratio, 1.0) ** alpha * max(ratio, 1.0) ** -1.200 * 0.9938**age_years)
    return egfr if male else egfr * 1.012


CREATININE_UMOL_PER_MG_DL = 88.42
"""Creatinine: 1 mg/dL = 88.42 µmol/L."""


def reference_features(
    equation: Equation, columns: list[tuple[str, str, str | None]]
) -> dict[str, Any]:
    """The reference patient as a feature payload (``columns``: name, feature, category): the
    example patient of an equation model, which has no training distribution to take one from."""
    out: dict[str, Any] = {}
    for name, feature, category in columns:
        value = equation.reference.get(name)
        if value is None:
            continue
        if category is None:
            out[feature] = int(value) if float(value).is_integer() else value
        elif value == 1.0:
            out[feature] = category
    return out
