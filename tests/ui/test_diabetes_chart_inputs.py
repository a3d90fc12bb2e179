"""The diabetes form is completable from a typical chart (issue 14 part 6), in real Chromium:
the questionnaire answers may be left "Not known" and the page shows the API's result for it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.ui.conftest import LiveServer
from tests.ui.test_clinician_page import PATIENTS, score, shown_probability

if TYPE_CHECKING:
    from playwright.sync_api import Page


def test_the_diabetes_form_scores_a_chart_without_the_questionnaire_answers(
    page: Page, live_server: LiveServer
) -> None:
    model = live_server.model("diabetes")
    unknown = [f for f in model["features"] if not f["required"]]
    assert len(unknown) == 8
    features = {**PATIENTS["diabetes"], **{f["name"]: None for f in unknown}}

    score(page, live_server, "diabetes", features)

    expected = live_server.predict("diabetes", {k: v for k, v in features.items() if v is not None})
    assert shown_probability(page)[1] == expected["probability"]
    assert {m["feature"] for m in expected["data_quality"]["missing"]} == {
        f["name"] for f in unknown
    }
    used = page.inner_text("#inputs-used")
    for spec in unknown:
        assert f"{spec['label']}: not known" in used
    # Each unknown answer is named with what the model does about it.
    quality = page.inner_text("#result")
    for spec in unknown:
        assert f"{spec['label']} missing" in quality
