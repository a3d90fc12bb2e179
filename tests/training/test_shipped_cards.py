"""Every shipped card has every TRIPOD+AI / HTI-1 section, none empty (issue 10)."""

from __future__ import annotations

import pytest

from tests.conftest import MODEL_NAMES, MODELS_DIR, SHIPPED_VERSION
from tests.training.test_card import SECTIONS, _section_body


@pytest.mark.parametrize("heading", SECTIONS)
def test_every_section_present_and_non_empty_in_the_shipped_cards(heading: str) -> None:
    for name in MODEL_NAMES:
        card = (MODELS_DIR / name / SHIPPED_VERSION / "card.md").read_text()
        assert heading in card.splitlines(), f"{name}: {heading} missing"
        if heading != "## Performance":
            assert _section_body(card, heading), f"{name}: {heading} is empty"
