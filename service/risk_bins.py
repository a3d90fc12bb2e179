"""The risk bin stored with each outcome (live validation aggregates by it, issue 13)."""

from __future__ import annotations

import math

RISK_BIN_WIDTH = 0.005
"""Width, on the logit scale, of the risk bins each outcome row carries (``outcomes.risk_bin``).

AUROC and the calibration fits are computed from counts per bin (events, non-events): exact for
the binned scores, and the binning moves a score by at most 0.0025 on the logit scale (a
relative change of at most 0.25% in odds). Counts, O/E, Brier and the tier figures are exact
sums from the database."""


def risk_bin(probability: float) -> int:
    """The bin of a probability (stored with its outcome)."""
    p = min(max(probability, 1e-12), 1 - 1e-12)
    return round(math.log(p / (1 - p)) / RISK_BIN_WIDTH)
