"""The clinician page states each model's clinical-use status and speaks percentage points.

Headless Chromium against a real uvicorn server with the committed models (issue 10: the status
is shown where a clinician decides, on screen and on paper; issue 14: the explanation shows each
contribution in percentage points of risk, by the same rule as the CDS cards, and no log-odds).
Expected values come from the public API and from ``service.cds_hooks.points`` (the cards' rule),
never from the page's own code; nothing names a model version.
"""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Any

import pytest
from pypdf import PdfReader

from models import describe
from service.cds_hooks import points
from tests.conftest import MODEL_NAMES
from tests.ui.conftest import LiveServer
from tests.ui.test_clinician_page import PATIENTS, choose_model, connect, fill_form, score, submit
from tests.ui.test_page_safety import pdf_text

if TYPE_CHECKING:
    from playwright.sync_api import Page

# What a clinician reads for each status (the wording the task fixes, written here
# independently of the page's code so that a change in either is caught).
HEADLINES = {
    "validated": "Validated for clinical use",
    "evaluation_only": "For evaluation only — not validated for care decisions",
    "teaching_data_only": "Teaching data only —",
}
SHORT = {
    "validated": "Validated for clinical use",
    "evaluation_only": "For evaluation only",
    "teaching_data_only": "Teaching data only",
}
# A Cox-type published equation: contributions on the log cumulative hazard scale.
FRAMINGHAM = "cvd-framingham-2008"
FRAMINGHAM_PATIENT: dict[str, Any] = {
    "sex_male": 1,
    "age_years": 56,
    "bmi_kg_m2": 29,
    "systolic_bp_mm_hg": 148,
    "bp_medication": 0,
    "current_smoker": 1,
    "diabetes": 0,
}
MODEL_SCALE = re.compile(r"log[\s-]*odds|logit|log cumulative hazard|cumulative hazard", re.I)


def clinical_use(server: LiveServer, name: str) -> dict[str, str]:
    use: dict[str, str] = server.model(name)["clinical_use"]
    return use


def flat(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------------------------ clinical-use status


def test_the_status_of_an_unvalidated_model_is_beside_the_result_and_on_paper(
    page: Page, live_server: LiveServer
) -> None:
    use = clinical_use(live_server, "cvd")
    # cvd is fitted to a teaching extract (issue 10): never validated for care.
    assert use["status"] in ("evaluation_only", "teaching_data_only"), use
    connect(page, live_server.keys.predict)
    choose_model(page, "cvd")
    page.fill("#patient-id", "MRN-55501234")
    fill_form(page, PATIENTS["cvd"])
    submit(page)
    page.wait_for_selector("#curves figure.curve, #curves-none")

    block = page.locator("#result-body #result-use")
    assert block.is_visible()
    assert block.get_attribute("data-status") == use["status"]
    shown = flat(block.locator("p").inner_text())
    assert shown.startswith(HEADLINES[use["status"]])
    assert flat(use["reason"]) in shown
    # Beside the result: above the probability, in the same panel; said in words with an icon,
    # not by colour alone, and announced with the result.
    assert page.evaluate(
        "() => Boolean(document.querySelector('#result-use').compareDocumentPosition("
        "document.querySelector('#probability')) & Node.DOCUMENT_POSITION_FOLLOWING)"
    )
    assert block.locator(".use-icon").inner_text().strip() == "⚠"
    assert SHORT[use["status"]] in page.inner_text("#result-status")
    # The model named with the result restates it.
    assert SHORT[use["status"]] in page.inner_text("#clinical-use")

    reader = PdfReader(io.BytesIO(page.pdf(format="A4", print_background=True)))
    assert len(reader.pages) == 1
    printed = pdf_text(reader)
    assert HEADLINES[use["status"]] in printed
    assert flat(use["reason"])[:60] in printed


def test_a_not_applicable_answer_states_the_status_too(page: Page, live_server: LiveServer) -> None:
    use = clinical_use(live_server, "cvd")
    features = {**PATIENTS["cvd"], "age_years": 25}
    assert live_server.predict("cvd", features)["status"] == "not_applicable"
    connect(page, live_server.keys.predict)
    choose_model(page, "cvd")
    fill_form(page, features)
    page.click("#submit-button")

    page.wait_for_selector("#not-applicable")
    block = page.locator("#result-body #result-use")
    assert block.get_attribute("data-status") == use["status"]
    assert flat(block.locator("p").inner_text()).startswith(HEADLINES[use["status"]])
    assert page.query_selector("#probability") is None


def test_the_picker_and_the_model_page_state_each_models_status(
    page: Page, live_server: LiveServer
) -> None:
    with live_server.api() as client:
        listed = client.get("/v1/models", headers=live_server.keys.header("predict")).json()
    connect(page, live_server.keys.predict)

    for entry in listed:
        status = entry["clinical_use"]["status"]
        choose_model(page, entry["name"])
        badge = page.locator("#model-use")
        assert badge.is_visible() and badge.get_attribute("data-status") == status
        assert SHORT[status] in badge.inner_text()
        option = page.locator(f'#model-select option[value="{entry["name"]}"]').inner_text()
        assert (SHORT[status].lower() in option) == (status != "validated"), option
        described = page.evaluate(
            "() => document.getElementById(document.querySelector('#model-select')"
            ".getAttribute('aria-describedby')).textContent"
        )
        assert flat(entry["clinical_use"]["reason"]) in flat(described)
        page.click("#nav-model")
        page.wait_for_selector("#model-view:not([hidden]) #model-card")
        header = page.locator("#model-use-status")
        assert header.get_attribute("data-status") == status
        assert flat(header.locator("p").inner_text()).startswith(HEADLINES[status])
        page.click("#nav-score")


# ------------------------------------------------------------------ percentage points


def _served(server: LiveServer, name: str) -> bool:
    with server.api() as client:
        listed = client.get("/v1/models", headers=server.keys.header("predict")).json()
    return any(entry["name"] == name for entry in listed)


@pytest.mark.parametrize("name", [*MODEL_NAMES, FRAMINGHAM])
def test_contributions_are_percentage_points_by_the_cds_cards_rule(
    page: Page, live_server: LiveServer, name: str
) -> None:
    if name == FRAMINGHAM and not _served(live_server, name):
        pytest.fail(f"{name} (the log cumulative hazard scale) is not served")
    features = FRAMINGHAM_PATIENT if name == FRAMINGHAM else PATIENTS[name]
    expected = live_server.predict(name, features)
    assert expected["status"] == "scored", expected
    if name == FRAMINGHAM:
        assert expected["explanation"]["scale"] == points.LOG_CUMULATIVE_HAZARD

    score(page, live_server, name, features)

    contributions = expected["explanation"]["contributions"]
    rows = page.locator("#contributions-table tbody tr")
    assert rows.count() == len(contributions)
    bars = page.query_selector_all("svg.waterfall-svg rect.wf-bar")
    titles = page.eval_on_selector_all(
        "svg.waterfall-svg g.wf-row > title", "ts => ts.map(t => t.textContent)"
    )
    for i, c in enumerate(contributions):
        row = rows.nth(i)
        assert row.get_attribute("data-feature") == c["feature"]
        change = row.locator("td").nth(2).text_content()
        if c["direction"] == "no effect":
            assert change == "no effect"
            continue
        size = points.points(expected, c["contribution"])
        assert change == describe.points_text(size), c["feature"]
        assert abs(float(bars[i].get_attribute("data-points") or "nan") - size) < 1e-6
        assert titles[i] == f"{c['text']}: {describe.points_text(size)}"
    # The bars are drawn to scale in points: the longest bar is the largest change.
    widths = [float(b.get_attribute("width") or 0) for b in bars]
    sizes = [
        0.0 if c["direction"] == "no effect" else abs(points.points(expected, c["contribution"]))
        for c in contributions
    ]
    assert widths.index(max(widths)) == sizes.index(max(sizes))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_no_model_scale_words_on_the_page_after_a_calculation(
    page: Page, live_server: LiveServer, name: str
) -> None:
    score(page, live_server, name, PATIENTS[name])
    page.wait_for_selector("#curves figure.curve, #curves-none")
    if page.query_selector("#whatif-run"):  # a what-if comparison is on the page too
        page.click("#whatif-run")
        page.wait_for_selector("#whatif-after")
    page.click("#result details.table-details summary")

    # Everything a clinician can read or hear: visible text, tooltips, accessible names and
    # the table (also when folded). The model card, on the other view, is a governance document.
    texts = page.evaluate(
        """() => {
            const out = [document.body.innerText,
                         document.querySelector('#score-view').textContent];
            const labelled = '#score-view [aria-label], #score-view [title], header [title]';
            for (const node of document.querySelectorAll(labelled)) {
                out.push(node.getAttribute('aria-label') || '', node.getAttribute('title') || '');
            }
            return out;
        }"""
    )
    found = [m.group(0) for text in texts for m in MODEL_SCALE.finditer(text)]
    assert found == []
    assert "percentage points" in page.locator("#contributions-table").inner_text()
