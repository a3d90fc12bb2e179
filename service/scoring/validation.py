"""Clinical input validation: a patient's feature payload -> model columns + data-quality flags.

Rules come from the manifest's feature specs (types, plausible ranges, categories, accepted
alternative units with exact conversions); nothing is defaulted silently. A value outside the
plausible range is an error; a plausible value outside the training 1st-99th percentile is
scored but flagged as less trustworthy; a missing optional feature is flagged with how the model
handles it; a missing required feature is an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from models.manifest import FeatureSpec, FeatureType, Manifest


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str
    value: Any = None
    allowed: str | None = None


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


class RowValidator:
    """Validates one payload at a time; built once per model (specs resolved up front)."""

    def __init__(self, manifest: Manifest) -> None:
        self.specs = {f.name: f for f in manifest.features}
        self.order = [f.name for f in manifest.features]
        self.columns = [(c.feature, c.category) for c in manifest.columns]
        self.allowed = {f.name: describe_allowed(f) for f in manifest.features}
        self.training_range: dict[str, tuple[float, float]] = {}
        for spec in manifest.features:
            dist = spec.distribution
            if dist and "p01" in dist.quantiles and "p99" in dist.quantiles:
                self.training_range[spec.name] = (dist.quantiles["p01"], dist.quantiles["p99"])
        self.missing_handling = {
            f.name: f.missing_handling or "handled by the model as missing"
            for f in manifest.features
        }

    def validate(self, features: Mapping[str, Any], *, prefix: str = "features") -> ValidatedRow:
        errors: list[FieldError] = []
        quality = DataQuality()
        for key in features:
            if key not in self.specs:
                errors.append(
                    FieldError(
                        field=f"{prefix}.{key}",
                        message="unknown feature for this model",
                        value=key,
                        allowed="one of: " + ", ".join(self.order),
                    )
                )
        values: dict[str, float | str | None] = {}
        for name in self.order:
            spec = self.specs[name]
            raw = features.get(name)
            where = f"{prefix}.{name}"
            if raw is None:
                if spec.required:
                    errors.append(
                        FieldError(where, "required feature is missing", None, self.allowed[name])
                    )
                else:
                    quality.missing.append(MissingFeature(name, self.missing_handling[name]))
                values[name] = None
                continue
            try:
                values[name] = self._value(spec, raw, quality)
            except _Bad as bad:
                errors.append(FieldError(where, bad.message, _jsonable(raw), self.allowed[name]))
        if errors:
            raise InvalidFeatures(errors)
        columns = []
        for feature, category in self.columns:
            value = values[feature]
            if category is not None:
                columns.append(math.nan if value is None else float(value == category))
            else:
                columns.append(math.nan if value is None else float(value))
        return ValidatedRow(values=values, columns=columns, quality=quality)

    def _value(self, spec: FeatureSpec, raw: Any, quality: DataQuality) -> float | str:
        if spec.type is FeatureType.CATEGORICAL:
            codes = [c.code for c in spec.categories]
            if not isinstance(raw, str) or raw not in codes:
                raise _Bad("not an allowed category")
            return raw
        if spec.type is FeatureType.BINARY:
            if raw is True or raw is False:
                return float(raw)
            if isinstance(raw, int | float) and raw in (0, 1):
                return float(raw)
            raise _Bad("must be 0 or 1")
        value, unit = _number_and_unit(raw)
        if unit is not None and unit != spec.unit:
            alternative = next((u for u in spec.alternative_units if u.unit == unit), None)
            if alternative is None:
                raise _Bad(f"unknown unit {unit!r}")
            converted = value * alternative.factor + alternative.offset
            quality.unit_conversions.append(
                UnitConversion(spec.name, value, unit, converted, spec.unit or "")
            )
            value = converted
        if spec.type is FeatureType.ORDINAL and value != int(value):
            raise _Bad("must be an integer")
        low = spec.minimum if spec.minimum is not None else -math.inf
        high = spec.maximum if spec.maximum is not None else math.inf
        if not low <= value <= high:
            raise _Bad("outside the plausible range")
        bounds = self.training_range.get(spec.name)
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            quality.out_of_training_range.append(OutOfRange(spec.name, value, *bounds))
        return value


class _Bad(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


def _number_and_unit(raw: Any) -> tuple[float, str | None]:
    unit: str | None = None
    if isinstance(raw, Mapping):
        extra = set(raw) - {"value", "unit"}
        if extra or "value" not in raw:
            raise _Bad("a measurement object has exactly 'value' and optional 'unit'")
        unit = raw.get("unit")
        if unit is not None and not isinstance(unit, str):
            raise _Bad("unit must be a string")
        raw = raw["value"]
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise _Bad("must be a number")
    value = float(raw)
    if not math.isfinite(value):
        raise _Bad("must be a finite number")
    return value, unit


def _jsonable(raw: Any) -> Any:
    if isinstance(raw, float) and not math.isfinite(raw):
        return str(raw)
    return raw
