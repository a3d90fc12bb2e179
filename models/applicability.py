"""Whom a model applies to, how sure a score is, and what qualifies it (issue 14).

Defined once here from the manifest and used by :class:`models.predictor.Predictor` for every
front door: a patient outside the intended population gets a typed "not applicable" answer
naming the failed rules and no score (unless the caller asked for research use); a scored
patient gets the observed event rate, with its 95% CI, among untouched test patients of similar
predicted risk, and warnings for unreliable subgroups, borrowed tier thresholds and values
outside the training range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from models.manifest import ApplicabilityRule, FeatureSpec, Manifest, SubgroupMetrics
from models.validation import FieldError

Status = Literal["scored", "not_applicable"]
DASH = "\u2013"  # an en dash for ranges, as a clinician writes "20\u201330%"


class FailedRuleDict(TypedDict):
    id: str
    description: str
    source: str
    detail: str


class ApplicabilityDict(TypedDict):
    applicable: bool
    research_use: bool
    failed: list[FailedRuleDict]


class UncertaintyDict(TypedDict):
    statement: str
    observed_rate: float
    ci_low: float
    ci_high: float
    n: int
    bin: list[float]


class WarningDict(TypedDict):
    code: str
    message: str


def _percent(value: float) -> str:
    """A rate in whole percent (below 1%: one decimal), as a clinician reads it."""
    scaled = value * 100
    return f"{scaled:.1f}%" if 0 < scaled < 1 else f"{scaled:.0f}%"


def _number(value: float) -> str:
    return f"{value:g}"


class Population:
    """The manifest's applicability rules, uncertainty bins and subgroups, ready to apply."""

    def __init__(self, manifest: Manifest) -> None:
        self.rules = list(manifest.applicability)
        self.contexts = frozenset(r.context for r in self.rules if r.context is not None)
        self._specs: dict[str, FeatureSpec] = {f.name: f for f in manifest.features}
        # A published equation has no local validation: no uncertainty statement, no subgroups.
        validation = manifest.validation
        bins = [
            b
            for b in (validation.test.calibration_bins if validation is not None else [])
            if b.lower is not None and b.upper is not None and b.observed_ci_low is not None
        ]
        self._edges = np.array([b.lower for b in bins[1:]], dtype=np.float64)
        self._uncertainty: list[UncertaintyDict] = [self._statement(b) for b in bins]
        self._subgroups = [
            (s, self._subgroup_warning(s))
            for s in (validation.subgroups if validation is not None else [])
            if not s.reliable and s.feature is not None and s.feature in self._specs
        ]
        self._borrowed: list[WarningDict] = (
            [{"code": "tier_thresholds_borrowed", "message": manifest.tiers_borrowed_from}]
            if manifest.tiers_borrowed_from
            else []
        )
        not_stated = [r for r in self.rules if r.kind == "context_false"]
        self._not_stated = {r.context: r for r in not_stated if r.context is not None}
        # Audit membership: every subgroup placed by a feature (live validation reads it back).
        self._audited = [
            s for s in (validation.subgroups if validation is not None else []) if s.feature
        ]
        # What :meth:`check` answers for a patient who passes every feature rule and whose
        # caller stated no context: the batch path's common case, computed once by the same
        # code (feature rules hold when their value is absent).
        self._no_context = self.check({}, None, research_use=False)
        self._remembered: dict[tuple[int, int, int], tuple[list[WarningDict], str | None]] = {}

    # -- applicability ------------------------------------------------------------------------

    def check(
        self,
        values: Mapping[str, Any],
        context: Mapping[str, bool] | None,
        *,
        research_use: bool,
    ) -> tuple[ApplicabilityDict, list[WarningDict]]:
        """Every rule on one patient's canonical values and context; warnings for what the
        caller did not state (a context_false rule left unstated is assumed to hold)."""
        context = context or {}
        failed: list[FailedRuleDict] = []
        unstated: list[str] = []
        for rule in self.rules:
            detail = self._failure(rule, values, context)
            if detail is None:
                if rule.context is not None and rule.context not in context:
                    unstated.append(rule.description)
                continue
            failed.append(
                {
                    "id": rule.id,
                    "description": rule.description,
                    "source": rule.source,
                    "detail": detail,
                }
            )
        warnings: list[WarningDict] = []
        if unstated:
            warnings.append(
                {
                    "code": "applicability_not_stated",
                    "message": "Not stated by the caller, assumed to hold: "
                    + "; ".join(unstated)
                    + ".",
                }
            )
        if failed and research_use:
            warnings.append(
                {
                    "code": "research_use",
                    "message": "Scored for research outside the intended population ("
                    + "; ".join(f["detail"] for f in failed)
                    + "): not for clinical decisions.",
                }
            )
        return {"applicable": not failed, "research_use": research_use, "failed": failed}, warnings

    def _failure(
        self, rule: ApplicabilityRule, values: Mapping[str, Any], context: Mapping[str, bool]
    ) -> str | None:
        """Why a patient fails ``rule`` in clinical words, or None when it holds (or is unknown
        for a feature the caller may leave out: the model's missing-value handling applies)."""
        if rule.kind == "feature_range":
            assert rule.feature is not None
            value = values.get(rule.feature)
            if value is None or isinstance(value, str) or value != value:
                return None
            spec = self._specs[rule.feature]
            unit = f" {spec.unit}" if spec.unit and spec.unit not in ("years", "count") else ""
            label = spec.label.lower()
            if rule.minimum is not None and value < rule.minimum:
                return f"{label} {_number(value)}{unit} is below {_number(rule.minimum)}{unit}"
            if rule.maximum is not None and value > rule.maximum:
                return f"{label} {_number(value)}{unit} is above {_number(rule.maximum)}{unit}"
            return None
        assert rule.context is not None
        stated = context.get(rule.context)
        words = rule.context.replace("_", " ").replace("ascvd", "ASCVD")
        if rule.kind == "context_false" and stated is True:
            return f"{words} stated as yes"
        if rule.kind == "context_required" and stated is not True:
            return f"{words} not stated" if stated is None else f"{words} stated as no"
        return None

    def check_many(
        self,
        columns: Mapping[str, npt.NDArray[Any]],
        rows: Sequence[Mapping[str, Any]],
        contexts: Sequence[Mapping[str, bool] | None] | None,
        research_use: Sequence[bool] | None,
        out_of_range: npt.NDArray[np.bool_],
        out_of_range_names: Sequence[str],
    ) -> list[tuple[ApplicabilityDict, list[WarningDict], list[WarningDict], str | None]]:
        """Per row, what :meth:`check`, :meth:`warnings` and :meth:`subgroup_keys` answer,
        column-wise: (applicability, its warnings, the warnings qualifying a score, subgroup
        keys). ``columns`` and ``rows`` hold the same canonical values; ``out_of_range`` is a
        row x ``out_of_range_names`` mask.

        Rules, subgroups and ranges run as column masks; a row's result is looked up by its
        pattern of masks, so the words are built once per pattern, not once per patient. Only a
        row that fails a rule, states a context or asks for research use runs :meth:`check`.
        """
        n = len(rows)
        unusual = np.zeros(n, dtype=bool)
        for rule in self.rules:
            feature = rule.feature
            if rule.kind == "feature_range" and feature is not None and feature in columns:
                numbers = np.asarray(columns[feature], dtype=np.float64)
                with np.errstate(invalid="ignore"):
                    if rule.minimum is not None:
                        unusual |= numbers < rule.minimum
                    if rule.maximum is not None:
                        unusual |= numbers > rule.maximum
        if contexts is not None:
            # An empty context states nothing: the common case, answered by `_no_context`
            # (running `check` on every such row was a tenth of a batch's scoring time).
            unusual |= np.array([bool(c) for c in contexts], dtype=bool)
        if research_use is not None:
            unusual |= np.asarray(research_use, dtype=bool)
        if not self._no_context[0]["applicable"]:
            unusual[:] = True  # a context the caller must state: every row says why
        qualifying = _pattern_codes(
            [_members(s, columns[s.feature or ""]) for s, _ in self._subgroups], n
        )
        audited = _pattern_codes(
            [
                _members(s, columns[s.feature or ""])
                if s.feature in columns
                else np.zeros(n, dtype=bool)
                for s in self._audited
            ],
            n,
        )
        ranges = _pattern_codes(list(np.asarray(out_of_range, dtype=bool).T), n)
        out: list[tuple[ApplicabilityDict, list[WarningDict], list[WarningDict], str | None]] = []
        remembered = self._remembered
        for i, (row, is_unusual, q, a, r) in enumerate(
            zip(rows, unusual.tolist(), qualifying, audited, ranges, strict=True)
        ):
            key = (q, r, a)
            pair = remembered.get(key)
            if pair is None:
                pair = (self._qualifying(q, r, out_of_range_names), self._keys(a))
                if len(remembered) < 1 << 16:
                    remembered[key] = pair
            if is_unusual:
                applicability, warnings = self.check(
                    row,
                    contexts[i] if contexts is not None else None,
                    research_use=bool(research_use[i]) if research_use is not None else False,
                )
            else:
                applicability, warnings = self._no_context
            out.append((applicability, warnings, pair[0], pair[1]))
        return out

    def subgroup_keys(self, values: Mapping[str, Any]) -> str | None:
        """The keys of the manifest subgroups a validated input belongs to, comma-separated, as
        the audit trail stores them (None: the manifest defines no membership)."""
        if not self._audited:
            return None
        return ",".join(
            subgroup_key(s) for s in self._audited if in_subgroup(s, values.get(s.feature or ""))
        )

    def _keys(self, code: int) -> str | None:
        if not self._audited:
            return None
        return ",".join(subgroup_key(s) for i, s in enumerate(self._audited) if code >> i & 1)

    def _qualifying(self, code: int, ranges: int, names: Sequence[str]) -> list[WarningDict]:
        out: list[WarningDict] = list(self._borrowed)
        out.extend(w for i, (_, w) in enumerate(self._subgroups) if code >> i & 1)
        flagged = [name for i, name in enumerate(names) if ranges >> i & 1]
        if flagged:
            out.append(self._out_of_range_warning(flagged))
        return out

    # -- uncertainty and warnings --------------------------------------------------------------

    def uncertainty(self, probability: float) -> UncertaintyDict | None:
        """The statement of the test bin holding ``probability`` (shared, read-only)."""
        if not self._uncertainty:
            return None
        return self._uncertainty[int(np.searchsorted(self._edges, probability, side="right"))]

    def uncertainties(self, probabilities: npt.NDArray[np.float64]) -> list[UncertaintyDict | None]:
        if not self._uncertainty:
            return [None] * len(probabilities)
        index = np.searchsorted(self._edges, probabilities, side="right").tolist()
        return [self._uncertainty[i] for i in index]

    def warnings(self, values: Mapping[str, Any], out_of_range: Sequence[str]) -> list[WarningDict]:
        """Warnings that qualify a score: borrowed tiers, unreliable subgroups the patient is
        in, and inputs outside the training range."""
        out: list[WarningDict] = list(self._borrowed)
        for subgroup, warning in self._subgroups:
            if in_subgroup(subgroup, values.get(subgroup.feature or "")):
                out.append(warning)
        if out_of_range:
            out.append(self._out_of_range_warning(out_of_range))
        return out

    def _out_of_range_warning(self, names: Sequence[str]) -> WarningDict:
        labels = ", ".join(self._specs[name].label for name in names)
        return {
            "code": "value_outside_training_range",
            "message": f"Outside the middle 98% of the training data: {labels}; "
            "the score extrapolates there.",
        }

    # -- tables (files, Spark) -----------------------------------------------------------------

    def context_columns(
        self, table: Mapping[str, Any], n_rows: int
    ) -> tuple[dict[str, npt.NDArray[Any]], dict[int, FieldError]]:
        """The optional context columns (named as the rules' contexts): per column an object
        array of True / False / None (not stated), and the rows whose cell is not a yes/no."""
        out: dict[str, npt.NDArray[Any]] = {}
        errors: dict[int, FieldError] = {}
        for name in sorted(self.contexts):
            column = table.get(name)
            if column is None:
                continue
            cells = column.to_pylist() if hasattr(column, "to_pylist") else list(column)
            values = np.full(n_rows, None, dtype=object)
            for row, cell in enumerate(cells):
                parsed = yes_no(cell)
                if parsed is _BAD:
                    errors.setdefault(
                        row,
                        FieldError(name, "must be yes or no", cell, "true/false, yes/no, 1/0"),
                    )
                else:
                    values[row] = parsed
            out[name] = values
        return out, errors

    def check_table(
        self,
        values: Mapping[str, npt.NDArray[Any]],
        contexts: Mapping[str, npt.NDArray[Any]],
        accepted: npt.NDArray[np.bool_],
    ) -> npt.NDArray[Any]:
        """Per row, the failed rules as one line ("rule: detail; ..."), None where the model
        applies (or the row was rejected): rules run column-wise, words only for failures."""
        n = len(accepted)
        failures: list[tuple[ApplicabilityRule, npt.NDArray[np.bool_]]] = []
        for rule in self.rules:
            if rule.kind == "feature_range":
                assert rule.feature is not None
                column = np.asarray(values[rule.feature], dtype=np.float64)
                with np.errstate(invalid="ignore"):
                    low = column < rule.minimum if rule.minimum is not None else False
                    high = column > rule.maximum if rule.maximum is not None else False
                mask = np.asarray(low | high, dtype=bool) & accepted
            else:
                assert rule.context is not None
                stated = contexts.get(rule.context)
                if stated is None:
                    stated = np.full(n, None, dtype=object)
                if rule.kind == "context_false":
                    mask = (stated == True) & accepted  # noqa: E712 (elementwise)
                else:
                    mask = (stated != True) & accepted  # noqa: E712 (elementwise)
            if mask.any():
                failures.append((rule, mask))
        out = np.full(n, None, dtype=object)
        for row in (
            np.flatnonzero(np.any([m for _, m in failures], axis=0)).tolist() if failures else []
        ):
            row_values = {k: _scalar(v[row]) for k, v in values.items()}
            row_context = {k: bool(v[row]) for k, v in contexts.items() if v[row] is not None}
            out[row] = "; ".join(
                f"{rule.description}: {self._failure(rule, row_values, row_context)}"
                for rule, mask in failures
                if mask[row]
            )
        return out

    def uncertainty_column(
        self, probability: npt.NDArray[np.float64], withheld: npt.NDArray[np.bool_]
    ) -> Any:
        """Per row the uncertainty statement of its bin (null where no score)."""
        statements = [u["statement"] for u in self._uncertainty] or [""]
        index = (
            np.searchsorted(self._edges, np.nan_to_num(probability), side="right")
            if self._uncertainty
            else np.zeros(len(probability), dtype=np.intp)
        )
        codes = pa.array(index.astype(np.int32), pa.int32(), mask=withheld)
        return pa.DictionaryArray.from_arrays(codes, pa.array(statements, pa.string())).cast(
            pa.string()
        )

    def warnings_column(
        self,
        values: Mapping[str, npt.NDArray[Any]],
        contexts: Mapping[str, npt.NDArray[Any]],
        withheld: npt.NDArray[np.bool_],
        out_of_range: npt.NDArray[np.bool_],
    ) -> Any:
        """Per scored row the warning codes, semicolon-joined ('' for none), in the order a
        single result lists them."""
        n = len(withheld)
        flags: list[tuple[str, npt.NDArray[np.bool_]]] = []
        unstated = [r for r in self.rules if r.kind == "context_false" and r.context is not None]
        if unstated:
            none = np.ones(n, dtype=bool)
            missing = np.zeros(n, dtype=bool)
            for rule in unstated:
                column = contexts.get(rule.context or "")
                missing |= none if column is None else np.array([v is None for v in column], bool)
            flags.append(("applicability_not_stated", missing))
        if self._borrowed:
            flags.append(("tier_thresholds_borrowed", np.ones(n, dtype=bool)))
        for subgroup, warning in self._subgroups:
            column = values[subgroup.feature or ""]
            flags.append((warning["code"], _members(subgroup, column)))
        flags.append(("value_outside_training_range", out_of_range))
        # Each row's flags as the bits of one number; the text is built once per pattern. One
        # code per warning, as a single result lists them (two unreliable subgroups: two
        # subgroup_unreliable warnings).
        patterns = np.zeros(n, dtype=object if len(flags) > 62 else np.int64)
        for bit, (_, mask) in enumerate(flags):
            patterns |= np.asarray(mask, dtype=bool).astype(patterns.dtype) << bit
        unique, inverse = np.unique(patterns, return_inverse=True)
        texts = [
            ";".join(code for bit, (code, _) in enumerate(flags) if int(u) >> bit & 1)
            for u in unique.tolist()
        ]
        codes = pa.array(inverse.reshape(-1).astype(np.int32), pa.int32(), mask=withheld)
        return pa.DictionaryArray.from_arrays(codes, pa.array(texts, pa.string())).cast(pa.string())

    @staticmethod
    def _statement(b: Any) -> UncertaintyDict:
        lo, hi = float(b.lower), float(b.upper)
        statement = (
            f"Among {b.n} test patients with predicted risk {_percent(lo)}{DASH}{_percent(hi)}, "
            f"{_percent(b.observed_rate)} ({_percent(b.observed_ci_low)}{DASH}"
            f"{_percent(b.observed_ci_high)}) had the event."
        )
        return {
            "statement": statement,
            "observed_rate": float(b.observed_rate),
            "ci_low": float(b.observed_ci_low),
            "ci_high": float(b.observed_ci_high),
            "n": int(b.n),
            "bin": [lo, hi],
        }

    def _subgroup_warning(self, s: SubgroupMetrics) -> WarningDict:
        label = self._specs[s.feature].label if s.feature else s.factor
        return {
            "code": "subgroup_unreliable",
            "message": f"Validation was weak for {label.lower()} {s.level} "
            f"({s.concern}); treat this score with extra caution.",
        }


def in_subgroup(subgroup: SubgroupMetrics, value: Any) -> bool:
    """Whether a patient whose ``subgroup.feature`` is ``value`` (canonical, validated) belongs
    to ``subgroup``: the one definition, used for the warnings here and by live validation."""
    if value is None or (isinstance(value, float) and value != value):
        return False
    if subgroup.categories:
        text = str(value)
        if isinstance(value, float) and value.is_integer():
            text = str(int(value))
        return text in subgroup.categories
    if isinstance(value, str):
        return False
    number = float(value)
    if subgroup.minimum is not None and number < subgroup.minimum:
        return False
    return not (subgroup.maximum is not None and number >= subgroup.maximum)


NOT_YES_NO = object()
_BAD = NOT_YES_NO


def yes_no(cell: Any) -> Any:
    """A table cell as True / False / None (empty = not stated), or NOT_YES_NO."""
    if cell is None or (isinstance(cell, float) and cell != cell):
        return None
    if isinstance(cell, bool):
        return cell
    if isinstance(cell, int | float) and cell in (0, 1):
        return bool(cell)
    text = str(cell).strip().lower()
    if text == "":
        return None
    if text in ("true", "yes", "1", "y"):
        return True
    if text in ("false", "no", "0", "n"):
        return False
    return _BAD


def _scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def _members(subgroup: SubgroupMetrics, column: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """Column-wise :func:`_member`."""
    if subgroup.categories:
        # Chart values repeat: each distinct value is judged once (NaN is never a member).
        known: dict[Any, bool] = {}
        members = []
        for v in column.tolist():
            member = known.get(v)
            if member is None:
                member = known[v] = in_subgroup(subgroup, _scalar(v))
            members.append(member)
        return np.array(members, dtype=bool)
    numbers = np.asarray(column, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        mask = ~np.isnan(numbers)
        if subgroup.minimum is not None:
            mask &= numbers >= subgroup.minimum
        if subgroup.maximum is not None:
            mask &= numbers < subgroup.maximum
    return mask


def subgroup_key(group: SubgroupMetrics) -> str:
    """``factor=level``: unique within a manifest; commas (the audit's separator) replaced."""
    return f"{group.factor}={group.level}".replace(",", ";")


def _pattern_codes(masks: Sequence[npt.NDArray[np.bool_]], n: int) -> list[int]:
    """Per row, the masks it is in as the bits of one integer (Python ints: any count)."""
    codes = [0] * n
    for bit, mask in enumerate(masks):
        for row in np.flatnonzero(mask).tolist():
            codes[row] |= 1 << bit
    return codes


def parse_context(
    body: Any, names: frozenset[str], prefix: str = ""
) -> tuple[dict[str, bool], list[tuple[str, str, Any, str]]]:
    """The request's ``context`` object: booleans under names the model's rules declare.

    Returns the context and (field, message, value, allowed) errors; the caller renders them.
    """
    if body is None:
        return {}, []
    allowed = ", ".join(sorted(names)) or "none (this model declares no context)"
    if not isinstance(body, dict):
        return {}, [(prefix + "context", "must be a JSON object", None, "an object of booleans")]
    context: dict[str, bool] = {}
    errors: list[tuple[str, str, Any, str]] = []
    for key, value in body.items():
        if key not in names:
            errors.append((prefix + "context", "unknown context", key, "one of: " + allowed))
        elif value is not None and not isinstance(value, bool):
            errors.append((f"{prefix}context.{key}", "must be true or false", value, "a boolean"))
        elif value is not None:
            context[key] = value
    return context, errors
