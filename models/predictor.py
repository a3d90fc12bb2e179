"""The one facade for a prediction: payload(s) or a table in, results out.

Every front door (REST single and batch, CDS Hooks, files, Spark, risk curves) calls a
:class:`Predictor`: it validates with the model's feature rules, scores with the scoring core,
explains exactly, describes each value in words and flags data quality. Routes only do HTTP.

Results are plain dicts typed as :class:`Prediction` (serialised once with orjson by the
service); the response schemas in ``service`` describe the same shape for the OpenAPI document.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypedDict, cast

import numpy as np
import numpy.typing as npt

from models import describe
from models.applicability import (
    ApplicabilityDict,
    Population,
    Status,
    UncertaintyDict,
    WarningDict,
)
from models.curves import RiskCurve, risk_curves, what_if_errors
from models.loader import Artifact, load_artifact
from models.scoring import ScoringModel
from models.signing import TrustPolicy, default_policy
from models.tables import ColumnLike, FrameScorer, ScoredFrame, ValidatedFrame
from models.validation import (
    DataQuality,
    FieldError,
    InvalidFeatures,
    RowValidator,
)

NO_EFFECT = 1e-12
# Remembered explanation items and sentences per model (bounded: values are open-ended).
MAX_REMEMBERED = 1 << 16
Direction = Literal["raised", "lowered", "no effect"]
# Indexed by the sign of a contribution: 1 raised, -1 lowered, 0 no effect.
DIRECTIONS: tuple[Direction, Direction, Direction] = ("no effect", "raised", "lowered")
SIGN_OF: dict[Direction, int] = {"no effect": 0, "raised": 1, "lowered": -1}


class ModelRef(TypedDict):
    name: str
    version: str
    sha256: str


class ClinicalUseDict(TypedDict):
    """Whether the model's scores may inform care (manifest ``clinical_use``), and why."""

    status: str
    reason: str


class TierDict(TypedDict):
    name: str
    label: str
    lower: float
    upper: float | None
    action: str


Basis = Literal["declared_direction", "association", "value_unknown", "combined"]


class ContributionDict(TypedDict):
    feature: str
    label: str
    value: float | str | None
    unit: str | None
    contribution: float
    direction: Direction
    basis: Basis
    """How to read the contribution (the text says the same in words): the input has a declared
    clinical direction the model is held to; or none (an association of the training data); or
    its value was not known (what "unknown" goes with in the model); or several inputs
    together (the top-k remainder)."""
    text: str


class ExplanationDict(TypedDict):
    method: Literal["tree_shap", "linear", "equation"]
    base_log_odds: float
    """On ``scale`` (named so for the trained models' log-odds; see ``probability_mapping``)."""
    base_probability: float
    contributions: list[ContributionDict]
    scale: str
    """'log_odds', or 'log_cumulative_hazard' for a Cox-type published equation."""
    probability_mapping: str


class MissingDict(TypedDict):
    feature: str
    handling: str


class OutOfRangeDict(TypedDict):
    feature: str
    value: float
    training_p01: float
    training_p99: float


class UnitConversionDict(TypedDict):
    feature: str
    value: float
    unit: str
    converted_value: float
    canonical_unit: str


class DataQualityDict(TypedDict):
    missing: list[MissingDict]
    out_of_training_range: list[OutOfRangeDict]
    unit_conversions: list[UnitConversionDict]
    trustworthy: bool


class Prediction(TypedDict):
    """One answer. ``status`` "not_applicable" (outside the intended population, no research
    use): ``probability``, ``tier`` and ``explanation`` are None, ``applicability`` says why."""

    prediction_id: str
    model: ModelRef
    clinical_use: ClinicalUseDict
    status: Status
    probability: float | None
    tier: TierDict | None
    explanation: ExplanationDict | None
    applicability: ApplicabilityDict
    uncertainty: UncertaintyDict | None
    warnings: list[WarningDict]
    data_quality: DataQualityDict
    elapsed_ms: float


class Scored(NamedTuple):
    """A prediction, the canonical input it was computed from (hashed by the audit trail) and
    the manifest subgroups that input places the patient in (live validation per subgroup)."""

    result: Prediction
    values: dict[str, float | str | None]
    subgroups: str | None = None


class CurvesResult(TypedDict):
    model: ModelRef
    probability: float
    method: Literal["individual_conditional_expectation"]
    curves: list[RiskCurve]


def prediction_id() -> str:
    """A time-ordered UUID (version 7, RFC 9562): 48 bits of Unix milliseconds, 74 random bits.

    Every prediction's id is a unique key of the audit store; random (version 4) ids land all
    over that index, so each batch of inserts dirtied a page per row (measured: 1,000 audit
    inserts took 5 ms on an empty SQLite table and 22 ms at 150k rows with v4 ids, 5 ms with v7).
    """
    return prediction_ids(1)[0]


FEW_IDS = 16
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_UUID_DASHES = np.array([8, 12, 16, 20])


def prediction_ids(n: int) -> list[str]:
    """``n`` :func:`prediction_id` values from one clock reading and one read of the system's
    random source, laid out and spelled by numpy (a read per id was a tenth of the batch path's
    scoring time; formatting id by id in Python, 1.6 ms per 1,000). A few ids (a single
    prediction) are formatted in Python: numpy's set-up costs more than that."""
    if n < FEW_IDS:
        milliseconds = (time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | 0x2 << 62
        random = os.urandom(10 * n)
        ids = []
        for start in range(0, 10 * n, 10):
            value = int.from_bytes(random[start : start + 10], "big")
            text = f"{milliseconds | (value >> 64 & 0xFFF) << 64 | value & (1 << 62) - 1:032x}"
            ids.append(f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}")
        return ids
    raw = np.empty((n, 16), dtype=np.uint8)
    raw[:, :6] = np.frombuffer((time.time_ns() // 1_000_000).to_bytes(6, "big"), dtype=np.uint8)
    raw[:, 6:] = np.frombuffer(os.urandom(10 * n), dtype=np.uint8).reshape(n, 10)
    raw[:, 6] = raw[:, 6] & 0x0F | 0x70  # version 7
    raw[:, 8] = raw[:, 8] & 0x3F | 0x80  # the RFC 9562 variant
    digits = np.empty((n, 32), dtype=np.uint8)
    digits[:, 0::2] = _HEX_DIGITS[raw >> 4]
    digits[:, 1::2] = _HEX_DIGITS[raw & 0x0F]
    text = np.insert(digits, _UUID_DASHES, ord("-"), axis=1).tobytes().decode("ascii")
    return [text[start : start + 36] for start in range(0, 36 * n, 36)]


def _direction(contribution: float) -> Direction:
    if contribution > NO_EFFECT:
        return "raised"
    if contribution < -NO_EFFECT:
        return "lowered"
    return "no effect"


class Predictor:
    """One model version ready to serve: rules, scoring core, wording, in one facade."""

    def __init__(self, artifact: Artifact) -> None:
        self.core = ScoringModel(artifact)
        self.manifest = artifact.manifest
        self.name = self.core.name
        self.version = self.core.version
        self.sha256 = self.core.sha256
        self.validator = RowValidator(artifact.manifest)
        self.population = Population(artifact.manifest)
        self.frames = FrameScorer(self.core, self.population)
        self.specs = list(artifact.manifest.features)
        self.ref: ModelRef = {"name": self.name, "version": self.version, "sha256": self.sha256}
        use = artifact.manifest.clinical_use
        self.clinical_use: ClinicalUseDict = {"status": use.status, "reason": use.reason}
        self.tiers: list[TierDict] = [
            {
                "name": t.name,
                "label": t.label,
                "lower": t.lower,
                "upper": t.upper,
                "action": t.action,
            }
            for t in self.core.tiers
        ]
        self.base_probability = float(
            self.core.to_probability(np.array([self.core.base_log_odds]))[0]
        )
        # The explanation's fields every result of this version shares (one tuple read per
        # result instead of five attribute chains).
        self._explanation_constants = (
            self.core.method,
            self.core.base_log_odds,
            self.base_probability,
            self.core.scale,
            self.core.probability_mapping,
        )
        self.card_markdown = artifact.card_markdown
        # Per feature: name, label, unit, its remembered sentences, and how a known value's
        # contribution reads (``basis``: the declared direction decides it once).
        self._features: list[tuple[str, str, str | None, dict[tuple[Any, int], str], Basis]] = [
            (
                f.name,
                f.label,
                f.unit,
                {},
                "association" if f.direction == 0 else "declared_direction",
            )
            for f in self.specs
        ]
        self._names = [f.name for f in self.specs]
        self.feature_names = frozenset(self._names)
        # Per feature, its remembered items by (value, contribution): see :meth:`explain`.
        self._items: list[dict[tuple[Any, float], ContributionDict]] = [{} for _ in self.specs]
        self._remember = max(1024, MAX_REMEMBERED // max(1, len(self.specs)))
        # Shared, never mutated: one dict per feature for every "missing" flag.
        self._missing = [
            MissingDict(feature=r.name, handling=r.missing_handling) for r in self.validator.rules
        ]

    # -- one patient -------------------------------------------------------------------------

    def predict(
        self,
        features: Mapping[str, Any],
        *,
        top_k: int | None = None,
        prefix: str = "features",
        context: Mapping[str, bool] | None = None,
        research_use: bool = False,
    ) -> Scored:
        """Validate, check the intended population, score and explain one JSON payload (raises
        ``InvalidFeatures``). Outside the population the answer is "not_applicable" and carries
        no score, unless ``research_use`` (the caller checked the caller may ask for it)."""
        started = time.perf_counter()
        row = self.validator.validate(features, prefix=prefix)
        values = row.values
        quality = _quality(row.quality)
        population = self.population
        applicability, warnings = population.check(values, context, research_use=research_use)
        subgroups = population.subgroup_keys(values)
        if not (applicability["applicable"] or research_use):
            return Scored(
                self._not_applicable(prediction_id(), applicability, warnings, quality, started),
                values,
                subgroups,
            )
        probability, contributions, tier = self.core.score_one(row.columns)
        qualifying = population.warnings(
            values, [o["feature"] for o in quality["out_of_training_range"]]
        )
        result = self._result(
            prediction_id(),
            probability,
            self.explain(
                [values[name] for name in self._names],
                contributions.tolist(),
                np.argsort(-np.abs(contributions), kind="stable").tolist(),
                _signs(contributions).tolist(),
                top_k,
            ),
            tier,
            quality,
            started,
            applicability,
            [*warnings, *qualifying],
            population.uncertainty(probability),
        )
        return Scored(result, values, subgroups)

    # -- a JSON batch ------------------------------------------------------------------------

    def predict_many(
        self,
        payloads: Sequence[Mapping[str, Any]],
        *,
        top_k: Sequence[int | None],
        contexts: Sequence[Mapping[str, bool] | None] | None = None,
        research_use: Sequence[bool] | None = None,
    ) -> list[Scored | list[FieldError]]:
        """Many JSON payloads through the column executor: one result or its errors each; a
        payload outside the intended population gets the "not_applicable" answer.

        Errors name fields relative to the payload (``features.<name>``).
        """
        started = time.perf_counter()
        frame = self.frames.validator.validate_json(payloads)
        out: list[Scored | list[FieldError]] = [[] for _ in payloads]
        for row, errors in frame.errors.items():
            out[row] = errors
        accepted = np.flatnonzero(frame.accepted)
        if not len(accepted):
            return out
        scores = self.core.score_matrix(frame.matrix)
        contributions = scores.contributions
        orders = np.argsort(-np.abs(contributions), axis=1, kind="stable")
        probabilities = scores.probability.tolist()
        tiers = scores.tier_index.tolist()
        names = self._names
        arrays = {name: frame.values[name][accepted] for name in names}
        columns = [_json_values(arrays[name]) for name in names]
        rows = [dict(zip(names, cells, strict=True)) for cells in zip(*columns, strict=True)]
        explanations = self._explanations(
            columns, contributions, orders, [top_k[i] for i in accepted.tolist()]
        )
        qualities = self._qualities(frame, accepted)
        indices = accepted.tolist()
        research = [bool(research_use[i]) for i in indices] if research_use is not None else None
        checks = self.population.check_many(
            arrays,
            rows,
            [contexts[i] for i in indices] if contexts is not None else None,
            research,
            frame.out_of_range[accepted],
            [rule.name for rule in self.validator.rules],
        )
        uncertainties = self.population.uncertainties(scores.probability)
        identifiers = prediction_ids(len(indices))
        for position, (row, values, (applicability, warnings, qualifying, subgroups)) in enumerate(
            zip(indices, rows, checks, strict=True)
        ):
            if not (applicability["applicable"] or (research is not None and research[position])):
                result = self._not_applicable(
                    identifiers[position], applicability, warnings, qualities[position], started
                )
            else:
                result = self._result(
                    identifiers[position],
                    probabilities[position],
                    explanations[position],
                    tiers[position],
                    qualities[position],
                    started,
                    applicability,
                    [*warnings, *qualifying],
                    uncertainties[position],
                )
            out[row] = Scored(result, values, subgroups)
        return out

    # -- a table (files, Spark) --------------------------------------------------------------

    def score_table(
        self, table: Mapping[str, ColumnLike], n_rows: int, *, explain: bool, top_k: int
    ) -> ScoredFrame:
        """Score columns aligned with the input rows; rejected rows carry their reasons."""
        return self.frames.score(table, n_rows, explain=explain, top_k=top_k)

    def table_fields(self, *, explain: bool, top_k: int) -> list[Any]:
        """The score columns (pyarrow fields) :meth:`score_table` writes, in order."""
        return self.frames.fields(explain=explain, top_k=top_k)

    def input_columns(self) -> list[str]:
        """Every table column the model reads: its features, then their unit columns."""
        return [*self.frames.validator.input_columns(), *sorted(self.population.contexts)]

    # -- what-if -----------------------------------------------------------------------------

    def curves(
        self, features: Mapping[str, Any], names: Sequence[str], points: int
    ) -> CurvesResult:
        """Risk across each named feature's grid, the patient's other inputs held fixed.

        Raises ``InvalidFeatures`` naming bad features and bad names together.
        """
        name_errors = what_if_errors(self.specs, names)
        try:
            row = self.validator.validate(features)
        except InvalidFeatures as exc:
            raise InvalidFeatures(exc.errors + name_errors) from None
        if name_errors:
            raise InvalidFeatures(name_errors)
        # Curves draw risks: never for a patient the model does not apply to (the rules on
        # features; curves take no context).
        applicability, _ = self.population.check(row.values, None, research_use=False)
        if not applicability["applicable"]:
            raise InvalidFeatures(
                [
                    FieldError(
                        "features",
                        f"outside the intended population: {f['description']} ({f['detail']})",
                        None,
                        f["description"],
                        "not_applicable",
                    )
                    for f in applicability["failed"]
                ]
            )
        probability, _, _ = self.core.score_one(row.columns)
        return {
            "model": self.ref,
            "probability": probability,
            "method": "individual_conditional_expectation",
            "curves": risk_curves(self.core, row, list(names), points),
        }

    # -- shaping results ---------------------------------------------------------------------

    def explain(
        self,
        values: Sequence[float | str | None],
        amounts: list[float],
        order: list[int],
        signs: list[int],
        top_k: int | None,
    ) -> list[ContributionDict]:
        """Labelled contributions, largest magnitude first.

        ``values``, ``amounts`` and ``signs`` (+1 raised, -1 lowered, 0 no effect) are in
        manifest feature order. This is the batch path's innermost loop, so each item is
        remembered per (feature, value, contribution) and shared, read-only, between results:
        in an additive model of single-feature trees or linear terms a value always contributes
        the same amount, and chart values repeat.
        """
        shown = order if top_k is None else order[:top_k]
        remembered = self._items
        # A comprehension of lookups, then a pass for the few items not seen before: the
        # explicit loop cost a quarter of the batch path's scoring time.
        items: list[ContributionDict | None] = [
            remembered[i].get((values[i], amounts[i])) for i in shown
        ]
        if None in items:
            for position, i in enumerate(shown):
                if items[position] is None:
                    item = self._item(i, values[i], amounts[i], signs[i])
                    if len(remembered[i]) < self._remember:
                        remembered[i][(values[i], amounts[i])] = item
                    items[position] = item
        explained = cast(list[ContributionDict], items)
        if len(shown) < len(order):
            explained.append(self._others([amounts[i] for i in order[len(shown) :]]))
        return explained

    def _explanations(
        self,
        columns: list[list[float | str | None]],
        amounts: npt.NDArray[np.float64],
        orders: npt.NDArray[np.intp],
        top_k: list[int | None],
    ) -> list[list[ContributionDict]]:
        """:meth:`explain` for a batch, column by column: each feature's items are looked up
        for all rows at once and numpy puts every row's in order (per row in Python, this was
        a third of the batch path's scoring time)."""
        n, width = amounts.shape
        table = np.empty((n, width), dtype=object)
        amount_columns = amounts.T.tolist()
        sign_columns = _signs(amounts).T.tolist()
        for j, (values, column_amounts) in enumerate(zip(columns, amount_columns, strict=True)):
            remembered = self._items[j]
            # map() over zip(): the (value, contribution) keys are built and looked up in C.
            items = list(map(remembered.get, zip(values, column_amounts, strict=True)))
            if None in items:
                signs = sign_columns[j]
                for r, item in enumerate(items):
                    if item is None:
                        v, a = values[r], column_amounts[r]
                        items[r] = item = self._item(j, v, a, signs[r])
                        if len(remembered) < self._remember:
                            remembered[(v, a)] = item
            table[:, j] = items
        ordered: list[list[ContributionDict]] = np.take_along_axis(table, orders, axis=1).tolist()
        for r, k in enumerate(top_k):
            if k is not None and k < width:
                ordered[r] = [*ordered[r][:k], self._others(amounts[r, orders[r, k:]].tolist())]
        return ordered

    def _others(self, rest: list[float]) -> ContributionDict:
        """The one item standing for the inputs beyond ``top_k``."""
        total = math.fsum(rest)
        direction = _direction(total)
        return {
            "feature": "other_features",
            "label": f"{len(rest)} other inputs",
            "value": None,
            "unit": None,
            "contribution": total,
            "direction": direction,
            "basis": "combined",
            "text": describe.others_text(len(rest), SIGN_OF[direction]),
        }

    def _item(
        self, feature: int, value: float | str | None, amount: float, sign: int
    ) -> ContributionDict:
        name, label, unit, sentences, known = self._features[feature]
        return {
            "feature": name,
            "label": label,
            "value": value,
            "unit": unit,
            "contribution": amount,
            "direction": DIRECTIONS[sign],
            "basis": "value_unknown" if value is None else known,
            "text": sentences.get((value, sign)) or self._sentence(feature, value, sign),
        }

    def _sentence(self, feature: int, value: float | str | None, sign: int) -> str:
        """The contribution in clinical words (:mod:`models.describe`), remembered (chart
        values repeat)."""
        text = describe.contribution_text(self.specs[feature], value, sign)
        sentences = self._features[feature][3]
        if len(sentences) < MAX_REMEMBERED:
            sentences[(value, sign)] = text
        return text

    def _result(
        self,
        identifier: str,
        probability: float,
        contributions: list[ContributionDict],
        tier_index: int,
        quality: DataQualityDict,
        started: float,
        applicability: ApplicabilityDict,
        warnings: list[WarningDict],
        uncertainty: UncertaintyDict | None,
    ) -> Prediction:
        method, base_log_odds, base_probability, scale, mapping = self._explanation_constants
        return {
            "prediction_id": identifier,
            "model": self.ref,
            "clinical_use": self.clinical_use,
            "status": "scored",
            "probability": probability,
            "tier": self.tiers[tier_index],
            "explanation": {
                "method": method,
                "base_log_odds": base_log_odds,
                "base_probability": base_probability,
                "contributions": contributions,
                "scale": scale,
                "probability_mapping": mapping,
            },
            "applicability": applicability,
            "uncertainty": uncertainty,
            "warnings": warnings,
            "data_quality": quality,
            "elapsed_ms": (time.perf_counter() - started) * 1000.0,
        }

    def _not_applicable(
        self,
        identifier: str,
        applicability: ApplicabilityDict,
        warnings: list[WarningDict],
        quality: DataQualityDict,
        started: float,
    ) -> Prediction:
        """The typed answer for a patient outside the intended population: no score at all."""
        return {
            "prediction_id": identifier,
            "model": self.ref,
            "clinical_use": self.clinical_use,
            "status": "not_applicable",
            "probability": None,
            "tier": None,
            "explanation": None,
            "applicability": applicability,
            "uncertainty": None,
            "warnings": warnings,
            "data_quality": quality,
            "elapsed_ms": (time.perf_counter() - started) * 1000.0,
        }

    def _qualities(
        self, frame: ValidatedFrame, accepted: npt.NDArray[np.intp]
    ) -> list[DataQualityDict]:
        """Per accepted row, its data-quality flags, built only where a row has any."""
        n = len(accepted)
        missing: list[list[MissingDict]] = [[] for _ in range(n)]
        out_of_range: list[list[OutOfRangeDict]] = [[] for _ in range(n)]
        conversions: list[list[UnitConversionDict]] = [[] for _ in range(n)]
        rules = self.validator.rules
        # tolist(): iterating numpy integers costs several times more than Python ints.
        for position, j in np.argwhere(frame.missing[accepted]).tolist():
            missing[position].append(self._missing[j])
        for position, j in np.argwhere(frame.out_of_range[accepted]).tolist():
            rule = rules[j]
            assert rule.training is not None
            out_of_range[position].append(
                {
                    "feature": rule.name,
                    "value": float(frame.values[rule.name][accepted[position]]),
                    "training_p01": rule.training[0],
                    "training_p99": rule.training[1],
                }
            )
        for position, j in np.argwhere(frame.converted[accepted]).tolist():
            rule = rules[j]
            row = accepted[position]
            original, units = frame.conversions[rule.name]
            conversions[position].append(
                {
                    "feature": rule.name,
                    "value": float(original[row]),
                    "unit": str(units[row]),
                    "converted_value": float(frame.values[rule.name][row]),
                    "canonical_unit": rule.unit or "",
                }
            )
        return [
            {
                "missing": m,
                "out_of_training_range": o,
                "unit_conversions": c,
                "trustworthy": not (m or o),
            }
            for m, o, c in zip(missing, out_of_range, conversions, strict=True)
        ]


def _quality(quality: DataQuality) -> DataQualityDict:
    # vars() of these flat dataclasses, not dataclasses.asdict, which deep-copies recursively.
    return {
        "missing": [vars(m) for m in quality.missing],  # type: ignore[misc]
        "out_of_training_range": [vars(o) for o in quality.out_of_training_range],  # type: ignore[misc]
        "unit_conversions": [vars(u) for u in quality.unit_conversions],  # type: ignore[misc]
        "trustworthy": not (quality.missing or quality.out_of_training_range),
    }


def _signs(contributions: npt.NDArray[np.float64]) -> npt.NDArray[np.int8]:
    """+1 where a contribution raised the risk, -1 where it lowered it, 0 for no effect."""
    signs: npt.NDArray[np.int8] = (contributions > NO_EFFECT).astype(np.int8) - (
        contributions < -NO_EFFECT
    ).astype(np.int8)
    return signs


def _json_values(column: npt.NDArray[Any]) -> list[float | str | None]:
    """Canonical values as JSON: NaN (missing) becomes None."""
    values: list[Any] = column.tolist()
    if column.dtype == object or not np.isnan(column).any():
        return values
    return [None if v != v else v for v in values]


_PREDICTORS: dict[tuple[str, str | None, tuple[tuple[str, ...], bool]], Predictor] = {}
_PREDICTORS_LOCK = threading.Lock()


def load_predictor(
    folder: Path, *, expected_sha256: str | None = None, trust: TrustPolicy | None = None
) -> Predictor:
    """A predictor for one artifact folder, verified (signature, hashes) once per process and
    cached.

    ``expected_sha256`` pins the artifact the caller resolved (e.g. the Spark driver), so an
    executor that finds a different artifact at the same path refuses to score. ``trust``
    defaults to the environment's policy, which Spark executors resolve for themselves; the
    cache is per policy, so a lenient caller's predictor is never handed to a strict one.
    """
    policy = trust if trust is not None else default_policy()
    key = (str(folder.resolve()), expected_sha256, policy.fingerprint)
    with _PREDICTORS_LOCK:
        predictor = _PREDICTORS.get(key)
        if predictor is None:
            predictor = Predictor(load_artifact(folder, policy))
            if expected_sha256 is not None and predictor.sha256 != expected_sha256:
                raise ValueError(
                    f"artifact {folder} has sha256 {predictor.sha256[:12]}…, "
                    f"expected {expected_sha256[:12]}…"
                )
            _PREDICTORS[key] = predictor
        return predictor
