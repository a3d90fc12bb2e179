"""The hospital stay being closed -> the readmission model's features (encounter-discharge).

Pure functions over FHIR R4 JSON, called by :func:`service.cds_hooks.fhir.chart_features`. The
model was trained on the Diabetes 130-US hospitals extract (one row per inpatient encounter);
each feature is read as that data set defined it, from what a FHIR chart holds:

- the stay: ``Encounter.period`` of the encounter being closed (length in days, at least 1);
  lab results, procedures and medications linked to it (``encounter`` reference) or, for
  results and procedures, dated within it;
- earlier use of care: encounters starting in the 365 days before admission, by
  ``Encounter.class`` (AMB/HH/VR outpatient, EMER emergency, IMP/ACUTE/NONAC inpatient); earlier
  inpatient stays (all fetched) and those that began within 30 days of an earlier discharge;
- diagnoses: distinct conditions active during the stay, plus ``Encounter.diagnosis`` and
  ``reasonCode``; the primary one (``diagnosis`` rank 1, else the discharge diagnosis, else the
  first, each a Condition reference read from the chart; else the first reason)
  grouped into the training's ICD-9 chapters from ICD-10 (by chapter) or SNOMED CT (a hand-picked
  list); a code outside both is left missing, not called "other";
- HbA1c (4548-4) and glucose (2345-7, 2339-0) measured during the stay, in the training's bands
  ("not measured" when there is none: that is the training's own category);
- medications current at discharge: insulin, any diabetes drug, and a change (a diabetes drug
  started or stopped during the stay); dose changes are not coded in FHIR orders, so current
  insulin is "unchanged dose" and the card says so;
- admission and discharge: ``hospitalization.admitSource`` / ``dischargeDisposition`` (HL7 and
  NUBC codes), ``Encounter.priority``; an admission within a day of an emergency encounter counts
  as from the emergency room (derived); otherwise the training's "other/unknown" categories.

Facts for the model's applicability rules (``Extraction.facts``): death or hospice at
discharge; an encounter that is not an inpatient stay is ``not_inpatient`` (the service gives
no card: the model is for hospital discharges).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from models.manifest import FeatureSpec
from service.cds_hooks import fhir
from service.cds_hooks import medications as meds

INPATIENT = frozenset({"IMP", "ACUTE", "NONAC"})
OUTPATIENT = frozenset({"AMB", "HH", "VR"})
EMERGENCY = frozenset({"EMER"})
HBA1C = "4548-4"
GLUCOSE = ("2345-7", "2339-0")
LAB = "laboratory"

# NUBC UB-04 patient discharge status and HL7 discharge-disposition codes -> training groups.
DISPOSITION = {
    "01": "home",
    "06": "home_health",
    "03": "skilled_nursing",
    "04": "skilled_nursing",
    "64": "skilled_nursing",
    "61": "skilled_nursing",
    "62": "rehab_or_long_term_care",
    "63": "rehab_or_long_term_care",
    "02": "other_inpatient_facility",
    "05": "other_inpatient_facility",
    "65": "other_inpatient_facility",
    "66": "other_inpatient_facility",
    "07": "left_against_advice",
    "home": "home",
    "alt-home": "home",
    "snf": "skilled_nursing",
    "rehab": "rehab_or_long_term_care",
    "long": "rehab_or_long_term_care",
    "other-hcf": "other_inpatient_facility",
    "psy": "other_inpatient_facility",
    "aadvice": "left_against_advice",
}
EXPIRED = frozenset({"20", "40", "41", "42", "exp"})
HOSPICE = frozenset({"50", "51", "hosp"})
ADMIT_SOURCE = {
    "emd": "emergency_room",
    "gp": "referral",
    "mp": "referral",
    "outp": "referral",
    "hosp-trans": "transfer",
    "nursing": "transfer",
    "psych": "transfer",
    "rehab": "transfer",
}
PRIORITY = {"EM": "emergency", "UR": "urgent", "EL": "elective", "R": "elective"}
# ICD-10 chapter letters -> the training's ICD-9 groups (Strack et al. 2014).
ICD10_GROUPS = {
    "I": "circulatory",
    "J": "respiratory",
    "K": "digestive",
    "S": "injury",
    "T": "injury",
    "M": "musculoskeletal",
    "N": "genitourinary",
    "C": "neoplasm",
}
SNOMED_GROUPS = {
    # circulatory
    "53741008": "circulatory",
    "22298006": "circulatory",
    "38341003": "circulatory",
    "84114007": "circulatory",  # heart failure
    "49436004": "circulatory",  # atrial fibrillation
    "230690007": "circulatory",
    "410429000": "circulatory",  # cardiac arrest
    # respiratory
    "233604007": "respiratory",  # pneumonia
    "13645005": "respiratory",  # COPD
    "10509002": "respiratory",
    "195967001": "respiratory",  # asthma
    # digestive
    "74400008": "digestive",  # appendicitis
    "47693006": "digestive",  # rupture of appendix
    "235595009": "digestive",  # gastroesophageal reflux
    # injury
    "307731004": "injury",
    "62106007": "injury",
    "39848009": "injury",
    "70704007": "injury",
    "284549007": "injury",
    "283371005": "injury",
    "283385000": "injury",
    "263102004": "injury",  # fracture subluxation of wrist
    "65966004": "injury",  # fracture of forearm
    # musculoskeletal
    "201834006": "musculoskeletal",
    "239873007": "musculoskeletal",  # osteoarthritis of knee
    "90560007": "musculoskeletal",
    # genitourinary
    "38822007": "genitourinary",
    "301011002": "genitourinary",
    "197927001": "genitourinary",
    "431855005": "genitourinary",
    # neoplasm
    "254637007": "neoplasm",
    "363406005": "neoplasm",
}


def _id(reference: Any) -> str | None:
    target = reference.get("reference") if isinstance(reference, Mapping) else None
    if not isinstance(target, str):
        return None
    return target.removeprefix("urn:uuid:").rsplit("/", 1)[-1]


def _period(encounter: Mapping[str, Any]) -> tuple[datetime | None, datetime | None]:
    period = encounter.get("period")
    if not isinstance(period, Mapping):
        return None, None
    return fhir.parse_datetime(period.get("start")), fhir.parse_datetime(period.get("end"))


def _class(encounter: Mapping[str, Any]) -> str | None:
    cls = encounter.get("class")
    code = cls.get("code") if isinstance(cls, Mapping) else None
    return code if isinstance(code, str) else None


def _codes(concept: Any) -> list[str]:
    return [code for _, code in fhir.codings(concept)]


def _group(concept: Any) -> tuple[str, str] | None:
    """(training group, code text) of a diagnosis concept, or None when it cannot be grouped."""
    for system, code in fhir.codings(concept):
        if system == fhir.SNOMED:
            if code in fhir.CONDITION_FEATURES["diabetes"].snomed:
                return "diabetes", f"SNOMED CT {code}"
            if code in SNOMED_GROUPS:
                return SNOMED_GROUPS[code], f"SNOMED CT {code}"
        if system in fhir.ICD10 and fhir._ICD10_CODE.match(code):
            plain = code.replace(".", "")
            if plain.startswith(("E10", "E11", "E13")):
                return "diabetes", f"ICD-10 {code}"
            if plain[0] == "D" and plain[1] in "01234":
                return "neoplasm", f"ICD-10 {code}"
            return ICD10_GROUPS.get(plain[0], "other"), f"ICD-10 {code}"
    return None


def _within(when: datetime | None, start: datetime, end: datetime) -> bool:
    return when is not None and start <= when <= end


def add_stay_features(
    specs: Sequence[FeatureSpec],
    chart: fhir.Chart,
    extraction: fhir.Extraction,
    *,
    on: date,
    encounter_id: str | None,
) -> None:
    """Add the stay's features to ``extraction`` (in place), each with its source."""
    names = {spec.name for spec in specs}
    features, sources, warnings = extraction.features, extraction.sources, extraction.warnings
    stay = [e for e in chart.encounters if encounter_id is not None and e.get("id") == encounter_id]
    stay_features = [
        s.name for s in specs if s.name not in {"age_years", "sex_male"} and s.name in names
    ]

    def add(
        name: str, value: Any, text: str, when: date | None = None, ref: str | None = None
    ) -> None:
        if name not in names:
            return
        if value is not None:
            features[name] = value
        sources.append(fhir.Source(name, text, when, ref, derived=ref is None or value is None))

    if not stay:
        for name in stay_features:
            add(name, None, "the encounter being discharged was not found")
        _finish(specs, extraction)
        return
    encounter = stay[0]
    ref = f"Encounter/{encounter_id}"
    start, end = _period(encounter)
    cls = _class(encounter)
    if cls not in INPATIENT:
        extraction.facts["not_inpatient"] = f"Encounter.class {fhir._shown(cls)}"
    if start is None:
        for name in stay_features:
            add(name, None, "the encounter has no Encounter.period.start")
        _finish(specs, extraction)
        return
    end = end or datetime.combine(on, datetime.max.time(), tzinfo=start.tzinfo)
    day = end.date()

    def linked(resource: Mapping[str, Any]) -> bool:
        return _id(resource.get("encounter")) == encounter_id

    add(
        "time_in_hospital_days",
        max(1, (end.date() - start.date()).days),
        f"Encounter.period {start.date().isoformat()} to {end.date().isoformat()}",
        day,
        ref,
    )
    labs = [
        o
        for o in chart.observations
        if o.get("status") not in fhir.OBSERVATION_EXCLUDED
        and (
            linked(o)
            or (LAB in _codes_of_categories(o) and _within(fhir.observation_time(o), start, end))
        )
    ]
    add("lab_procedures", len(labs), "Observations linked to the stay or dated in it", day, ref)
    procedures = [
        p
        for p in chart.procedures
        if p.get("status") not in ("entered-in-error", "not-done")
        and (linked(p) or _within(_performed(p), start, end))
    ]
    add("procedures", len(procedures), "Procedures linked to the stay or done in it", day, ref)
    all_meds = meds.read(chart.medications, day, fhir.parse_datetime)
    ordered = {m.name for m in all_meds if m.encounter == encounter_id}
    add("medications", len(ordered), "distinct drugs ordered during the stay", day, ref)

    earlier = []
    for other in chart.encounters:
        other_start, other_end = _period(other)
        if other.get("id") != encounter_id and other_start is not None and other_start < start:
            earlier.append((other_start, other_end, _class(other)))
    year_ago = start - timedelta(days=365)
    for name, classes, label in (
        ("outpatient_visits_prior_year", OUTPATIENT, "outpatient"),
        ("emergency_visits_prior_year", EMERGENCY, "emergency"),
        ("inpatient_admissions_prior_year", INPATIENT, "inpatient"),
    ):
        count = sum(1 for s, _, c in earlier if c in classes and s >= year_ago)
        add(name, count, f"{label} Encounters in the year before admission", day, ref)
    stays = sorted((s, e) for s, e, c in earlier if c in INPATIENT)
    add("prior_encounters", len(stays), "earlier inpatient Encounters", day, ref)
    readmissions = sum(
        1
        for (_, previous_end), (next_start, _) in itertools.pairwise(stays)
        if previous_end is not None and next_start - previous_end <= timedelta(days=30)
    )
    add(
        "prior_readmissions_30d",
        readmissions,
        "earlier inpatient Encounters within 30 days of a previous discharge",
        day,
        ref,
    )

    diagnoses = _diagnoses(encounter, chart.conditions, start, end)
    if diagnoses:
        add("diagnoses_count", len(diagnoses), "distinct conditions active during the stay", day)
    else:
        add("diagnoses_count", None, "no condition recorded for the stay")
    primary = _primary(encounter, chart.conditions)
    if primary is None:
        add("primary_diagnosis", None, "no Encounter.diagnosis or reasonCode")
    else:
        grouped = _group(primary)
        if grouped is None:
            shown = ", ".join(fhir._shown(c) for c in _codes(primary)[:2])
            add("primary_diagnosis", None, f"code {shown} is not in the grouping used here")
        else:
            add("primary_diagnosis", grouped[0], f"Encounter diagnosis {grouped[1]}", day, ref)

    lab_codes: tuple[tuple[str, tuple[str, ...], str], ...] = (
        ("hba1c_result", (HBA1C,), "HbA1c"),
        ("max_glucose_serum", GLUCOSE, "glucose"),
    )
    for name, codes, label in lab_codes:
        if name in names:
            readings = [
                c
                for c in fhir._candidates(chart.observations, codes)
                if start <= c.when <= end and c.value is not None and c.comparator is None
            ]
            if not readings:
                add(name, "not_measured", f"no {label} result during the stay", day, ref)
                continue
            top = max(readings, key=lambda c: c.value or 0.0)
            value = top.value or 0.0
            band = _band(name, value)
            add(name, band, f"{fhir._describe(top)} {value:g}", top.when.date(), top.reference)

    current = [m for m in all_meds if m.current]
    insulin = [m for m in current if meds.INSULIN in m.classes]
    if insulin:
        add("insulin", "steady", f"current {insulin[0].reference} (dose change not coded)", day)
        warnings.append(
            "Insulin is current at discharge; dose changes are not coded in the orders, so it "
            "is taken as an unchanged dose."
        )
    else:
        add("insulin", "none", "no current insulin order", day)
    diabetic = [m for m in current if meds.DIABETES in m.classes]
    add(
        "diabetes_medication",
        int(bool(diabetic)),
        f"current {diabetic[0].reference}" if diabetic else "no current diabetes drug",
        day,
        diabetic[0].reference if diabetic else None,
    )
    changed = [
        m
        for m in all_meds
        if meds.DIABETES in m.classes and m.authored is not None and start <= m.authored <= end
    ]
    add(
        "medication_change",
        int(bool(changed)),
        f"{changed[0].reference} ordered during the stay"
        if changed
        else "no diabetes drug ordered or changed during the stay",
        day,
        changed[0].reference if changed else None,
    )

    hospitalization = encounter.get("hospitalization")
    hospitalization = hospitalization if isinstance(hospitalization, Mapping) else {}
    disposition_codes = _codes(hospitalization.get("dischargeDisposition"))
    if set(disposition_codes) & EXPIRED:
        extraction.facts["deceased"] = "died during the stay (dischargeDisposition)"
    if set(disposition_codes) & HOSPICE:
        extraction.facts["discharged_to_hospice"] = "Encounter.hospitalization.dischargeDisposition"
    elif set(disposition_codes) & (set(DISPOSITION) | EXPIRED):
        extraction.denied.add("discharged_to_hospice")  # a coded destination that is not hospice
    group = next((DISPOSITION[c] for c in disposition_codes if c in DISPOSITION), None)
    add(
        "discharge_disposition",
        group or "unknown",
        "Encounter.hospitalization.dischargeDisposition"
        if group
        else "no dischargeDisposition the grouping knows",
        day,
        ref if group else None,
    )
    emergency_before = any(
        c in EMERGENCY and e is not None and start - e <= timedelta(days=1) for _, e, c in earlier
    )
    source_group = next(
        (ADMIT_SOURCE[c] for c in _codes(hospitalization.get("admitSource")) if c in ADMIT_SOURCE),
        None,
    )
    if source_group is not None:
        add("admission_source", source_group, "Encounter.hospitalization.admitSource", day, ref)
    elif emergency_before:
        add("admission_source", "emergency_room", "an emergency Encounter the day before", day)
    else:
        add("admission_source", "other", "no admitSource recorded (other or unknown)", day)
    priority = next((PRIORITY[c] for c in _codes(encounter.get("priority")) if c in PRIORITY), None)
    if priority is not None:
        add("admission_type", priority, "Encounter.priority", day, ref)
    elif emergency_before:
        add("admission_type", "emergency", "an emergency Encounter the day before", day)
    else:
        add("admission_type", "other", "no Encounter.priority recorded (other or unknown)", day)
    if not extraction.facts.get("diagnosed_diabetes"):
        warnings.append(
            "The model was trained on inpatients with diabetes; no diabetes is on the problem list."
        )
    _finish(specs, extraction)


def _codes_of_categories(observation: Mapping[str, Any]) -> set[str]:
    categories = observation.get("category") or []
    return {code for c in categories if isinstance(c, Mapping) for code in _codes(c)}


def _performed(procedure: Mapping[str, Any]) -> datetime | None:
    period = procedure.get("performedPeriod")
    return fhir.parse_datetime(procedure.get("performedDateTime")) or (
        fhir.parse_datetime(period.get("start")) if isinstance(period, Mapping) else None
    )


def _diagnoses(
    encounter: Mapping[str, Any],
    conditions: Sequence[Mapping[str, Any]],
    start: datetime,
    end: datetime,
) -> set[str]:
    found: set[str] = set()
    for condition in conditions:
        onset = fhir.parse_datetime(condition.get("onsetDateTime")) or fhir.parse_datetime(
            condition.get("recordedDate")
        )
        abated = fhir.parse_datetime(condition.get("abatementDateTime"))
        if onset is not None and onset <= end and (abated is None or abated >= start):
            found.update(_codes(condition.get("code"))[:1])
    for reason in encounter.get("reasonCode") or []:
        found.update(_codes(reason)[:1])
    return found


def _primary(encounter: Mapping[str, Any], conditions: Sequence[Mapping[str, Any]]) -> Any:
    """The primary diagnosis concept: ``Encounter.diagnosis`` (R4: a Condition reference, read
    from the chart's Conditions) ranked 1, else the discharge diagnosis (use DD), else the first;
    else the first ``reasonCode``."""
    by_id = {c.get("id"): c for c in conditions}
    ranked = []
    for order, item in enumerate(encounter.get("diagnosis") or []):
        if not isinstance(item, Mapping):
            continue
        condition = by_id.get(_id(item.get("condition")))
        if condition is None or not fhir.codings(condition.get("code")):
            continue
        rank_value = item.get("rank")
        rank = rank_value if isinstance(rank_value, int) else 99
        discharge = "DD" not in {code for _, code in fhir.codings(item.get("use"))}
        ranked.append(((rank, discharge, order), condition.get("code")))
    if ranked:
        return min(ranked, key=lambda pair: pair[0])[1]
    reasons = encounter.get("reasonCode") or []
    return reasons[0] if reasons else None


def _band(name: str, value: float) -> str:
    if name == "hba1c_result":
        return "normal" if value < 7 else "above_7" if value <= 8 else "above_8"
    return "normal" if value <= 200 else "above_200" if value <= 300 else "above_300"


def _finish(specs: Sequence[FeatureSpec], extraction: fhir.Extraction) -> None:
    """Recompute what is missing and keep the sources in the model's feature order."""
    order = {spec.name: i for i, spec in enumerate(specs)}
    extraction.missing_required = [
        s.name for s in specs if s.required and extraction.features.get(s.name) is None
    ]
    extraction.sources = sorted(
        (s for s in extraction.sources if s.feature in order), key=lambda s: order[s.feature]
    )
