"""How a contribution reads on a card or in a RiskAssessment: its sentence, and its size in
percentage points of this patient's risk on the explanation's own scale.

``models.describe.points_change`` undoes a contribution on the log-odds scale; a Cox-type
published equation (PCE, Framingham) explains on the log cumulative hazard scale, where
``p = 1 - exp(-exp(z))``: the risk without the contribution is ``1 - exp(-exp(z - c))``.
Percentage points: the risk with the input as it is minus the risk with that input at the
reference (other inputs unchanged), never log-odds or hazards on a card.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from models import describe

LOG_CUMULATIVE_HAZARD = "log_cumulative_hazard"


def points(result: Mapping[str, Any], contribution: float) -> float:
    probability = float(result["probability"])
    if result["explanation"].get("scale") != LOG_CUMULATIVE_HAZARD:
        return describe.points_change(probability, contribution)
    p = min(max(probability, 1e-12), 1 - 1e-12)
    z = math.log(-math.log(1 - p))
    without = 1 - math.exp(-math.exp(z - contribution))
    return (probability - without) * 100.0


def points_phrase(result: Mapping[str, Any], contribution: float) -> str:
    """ "+3.2 percentage points" (``models.describe`` wording)."""
    return describe.points_text(points(result, contribution))


def driver_text(specs: Mapping[str, Any], contribution: Mapping[str, Any]) -> str:
    """The contribution's sentence (``models.describe``); a bare "Yes"/"No" (the published
    equations' value labels) is named: "Treated for high blood pressure: yes, raised ..."."""
    text: str = contribution["text"]
    spec = specs.get(contribution["feature"])
    for bare in ("Yes", "No"):
        if spec is not None and text.startswith(bare + " "):
            return f"{spec.label}: {bare.lower()},{text[len(bare) :]}"
    return text
