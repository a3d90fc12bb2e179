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


def training_ranges(features: Sequence[FeatureSpec]) -> dict[str, tuple[float, float]]:
    """Per numeric feature, its training 1st-99th percentile: outside it a value is flagged."""
    ranges: dict[str, tuple[float, float]] = {}
    for spec in features:
        dist = spec.distribution
        if dist and "p01" in dist.quantiles and "p99" in dist.quantiles:
            ranges[spec.name] = (dist.quantiles["p01"], dist.quantiles["p99"])
    return ranges


def missing_handling(features: Sequence[FeatureSpec]) -> dict[str, str]:
    """Per feature, what the model does when it is missing (reported with every gap)."""
    return {f.name: f.missing_handling or "handled by the model as missing" for f in features}


class RowValidator:
    """Validates one payload at a time; built once per model (specs resolved up front)."""

    def __init__(self, manifest: Manifest) -> None:
        self.specs = {f.name: f for f in manifest.features}
        self.order = [f.name for f in manifest.features]
        self.columns = [(c.feature, c.category) for c in manifest.columns]
        self.allowed = {f.name: describe_allowed(f) for f in manifest.features}
        self.training_range = training_ranges(manifest.features)
        self.missing_handling = missing_handling(manifest.features)

        # A flat plan per feature, resolved once: validation is on every request's hot path.
        self._plan = [
            (
                spec.name,
                spec.type,
                spec.required,
                spec.minimum if spec.minimum is not None else -math.inf,
                spec.maximum if spec.maximum is not None else math.inf,
                self.training_range.get(spec.name),
                frozenset(c.code for c in spec.categories),
            )
            for spec in manifest.features
        ]

    def validate(self, features: Mapping[str, Any], *, prefix: str = "features") -> ValidatedRow:
        errors: list[FieldError] = []
        quality = DataQuality()
        unknown = features.keys() - self.specs.keys()
        for key in sorted(unknown):
            errors.append(
                FieldError(
                    field=f"{prefix}.{key}",
                    message="unknown feature for this model",
                    value=key,
                    allowed="one of: " + ", ".join(self.order),
                )
            )
        values: dict[str, float | str | None] = {}
        get = features.get
        for name, kind, required, low, high, training, codes in self._plan:
            raw = get(name)
            if raw is None:
                if required:
                    errors.append(
                        FieldError(
                            f"{prefix}.{name}",
                            "required feature is missing",
                            None,
                            self.allowed[name],
                        )
                    )
                else:
                    quality.missing.append(MissingFeature(name, self.missing_handling[name]))
                values[name] = None
                continue
            kind_of_raw = type(raw)
            value: float | str
            if kind is FeatureType.CATEGORICAL:
                if kind_of_raw is not str or raw not in codes:
                    errors.append(self._error(prefix, name, "not an allowed category", raw))
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
                    errors.append(self._error(prefix, name, "must be 0 or 1", raw))
                    continue
            else:
                try:
                    if kind_of_raw is float or kind_of_raw is int:
                        value = float(raw)
                        if not math.isfinite(value):
                            raise _Bad("must be a finite number")
                    else:
                        value = self._measurement(self.specs[name], raw, quality)
                    if kind is FeatureType.ORDINAL and not value.is_integer():
                        raise _Bad("must be an integer")
                    if not low <= value <= high:
                        raise _Bad("outside the plausible range")
                except _Bad as bad:
                    errors.append(self._error(prefix, name, bad.message, raw))
                    continue
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

    def _error(self, prefix: str, name: str, message: str, raw: Any) -> FieldError:
        return FieldError(f"{prefix}.{name}", message, _jsonable(raw), self.allowed[name])

    @staticmethod
    def _measurement(spec: FeatureSpec, raw: Any, quality: DataQuality) -> float:
        """A number given as ``{"value": x, "unit": u}`` (or a wrong type), converted exactly."""
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
