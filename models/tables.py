"""The column executor of the feature rules: whole tables and JSON batches, and table scoring.

``clinrisk score`` (files), Spark and the HTTP batch endpoint score many rows at once; doing
that one row at a time would cost ~100 times the scoring itself. So each feature's
:class:`models.validation.FeatureRule` (types, plausible ranges, categories, binary 0/1, ordinal
integers, required vs optional, accepted alternative units, training p01..p99 flags) is applied
here to whole columns with numpy and Arrow compute, refusals are worded by the same
``FeatureRule.error`` as the row executor's, the matrix is built with
:func:`models.columns.encode`, and :meth:`ScoringModel.score_matrix` scores it.

A table has no JSON types, so a text cell that reads as a number *is* a number (``"7.5"``), a
binary text cell may also say ``true``/``false``, and a null, NaN or empty text cell is missing
(a CSV file cannot tell an empty string from a missing value, so no table format does here).
A measurement in an alternative unit is given by a companion column ``<feature>_unit`` (null =
canonical unit), the table form of the API's ``{"value": x, "unit": u}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from models.applicability import Population
from models.columns import columns_for, encode
from models.manifest import FeatureSpec, FeatureType, ModelColumn
from models.scoring import ScoringModel
from models.validation import (
    DataQuality,
    ErrorCode,
    FeatureRule,
    FieldError,
    MissingFeature,
    OutOfRange,
    UnitConversion,
    rules_of,
    unknown_feature,
)

Float = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]
Codes = npt.NDArray[np.uint8]

UNIT_SUFFIX = "_unit"
# Exactly the strings Arrow's string -> float64 cast accepts (checked by a fuzz test), so the fast
# path (cast a whole column) and the slow path (mask the bad cells, then cast) agree cell by cell.
NUMBER_TEXT = r"^[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|(?i:inf|infinity|nan))$"

# Error codes per cell: 0 = accepted, else 1 + the index of an ErrorCode.
OK = 0
CODES = list(ErrorCode)
CODE = {code: np.uint8(i + 1) for i, code in enumerate(CODES)}

ColumnLike = Any
"""A column: ``pyarrow`` Array/ChunkedArray, numpy array, pandas Series or list."""


@dataclass(frozen=True)
class Cells:
    """One source column, normalised by what each cell holds (exactly one kind per cell)."""

    missing: Bool
    """null, None, NaN or empty text."""
    number: Float
    """The value of numeric cells (NaN elsewhere)."""
    is_number: Bool
    is_bool: Bool
    truth: Bool
    """The value of boolean cells (False elsewhere)."""
    text: Any
    """A pyarrow string array holding the text cells (null elsewhere)."""
    is_text: Bool
    raw: Any
    """The source (Arrow array, object ndarray or list), to show a rejected cell as given."""
    json: bool = False
    """Cells of JSON values: text is never read as a number or as true/false."""
    bad_measurement: Bool | None = None
    """JSON objects that are not ``{"value": x[, "unit": u]}``."""

    def raw_value(self, row: int) -> Any:
        if isinstance(self.raw, np.ndarray | list):
            return self.raw[row]
        return self.raw[row].as_py()

    def value_at(self, row: int) -> Any:
        """The cell as given, JSON-safe: what an error reports as the offending value."""
        return _jsonable(self.raw_value(row))


def _as_arrow(column: ColumnLike) -> Any:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks()
    if isinstance(column, pa.Array):
        return column
    return None


def _empty_cells(n: int) -> tuple[Bool, Float, Bool, Bool, Bool]:
    return (
        np.zeros(n, dtype=bool),
        np.full(n, np.nan),
        np.zeros(n, dtype=bool),
        np.zeros(n, dtype=bool),
        np.zeros(n, dtype=bool),
    )


def _arrow_cells(array: Any) -> Cells:
    n = len(array)
    kind = array.type
    if pa.types.is_dictionary(kind):
        array = array.dictionary_decode()
        kind = array.type
    if pa.types.is_large_string(kind) or getattr(pa.types, "is_string_view", bool)(kind):
        array = array.cast(pa.string())  # one text type for the kernels below
        kind = array.type
    missing, number, is_number, is_bool, truth = _empty_cells(n)
    is_text = np.zeros(n, dtype=bool)
    text = pa.nulls(n, pa.string())
    valid = ~np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if pa.types.is_null(kind):
        missing = np.ones(n, dtype=bool)
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        number = np.asarray(
            pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64
        ).copy()
        missing = np.isnan(number)
        is_number = ~missing
    elif pa.types.is_boolean(kind):
        missing = ~valid
        is_bool = valid
        truth = np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)
    elif pa.types.is_string(kind):
        empty = pc.equal(pc.binary_length(array), 0)
        blank = np.asarray(pc.fill_null(empty, False).to_numpy(zero_copy_only=False), dtype=bool)
        missing = ~valid | blank
        is_text = ~missing
        text = pc.if_else(empty, pa.scalar(None, kind), array) if blank.any() else array
    else:  # dates, lists, ...: present, but of no kind any feature accepts
        missing = ~valid
    return Cells(missing, number, is_number, is_bool, truth, text, is_text, array)


def _object_cells(values: npt.NDArray[Any]) -> Cells:
    """Mixed Python objects (a pandas object column, JSON-like rows): classified one by one."""
    n = len(values)
    missing, number, is_number, is_bool, truth = _empty_cells(n)
    is_text = np.zeros(n, dtype=bool)
    texts: list[str | None] = [None] * n
    for i, value in enumerate(values.tolist()):
        if value is None:
            missing[i] = True
        elif isinstance(value, bool | np.bool_):
            is_bool[i] = True
            truth[i] = bool(value)
        elif isinstance(value, int | float | np.integer | np.floating):
            as_float = float(value)
            if math.isnan(as_float):
                missing[i] = True
            else:
                is_number[i] = True
                number[i] = as_float
        elif isinstance(value, str) and value:
            is_text[i] = True
            texts[i] = value
        elif isinstance(value, str):
            missing[i] = True
        elif _is_pandas_missing(value):
            missing[i] = True
    return Cells(
        missing, number, is_number, is_bool, truth, pa.array(texts, pa.string()), is_text, values
    )


def _is_pandas_missing(value: Any) -> bool:
    try:
        import pandas as pd

        return bool(value is pd.NA or value is pd.NaT)
    except ImportError:  # pragma: no cover - pandas is a dependency
        return False


def cells_of(column: ColumnLike | None, n_rows: int) -> Cells:
    """Normalise one source column (``None`` = the table lacks it: every cell missing)."""
    if column is None:
        _, number, is_number, is_bool, truth = _empty_cells(n_rows)
        return Cells(
            np.ones(n_rows, dtype=bool),
            number,
            is_number,
            is_bool,
            truth,
            pa.nulls(n_rows, pa.string()),
            np.zeros(n_rows, dtype=bool),
            pa.nulls(n_rows),
        )
    array = _as_arrow(column)
    if array is None:
        values = np.asarray(column)
        if values.dtype == object:
            try:  # one inferred type (all text, all numbers, ...) takes the vectorised path
                array = pa.array(values, from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                return _object_cells(values)
            cells = _arrow_cells(array)
            return Cells(
                cells.missing,
                cells.number,
                cells.is_number,
                cells.is_bool,
                cells.truth,
                cells.text,
                cells.is_text,
                values,
            )
        array = pa.array(values, from_pandas=True)
    if len(array) != n_rows:
        raise ValueError(f"a column has {len(array)} rows, the table {n_rows}")
    return _arrow_cells(array)


_NUMBER_TYPES = frozenset({int, float, type(None)})
_TEXT_TYPES = frozenset({str, type(None)})


def json_cells(column: list[Any], *, measurements: bool) -> tuple[Cells, Cells | None]:
    """One feature's JSON values across a batch, and the units of its measurement objects.

    A column of plain numbers (or plain text) is classified in one vectorised step; mixed
    columns cell by cell. Empty text is text here (JSON says what is missing: null or absent).
    """
    n = len(column)
    kinds = set(map(type, column))
    if kinds <= _NUMBER_TYPES:
        number = np.array(column, dtype=np.float64)
        missing = np.isnan(number)
        _, _, _, is_bool, truth = _empty_cells(n)
        nothing = np.zeros(n, dtype=bool)
        cells = Cells(
            missing, number, ~missing, is_bool, truth, pa.nulls(n, pa.string()), nothing, column
        )
        return replace(cells, json=True), None
    if kinds <= _TEXT_TYPES:
        missing = np.fromiter((v is None for v in column), dtype=bool, count=n)
        _, number, is_number, is_bool, truth = _empty_cells(n)
        text = pa.array(column, pa.string())
        return Cells(missing, number, is_number, is_bool, truth, text, ~missing, column, True), None
    missing, number, is_number, is_bool, truth = _empty_cells(n)
    is_text = np.zeros(n, dtype=bool)
    texts: list[str | None] = [None] * n
    bad = np.zeros(n, dtype=bool)
    units: list[Any] | None = None
    for i, value in enumerate(column):
        if measurements and isinstance(value, dict):
            if units is None:
                units = [None] * n
            if value.keys() - {"value", "unit"} or "value" not in value:
                bad[i] = True
                continue
            units[i] = value.get("unit")
            value = value["value"]
            if value is None:
                continue  # a measurement without a number: not missing, not a number
        if value is None:
            missing[i] = True
        elif value is True or value is False:
            is_bool[i] = True
            truth[i] = value
        elif type(value) is int or type(value) is float:
            is_number[i] = True
            number[i] = value
        elif type(value) is str:
            is_text[i] = True
            texts[i] = value
    cells = Cells(
        missing,
        number,
        is_number,
        is_bool,
        truth,
        pa.array(texts, pa.string()),
        is_text,
        column,
        True,
        bad if measurements else None,
    )
    if units is None:
        return cells, None
    unit_cells, _ = json_cells(units, measurements=False)
    return cells, unit_cells


def parse_numbers(text: Any, is_text: Bool) -> tuple[Float, Bool]:
    """Numbers from text cells: (values, parsed), NaN/False for cells that are not numbers."""
    n = len(is_text)
    if not is_text.any():
        return np.full(n, np.nan), np.zeros(n, dtype=bool)
    try:
        parsed = pc.cast(text, pa.float64())
        ok = is_text
    except pa.ArrowInvalid:
        matches = pc.match_substring_regex(text, NUMBER_TEXT)
        ok = np.asarray(pc.fill_null(matches, False).to_numpy(zero_copy_only=False), dtype=bool)
        parsed = pc.cast(pc.if_else(matches, text, pa.scalar(None, pa.string())), pa.float64())
    values = np.asarray(parsed.to_numpy(zero_copy_only=False), dtype=np.float64)
    return np.where(ok, values, np.nan), ok


def _is_in(text: Any, allowed: Sequence[str]) -> tuple[Bool, npt.NDArray[np.intp]]:
    index = pc.index_in(text, value_set=pa.array(list(allowed), pa.string()))
    position = np.asarray(pc.fill_null(index, -1).to_numpy(zero_copy_only=False), dtype=np.intp)
    return position >= 0, position


@dataclass
class _FeatureResult:
    values: npt.NDArray[Any]
    """float64 (NaN = missing/invalid) or object category codes (None)."""
    errors: Codes
    missing_flag: Bool
    out_of_range: Bool
    converted: Bool
    original: Float | None = None
    units: npt.NDArray[Any] | None = None
    unit_text: npt.NDArray[Any] | None = None


@dataclass(frozen=True)
class ValidatedFrame:
    """Column-wise validation of a table: accepted rows' column matrix, errors and flags."""

    n_rows: int
    accepted: Bool
    matrix: Float
    """(accepted rows x model columns), via :func:`models.columns.encode`; NaN = missing."""
    values: dict[str, npt.NDArray[Any]]
    """Canonical value per feature and row (NaN/None where missing or invalid)."""
    errors: dict[int, list[FieldError]]
    """Row index -> its errors, in manifest feature order (RowValidator's order)."""
    missing: Bool
    """(rows x features): an optional feature was missing."""
    out_of_range: Bool
    """(rows x features): outside the training p01..p99."""
    converted: Bool
    """(rows x features): given in an alternative unit and converted."""
    conversions: dict[str, tuple[Float, npt.NDArray[Any]]] = field(default_factory=dict)
    """Feature -> (value as given, unit as given) for features with a unit column."""

    @property
    def n_accepted(self) -> int:
        return int(self.accepted.sum())


class FrameValidator:
    """The column executor of the feature rules (:class:`models.validation.FeatureRule`): whole
    tables, and JSON batches (``validate_json``), against one manifest; built once per model."""

    def __init__(
        self, features: Sequence[FeatureSpec], columns: Sequence[ModelColumn] | None = None
    ) -> None:
        """``columns`` default to the encoding of ``features`` (``columns_for``), as in every
        artifact's manifest."""
        self.rules = rules_of(features)
        self.names = [r.name for r in self.rules]
        self.columns = list(columns if columns is not None else columns_for(features))
        self.unit_columns = {r.name: r.name + UNIT_SUFFIX for r in self.rules if r.takes_units}
        clash = set(self.unit_columns.values()) & set(self.names)
        if clash:
            raise ValueError(f"unit columns would shadow features: {sorted(clash)}")

    def input_columns(self) -> list[str]:
        """Every column this model reads: its features, then their unit columns."""
        return [*self.names, *self.unit_columns.values()]

    def validate(self, table: Mapping[str, ColumnLike], n_rows: int) -> ValidatedFrame:
        """A table: numeric text is a number, ``<feature>_unit`` columns give units."""
        sources = [cells_of(table.get(r.name), n_rows) for r in self.rules]
        units = [
            cells_of(table.get(self.unit_columns[r.name]), n_rows)
            if r.takes_units and table.get(self.unit_columns[r.name]) is not None
            else None
            for r in self.rules
        ]
        return self._validate(sources, units, n_rows, {})

    def validate_json(self, payloads: Sequence[Mapping[str, Any]]) -> ValidatedFrame:
        """JSON feature objects (a batch request), with JSON's types: text is never a number,
        a measurement is ``{"value": x, "unit": u}``, unknown keys are refused."""
        n_rows = len(payloads)
        sources: list[Cells] = []
        units: list[Cells | None] = []
        for rule in self.rules:
            column = [p.get(rule.name) for p in payloads]
            cells, unit_cells = json_cells(column, measurements=rule.takes_units)
            sources.append(cells)
            units.append(unit_cells)
        known = set(self.names)
        unknown: dict[int, list[FieldError]] = {}
        for row, payload in enumerate(payloads):
            if payload.keys() - known:
                unknown[row] = [
                    unknown_feature(key, self.names) for key in sorted(payload.keys() - known)
                ]
        return self._validate(sources, units, n_rows, unknown)

    def _validate(
        self,
        sources: list[Cells],
        units: list[Cells | None],
        n_rows: int,
        unknown: dict[int, list[FieldError]],
    ) -> ValidatedFrame:
        results = [
            self._feature(rule, cells, unit_cells, n_rows)
            for rule, cells, unit_cells in zip(self.rules, sources, units, strict=True)
        ]
        codes = np.stack([r.errors for r in results], axis=1) if results else np.zeros((n_rows, 0))
        accepted = ~(codes != OK).any(axis=1)
        if unknown:
            accepted[list(unknown)] = False
        errors: dict[int, list[FieldError]] = {}
        for row in np.flatnonzero(~accepted).tolist():
            errors[row] = [
                *unknown.get(row, ()),
                *(
                    self._error(rule, int(codes[row, j]), sources[j], results[j], row)
                    for j, rule in enumerate(self.rules)
                    if codes[row, j] != OK
                ),
            ]
        values = {rule.name: r.values for rule, r in zip(self.rules, results, strict=True)}
        matrix = encode(self.columns, {name: v[accepted] for name, v in values.items()})
        conversions = {
            rule.name: (r.original, r.units)
            for rule, r in zip(self.rules, results, strict=True)
            if r.original is not None and r.units is not None
        }
        return ValidatedFrame(
            n_rows=n_rows,
            accepted=accepted,
            matrix=matrix,
            values=values,
            errors=errors,
            missing=_stack([r.missing_flag for r in results], n_rows),
            out_of_range=_stack([r.out_of_range for r in results], n_rows),
            converted=_stack([r.converted for r in results], n_rows),
            conversions=conversions,
        )

    def quality(self, frame: ValidatedFrame, row: int) -> DataQuality:
        """One row's flags in RowValidator's form (for the HTTP-shaped views and tests)."""
        quality = DataQuality()
        for j, rule in enumerate(self.rules):
            name = rule.name
            if frame.missing[row, j]:
                quality.missing.append(MissingFeature(name, rule.missing_handling))
            if frame.converted[row, j]:
                original, units = frame.conversions[name]
                quality.unit_conversions.append(
                    UnitConversion(
                        name,
                        float(original[row]),
                        str(units[row]),
                        float(frame.values[name][row]),
                        rule.unit or "",
                    )
                )
            if frame.out_of_range[row, j] and rule.training is not None:
                low, high = rule.training
                quality.out_of_training_range.append(
                    OutOfRange(name, float(frame.values[name][row]), low, high)
                )
        return quality

    def _error(
        self, rule: FeatureRule, code: int, cells: Cells, result: _FeatureResult, row: int
    ) -> FieldError:
        unit = result.unit_text[row] if result.unit_text is not None else None
        return rule.error(CODES[code - 1], cells.value_at(row), unit=unit)

    def _feature(
        self, rule: FeatureRule, cells: Cells, units: Cells | None, n: int
    ) -> _FeatureResult:
        no = np.zeros(n, dtype=bool)
        errors: Codes = np.zeros(n, dtype=np.uint8)
        missing = cells.missing
        if rule.required:
            errors[missing] = CODE[ErrorCode.MISSING_REQUIRED]
            missing_flag = no
        else:
            missing_flag = missing
        present = ~missing
        if rule.kind is FeatureType.CATEGORICAL:
            codes = list(rule.categories)
            known, position = _is_in(cells.text, codes)
            known &= cells.is_text
            errors[present & ~known] = CODE[ErrorCode.NOT_CATEGORY]
            lookup = np.array([*codes, None], dtype=object)
            values = lookup[np.where(known, position, len(codes))]
            return _FeatureResult(values, errors, missing_flag, no, no)
        if cells.json:  # JSON has types: text is text
            parsed, from_text = np.full(n, np.nan), no
        else:
            parsed, from_text = parse_numbers(cells.text, cells.is_text)
        if rule.kind is FeatureType.BINARY:
            value = np.where(cells.is_bool, cells.truth.astype(np.float64), np.nan)
            value = np.where(cells.is_number, cells.number, value)
            if not cells.json and cells.is_text.any():
                lowered = pc.utf8_lower(cells.text)
                said_true = _equals(lowered, "true", n)
                said_false = _equals(lowered, "false", n)
                value = np.where(from_text, parsed, value)
                value = np.where(said_true, 1.0, np.where(said_false, 0.0, value))
            good = (value == 0.0) | (value == 1.0)
            errors[present & ~good] = CODE[ErrorCode.NOT_BINARY]
            return _FeatureResult(np.where(good, value, np.nan), errors, missing_flag, no, no)
        # numeric and ordinal
        is_number = cells.is_number | from_text
        value = np.where(cells.is_number, cells.number, parsed)
        finite = np.isfinite(value)
        errors[present & ~is_number] = CODE[ErrorCode.NOT_NUMBER]
        errors[present & is_number & ~finite] = CODE[ErrorCode.NOT_FINITE]
        original = value.copy()
        converted = no
        unit_values: npt.NDArray[Any] | None = None
        unit_text: npt.NDArray[Any] | None = None
        if units is not None:
            # A unit that is not text is refused before the value is looked at.
            bad_unit_type = present & ~units.missing & ~units.is_text
            errors[bad_unit_type] = CODE[ErrorCode.UNIT_NOT_STRING]
            unit_text = np.asarray(units.text.to_numpy(zero_copy_only=False), dtype=object)
            given = present & units.is_text & (errors == OK)
            canonical = _equals(units.text, rule.unit, n) if rule.unit is not None else no
            other = given & ~canonical
            recognised = np.zeros(n, dtype=bool)
            for unit, (factor, offset) in rule.conversions.items():
                this = other & _equals(units.text, unit, n)
                # A huge value overflows to inf, which the range check refuses (as for one row).
                with np.errstate(over="ignore", invalid="ignore"):
                    value = np.where(this, value * factor + offset, value)
                recognised |= this
            errors[other & ~recognised] = CODE[ErrorCode.UNKNOWN_UNIT]
            converted = other & recognised
            unit_values = unit_text
        if cells.bad_measurement is not None:
            errors[cells.bad_measurement] = CODE[ErrorCode.BAD_MEASUREMENT]
        ok = present & (errors == OK)
        with np.errstate(invalid="ignore"):
            if rule.kind is FeatureType.ORDINAL:
                errors[ok & (value != np.trunc(value))] = CODE[ErrorCode.NOT_INTEGER]
                ok = present & (errors == OK)
            errors[ok & ~((value >= rule.low) & (value <= rule.high))] = CODE[
                ErrorCode.OUT_OF_RANGE
            ]
            ok = present & (errors == OK)
            bounds = rule.training
            out_of_range = (
                ok & ~((value >= bounds[0]) & (value <= bounds[1])) if bounds is not None else no
            )
        return _FeatureResult(
            np.where(ok, value, np.nan),
            errors,
            missing_flag,
            out_of_range,
            converted & ok,
            original if unit_values is not None else None,
            unit_values,
            unit_text,
        )


def _equals(text: Any, literal: str | None, n: int) -> Bool:
    if text is None or literal is None:
        return np.zeros(n, dtype=bool)
    return np.asarray(
        pc.fill_null(pc.equal(text, pa.scalar(literal, pa.string())), False).to_numpy(
            zero_copy_only=False
        ),
        dtype=bool,
    )


def _stack(columns: list[Bool], n_rows: int) -> Bool:
    if not columns:
        return np.zeros((n_rows, 0), dtype=bool)
    return np.stack(columns, axis=1)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def json_values(spec: FeatureSpec, cells: Cells, units: Cells | None) -> tuple[list[Any], Bool]:
    """Each cell as the API's JSON value (the table -> HTTP view), and where it is not finite.

    Read by the same rules as :class:`FrameValidator` (numeric text is a number, binary text may
    say true/false, ``<feature>_unit`` makes a measurement), so a row the service refuses is
    refused for the same reason as locally. JSON has no infinities: a non-finite number is sent
    as its text, and the caller reports it as "must be a finite number", as the local path does.
    """
    n = len(cells.missing)
    texts = cells.text.to_pylist() if cells.is_text.any() else [None] * n
    non_finite = np.zeros(n, dtype=bool)
    if spec.type is FeatureType.CATEGORICAL:
        out: list[Any] = texts
        fix = np.flatnonzero(~cells.is_text)
        numbers = cells.number
    else:
        parsed, from_text = parse_numbers(cells.text, cells.is_text)
        numbers = np.where(cells.is_number, cells.number, parsed)
        is_number = cells.is_number | from_text
        if spec.type is FeatureType.BINARY and cells.is_text.any():
            lowered = pc.utf8_lower(cells.text)
            numbers = np.where(_equals(lowered, "true", n), 1.0, numbers)
            numbers = np.where(_equals(lowered, "false", n), 0.0, numbers)
            is_number |= _equals(lowered, "true", n) | _equals(lowered, "false", n)
        finite = np.isfinite(numbers)
        if spec.type is not FeatureType.BINARY:
            non_finite = is_number & ~finite & ~cells.missing
        out = numbers.tolist()
        fix = np.flatnonzero(~(is_number & finite))
    for i in fix.tolist():
        if cells.missing[i]:
            out[i] = None
        elif cells.is_bool[i]:
            out[i] = bool(cells.truth[i])
        elif cells.is_number[i]:
            out[i] = float(numbers[i]) if math.isfinite(numbers[i]) else repr(float(numbers[i]))
        elif cells.is_text[i]:
            out[i] = texts[i]
        else:
            out[i] = str(cells.raw_value(i))
    if units is not None and spec.type in (FeatureType.NUMERIC, FeatureType.ORDINAL):
        unit_texts = units.text.to_pylist() if units.is_text.any() else [None] * n
        for i in np.flatnonzero(~cells.missing & ~units.missing).tolist():
            unit = unit_texts[i] if units.is_text[i] else _jsonable(units.raw_value(i))
            out[i] = {"value": out[i], "unit": unit}
    return out, non_finite


# ---------------------------------------------------------------------------------------------
# Scoring a table: score columns aligned with the input rows


def reason_text(errors: Sequence[FieldError]) -> str:
    """A rejected row's errors as one line: ``feature: message (value: v; allowed: a)``."""
    parts = []
    for error in errors:
        name = error.field.removeprefix("features.")
        details = [] if error.value is None else [f"value: {error.value!r}"]
        if error.allowed:
            details.append(f"allowed: {error.allowed}")
        suffix = f" ({'; '.join(details)})" if details else ""
        parts.append(f"{name}: {error.message}{suffix}")
    return "; ".join(parts)


def score_fields(n_features: int, *, explain: bool, top_k: int) -> list[Any]:
    """The score columns (pyarrow fields) every front door writes, in order."""
    fields = [
        pa.field("probability", pa.float64()),
        pa.field("tier", pa.string()),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("model_sha256", pa.string()),
        # Issue 10: validated / evaluation_only / teaching_data_only (the manifest's reason is
        # on the card and in the API).
        pa.field("clinical_use", pa.string()),
        pa.field("missing_features", pa.string()),
        pa.field("out_of_training_range", pa.string()),
        pa.field("unit_conversions", pa.string()),
        pa.field("trustworthy", pa.bool_()),
        # Issue 14: "scored" or "not_applicable" (then no score: reasons in not_applicable).
        pa.field("status", pa.string()),
        pa.field("not_applicable", pa.string()),
        pa.field("uncertainty", pa.string()),
        pa.field("warnings", pa.string()),
    ]
    if explain:
        for k in range(1, effective_top_k(n_features, top_k) + 1):
            fields.append(pa.field(f"top{k}_feature", pa.string()))
            fields.append(pa.field(f"top{k}_contribution", pa.float64()))
        fields.append(pa.field("other_contribution", pa.float64()))
    fields.append(pa.field("reject_reason", pa.string()))
    return fields


def effective_top_k(n_features: int, top_k: int) -> int:
    return max(1, min(top_k, n_features))


def join_flags(flags: Bool, names: Sequence[str], mask: Bool | None = None) -> Any:
    """Per row, the names whose flag is set, semicolon-joined ('' for none), as Arrow strings.

    Rows share few distinct flag patterns, so each pattern is joined once and gathered.
    """
    n, width = flags.shape
    if width == 0:
        return _labels(np.zeros(n, dtype=np.int32), [""], mask)
    if width <= 62:
        keys = flags.astype(np.int64) @ (np.int64(1) << np.arange(width, dtype=np.int64))
        patterns, inverse = np.unique(keys, return_inverse=True)
        rows = [[bool((int(p) >> j) & 1) for j in range(width)] for p in patterns.tolist()]
    else:
        unique_rows, inverse = np.unique(flags, axis=0, return_inverse=True)
        rows = unique_rows.tolist()
    labels = [";".join(n for n, f in zip(names, row, strict=True) if f) for row in rows]
    return _labels(inverse.reshape(-1), labels, mask)


def top_contributions(contributions: Float, k: int) -> tuple[npt.NDArray[np.intp], Float]:
    """Per row, the k features with the largest |contribution| and their contributions.

    Ties go to the feature listed first in the manifest, as the API's stable sort orders them:
    ``argmax`` returns the first maximum. k passes of argmax beat a full sort for small k.
    """
    n, width = contributions.shape
    k = min(k, width)
    if k > 8:
        order = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :k]
    else:
        magnitude = np.abs(contributions)
        rows = np.arange(n)
        order = np.empty((n, k), dtype=np.intp)
        for i in range(k):
            pick = magnitude.argmax(axis=1)
            order[:, i] = pick
            magnitude[rows, pick] = -1.0  # below every |contribution|
    top: Float = np.take_along_axis(contributions, order, axis=1)
    return order, top


@dataclass(frozen=True)
class ScoredFrame:
    accepted: Bool
    table: Any
    """pyarrow Table of :func:`score_fields`, one row per input row (nulls where rejected)."""

    @property
    def n_rejected(self) -> int:
        return int((~self.accepted).sum())


class FrameScorer:
    """Validate a table column-wise and score it with the one scoring core."""

    def __init__(self, core: ScoringModel, population: Population | None = None) -> None:
        self.core = core
        self.manifest = core.manifest
        self.population = population or Population(core.manifest)
        self.validator = FrameValidator(core.manifest.features, core.manifest.columns)
        self.tier_names = np.array([t.name for t in core.tiers], dtype=object)
        self.feature_names = np.array(core.feature_names, dtype=object)

    def fields(self, *, explain: bool, top_k: int) -> list[Any]:
        return score_fields(len(self.feature_names), explain=explain, top_k=top_k)

    def score(
        self, table: Mapping[str, ColumnLike], n_rows: int, *, explain: bool, top_k: int
    ) -> ScoredFrame:
        frame = self.validator.validate(table, n_rows)
        index = np.flatnonzero(frame.accepted)
        probability = np.full(n_rows, np.nan)
        tier = np.zeros(n_rows, dtype=np.int32)
        contributions = np.zeros((n_rows, len(self.feature_names)))
        if len(index):
            scores = self.core.score_matrix(frame.matrix)
            probability[index] = scores.probability
            tier[index] = scores.tier_index
            contributions[index] = scores.contributions
        # The context columns the rules name (optional): a bad cell rejects its row.
        contexts, context_errors = self.population.context_columns(table, n_rows)
        accepted = frame.accepted.copy()
        errors = dict(frame.errors)
        for row, error in context_errors.items():
            errors[row] = [*errors.get(row, []), error]
            accepted[row] = False
        rejected = ~accepted
        reasons_na = self.population.check_table(frame.values, contexts, accepted)
        not_applicable = reasons_na != None  # noqa: E711 (elementwise on an object array)
        # Not applicable: no score, tier or explanation (the row keeps its status and reasons).
        withheld = rejected | not_applicable
        names = self.validator.names
        columns: dict[str, Any] = {
            "probability": pa.array(probability, pa.float64(), mask=withheld),
            "tier": _labels(tier, self.tier_names, withheld),
            "model_name": _constant(self.core.name, n_rows),
            "model_version": _constant(self.core.version, n_rows),
            "model_sha256": _constant(self.core.sha256, n_rows),
            "clinical_use": _constant(self.manifest.clinical_use.status, n_rows),
            "missing_features": join_flags(frame.missing, names, rejected),
            "out_of_training_range": join_flags(frame.out_of_range, names, rejected),
            "unit_conversions": join_flags(frame.converted, names, rejected),
            "trustworthy": pa.array(
                ~(frame.missing.any(axis=1) | frame.out_of_range.any(axis=1)),
                pa.bool_(),
                mask=rejected,
            ),
            "status": _labels(
                not_applicable.astype(np.int32), ["scored", "not_applicable"], rejected
            ),
            "not_applicable": pa.array(reasons_na, pa.string()),
            "uncertainty": self.population.uncertainty_column(probability, withheld),
            "warnings": self.population.warnings_column(
                frame.values, contexts, withheld, np.asarray(frame.out_of_range.any(axis=1))
            ),
        }
        if explain:
            k = effective_top_k(len(self.feature_names), top_k)
            order, top = top_contributions(contributions, k)
            for i in range(k):
                columns[f"top{i + 1}_feature"] = _labels(order[:, i], self.feature_names, withheld)
                columns[f"top{i + 1}_contribution"] = pa.array(
                    top[:, i], pa.float64(), mask=withheld
                )
            rest = contributions.sum(axis=1) - top.sum(axis=1)
            if k >= contributions.shape[1]:
                rest = np.zeros(n_rows)
            columns["other_contribution"] = pa.array(rest, pa.float64(), mask=withheld)
        reasons = np.full(n_rows, None, dtype=object)
        for row, row_errors in errors.items():
            reasons[row] = reason_text(row_errors)
        columns["reject_reason"] = pa.array(reasons, pa.string())
        schema = pa.schema(self.fields(explain=explain, top_k=top_k))
        return ScoredFrame(accepted, pa.table(columns, schema=schema))


def _labels(indices: npt.NDArray[Any], labels: Any, mask: Bool | None = None) -> Any:
    """Strings by index into ``labels``, built in Arrow (no Python string per row)."""
    codes = pa.array(indices.astype(np.int32), pa.int32(), mask=mask)
    dictionary = pa.array(list(labels), pa.string())
    return pa.DictionaryArray.from_arrays(codes, dictionary).cast(pa.string())


def _constant(value: str, n: int) -> Any:
    return _labels(np.zeros(n, dtype=np.int32), [value])
