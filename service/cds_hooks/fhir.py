"""FHIR R4 resources -> model features: pure functions over plain JSON dicts, no I/O.

Used by the CDS Hooks service (``service.cds_hooks.router``) on the prefetched Patient,
Observations and Conditions. Plain typed dict parsing on purpose: a FHIR object library
(``fhir.resources``) would add a large dependency to read a dozen fields.

Rules, each visible to the clinician through ``Extraction.sources`` / ``Extraction.warnings``:

- the latest observation per concept by ``effectiveDateTime`` (or ``effectivePeriod`` /
  ``effectiveInstant`` / ``issued``), never the bundle order; an observation whose value cannot be
  used (unknown unit, comparator, no number) is skipped with a warning and the next older one is
  used;
- blood pressure from standalone 8480-6 / 8462-4 observations or from the components of the
  55284-4 / 85354-9 panels, components selected by their code (the diastolic may come first);
- units: UCUM codes are normalised to the manifest's spelling (``mm[Hg]`` -> ``mmHg``); a unit the
  model lists as an alternative (e.g. ``mmol/L``) is handed to the model's validator as
  ``{"value", "unit"}``, which converts it exactly and reports the conversion; any other unit is
  rejected;
- age in completed years at the date of the most recent observation used, or today when none is
  dated; for a deceased patient at ``deceasedDateTime``;
- binary problem-list features from *active* Conditions (SNOMED CT or ICD-10 codes listed below,
  a hand-picked subset, not a terminology-server expansion); history of stroke also from resolved
  ones; a condition not on the list counts as absent;
- smoking status from 72166-2 (SNOMED CT or LOINC answer codes); cigarettes per day is 0 for a
  never/former smoker (the training coding) and missing for a current smoker.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from models.manifest import FeatureSpec, FeatureType

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
ICD10 = ("http://hl7.org/fhir/sid/icd-10-cm", "http://hl7.org/fhir/sid/icd-10")
CLINICAL_STATUS_ACTIVE = frozenset({"active", "recurrence", "relapse"})
VERIFICATION_EXCLUDED = frozenset({"refuted", "entered-in-error"})
OBSERVATION_EXCLUDED = frozenset({"entered-in-error", "cancelled", "registered"})

BP_PANELS = ("55284-4", "85354-9")
SYSTOLIC_BP = "8480-6"
DIASTOLIC_BP = "8462-4"
SMOKING_STATUS = "72166-2"
# Codes accepted for a feature whose manifest names one LOINC code, preferred code first.
LOINC_EQUIVALENTS: dict[str, tuple[str, ...]] = {
    # Glucose [Mass/volume] in Serum or Plasma; in Blood (2339-0) is what Synthea records.
    "2345-7": ("2345-7", "2339-0"),
}
LOINC_NAMES = {
    "55284-4": "blood pressure panel",
    "85354-9": "blood pressure panel",
    SYSTOLIC_BP: "systolic blood pressure",
    DIASTOLIC_BP: "diastolic blood pressure",
    "39156-5": "BMI",
    "2093-3": "total cholesterol",
    "2345-7": "glucose, serum/plasma",
    "2339-0": "glucose, blood",
    "8867-4": "heart rate",
    SMOKING_STATUS: "tobacco smoking status",
}
# What the cvd model reads from Observations: the prefetch template lists exactly these.
CVD_OBSERVATION_CODES = (
    *BP_PANELS,
    SYSTOLIC_BP,
    DIASTOLIC_BP,
    "39156-5",
    "2093-3",
    "2345-7",
    "2339-0",
    "8867-4",
    SMOKING_STATUS,
)

CURRENT_SMOKER = frozenset(
    {
        (SNOMED, "449868002"),  # current every day smoker
        (SNOMED, "428041000124106"),  # current some day smoker
        (SNOMED, "77176002"),  # smoker, current status unknown
        (SNOMED, "428071000124103"),  # current heavy tobacco smoker
        (SNOMED, "428061000124105"),  # current light tobacco smoker
        (LOINC, "LA18976-3"),
        (LOINC, "LA18977-1"),
        (LOINC, "LA18979-7"),
        (LOINC, "LA18981-3"),
        (LOINC, "LA18982-1"),
    }
)
NOT_SMOKING = frozenset(
    {
        (SNOMED, "266919005"),  # never smoker
        (SNOMED, "8517006"),  # former smoker
        (LOINC, "LA18978-9"),
        (LOINC, "LA15920-4"),
    }
)
# Anything else (e.g. 266927001 / LA18980-5 "unknown if ever smoked") leaves the status unknown.


@dataclass(frozen=True)
class ConditionRule:
    """A problem-list feature: SNOMED CT codes, ICD-10 code prefixes (dots removed)."""

    label: str
    snomed: frozenset[str]
    icd10_prefixes: tuple[str, ...]
    include_resolved: bool = False
    """History features (stroke) also count resolved conditions."""


CONDITION_FEATURES: dict[str, ConditionRule] = {
    "diabetes": ConditionRule(
        "diabetes",
        frozenset(
            {
                "73211009",  # diabetes mellitus
                "44054006",  # type 2 diabetes mellitus
                "46635009",  # type 1 diabetes mellitus
                "313436004",  # type 2 diabetes mellitus without complication
                "368581000119106",  # neuropathy due to type 2 DM
                "422034002",  # retinopathy associated with type 2 DM
                "1551000119108",  # nonproliferative retinopathy due to type 2 DM
                "1501000119109",  # proliferative retinopathy due to type 2 DM
                "97331000119101",  # macular edema and retinopathy due to type 2 DM
                "60951000119105",  # blindness due to type 2 DM
                "90781000119102",  # microalbuminuria due to type 2 DM
                "157141000119108",  # proteinuria due to type 2 DM
                "127013003",  # disorder of kidney due to diabetes mellitus
            }
        ),
        ("E10", "E11", "E13"),
    ),
    "hypertension": ConditionRule(
        "hypertension",
        frozenset(
            {
                "38341003",  # hypertensive disorder
                "59621000",  # essential hypertension
                "1201005",  # benign essential hypertension
                "10725009",  # benign hypertension
            }
        ),
        ("I10", "I11", "I12", "I13", "I15"),
    ),
    "stroke_history": ConditionRule(
        "stroke",
        frozenset(
            {
                "230690007",  # cerebrovascular accident
                "422504002",  # ischemic stroke
                "432504007",  # cerebral infarction
                "371041009",  # embolic stroke
                "274100004",  # cerebral hemorrhage
                "275526006",  # history of cerebrovascular accident
            }
        ),
        ("I60", "I61", "I63", "I690", "I691", "I693"),
        include_resolved=True,
    ),
}

# UCUM codes and common spellings -> the manifest's unit spelling.
UNIT_ALIASES = {
    "mm[Hg]": "mmHg",
    "mmHg": "mmHg",
    "mm Hg": "mmHg",
    "kg/m2": "kg/m2",
    "kg/m^2": "kg/m2",
    "/min": "beats/min",
    "{beats}/min": "beats/min",
    "{Beats}/min": "beats/min",
    "beats/min": "beats/min",
    "mg/dL": "mg/dL",
    "mg/dl": "mg/dL",
    "mmol/L": "mmol/L",
    "mmol/l": "mmol/L",
}
STALE_AFTER = timedelta(days=2 * 365)

_PARTIAL_DATE = re.compile(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?$")
_ICD10_CODE = re.compile(r"^[A-Z][0-9][0-9A-Z](?:\.?[0-9A-Z]{1,4})?$")
_UNSAFE = re.compile(r"[^\w ./%*+^{}\[\]-]")


# --- small readers --------------------------------------------------------------------------


def parse_datetime(text: Any) -> datetime | None:
    """A FHIR date / dateTime / instant as an aware UTC datetime (partial dates: first day)."""
    if not isinstance(text, str) or not text:
        return None
    match = _PARTIAL_DATE.match(text)
    if match:
        year, month, day = match.groups()
        try:
            return datetime(int(year), int(month or 1), int(day or 1), tzinfo=UTC)
        except ValueError:
            return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:  # FHIR requires a zone with a time; be lenient, assume UTC
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def codings(concept: Any) -> list[tuple[str, str]]:
    """(system, code) pairs of a CodeableConcept."""
    if not isinstance(concept, Mapping):
        return []
    pairs = []
    for coding in concept.get("coding") or []:
        if isinstance(coding, Mapping):
            system, code = coding.get("system"), coding.get("code")
            if isinstance(system, str) and isinstance(code, str):
                pairs.append((system, code))
    return pairs


def loinc_codes(concept: Any) -> set[str]:
    return {code for system, code in codings(concept) if system == LOINC}


def refers_to_patient(reference: Any, patient_id: str) -> bool:
    """True if a Reference names this patient (``Patient/<id>``, absolute URL or urn:uuid)."""
    if not isinstance(reference, Mapping):
        return True  # no subject: nothing says it is someone else's
    target = reference.get("reference")
    if not isinstance(target, str):
        return True
    target = target.split("/_history/", 1)[0]
    return (
        target == f"Patient/{patient_id}"
        or target.endswith(f"/Patient/{patient_id}")
        or target == f"urn:uuid:{patient_id}"
    )


def bundle_resources(
    value: Any, resource_type: str, patient_id: str
) -> tuple[list[Mapping[str, Any]], int]:
    """Resources of one type from a prefetched searchset Bundle (or a single resource).

    Returns the resources about ``patient_id`` and how many were about someone else (ignored).
    ``None`` (the client had no data) is an empty list.
    """
    if value is None:
        return [], 0
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a FHIR Bundle or {resource_type}, got {type(value).__name__}")
    if value.get("resourceType") == "Bundle":
        candidates = [
            entry.get("resource")
            for entry in value.get("entry") or []
            if isinstance(entry, Mapping)
        ]
    elif value.get("resourceType") == resource_type:
        candidates = [value]
    else:
        raise ValueError(
            f"expected a FHIR Bundle or {resource_type}, got {value.get('resourceType')}"
        )
    kept: list[Mapping[str, Any]] = []
    other_patient = 0
    for resource in candidates:
        if not isinstance(resource, Mapping) or resource.get("resourceType") != resource_type:
            continue  # e.g. an OperationOutcome entry with search.mode "outcome"
        if refers_to_patient(resource.get("subject"), patient_id):
            kept.append(resource)
        else:
            other_patient += 1
    return kept, other_patient


def observation_time(observation: Mapping[str, Any]) -> datetime | None:
    """When the observation was clinically relevant: effective[x], else ``issued``."""
    period = observation.get("effectivePeriod")
    for candidate in (
        observation.get("effectiveDateTime"),
        observation.get("effectiveInstant"),
        period.get("end") if isinstance(period, Mapping) else None,
        period.get("start") if isinstance(period, Mapping) else None,
        observation.get("issued"),
    ):
        parsed = parse_datetime(candidate)
        if parsed is not None:
            return parsed
    return None


def age_in_years(birth: date, on: date) -> int:
    """Completed years."""
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


# --- extraction -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where one feature's value came from, for the card's table."""

    feature: str
    text: str
    when: date | None = None


@dataclass
class Extraction:
    features: dict[str, Any]
    """Payload for the model's validator: numbers, 0/1 or ``{"value", "unit"}``; absent: missing."""
    missing_required: list[str]
    sources: list[Source]
    warnings: list[str]
    age_reference: date | None = None
    deceased: bool = False
    observation_dates: dict[str, date] = field(default_factory=dict)
    """Feature -> date of the observation used."""


@dataclass(frozen=True)
class _Candidate:
    when: datetime
    value: float | None
    unit_code: str | None
    unit_text: str | None
    comparator: str | None
    code: str
    panel: str | None
    rank: int
    """Lower = preferred when two candidates have the same time (the manifest's own code)."""


def _quantity(holder: Mapping[str, Any]) -> tuple[float | None, str | None, str | None, str | None]:
    quantity = holder.get("valueQuantity")
    if not isinstance(quantity, Mapping):
        return None, None, None, None
    raw = quantity.get("value")
    value = (
        float(raw)
        if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw)
        else None
    )
    code = quantity.get("code") if quantity.get("system") in (UCUM, None) else None
    unit = quantity.get("unit")
    comparator = quantity.get("comparator")
    return (
        value,
        code if isinstance(code, str) else None,
        unit if isinstance(unit, str) else None,
        comparator if isinstance(comparator, str) else None,
    )


def _candidates(
    observations: Iterable[Mapping[str, Any]], codes: Sequence[str]
) -> list[_Candidate]:
    wanted = {code: rank for rank, code in enumerate(codes)}
    found: list[_Candidate] = []
    for observation in observations:
        when = observation_time(observation)
        if when is None:
            continue
        own = loinc_codes(observation.get("code"))
        for code in own & wanted.keys():
            found.append(_Candidate(when, *_quantity(observation), code, None, wanted[code]))
        panels = own & set(BP_PANELS)
        if not panels:
            continue
        for component in observation.get("component") or []:
            if not isinstance(component, Mapping):
                continue
            for code in loinc_codes(component.get("code")) & wanted.keys():
                found.append(
                    _Candidate(when, *_quantity(component), code, min(panels), wanted[code])
                )
    # Latest first; at the same time the preferred code, then a standalone observation.
    found.sort(key=lambda c: (-c.when.timestamp(), c.rank, c.panel is not None))
    return found


def _normalised_unit(candidate: _Candidate) -> str | None:
    for spelling in (candidate.unit_code, candidate.unit_text):
        if spelling is not None and spelling in UNIT_ALIASES:
            return UNIT_ALIASES[spelling]
    return None


def _shown(text: str | None) -> str:
    """A value from the chart, safe inside a Markdown table: a code span of harmless characters."""
    return "`" + _UNSAFE.sub("?", text or "none")[:40] + "`"


def _describe(candidate: _Candidate) -> str:
    where = f"LOINC {candidate.code} ({LOINC_NAMES.get(candidate.code, 'observation')})"
    if candidate.panel is not None:
        where += f" in panel {candidate.panel}"
    return where


def _observation_value(
    spec: FeatureSpec, observations: Sequence[Mapping[str, Any]], warnings: list[str]
) -> tuple[Any, _Candidate] | None:
    assert spec.loinc is not None
    codes = LOINC_EQUIVALENTS.get(spec.loinc, (spec.loinc,))
    alternatives = {u.unit for u in spec.alternative_units}
    for candidate in _candidates(observations, codes):
        day = candidate.when.date().isoformat()
        if candidate.value is None:
            warnings.append(f"{spec.label} of {day} has no numeric value: skipped.")
            continue
        if candidate.comparator is not None:
            warnings.append(
                f"{spec.label} of {day} is not exact ({_shown(candidate.comparator)}): skipped."
            )
            continue
        unit = _normalised_unit(candidate)
        if unit == spec.unit:
            return candidate.value, candidate
        if unit is not None and unit in alternatives:
            return {"value": candidate.value, "unit": unit}, candidate
        raw_unit = candidate.unit_code or candidate.unit_text
        warnings.append(
            f"{spec.label} of {day} is in unit {_shown(raw_unit)}, which the model does not "
            f"accept: skipped."
        )
    return None


def _smoking_status(
    observations: Sequence[Mapping[str, Any]], warnings: list[str]
) -> tuple[int, datetime] | None:
    dated = [
        (when, o)
        for o in observations
        if SMOKING_STATUS in loinc_codes(o.get("code"))
        and (when := observation_time(o)) is not None
    ]
    dated.sort(key=lambda pair: -pair[0].timestamp())
    for when, observation in dated:
        answer = set(codings(observation.get("valueCodeableConcept")))
        if answer & CURRENT_SMOKER:
            return 1, when
        if answer & NOT_SMOKING:
            return 0, when
        warnings.append(
            f"Smoking status of {when.date().isoformat()} is not a current/former/never answer: "
            "skipped."
        )
    return None


def _is_active(condition: Mapping[str, Any], include_resolved: bool) -> bool:
    verification = {code for _, code in codings(condition.get("verificationStatus"))}
    if verification & VERIFICATION_EXCLUDED:
        return False
    if include_resolved:
        return True
    clinical = {code for _, code in codings(condition.get("clinicalStatus"))}
    # No clinical status: the resource came from the active-only search, so it counts.
    return not clinical or bool(clinical & CLINICAL_STATUS_ACTIVE)


def condition_matches(condition: Mapping[str, Any], rule: ConditionRule) -> str | None:
    """The matching code as ``SYSTEM code`` text, or None."""
    for system, code in codings(condition.get("code")):
        if system == SNOMED and code in rule.snomed:
            return f"SNOMED CT {code}"
        if (
            system in ICD10
            and _ICD10_CODE.match(code)  # well-formed, so safe to show in the card
            and code.replace(".", "").startswith(rule.icd10_prefixes)
        ):
            return f"ICD-10 {code}"
    return None


# Established atherosclerotic cardiovascular disease (issue 14): a model for primary prevention
# does not apply. History counts (a past myocardial infarction is established ASCVD).
ESTABLISHED_ASCVD = ConditionRule(
    "established ASCVD",
    frozenset(
        {
            "53741008",  # coronary arteriosclerosis
            "414545008",  # ischemic heart disease
            "413838009",  # chronic ischemic heart disease
            "22298006",  # myocardial infarction
            "399211009",  # history of myocardial infarction
            "401303003",  # acute ST segment elevation myocardial infarction
            "401314000",  # acute non-ST segment elevation myocardial infarction
            "194828000",  # angina
            "230690007",  # cerebrovascular accident
            "422504002",  # ischemic stroke
            "399957001",  # peripheral arterial occlusive disease
            "840580004",  # peripheral arterial disease
        }
    ),
    # I20-I25 ischaemic heart disease, I63 cerebral infarction, I70 atherosclerosis, I73.9
    # peripheral vascular disease, Z95.1 / Z95.5 coronary bypass graft / stent.
    ("I20", "I21", "I22", "I23", "I24", "I25", "I63", "I70", "I739", "Z951", "Z955"),
    include_resolved=True,
)


def established_ascvd(conditions: Sequence[Mapping[str, Any]]) -> str | None:
    """The matching code when the chart records established ASCVD, else None (not stated:
    absence from a problem list is not a statement that there is none)."""
    flag, text, _ = _condition_flag(conditions, ESTABLISHED_ASCVD)
    return text if flag else None


def _condition_flag(
    conditions: Sequence[Mapping[str, Any]], rule: ConditionRule
) -> tuple[int, str, date | None]:
    for condition in conditions:
        if not _is_active(condition, rule.include_resolved):
            continue
        matched = condition_matches(condition, rule)
        if matched is not None:
            onset = parse_datetime(condition.get("onsetDateTime")) or parse_datetime(
                condition.get("recordedDate")
            )
            return 1, f"Condition {matched}", onset.date() if onset else None
    active = "" if rule.include_resolved else "active "
    return 0, f"no {active}{rule.label} condition in the chart", None


def extract_features(
    specs: Sequence[FeatureSpec],
    patient: Mapping[str, Any] | None,
    observations: Sequence[Mapping[str, Any]],
    conditions: Sequence[Mapping[str, Any]],
    *,
    today: date,
) -> Extraction:
    """Chart -> the model's feature payload, with where each value came from and what is off."""
    features: dict[str, Any] = {}
    sources: list[Source] = []
    warnings: list[str] = []
    dates: dict[str, date] = {}
    observations = [o for o in observations if o.get("status") not in OBSERVATION_EXCLUDED]
    names = {spec.name for spec in specs}
    labels = {spec.name: spec.label for spec in specs}

    # Measurements named by LOINC in the manifest.
    for spec in specs:
        if spec.type is not FeatureType.NUMERIC or spec.loinc is None:
            continue
        found = _observation_value(spec, observations, warnings)
        if found is None:
            sources.append(Source(spec.name, f"no usable LOINC {spec.loinc} observation"))
            continue
        value, candidate = found
        features[spec.name] = value
        dates[spec.name] = candidate.when.date()
        text = _describe(candidate)
        if candidate.code != spec.loinc:
            text += f", used for LOINC {spec.loinc}"
        sources.append(Source(spec.name, text, candidate.when.date()))

    if "current_smoker" in names:
        smoking = _smoking_status(observations, warnings)
        if smoking is None:
            sources.append(Source("current_smoker", "no usable smoking status (LOINC 72166-2)"))
        else:
            status, when = smoking
            features["current_smoker"] = status
            dates["current_smoker"] = when.date()
            sources.append(
                Source("current_smoker", f"LOINC {SMOKING_STATUS} (smoking status)", when.date())
            )
            if status == 0 and "cigarettes_per_day" in names:
                features["cigarettes_per_day"] = 0
                sources.append(
                    Source("cigarettes_per_day", "0 for a never/former smoker", when.date())
                )
        if features.get("current_smoker") != 0 and "cigarettes_per_day" in names:
            sources.append(Source("cigarettes_per_day", "not recorded in a coded form"))

    for name, rule in CONDITION_FEATURES.items():
        if name in names:
            flag, text, onset = _condition_flag(conditions, rule)
            features[name] = flag
            sources.append(Source(name, text, onset))

    if "bp_medication" in names:
        sources.append(Source("bp_medication", "not read (medications are not prefetched)"))

    deceased = False
    reference: date | None = None
    if patient is not None:
        gender = patient.get("gender")
        if "sex_male" in names:
            if gender in ("male", "female"):
                features["sex_male"] = int(gender == "male")
                sources.append(Source("sex_male", f"Patient.gender {gender}"))
            else:
                sources.append(Source("sex_male", f"Patient.gender is {_shown(str(gender))}"))
                warnings.append(
                    f"Patient.gender is {_shown(str(gender))}: the model was trained on male and "
                    "female only."
                )
        died = parse_datetime(patient.get("deceasedDateTime"))
        deceased = died is not None or patient.get("deceasedBoolean") is True
        if died is not None:
            reference = died.date()
            warnings.append(
                f"The patient is recorded as deceased on {reference.isoformat()}: age is taken "
                "at the date of death, so the score describes the risk as it was then."
            )
        elif deceased:
            warnings.append("The patient is recorded as deceased (no date).")
        if reference is None:
            reference = max(dates.values(), default=None)
            if reference is None:
                reference = today
                warnings.append("No dated observation was used: age is taken as of today.")
        birth = parse_datetime(patient.get("birthDate"))
        if "age_years" in names:
            if birth is None:
                sources.append(Source("age_years", "no Patient.birthDate"))
            else:
                if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(patient.get("birthDate"))):
                    warnings.append("Patient.birthDate is partial: age may be off by a year.")
                features["age_years"] = age_in_years(birth.date(), reference)
                sources.append(
                    Source("age_years", f"Patient.birthDate, age on {reference.isoformat()}")
                )
    else:
        sources.extend(Source(n, "no Patient resource") for n in ("sex_male", "age_years"))

    if not deceased:
        stale = sorted((day, name) for name, day in dates.items() if today - day > STALE_AFTER)
        if stale:
            listed = ", ".join(f"{labels[name]} ({day.isoformat()})" for day, name in stale)
            warnings.append(f"Older than 2 years: {listed}.")

    missing_required = [s.name for s in specs if s.required and features.get(s.name) is None]
    order = {spec.name: i for i, spec in enumerate(specs)}
    sources = sorted((s for s in sources if s.feature in order), key=lambda s: order[s.feature])
    return Extraction(
        features={k: v for k, v in features.items() if k in names},
        missing_required=missing_required,
        sources=sources,
        warnings=warnings,
        age_reference=reference,
        deceased=deceased,
        observation_dates=dates,
    )
