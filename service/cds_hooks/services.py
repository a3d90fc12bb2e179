"""The CDS Hooks services clinrisk offers: which hook, which model, which FHIR data (no I/O).

Prefetch templates are narrow, as an EHR expects: one search per concept, newest first
(``_sort=-date``) and a few results (``_count``) so an unusable newest value can fall back to the
one before; medications only where they are current (``status=active``); the stay's own
resources by ``encounter``. Each key names the resource type it must hold, so a key the EHR did
not fill can be fetched from ``fhirServer`` with the same query (``service.cds_hooks.fhir_client``).

The cardiovascular service scores ``ascvd-prevent`` (AHA PREVENT, 10-year ASCVD); the pooled
cohort equations (``ascvd-pce``) read the same chart data, so a deployment can switch to them
with ``CLINRISK_CDS_ASCVD_MODEL=ascvd-pce`` (read once, at import).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from service.cds_hooks import fhir

PATIENT_VIEW = "patient-view"
ENCOUNTER_DISCHARGE = "encounter-discharge"
PATIENT = "{{context.patientId}}"
ENCOUNTER = "{{context.encounterId}}"


@dataclass(frozen=True)
class Prefetch:
    """One prefetch key: its FHIR query template and the resource type its answer holds."""

    template: str
    resource_type: str


@dataclass(frozen=True)
class HookService:
    id: str
    hook: str
    model: str
    title: str
    description: str
    outcome: str
    """The risk in words, for the card's summary ("10-year ASCVD risk")."""
    prefetch: dict[str, Prefetch]
    notes: dict[str, str] = field(default_factory=dict)
    """Chart facts (``Extraction.facts``) this service's card must mention, and how."""


def _latest(*codes: str, count: int = 3) -> Prefetch:
    listed = ",".join(f"{fhir.LOINC}|{code}" for code in codes)
    return Prefetch(
        f"Observation?patient={PATIENT}&code={listed}&_sort=-date&_count={count}", "Observation"
    )


PATIENT_KEY = {"patient": Prefetch(f"Patient/{PATIENT}", "Patient")}
CONDITIONS = Prefetch(f"Condition?patient={PATIENT}&_count=200", "Condition")
ACTIVE_MEDICATION_REQUESTS = Prefetch(
    f"MedicationRequest?patient={PATIENT}&status=active&_count=100", "MedicationRequest"
)
ACTIVE_MEDICATION_STATEMENTS = Prefetch(
    f"MedicationStatement?patient={PATIENT}&status=active&_count=100", "MedicationStatement"
)
SMOKING = _latest(fhir.SMOKING_STATUS)

ASCVD = HookService(
    id="clinrisk-ascvd-risk",
    hook=PATIENT_VIEW,
    model=os.environ.get("CLINRISK_CDS_ASCVD_MODEL", "ascvd-prevent"),
    title="10-year ASCVD risk (AHA PREVENT, clinrisk)",
    description=(
        "Primary-prevention 10-year atherosclerotic cardiovascular disease risk from the "
        "published AHA PREVENT equations, with ACC/AHA tiers, the main drivers in percentage "
        "points and the chart data used, when a patient's chart is opened."
    ),
    outcome="10-year ASCVD risk",
    prefetch={
        **PATIENT_KEY,
        "bloodPressure": _latest(*fhir.BP_PANELS, fhir.SYSTOLIC_BP),
        "totalCholesterol": _latest(fhir.TOTAL_CHOLESTEROL),
        "hdlCholesterol": _latest(fhir.HDL),
        "kidneyFunction": _latest(
            fhir.EGFR_CKD_EPI_2021, *fhir.CREATININE, *fhir.EGFR_OTHER[:2], count=6
        ),
        "smokingStatus": SMOKING,
        "conditions": CONDITIONS,
        "medicationRequests": ACTIVE_MEDICATION_REQUESTS,
        "medicationStatements": ACTIVE_MEDICATION_STATEMENTS,
    },
)
DIABETES = HookService(
    id="clinrisk-diabetes-risk",
    hook=PATIENT_VIEW,
    model="diabetes",
    title="Diabetes screening risk (clinrisk)",
    description=(
        "Chance of undiagnosed diabetes or prediabetes (screening, adults without diagnosed "
        "diabetes) with its main drivers, or which answers the chart lacks, when a chart is "
        "opened."
    ),
    outcome="Diabetes/prediabetes screening risk",
    notes={
        "prediabetes": (
            "Prediabetes is already on the problem list ({}): the model's outcome includes "
            "prediabetes, so this score adds little; the ADA advises testing for diabetes at "
            "least yearly in prediabetes."
        )
    },
    prefetch={
        **PATIENT_KEY,
        "bmi": _latest("39156-5"),
        "totalCholesterol": Prefetch(
            f"Observation?patient={PATIENT}&code={fhir.LOINC}|{fhir.TOTAL_CHOLESTEROL}"
            "&_sort=-date&_count=3",
            "Observation",
        ),
        "smokingStatus": SMOKING,
        "conditions": CONDITIONS,
        "medicationRequests": ACTIVE_MEDICATION_REQUESTS,
        "medicationStatements": ACTIVE_MEDICATION_STATEMENTS,
    },
)
READMISSION = HookService(
    id="clinrisk-readmission-risk",
    hook=ENCOUNTER_DISCHARGE,
    model="readmission",
    title="30-day readmission risk at discharge (clinrisk)",
    description=(
        "Risk of readmission within 30 days for an adult inpatient with diabetes being "
        "discharged, from the stay and earlier use of care, with its main drivers."
    ),
    outcome="30-day readmission risk",
    prefetch={
        **PATIENT_KEY,
        "encounter": Prefetch(f"Encounter/{ENCOUNTER}", "Encounter"),
        "encounters": Prefetch(f"Encounter?patient={PATIENT}&_sort=-date&_count=100", "Encounter"),
        "stayObservations": Prefetch(
            f"Observation?patient={PATIENT}&encounter={ENCOUNTER}&_count=500", "Observation"
        ),
        "stayProcedures": Prefetch(
            f"Procedure?patient={PATIENT}&encounter={ENCOUNTER}&_count=200", "Procedure"
        ),
        "stayMedications": Prefetch(
            f"MedicationRequest?patient={PATIENT}&encounter={ENCOUNTER}&_count=200",
            "MedicationRequest",
        ),
        "conditions": CONDITIONS,
        "medicationRequests": ACTIVE_MEDICATION_REQUESTS,
    },
)
SERVICES: dict[str, HookService] = {s.id: s for s in (ASCVD, DIABETES, READMISSION)}
