"""Clinical input validation: a patient's feature payload -> model columns + data-quality flags.

Rules come from the manifest's feature specs (types, plausible ranges, categories, accepted
alternative units with exact conversions); nothing is defaulted silently. A value outside the
plausible range is an error; a plausible value outside the training 1st-99th percentile is
scored but flagged as less trustworthy; a missing optional feature is flagged with how the model
handles it; a missing required feature is an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from models.manifest import FeatureSpec, FeatureType, Manifest


class ErrorCode(StrEnum):
    """Why a value was refused: one code per rule, with its message template in ``MESSAGES``.

    The row executor (:class:`RowValidator`, JSON payloads) and the column executor
    (:class:`models.tables.FrameValidator`, tables and JSON batches) both report through
    :meth:`FeatureRule.error`, so a refusal reads the same whichever door it came through.
    """

    UNKNOWN_FEATURE = "unknown_feature"
    MISSING_REQUIRED = "missing_required"
    NOT_CATEGORY = "not_category"
    NOT_BINARY = "not_binary"
    NOT_NUMBER = "not_number"
    NOT_FINITE = "not_finite"
    BAD_MEASUREMENT = "bad_measurement"
    UNIT_NOT_STRING = "unit_not_string"
    UNKNOWN_UNIT = "unknown_unit"
    NOT_INTEGER = "not_integer"
    OUT_OF_RANGE = "out_of_range"


MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.UNKNOWN_FEATURE: "unknown feature for this model",
    ErrorCode.MISSING_REQUIRED: "required feature is missing",
    ErrorCode.NOT_CATEGORY: "not an allowed category",
    ErrorCode.NOT_BINARY: "must be 0 or 1",
    ErrorCode.NOT_NUMBER: "must be a number",
    ErrorCode.NOT_FINITE: "must be a finite number",
    ErrorCode.BAD_MEASUREMENT: "a measurement object has exactly 'value' and optional 'unit'",
    ErrorCode.UNIT_NOT_STRING: "unit must be a string",
    ErrorCode.UNKNOWN_UNIT: "unknown unit {unit!r}",
    ErrorCode.NOT_INTEGER: "must be an integer",
    ErrorCode.OUT_OF_RANGE: "outside the plausible range",
}


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str
    value: Any = None
    allowed: str | None = None
    code: str = "invalid"
    """An :class:`ErrorCode` for feature values; request-shape errors have their own codes."""


@dataclass(frozen=True)
class MissingFeature:
    feature: str
    handling: str


@dataclass(frozen=True)
class OutOfRange:
    feature: str
    value: float
    training_p01: float
    training_p99: float


@dataclass(frozen=True)
class UnitConversion:
    feature: str
    value: float
    unit: str
    converted_value: float
    canonical_unit: str


@dataclass
class DataQuality:
    missing: list[MissingFeature] = field(default_factory=list)
    out_of_training_range: list[OutOfRange] = field(default_factory=list)
    unit_conversions: list[UnitConversion] = field(default_factory=list)


@dataclass
class ValidatedRow:
    values: dict[str, float | str | None]
    """Canonical value per feature (category code for categorical, None if missing)."""
    columns: list[float]
    quality: DataQuality


class InvalidFeatures(ValueError):
    """One or more fields are invalid; ``errors`` names each with its value and what is allowed."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))


def describe_allowed(spec: FeatureSpec) -> str:
    if spec.type is FeatureType.CATEGORICAL:
        return "one of: " + ", ".join(c.code for c in spec.categories)
    if spec.type is FeatureType.BINARY:
        return "0 or 1 (or false/true)"
    unit = f" {spec.unit}" if spec.unit else ""
    kind = "an integer" if spec.type is FeatureType.ORDINAL else "a number"
    alternatives = ""
    if spec.alternative_units:
        units = ", ".join(u.unit for u in spec.alternative_units)
        alternatives = f"; or {{'value': x, 'unit': u}} with u in: {spec.unit}, {units}"
    return f"{kind} from {spec.minimum:g} to {spec.maximum:g}{unit}{alternatives}"


@dataclass(frozen=True)
class FeatureRule:
    """Everything that decides whether one feature's value is accepted, resolved once per model.

    Both executors read only this: the row executor below and the column executor in
    :mod:`models.tables`. Order of the checks (shared by both): missing (required or flagged),
    kind (category / 0-1 / number), measurement object and unit, integer, plausible range, then
    the training p01..p99 flag.
    """

    name: str
    kind: FeatureType
    required: bool
    low: float
    high: float
    training: tuple[float, float] | None
    """Training 1st-99th percentile: outside it a value is scored but flagged."""
    categories: tuple[str, ...]
    codes: frozenset[str]
    unit: str | None
    conversions: dict[str, tuple[float, float]]
    """Accepted alternative unit -> (factor, offset): ``canonical = value * factor + offset``."""
    allowed: str
    missing_handling: str

    @classmethod
    def of(cls, spec: FeatureSpec) -> FeatureRule:
        dist = spec.distribution
        training = None
        if dist and "p01" in dist.quantiles and "p99" in dist.quantiles:
            training = (dist.quantiles["p01"], dist.quantiles["p99"])
        categories = tuple(c.code for c in spec.categories)
        return cls(
            name=spec.name,
            kind=spec.type,
            required=spec.required,
            low=spec.minimum if spec.minimum is not None else -math.inf,
            high=spec.maximum if spec.maximum is not None else math.inf,
            training=training,
            categories=categories,
            codes=frozenset(categories),
            unit=spec.unit,
            conversions={u.unit: (u.factor, u.offset) for u in spec.alternative_units},
            allowed=describe_allowed(spec),
            missing_handling=spec.missing_handling or "handled by the model as missing",
        )

    @property
    def takes_units(self) -> bool:
        return self.kind in (FeatureType.NUMERIC, FeatureType.ORDINAL)

    def error(
        self, code: ErrorCode, value: Any, *, prefix: str = "features", unit: Any = None
    ) -> FieldError:
        """The one place a refused value becomes a message."""
        return FieldError(
            f"{prefix}.{self.name}",
            MESSAGES[code].format(unit=unit),
            None if code is ErrorCode.MISSING_REQUIRED else _jsonable(value),
            self.allowed,
            code.value,
        )


def rules_of(features: Sequence[FeatureSpec]) -> list[FeatureRule]:
    return [FeatureRule.of(spec) for spec in features]


def unknown_feature(key: str, names: Sequence[str], *, field: str | None = None) -> FieldError:
    """``key`` is not one of the model's features (``field`` defaults to ``features.<key>``)."""
    return FieldError(
        field or f"features.{key}",
        MESSAGES[ErrorCode.UNKNOWN_FEATURE],
        key,
        "one of: " + ", ".join(names),
        ErrorCode.UNKNOWN_FEATURE.value,
    )


class RowValidator:
    """The row executor of the feature rules: one JSON payload at a time, on the request path."""

    def __init__(self, manifest: Manifest) -> None:
        self.rules = rules_of(manifest.features)
        self.by_name = {r.name: r for r in self.rules}
        self.order = [r.name for r in self.rules]
        self.columns = [(c.feature, c.category) for c in manifest.columns]

    def validate(self, features: Mapping[str, Any], *, prefix: str = "features") -> ValidatedRow:
        errors: list[FieldError] = []
        quality = DataQuality()
        for key in sorted(features.keys() - self.by_name.keys()):
            errors.append(unknown_feature(key, self.order, field=f"{prefix}.{key}"))
        values: dict[str, float | str | None] = {}
        get = features.get
        Code = ErrorCode
        for rule in self.rules:
            name = rule.name
            raw = get(name)
            if raw is None:
                if rule.required:
                    errors.append(rule.error(Code.MISSING_REQUIRED, None, prefix=prefix))
                else:
                    quality.missing.append(MissingFeature(name, rule.missing_handling))
                values[name] = None
                continue
            kind = rule.kind
            kind_of_raw = type(raw)
            value: float | str
            if kind is FeatureType.CATEGORICAL:
                if kind_of_raw is not str or raw not in rule.codes:
                    errors.append(rule.error(Code.NOT_CATEGORY, raw, prefix=prefix))
                    continue
                value = raw
            elif kind is FeatureType.BINARY:
                if (
                    raw is True
                    or raw is False
                    or ((kind_of_raw is int or kind_of_raw is float) and (raw == 0 or raw == 1))
                ):
                    value = float(raw)
                else:
                    errors.append(rule.error(Code.NOT_BINARY, raw, prefix=prefix))
                    continue
            else:
                try:
                    if kind_of_raw is float or kind_of_raw is int:
                        value = float(raw)
                        if not math.isfinite(value):
                            raise _Bad(Code.NOT_FINITE)
                    else:
                        value = _measurement(rule, raw, quality)
                    if kind is FeatureType.ORDINAL and not value.is_integer():
                        raise _Bad(Code.NOT_INTEGER)
                    if not rule.low <= value <= rule.high:
                        raise _Bad(Code.OUT_OF_RANGE)
                except _Bad as bad:
                    errors.append(rule.error(bad.code, raw, prefix=prefix, unit=bad.unit))
                    continue
                training = rule.training
                if training is not None and not training[0] <= value <= training[1]:
                    quality.out_of_training_range.append(OutOfRange(name, value, *training))
            values[name] = value
        if errors:
            raise InvalidFeatures(errors)
        columns = []
        for feature, category in self.columns:
            cell = values[feature]
            if category is not None:
                columns.append(math.nan if cell is None else float(cell == category))
            else:
                columns.append(math.nan if cell is None else float(cell))
        return ValidatedRow(values=values, columns=columns, quality=quality)


class _Bad(Exception):
    def __init__(self, code: ErrorCode, unit: Any = None) -> None:
        self.code = code
        self.unit = unit


def _measurement(rule: FeatureRule, raw: Any, quality: DataQuality) -> float:
    """A number given as ``{"value": x, "unit": u}`` (or a wrong type), converted exactly."""
    unit: Any = None
    if isinstance(raw, Mapping):
        if set(raw) - {"value", "unit"} or "value" not in raw:
            raise _Bad(ErrorCode.BAD_MEASUREMENT)
        unit = raw.get("unit")
        if unit is not None and not isinstance(unit, str):
            raise _Bad(ErrorCode.UNIT_NOT_STRING)
        raw = raw["value"]
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise _Bad(ErrorCode.NOT_NUMBER)
    value = float(raw)
    if not math.isfinite(value):
        raise _Bad(ErrorCode.NOT_FINITE)
    if unit is not None and unit != rule.unit:
        conversion = rule.conversions.get(unit)
        if conversion is None:
            raise _Bad(ErrorCode.UNKNOWN_UNIT, unit)
        converted = value * conversion[0] + conversion[1]
        quality.unit_conversions.append(
            UnitConversion(rule.name, value, unit, converted, rule.unit or "")
        )
        value = converted
    return value


def _jsonable(raw: Any) -> Any:
    if isinstance(raw, float) and not math.isfinite(raw):
        return str(raw)
    return raw
