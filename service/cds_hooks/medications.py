"""Medication classes from FHIR MedicationRequest / MedicationStatement: pure functions, no I/O.

A drug is put in a class by its ingredient names, read from the coding displays and the text of
``medicationCodeableConcept`` (RxNorm clinical drug names carry their ingredients: "Amlodipine 5
MG Oral Tablet"). Why names and not codes: a class is hundreds of RxNorm clinical-drug codes (one
per strength and form), which only a terminology server expands; ingredient names are what those
codes are named by, and a combination product counts for each class it contains. A
``medicationReference`` (no inline concept) cannot be classed here and is reported.

"Current" at a date: a MedicationRequest with status active or on-hold (intent order, plan,
original-order, reflex-order, filler-order, instance-order; not a proposal), or a
MedicationStatement with status active, intended or on-hold, authored / asserted on or before
that date. A stopped, completed, cancelled or entered-in-error one is not current.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

ANTIHYPERTENSIVE = "antihypertensive"
STATIN = "statin"
DIABETES = "diabetes"
INSULIN = "insulin"

# Ingredient names (lower case) per class. Antihypertensives: the drug classes of the 2017
# ACC/AHA blood pressure guideline (thiazide-type diuretics, ACE inhibitors, ARBs, calcium
# channel blockers, beta blockers, aldosterone antagonists, alpha blockers, central agonists,
# direct vasodilators, renin inhibitor); loop diuretics are left out (mostly given for oedema).
INGREDIENTS: dict[str, frozenset[str]] = {
    ANTIHYPERTENSIVE: frozenset(
        """
        hydrochlorothiazide chlorthalidone indapamide metolazone
        lisinopril enalapril captopril ramipril benazepril quinapril fosinopril perindopril
        trandolapril moexipril
        losartan valsartan irbesartan candesartan olmesartan telmisartan azilsartan eprosartan
        amlodipine nifedipine felodipine isradipine nicardipine nisoldipine diltiazem verapamil
        metoprolol atenolol carvedilol bisoprolol propranolol nebivolol labetalol nadolol
        spironolactone eplerenone doxazosin prazosin terazosin clonidine methyldopa guanfacine
        hydralazine minoxidil aliskiren
        """.split()
    ),
    STATIN: frozenset(
        "atorvastatin simvastatin rosuvastatin pravastatin lovastatin fluvastatin "
        "pitavastatin".split()
    ),
    # The drugs of the Diabetes 130-US hospitals data set the readmission model was trained on
    # (its 23 medication columns) and the newer classes.
    DIABETES: frozenset(
        """
        metformin insulin glipizide glyburide glimepiride chlorpropamide tolbutamide tolazamide
        acetohexamide repaglinide nateglinide pioglitazone rosiglitazone troglitazone acarbose
        miglitol sitagliptin saxagliptin linagliptin alogliptin liraglutide semaglutide
        dulaglutide exenatide tirzepatide empagliflozin dapagliflozin canagliflozin ertugliflozin
        """.split()
    ),
    INSULIN: frozenset({"insulin"}),
}
REQUEST_CURRENT = frozenset({"active", "on-hold"})
REQUEST_INTENTS = frozenset(
    {"order", "plan", "original-order", "reflex-order", "filler-order", "instance-order"}
)
STATEMENT_CURRENT = frozenset({"active", "intended", "on-hold"})
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class Medication:
    """One MedicationRequest / MedicationStatement, as far as the features need it."""

    reference: str
    """``MedicationRequest/<id>`` (or ``MedicationStatement/<id>``)."""
    name: str
    classes: frozenset[str]
    current: bool
    authored: datetime | None
    encounter: str | None
    """The id the resource's ``encounter`` / ``context`` reference points to, if any."""


def _names(concept: Any) -> list[str]:
    if not isinstance(concept, Mapping):
        return []
    texts = [concept.get("text")]
    texts += [c.get("display") for c in concept.get("coding") or [] if isinstance(c, Mapping)]
    return [t for t in texts if isinstance(t, str) and t]


def classes_of(concept: Any) -> frozenset[str]:
    """The classes whose ingredient names occur as words in the concept's text or displays."""
    words = {w for text in _names(concept) for w in _WORD.findall(text.lower())}
    return frozenset(name for name, ingredients in INGREDIENTS.items() if words & ingredients)


def _reference_id(reference: Any) -> str | None:
    target = reference.get("reference") if isinstance(reference, Mapping) else None
    if not isinstance(target, str):
        return None
    return target.removeprefix("urn:uuid:").rsplit("/", 1)[-1]


def read(resources: Iterable[Mapping[str, Any]], on: date, parse: Any) -> list[Medication]:
    """MedicationRequests and MedicationStatements -> :class:`Medication` (``parse``: the FHIR
    date parser of :mod:`service.cds_hooks.fhir`, passed in to keep one definition)."""
    out: list[Medication] = []
    for resource in resources:
        kind = resource.get("resourceType")
        status = resource.get("status")
        if kind == "MedicationRequest":
            authored = parse(resource.get("authoredOn"))
            current = status in REQUEST_CURRENT and resource.get("intent") in REQUEST_INTENTS
            encounter = _reference_id(resource.get("encounter"))
        elif kind == "MedicationStatement":
            period = resource.get("effectivePeriod")
            authored = (
                parse(resource.get("effectiveDateTime"))
                or (parse(period.get("start")) if isinstance(period, Mapping) else None)
                or parse(resource.get("dateAsserted"))
            )
            current = status in STATEMENT_CURRENT
            encounter = _reference_id(resource.get("context"))
        else:
            continue
        if authored is not None and authored.date() > on:
            current = False  # ordered after the date the features are taken at
        concept = resource.get("medicationCodeableConcept")
        names = _names(concept)
        out.append(
            Medication(
                reference=f"{kind}/{resource.get('id')}",
                name=names[0] if names else "medication by reference (not classed)",
                classes=classes_of(concept),
                current=current,
                authored=authored,
                encounter=encounter,
            )
        )
    return out
