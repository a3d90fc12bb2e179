"""Every shipped card has every TRIPOD+AI / HTI-1 section, none empty (issue 10)."""

from __future__ import annotations

import pytest

from models.registry import artifact_folder
from tests.conftest import MODEL_NAMES, MODELS_DIR, SHIPPED_VERSION
from tests.training.test_card import SECTIONS, _section_body


@pytest.mark.parametrize("heading", SECTIONS)
def test_every_section_present_and_non_empty_in_the_shipped_cards(heading: str) -> None:
    # The common version and each model's newest (diabetes 1.4.0 is ahead of the others).
    folders = {MODELS_DIR / n / SHIPPED_VERSION for n in MODEL_NAMES} | {
        artifact_folder(MODELS_DIR, n) for n in MODEL_NAMES
    }
    for folder in sorted(folders):
        name = f"{folder.parent.name} {folder.name}"
        card = (folder / "card.md").read_text()
        assert heading in card.splitlines(), f"{name}: {heading} missing"
        if heading != "## Performance":
            assert _section_body(card, heading), f"{name}: {heading} is empty"
