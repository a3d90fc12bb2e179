"""FHIR R4 resources -> model features: pure functions over plain JSON dicts, no I/O.

Used by the CDS Hooks services (``service.cds_hooks.router``) on the prefetched (or fetched)
Patient, Observations, Conditions, medications, encounters and procedures, and by the clinician
page launched from an EHR: :func:`chart_features` maps a :class:`Chart` and a date to one model's
features, each with the resource and date it came from. Plain typed dict parsing on purpose: a
FHIR object library (``fhir.resources``) would add a large dependency to read a few fields (the
tests validate what the service emits with it).

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
- age in completed years at the hook's date (the date the features are taken at: today for
  patient-view, the discharge for encounter-discharge); for a deceased patient at
  ``deceasedDateTime``;
- eGFR: a CKD-EPI 2021 eGFR observation (98979-8) when it is the latest kidney result, else
  computed with CKD-EPI 2021 (``models.equations.ckd_epi_2021``) from the latest creatinine
  (2160-0 serum/plasma, 38483-4 blood) at the age on that day, recorded as derived with the
  creatinine's date; else an eGFR by another equation (33914-3 MDRD, 62238-1 CKD-EPI 2009)
  with a warning;
- blood-pressure treatment and statin from current MedicationRequests / MedicationStatements
  (:mod:`service.cds_hooks.medications`); none current counts as untreated, like a problem list;
- binary problem-list features from *active* Conditions (SNOMED CT or ICD-10 codes listed below,
  a hand-picked subset, not a terminology-server expansion); history of stroke also from resolved
  ones; a condition not on the list counts as absent;
- smoking status from 72166-2 (SNOMED CT or LOINC answer codes); cigarettes per day is 0 for a
  never/former smoker (the training coding) and, for a current smoker, read from 64218-1 / 63640-6
  (cigarettes per day) or 8664-8 (packs per day x 20) when recorded, else left missing so the
  model's missing-value handling applies and the card says so (never a population average taken
  as this smoker's);
- survey answers a chart does not hold (the diabetes model's BRFSS items: physical activity,
  diet, general health, ...) stay missing: the card names them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from models.equations import CREATININE_UMOL_PER_MG_DL, ckd_epi_2021
from models.manifest import FeatureSpec, FeatureType
from service.cds_hooks import medications as meds

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
HDL = "2085-9"
TOTAL_CHOLESTEROL = "2093-3"
EGFR_CKD_EPI_2021 = "98979-8"
EGFR_OTHER = ("33914-3", "62238-1", "48642-3", "48643-1", "50044-7")
CREATININE = ("2160-0", "38483-4")
CIGARETTES_PER_DAY = ("64218-1", "63640-6")
PACKS_PER_DAY = "8664-8"
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
    HDL: "HDL cholesterol",
    EGFR_CKD_EPI_2021: "eGFR, CKD-EPI 2021",
    "33914-3": "eGFR, MDRD",
    "62238-1": "eGFR, CKD-EPI 2009",
    "2160-0": "creatinine, serum/plasma",
    "38483-4": "creatinine, blood",
    "4548-4": "HbA1c",
    "64218-1": "cigarettes per day",
    "63640-6": "cigarettes per day",
    PACKS_PER_DAY: "packs per day",
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
NEVER_SMOKER = frozenset({(SNOMED, "266919005"), (LOINC, "LA18978-9")})
FORMER_SMOKER = frozenset({(SNOMED, "8517006"), (LOINC, "LA15920-4")})
NOT_SMOKING = NEVER_SMOKER | FORMER_SMOKER
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
    "mL/min/{1.73_m2}": "mL/min/1.73m2",
    "mL/min/1.73m2": "mL/min/1.73m2",
    "mL/min/1.73 m2": "mL/min/1.73m2",
    "mL/min/{1.73m2}": "mL/min/1.73m2",
    "umol/L": "umol/L",
    "µmol/L": "umol/L",
    "/d": "/d",
    "{cigarettes}/d": "/d",
    "{packs}/d": "/d",
    "%": "%",
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
    """Where one feature's value came from, for the card's table and a RiskAssessment's basis."""

    feature: str
    text: str
    when: date | None = None
    reference: str | None = None
    """The resource the value was read from (``Observation/<id>``), when there is one."""
    derived: bool = False
    """Computed from the resource (eGFR from creatinine, a count), not copied from it."""


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
    facts: dict[str, str] = field(default_factory=dict)
    """Applicability facts the chart states (context name -> the code that says so)."""
    denied: set[str] = field(default_factory=set)
    """Applicability facts the chart states as not so (e.g. a coded discharge home: not to
    hospice); what it does not state stays unstated."""

    def basis(self) -> list[str]:
        """Every resource a value was read from, once, in feature order (a RiskAssessment's
        ``basis``)."""
        return list(dict.fromkeys(s.reference for s in self.sources if s.reference))


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
    reference: str | None = None


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
        ref = _ref(observation)
        for code in own & wanted.keys():
            found.append(_Candidate(when, *_quantity(observation), code, None, wanted[code], ref))
        panels = own & set(BP_PANELS)
        if not panels:
            continue
        for component in observation.get("component") or []:
            if not isinstance(component, Mapping):
                continue
            for code in loinc_codes(component.get("code")) & wanted.keys():
                found.append(
                    _Candidate(when, *_quantity(component), code, min(panels), wanted[code], ref)
                )
    # Latest first; at the same time the preferred code, then a standalone observation.
    found.sort(key=lambda c: (-c.when.timestamp(), c.rank, c.panel is not None))
    return found


def _ref(resource: Mapping[str, Any]) -> str | None:
    rid = resource.get("id")
    kind = resource.get("resourceType")
    return f"{kind}/{rid}" if isinstance(rid, str) and isinstance(kind, str) else None


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


def _latest_quantity(
    label: str,
    codes: Sequence[str],
    units: Sequence[str],
    observations: Sequence[Mapping[str, Any]],
    warnings: list[str],
) -> tuple[float, str, _Candidate] | None:
    """The latest exact reading of ``codes`` in one of ``units`` (normalised spelling)."""
    for candidate in _candidates(observations, codes):
        day = candidate.when.date().isoformat()
        if candidate.value is None or candidate.comparator is not None:
            warnings.append(f"{label} of {day} is not an exact number: skipped.")
            continue
        unit = _normalised_unit(candidate)
        if unit in units:
            assert unit is not None
            return candidate.value, unit, candidate
        raw_unit = candidate.unit_code or candidate.unit_text
        warnings.append(f"{label} of {day} is in unit {_shown(raw_unit)}: skipped.")
    return None


def _smoking_status(
    observations: Sequence[Mapping[str, Any]], warnings: list[str]
) -> tuple[str, datetime, str | None] | None:
    """The latest usable smoking status: "current", "former" or "never", its time, resource."""
    dated = [
        (when, o)
        for o in observations
        if SMOKING_STATUS in loinc_codes(o.get("code"))
        and (when := observation_time(o)) is not None
    ]
    dated.sort(key=lambda pair: -pair[0].timestamp())
    for when, observation in dated:
        answer = set(codings(observation.get("valueCodeableConcept")))
        for status, codes in (
            ("current", CURRENT_SMOKER),
            ("former", FORMER_SMOKER),
            ("never", NEVER_SMOKER),
        ):
            if answer & codes:
                return status, when, _ref(observation)
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
    flag, text, _, _ = _condition_flag(conditions, ESTABLISHED_ASCVD)
    return text if flag else None


CORONARY_DISEASE = ConditionRule(
    "coronary heart disease or myocardial infarction",
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
        }
    ),
    ("I20", "I21", "I22", "I23", "I24", "I25", "Z951", "Z955"),
    include_resolved=True,
)
HIGH_CHOLESTEROL = ConditionRule(
    "high cholesterol",
    frozenset(
        {
            "55822004",  # hyperlipidemia
            "13644009",  # hypercholesterolemia
            "398036000",  # familial hypercholesterolemia
            "267432004",  # pure hypercholesterolemia
            "3744001",  # hyperlipoproteinemia
        }
    ),
    ("E780", "E782", "E784", "E785"),
    include_resolved=True,
)
# "Ever told you have high blood pressure" (BRFSS): resolved hypertension counts too.
HYPERTENSION_EVER = replace(CONDITION_FEATURES["hypertension"], include_resolved=True)
DIABETES_EVER = replace(CONDITION_FEATURES["diabetes"], include_resolved=True)
PREDIABETES = ConditionRule(
    "prediabetes",
    frozenset({"15777000", "9414007"}),  # prediabetes; impaired fasting glucose
    ("R730",),  # R73.0x: abnormal glucose (impaired fasting glucose, tolerance, prediabetes)
)
HIGH_TOTAL_CHOLESTEROL_MG_DL = 240.0
"""NCEP ATP III: total cholesterol >= 240 mg/dL is high (the level BRFSS's question is about)."""
CHOLESTEROL_CHECK_YEARS = 5
# BRFSS items no FHIR chart holds in a coded form: the card names them as missing.
SURVEY_ITEMS = frozenset(
    {
        "physically_active",
        "fruit_daily",
        "vegetables_daily",
        "heavy_alcohol_use",
        "general_health",
        "poor_mental_health_days",
        "poor_physical_health_days",
        "difficulty_walking",
    }
)


def _condition_flag(
    conditions: Sequence[Mapping[str, Any]], rule: ConditionRule, on: date | None = None
) -> tuple[int, str, date | None, str | None]:
    """1 with the matching code, its onset and the Condition; 0 with what was looked for."""
    for condition in conditions:
        if not _is_active(condition, rule.include_resolved):
            continue
        matched = condition_matches(condition, rule)
        if matched is not None:
            onset = parse_datetime(condition.get("onsetDateTime")) or parse_datetime(
                condition.get("recordedDate")
            )
            if on is not None and onset is not None and onset.date() > on:
                continue  # recorded after the date the features are taken at
            return 1, f"Condition {matched}", onset.date() if onset else None, _ref(condition)
    active = "" if rule.include_resolved else "active "
    return 0, f"no {active}{rule.label} condition in the chart", None, None


@dataclass(frozen=True)
class Chart:
    """One patient's FHIR resources by kind: what a model's features are read from."""

    patient: Mapping[str, Any] | None
    observations: Sequence[Mapping[str, Any]] = ()
    conditions: Sequence[Mapping[str, Any]] = ()
    medications: Sequence[Mapping[str, Any]] = ()
    """MedicationRequests and MedicationStatements."""
    encounters: Sequence[Mapping[str, Any]] = ()
    procedures: Sequence[Mapping[str, Any]] = ()

    @classmethod
    def from_resources(cls, resources: Iterable[Any], patient_id: str) -> Chart:
        """From any resources (a Bundle's entries' resources, a SMART app's reads): those about
        ``patient_id`` (resources about someone else are dropped)."""
        by_kind: dict[str, list[Mapping[str, Any]]] = {}
        patient: Mapping[str, Any] | None = None
        for resource in resources:
            if not isinstance(resource, Mapping):
                continue
            kind = resource.get("resourceType")
            if kind == "Patient":
                if resource.get("id") == patient_id:
                    patient = resource
                continue
            holder = resource.get("subject") or resource.get("patient")
            if isinstance(kind, str) and refers_to_patient(holder, patient_id):
                by_kind.setdefault(kind, []).append(resource)
        return cls(
            patient=patient,
            observations=by_kind.get("Observation", []),
            conditions=by_kind.get("Condition", []),
            medications=by_kind.get("MedicationRequest", [])
            + by_kind.get("MedicationStatement", []),
            encounters=by_kind.get("Encounter", []),
            procedures=by_kind.get("Procedure", []),
        )


US_CORE_RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
CDC_RACE = "urn:oid:2.16.840.1.113883.6.238"
# OMB race categories -> the pooled cohort equations' variants. As the 2013 guideline says, the
# white equations are used for other races (with the caution that they may misestimate risk).
PCE_RACE = {"2106-3": "white", "2054-5": "african_american"}
OTHER_RACES = frozenset({"1002-5", "2028-9", "2076-8"})
# Features a manifest names without a LOINC code that a chart still holds under one.
IMPLIED_LOINC = {"bmi_kg_m2": "39156-5"}


def race_category(patient: Mapping[str, Any]) -> tuple[str | None, str]:
    """The PCE race variant from US Core's race extension (OMB categories), and how it was
    read. More than one category, or none, is left to the clinician (missing)."""
    codes: set[str] = set()
    for extension in patient.get("extension") or []:
        if not isinstance(extension, Mapping) or extension.get("url") != US_CORE_RACE:
            continue
        for part in extension.get("extension") or []:
            coding = part.get("valueCoding") if isinstance(part, Mapping) else None
            if (
                isinstance(part, Mapping)
                and part.get("url") == "ombCategory"
                and isinstance(coding, Mapping)
                and coding.get("system") == CDC_RACE
                and isinstance(coding.get("code"), str)
            ):
                codes.add(coding["code"])
    if len(codes) != 1:
        reason = "no US Core race" if not codes else "more than one OMB race category"
        return None, f"{reason}: for the clinician to choose"
    (code,) = codes
    if code in PCE_RACE:
        return PCE_RACE[code], f"US Core race, OMB {code}"
    if code in OTHER_RACES:
        return "other", f"US Core race, OMB {code} (white equations, as the guideline says)"
    return None, f"US Core race {_shown(code)}: for the clinician to choose"


def observation_codes(specs: Sequence[FeatureSpec]) -> tuple[str, ...]:
    """The LOINC codes a model's features are read from: what its prefetch template asks for."""
    names = {spec.name for spec in specs}
    codes: list[str] = []
    for spec in specs:
        if spec.loinc is None and spec.name in IMPLIED_LOINC:
            spec = spec.model_copy(update={"loinc": IMPLIED_LOINC[spec.name]})
        if spec.type is FeatureType.NUMERIC and spec.loinc is not None:
            if spec.name == "systolic_bp_mm_hg" or spec.loinc in (SYSTOLIC_BP, DIASTOLIC_BP):
                codes += [*BP_PANELS, spec.loinc]
            elif spec.name == "egfr_ml_min_1_73m2":
                codes += [EGFR_CKD_EPI_2021, *CREATININE, *EGFR_OTHER[:2]]
            else:
                codes += LOINC_EQUIVALENTS.get(spec.loinc, (spec.loinc,))
    if names & {"current_smoker", "smoked_100_cigarettes"}:
        codes.append(SMOKING_STATUS)
    if "cigarettes_per_day" in names:
        codes += [*CIGARETTES_PER_DAY, PACKS_PER_DAY]
    if names & {"high_cholesterol", "cholesterol_checked_5y"}:
        codes.append(TOTAL_CHOLESTEROL)
    return tuple(dict.fromkeys(codes))


def chart_features(
    specs: Sequence[FeatureSpec],
    chart: Chart,
    *,
    on: date,
    encounter_id: str | None = None,
) -> Extraction:
    """A chart and the date the features are taken at -> one model's features, each with the
    resource and date it came from (``Extraction.sources``), what is missing and why.

    The one FHIR-to-feature mapping: the CDS Hooks services and the EHR-launched clinician page
    call it. ``encounter_id``: the encounter being closed (readmission model).
    """
    extraction = extract_features(
        specs,
        chart.patient,
        chart.observations,
        chart.conditions,
        today=on,
        medications=chart.medications,
    )
    names = {spec.name for spec in specs}
    if "time_in_hospital_days" in names:
        # Imported here: encounters reads FHIR with this module's helpers.
        from service.cds_hooks import encounters

        encounters.add_stay_features(specs, chart, extraction, on=on, encounter_id=encounter_id)
    return extraction


def _medication_flag(
    current: Sequence[meds.Medication], kind: str, label: str
) -> tuple[int, Source]:
    found = [m for m in current if kind in m.classes]
    if not found:
        return 0, Source("", f"no current {label} MedicationRequest/MedicationStatement")
    first = found[0]
    day = first.authored.date() if first.authored else None
    return 1, Source(
        "", f"{first.reference.split('/')[0]} {_shown(first.name)}", day, first.reference
    )


def _egfr(
    observations: Sequence[Mapping[str, Any]],
    patient: Mapping[str, Any] | None,
    warnings: list[str],
) -> tuple[float, Source] | None:
    """eGFR (mL/min/1.73 m2): a CKD-EPI 2021 result, else derived from creatinine, else another
    equation's result (with a warning)."""
    label = "eGFR"
    direct = _latest_quantity(
        label, (EGFR_CKD_EPI_2021,), ("mL/min/1.73m2",), observations, warnings
    )
    creatinine = _latest_quantity(
        "Creatinine", CREATININE, ("mg/dL", "umol/L"), observations, warnings
    )
    if direct is not None and (creatinine is None or direct[2].when >= creatinine[2].when):
        value, _, candidate = direct
        day = candidate.when.date()
        return value, Source("", _describe(candidate), day, candidate.reference)
    birth = parse_datetime(patient.get("birthDate")) if patient is not None else None
    gender = patient.get("gender") if patient is not None else None
    if creatinine is not None and birth is not None and gender in ("male", "female"):
        value, unit, candidate = creatinine
        mg_dl = value / CREATININE_UMOL_PER_MG_DL if unit == "umol/L" else value
        day = candidate.when.date()
        age = age_in_years(birth.date(), day)
        if mg_dl > 0 and age > 0:
            egfr = round(ckd_epi_2021(mg_dl, age, gender == "male"), 1)
            text = (
                f"derived: CKD-EPI 2021 from {_describe(candidate)} "
                f"{mg_dl:.2f} mg/dL, age {age}, {gender}"
            )
            return egfr, Source("", text, day, candidate.reference, derived=True)
    other = _latest_quantity(label, EGFR_OTHER, ("mL/min/1.73m2",), observations, warnings)
    if other is not None:
        value, _, candidate = other
        day = candidate.when.date()
        warnings.append(
            f"eGFR of {day.isoformat()} is {_describe(candidate)}, not CKD-EPI 2021 (no "
            "creatinine to recompute it from): the risk may be slightly off."
        )
        return value, Source("", _describe(candidate), day, candidate.reference)
    return None


def extract_features(
    specs: Sequence[FeatureSpec],
    patient: Mapping[str, Any] | None,
    observations: Sequence[Mapping[str, Any]],
    conditions: Sequence[Mapping[str, Any]],
    *,
    today: date,
    medications: Sequence[Mapping[str, Any]] = (),
) -> Extraction:
    """Chart -> the model's feature payload, with where each value came from and what is off.

    ``today``: the date the features are taken at (the hook's date): age, current medications
    and the staleness of values are judged on it.
    """
    features: dict[str, Any] = {}
    sources: list[Source] = []
    warnings: list[str] = []
    dates: dict[str, date] = {}
    facts: dict[str, str] = {}
    observations = [
        o
        for o in observations
        if o.get("status") not in OBSERVATION_EXCLUDED
        and ((when := observation_time(o)) is None or when.date() <= today)
    ]
    names = {spec.name for spec in specs}
    labels = {spec.name: spec.label for spec in specs}

    def found(name: str, value: Any, source: Source, measured: bool = True) -> None:
        features[name] = value
        sources.append(replace(source, feature=name))
        if source.when is not None and measured:  # a result's date (staleness), not an order's
            dates[name] = source.when

    # Measurements named by LOINC in the manifest (or implied by the feature's name).
    for spec in specs:
        if spec.loinc is None and spec.name in IMPLIED_LOINC:
            spec = spec.model_copy(update={"loinc": IMPLIED_LOINC[spec.name]})
        if spec.type is not FeatureType.NUMERIC or spec.loinc is None:
            continue
        if spec.name == "egfr_ml_min_1_73m2":
            egfr = _egfr(observations, patient, warnings)
            if egfr is None:
                sources.append(
                    Source(spec.name, "no eGFR (98979-8, 33914-3) or creatinine (2160-0, 38483-4)")
                )
            else:
                found(spec.name, egfr[0], egfr[1])
            continue
        measured = _observation_value(spec, observations, warnings)
        if measured is None:
            sources.append(Source(spec.name, f"no usable LOINC {spec.loinc} observation"))
            continue
        value, candidate = measured
        text = _describe(candidate)
        if candidate.code != spec.loinc:
            text += f", used for LOINC {spec.loinc}"
        found(spec.name, value, Source(spec.name, text, candidate.when.date(), candidate.reference))

    if names & {"current_smoker", "smoked_100_cigarettes", "cigarettes_per_day"}:
        smoking = _smoking_status(observations, warnings)
        if smoking is None:
            for name in ("current_smoker", "smoked_100_cigarettes"):
                if name in names:
                    sources.append(Source(name, "no usable smoking status (LOINC 72166-2)"))
        else:
            status, when, ref = smoking
            source = Source(
                "", f"LOINC {SMOKING_STATUS} (smoking status: {status})", when.date(), ref
            )
            if "current_smoker" in names:
                found("current_smoker", int(status == "current"), source)
            if "smoked_100_cigarettes" in names:
                # NHIS: a never smoker smoked fewer than 100 cigarettes; current and former more.
                found("smoked_100_cigarettes", int(status != "never"), source)
            if status != "current" and "cigarettes_per_day" in names:
                features["cigarettes_per_day"] = 0
                sources.append(
                    Source("cigarettes_per_day", f"0 for a {status} smoker", when.date(), ref)
                )
        if "cigarettes_per_day" in names and features.get("current_smoker") == 1:
            _cigarettes(observations, warnings, found, sources)

    for name, rule in CONDITION_FEATURES.items():
        if name in names:
            flag, text, onset, ref = _condition_flag(conditions, rule, today)
            features[name] = flag
            sources.append(Source(name, text, onset, ref))
    for name, rule in (
        ("high_blood_pressure", HYPERTENSION_EVER),
        ("coronary_disease_or_mi", CORONARY_DISEASE),
    ):
        if name in names:
            flag, text, onset, ref = _condition_flag(conditions, rule, today)
            features[name] = flag
            sources.append(Source(name, text, onset, ref))

    current = [m for m in meds.read(medications, today, parse_datetime) if m.current]
    for name, kind, label in (
        ("bp_medication", meds.ANTIHYPERTENSIVE, "antihypertensive"),
        ("statin", meds.STATIN, "statin"),
    ):
        if name in names:
            flag, source = _medication_flag(current, kind, label)
            features[name] = flag
            sources.append(replace(source, feature=name))
    if "high_blood_pressure" in names and features.get("high_blood_pressure") == 0:
        flag, source = _medication_flag(current, meds.ANTIHYPERTENSIVE, "antihypertensive")
        if flag:
            sources = [s for s in sources if s.feature != "high_blood_pressure"]
            found(
                "high_blood_pressure",
                1,
                replace(source, text=f"treated: {source.text}"),
                measured=False,
            )
    if "high_cholesterol" in names:
        _high_cholesterol(conditions, observations, today, features, sources, found)
    if "cholesterol_checked_5y" in names:
        _cholesterol_checked(observations, today, features, sources, found)
    for name in sorted(names & SURVEY_ITEMS):
        sources.append(Source(name, "a survey answer the chart does not hold in coded form"))

    deceased = False
    reference: date = today
    if patient is not None:
        gender = patient.get("gender")
        if "sex_male" in names:
            if gender in ("male", "female"):
                features["sex_male"] = int(gender == "male")
                sources.append(Source("sex_male", f"Patient.gender {gender}", None, _ref(patient)))
            else:
                sources.append(Source("sex_male", f"Patient.gender is {_shown(str(gender))}"))
                warnings.append(
                    f"Patient.gender is {_shown(str(gender))}: the model was trained on male and "
                    "female only."
                )
        if "race" in names:
            race, how = race_category(patient)
            if race is not None:
                features["race"] = race
            sources.append(Source("race", how, None, _ref(patient) if race else None))
        died = parse_datetime(patient.get("deceasedDateTime"))
        deceased = died is not None or patient.get("deceasedBoolean") is True
        if died is not None:
            facts["deceased"] = f"Patient.deceasedDateTime {died.date().isoformat()}"
            if died.date() < today:
                reference = died.date()
            warnings.append(f"The patient is recorded as deceased on {died.date().isoformat()}.")
        elif deceased:
            facts["deceased"] = "Patient.deceasedBoolean"
            warnings.append("The patient is recorded as deceased (no date).")
        birth = parse_datetime(patient.get("birthDate"))
        if "age_years" in names:
            if birth is None:
                sources.append(Source("age_years", "no Patient.birthDate"))
            else:
                if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(patient.get("birthDate"))):
                    warnings.append("Patient.birthDate is partial: age may be off by a year.")
                features["age_years"] = age_in_years(birth.date(), reference)
                sources.append(
                    Source(
                        "age_years",
                        f"Patient.birthDate, age on {reference.isoformat()}",
                        None,
                        _ref(patient),
                        derived=True,
                    )
                )
    else:
        sources.extend(Source(n, "no Patient resource") for n in ("sex_male", "age_years"))

    ascvd = established_ascvd([c for c in conditions if _onset_by(c, today)])
    if ascvd is not None:
        facts["established_ascvd"] = ascvd
    flag, text, _, _ = _condition_flag(conditions, DIABETES_EVER, today)
    if flag:
        facts["diagnosed_diabetes"] = text.removeprefix("Condition ")
    flag, text, _, _ = _condition_flag(conditions, PREDIABETES, today)
    if flag:
        facts["prediabetes"] = text.removeprefix("Condition ")

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
        facts=facts,
    )


def _onset_by(condition: Mapping[str, Any], on: date) -> bool:
    onset = parse_datetime(condition.get("onsetDateTime")) or parse_datetime(
        condition.get("recordedDate")
    )
    return onset is None or onset.date() <= on


Found = Callable[..., None]


def _cigarettes(
    observations: Sequence[Mapping[str, Any]],
    warnings: list[str],
    found: Found,
    sources: list[Source],
) -> None:
    """Cigarettes per day of a current smoker, from a coded observation; else missing."""
    daily = _latest_quantity("Cigarettes per day", CIGARETTES_PER_DAY, ("/d",), observations, [])
    packs = _latest_quantity("Packs per day", (PACKS_PER_DAY,), ("/d",), observations, [])
    if daily is not None and (packs is None or daily[2].when >= packs[2].when):
        value, _, candidate = daily
        found(
            "cigarettes_per_day",
            value,
            Source("", _describe(candidate), candidate.when.date(), candidate.reference),
        )
    elif packs is not None:
        value, _, candidate = packs
        found(
            "cigarettes_per_day",
            value * 20,
            Source(
                "",
                f"derived: {_describe(candidate)} x 20",
                candidate.when.date(),
                candidate.reference,
                derived=True,
            ),
        )
    else:
        sources.append(Source("cigarettes_per_day", "current smoker, amount not recorded"))
        warnings.append(
            "Current smoker without a recorded amount (LOINC 64218-1, 63640-6 or 8664-8): "
            "cigarettes per day is left missing, not guessed."
        )


def _high_cholesterol(
    conditions: Sequence[Mapping[str, Any]],
    observations: Sequence[Mapping[str, Any]],
    today: date,
    features: dict[str, Any],
    sources: list[Source],
    found: Found,
) -> None:
    flag, text, onset, ref = _condition_flag(conditions, HIGH_CHOLESTEROL, today)
    if flag:
        found("high_cholesterol", 1, Source("", text, onset, ref), False)
        return
    total = _latest_quantity(
        "Total cholesterol", (TOTAL_CHOLESTEROL,), ("mg/dL", "mmol/L"), observations, []
    )
    if total is not None:
        value, unit, candidate = total
        mg_dl = value * 38.67 if unit == "mmol/L" else value
        high = int(mg_dl >= HIGH_TOTAL_CHOLESTEROL_MG_DL)
        found(
            "high_cholesterol",
            high,
            Source(
                "",
                f"derived: {_describe(candidate)} {mg_dl:.0f} mg/dL "
                f"({'>=' if high else '<'} {HIGH_TOTAL_CHOLESTEROL_MG_DL:.0f}), no "
                "hyperlipidaemia condition",
                candidate.when.date(),
                candidate.reference,
                derived=True,
            ),
        )
        return
    features["high_cholesterol"] = 0
    sources.append(Source("high_cholesterol", f"{text}, no total cholesterol result"))


def _cholesterol_checked(
    observations: Sequence[Mapping[str, Any]],
    today: date,
    features: dict[str, Any],
    sources: list[Source],
    found: Found,
) -> None:
    tests = [c for c in _candidates(observations, (TOTAL_CHOLESTEROL,)) if c.panel is None]
    since = (
        today.replace(year=today.year - CHOLESTEROL_CHECK_YEARS)
        if not (today.month == 2 and today.day == 29)
        else date(today.year - CHOLESTEROL_CHECK_YEARS, 2, 28)
    )
    if tests and tests[0].when.date() >= since:
        latest = tests[0]
        found(
            "cholesterol_checked_5y",
            1,
            Source(
                "",
                f"derived: {_describe(latest)} within 5 years",
                latest.when.date(),
                latest.reference,
                derived=True,
            ),
        )
    else:
        features["cholesterol_checked_5y"] = 0
        sources.append(
            Source("cholesterol_checked_5y", f"no LOINC {TOTAL_CHOLESTEROL} result since {since}")
        )
