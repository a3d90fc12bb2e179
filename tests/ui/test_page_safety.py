"""The clinician page never shows a result that does not match the form (issue 14, part 7).

Headless Chromium against a real uvicorn server with the committed models: a stale result is
marked or cleared, Calculate brings the answer into view and focus, the page prints on one A4
page (a PDF printed by Chromium, read back with pypdf), the patient's identity stays in memory,
choices are words, inputs are grouped as a chart groups them, and a patient outside the intended
population gets no probability.
"""

from __future__ import annotations

import io
import json
import re
import unicodedata
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from pypdf import PdfReader

from tests.ui.conftest import BrowserLog, LiveServer, open_page
from tests.ui.test_clinician_page import (
    PATIENTS,
    as_percent,
    choose_model,
    connect,
    fill_form,
    score,
    shown_probability,
    submit,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Request

DESKTOP = {"width": 1280, "height": 900}
PATIENT_ID = "MRN-55501234"
PATIENT_NAME = "Ada Testpatient"
A4_POINTS = (595.3, 841.9)  # width, height in PDF points


@pytest.fixture
def desktop_page(
    browser: Browser, live_server: LiveServer, browser_log: BrowserLog
) -> Iterator[Page]:
    opened = open_page(browser, live_server, browser_log, DESKTOP)
    yield opened
    opened.context.close()
    assert browser_log.exceptions == [], "the page threw"
    assert browser_log.console_errors == [], "the page logged errors (CSP violations?)"


def stale(page: Page) -> bool:
    return page.get_attribute("#result", "data-stale") == "true" and page.is_visible(
        "#result-stale"
    )


def name_the_patient(page: Page) -> None:
    page.fill("#patient-id", PATIENT_ID)
    page.fill("#patient-name", PATIENT_NAME)


def pdf_text(reader: PdfReader) -> str:
    """The first page's text, whitespace collapsed and ligatures ("ﬃ") undone."""
    return " ".join(unicodedata.normalize("NFKC", reader.pages[0].extract_text()).split())


def applicability_rules(server: LiveServer, name: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = server.model(name).get("applicability", [])
    return rules


# ------------------------------------------------------------------ stale results


def test_an_edit_marks_the_result_out_of_date_until_the_form_matches_it_again(
    page: Page, live_server: LiveServer
) -> None:
    score(page, live_server, "cvd", PATIENTS["cvd"])
    assert not stale(page)

    page.fill("#f-systolic_bp_mm_hg", "160")

    assert stale(page)
    assert "out of date" in page.inner_text("#result-stale").lower()
    assert "out of date" in page.inner_text("#result-status")  # announced (aria-live)
    # Putting the value back makes the form say again what the result came from.
    page.fill("#f-systolic_bp_mm_hg", "152")
    assert not stale(page)
    # A radio and "Fill typical values" count as edits too.
    page.click('label[for="f-diabetes-1"]')
    assert stale(page)
    page.click('label[for="f-diabetes-0"]')
    assert not stale(page)
    page.click("#typical-button")
    assert stale(page)
    # No what-if against an out-of-date result.
    page.select_option("#whatif-feature", "systolic_bp_mm_hg")
    page.click("#whatif-run")
    assert "out of date" in page.inner_text("#whatif-stale")
    assert page.query_selector("#whatif-after") is None
    # Calculating again gives a current result.
    submit(page)
    assert not stale(page)
    assert page.is_hidden("#result-stale")


def test_an_invalid_value_clears_the_result(page: Page, live_server: LiveServer) -> None:
    score(page, live_server, "cvd", PATIENTS["cvd"])

    page.fill("#f-systolic_bp_mm_hg", "900")

    assert page.query_selector("#probability") is None
    assert page.query_selector("#result-body svg") is None
    cleared = page.inner_text("#result-cleared")
    assert "Result cleared" in cleared and "Systolic BP" in cleared
    # Emptying a required field is invalid too.
    fill_form(page, {"systolic_bp_mm_hg": 152})
    submit(page)
    page.fill("#f-age_years", "")
    assert page.query_selector("#probability") is None
    assert "Age" in page.inner_text("#result-cleared")
    # Another unit turns 5.4 mmol/L into 5.4 mg/dL: not a plausible glucose, so no result.
    fill_form(page, {"age_years": 58})
    submit(page)
    page.select_option("#u-glucose_mg_dl", "mg/dL")
    assert page.query_selector("#probability") is None
    assert "Glucose" in page.inner_text("#result-cleared")


def test_a_value_the_service_refuses_leaves_no_result_on_screen(
    page: Page, live_server: LiveServer
) -> None:
    score(page, live_server, "diabetes", PATIENTS["diabetes"])
    # Remove the browser's own limit so that it is the API that refuses the value.
    page.evaluate("document.querySelector('#f-bmi_kg_m2').removeAttribute('max')")
    page.fill("#f-bmi_kg_m2", "150")
    assert stale(page)

    page.click("#submit-button")

    page.wait_for_selector("#e-bmi_kg_m2:not([hidden])")
    assert page.query_selector("#probability") is None
    assert not stale(page)


def test_another_patient_or_clearing_the_form_clears_the_result(
    page: Page, live_server: LiveServer
) -> None:
    connect(page, live_server.keys.predict)
    choose_model(page, "cvd")
    name_the_patient(page)
    fill_form(page, PATIENTS["cvd"])
    submit(page)

    page.fill("#patient-name", "Someone Else")

    assert page.query_selector("#probability") is None
    assert "patient details changed" in page.inner_text("#result-cleared")
    submit(page)
    page.click("#reset-button")
    assert page.query_selector("#probability") is None


# ------------------------------------------------------------------ focus after Calculate


def test_calculate_brings_the_result_into_view_and_focus(
    desktop_page: Page, live_server: LiveServer
) -> None:
    page = desktop_page
    connect(page, live_server.keys.predict)
    choose_model(page, "readmission")
    fill_form(page, PATIENTS["readmission"])
    page.locator("#submit-button").scroll_into_view_if_needed()
    assert page.evaluate("window.scrollY") > 300  # the long form: Calculate is far down

    submit(page)

    assert page.evaluate("document.activeElement.id") == "result-heading"
    assert page.get_attribute("#result-heading", "tabindex") == "-1"
    for selector in ("#result-heading", "#probability", "#tier"):
        box = page.locator(selector).bounding_box()
        assert box is not None
        assert 0 <= box["y"] and box["y"] + box["height"] <= DESKTOP["height"], selector
    assert page.get_attribute("#result-status", "aria-live") == "polite"
    assert page.inner_text("#result-status").startswith("Risk ")


# ------------------------------------------------------------------ print


def test_print_is_one_a4_page_with_inputs_result_reasons_model_and_disclaimer(
    page: Page, live_server: LiveServer
) -> None:
    features = PATIENTS["cvd"]
    connect(page, live_server.keys.predict)
    choose_model(page, "cvd")
    name_the_patient(page)
    fill_form(page, features)
    submit(page)
    page.wait_for_selector("#curves figure.curve")
    expected = live_server.predict("cvd", features)
    model = live_server.model("cvd")

    pdf = page.pdf(format="A4", print_background=True)

    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 1
    box = reader.pages[0].mediabox
    assert abs(float(box.width) - A4_POINTS[0]) < 2 and abs(float(box.height) - A4_POINTS[1]) < 2
    text = pdf_text(reader)
    for wanted in (
        PATIENT_NAME,
        PATIENT_ID,
        "Inputs used",
        "Systolic BP: 152 mmHg",
        "Total cholesterol: 6.2 mmol/L",
        "Sex: Male",
        as_percent(expected["probability"]),
        expected["tier"]["label"],
        "What drives this risk",
        f"cvd {model['version']}",
        f"sha256 {model['sha256'][:16]}",
        "Clinical use",
        "Decision support only",
    ):
        assert wanted in text, f"{wanted!r} is not on the printed page"
    if expected.get("uncertainty"):
        assert "How sure" in text
    # No controls on paper.
    assert "Calculate risk" not in text and "What if" not in text


@pytest.mark.parametrize("name", ["diabetes", "readmission"])
def test_every_model_prints_on_one_page_with_every_input(
    page: Page, live_server: LiveServer, name: str
) -> None:
    # An out-of-range value adds a warning block: the page must still fit.
    features = {**PATIENTS[name], "age_years": 95 if name == "readmission" else 80}
    score(page, live_server, name, features)
    page.wait_for_selector("#curves figure.curve, #curves-none")

    reader = PdfReader(io.BytesIO(page.pdf(format="A4", print_background=True)))

    assert len(reader.pages) == 1
    text = pdf_text(reader)
    for spec in live_server.model(name)["features"]:
        assert f"{spec['label']}:" in text or spec["name"] in ("sex_male", "general_health")
    assert "Decision support only" in text


def test_charts_fit_the_printed_page_width(page: Page, live_server: LiveServer) -> None:
    score(page, live_server, "readmission", PATIENTS["readmission"])
    page.wait_for_selector("#curves figure.curve, #curves-none")

    page.emulate_media(media="print")
    page.set_viewport_size({"width": 718, "height": 1000})  # A4 less 10 mm margins at 96 dpi

    overflow = page.evaluate(
        """() => [...document.querySelectorAll('#result svg')]
            .filter(s => s.getClientRects().length)
            .map(s => [s.getAttribute('class'), s.getBoundingClientRect().right])
            .filter(([, right]) => right > document.documentElement.clientWidth + 0.5)"""
    )
    assert overflow == []
    assert page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )


# ------------------------------------------------------------------ patient context


def test_patient_identity_is_on_screen_but_never_in_urls_or_storage(
    page: Page, live_server: LiveServer, browser_log: BrowserLog
) -> None:
    bodies: list[str] = []

    def keep_body(request: Request) -> None:
        if request.method == "POST":
            bodies.append(request.post_data or "")

    page.on("request", keep_body)
    connect(page, live_server.keys.predict)
    choose_model(page, "cvd")
    name_the_patient(page)
    fill_form(page, PATIENTS["cvd"])
    submit(page)
    page.wait_for_selector("#curves figure.curve")

    context_line = page.inner_text("#result-context")
    assert PATIENT_NAME in context_line and PATIENT_ID in context_line
    assert re.search(r"calculated \d{1,2} \w{3} \d{4}", context_line)
    assert re.fullmatch(r"\d{1,2} \w{3} \d{4}", page.inner_text("#today"))
    for url in [page.url, *browser_log.requests]:
        assert PATIENT_ID not in url and "Testpatient" not in url
    storage = page.evaluate(
        """() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage),
                                document.cookie])"""
    )
    assert PATIENT_ID not in storage and "Testpatient" not in storage
    assert json.loads(storage)[1] == [["clinrisk.apiKey", live_server.keys.predict]]
    # The identifier goes in the scoring request's body (audited as a pseudonym); the name never.
    predict = [json.loads(b) for b in bodies if '"features"' in b and "features_to_vary" not in b]
    assert predict and predict[0]["patient_id"] == PATIENT_ID
    assert all("Testpatient" not in b for b in bodies)
    # Forgetting the key forgets the patient too.
    page.click("#key-forget")
    assert page.input_value("#patient-id") == "" and page.input_value("#patient-name") == ""


# ------------------------------------------------------------------ labelled, grouped inputs


def test_choices_are_words_not_number_codes(page: Page, live_server: LiveServer) -> None:
    score(page, live_server, "diabetes", PATIENTS["diabetes"])

    options = page.eval_on_selector_all("#f-general_health option", "os => os.map(o => o.text)")
    # Self-rated health may be left unknown (a questionnaire answer charts lack).
    assert options == ["Not known", "Excellent", "Very good", "Good", "Fair", "Poor"]
    sex = page.locator('[data-feature="sex_male"]')
    assert sex.locator("legend").inner_text().startswith("Sex")
    assert sex.locator("label").all_inner_texts() == ["Male", "Female"]
    # Every choice on the form is a word.
    texts = page.eval_on_selector_all(
        "#form-fields select:not(.unit-select) option, #form-fields .segmented label",
        "els => els.map(e => e.textContent.trim())",
    )
    assert texts and not [t for t in texts if re.fullmatch(r"[\d.]+", t)]
    used = page.inner_text("#inputs-used")
    assert "Self-rated health: Good" in used and "Sex: Male" in used
    labels = page.eval_on_selector_all(
        "svg.waterfall-svg .wf-row text.row-label", "ts => ts.map(t => t.textContent)"
    )
    assert "Self-rated health: Good" in labels
    assert not [t for t in labels if t.startswith("Male sex")]


@pytest.mark.parametrize("name", ["cvd", "diabetes", "readmission"])
def test_inputs_are_grouped_as_a_chart_groups_them(
    page: Page, live_server: LiveServer, name: str
) -> None:
    connect(page, live_server.keys.predict)
    choose_model(page, name)

    groups = page.eval_on_selector_all(
        "#form-fields fieldset.group",
        "fs => fs.map(f => [f.dataset.group,"
        " [...f.querySelectorAll('[data-feature]')].map(e => e.dataset.feature)])",
    )
    placed = [feature for _, features in groups for feature in features]
    model = live_server.model(name)
    assert sorted(placed) == sorted(f["name"] for f in model["features"])
    assert groups[0][0] == "Demographics"
    assert {"age_years", "sex_male"} <= set(groups[0][1])
    assert "Other inputs" not in dict(groups)


@pytest.mark.parametrize("name", ["cvd", "diabetes", "readmission"])
def test_inputs_the_model_lets_be_unknown_offer_not_known(
    page: Page, live_server: LiveServer, name: str
) -> None:
    connect(page, live_server.keys.predict)
    choose_model(page, name)

    for spec in live_server.model(name)["features"]:
        field = f'[data-feature="{spec["name"]}"]'
        if spec["required"]:
            assert "optional" not in page.inner_text(field)
            continue
        if spec["type"] == "binary":
            assert page.inner_text(f'label[for="f-{spec["name"]}-na"]') == "Not known"
        elif page.evaluate(f"document.querySelector('#f-{spec['name']}').tagName") == "SELECT":
            assert page.eval_on_selector(f"#f-{spec['name']} option", "o => o.text") == (
                "Not known"
            )
        else:
            assert page.get_attribute(f"#f-{spec['name']}", "placeholder") == "Not known"


def test_a_not_known_input_is_sent_as_absent_and_shown_as_such(
    page: Page, live_server: LiveServer
) -> None:
    features = {**PATIENTS["cvd"], "bp_medication": None, "heart_rate_bpm": None}

    score(page, live_server, "cvd", features)

    expected = live_server.predict("cvd", features)
    assert shown_probability(page)[1] == expected["probability"]
    used = page.inner_text("#inputs-used")
    assert "Heart rate: not known" in used
    assert "On blood-pressure medication: not known" in used


# ------------------------------------------------------------------ intended population


def _failed_rules(server: LiveServer, name: str, features: dict[str, Any]) -> list[dict[str, Any]]:
    answer = server.predict(name, features)
    assert answer.get("status") == "not_applicable", answer
    failed: list[dict[str, Any]] = answer["applicability"]["failed"]
    return failed


def test_a_patient_outside_the_intended_population_gets_no_probability(
    page: Page, live_server: LiveServer
) -> None:
    if not applicability_rules(live_server, "cvd"):
        pytest.fail("GET /v1/models/cvd has no applicability rules (issue 14 part 1)")
    features = {**PATIENTS["cvd"], "age_years": 25}
    failed = _failed_rules(live_server, "cvd", features)

    connect(page, live_server.keys.predict)
    choose_model(page, "cvd")
    fill_form(page, features)
    page.click("#submit-button")

    panel = page.wait_for_selector("#not-applicable")
    assert panel is not None
    text = panel.inner_text()
    assert "Not applicable for this patient" in text
    for rule in failed:
        assert rule["description"] in text and rule["source"] in text
        if rule.get("detail"):
            assert rule["detail"] in text
    assert page.query_selector("#probability") is None
    assert page.query_selector("#tier") is None
    assert page.query_selector("#result-body svg") is None
    assert page.query_selector("#whatif-feature") is None
    assert not re.search(r"\d+(\.\d+)?\s*%", page.inner_text("#result-body"))
    assert page.evaluate("document.activeElement.id") == "result-heading"
    assert "Not applicable" in page.inner_text("#result-status")


def test_context_facts_are_asked_and_decide_applicability(
    page: Page, live_server: LiveServer
) -> None:
    rules = [
        r
        for r in applicability_rules(live_server, "cvd")
        if r["kind"] in ("context_false", "context_required")
    ]
    if not rules:
        pytest.fail("cvd declares no context rules (issue 14 part 1: established ASCVD)")
    excluding = next(r for r in rules if r["kind"] == "context_false")
    bodies: list[str] = []
    page.on("request", lambda r: bodies.append(r.post_data or "") if r.method == "POST" else None)
    connect(page, live_server.keys.predict)
    choose_model(page, "cvd")

    legend = page.locator(f'[data-context="{excluding["context"]}"]')
    assert excluding["source"] in legend.inner_text()
    fill_form(page, PATIENTS["cvd"])
    for rule in rules:  # state every fact so that the patient is in the population
        value = "false" if rule["kind"] == "context_false" else "true"
        page.click(f'label[for="c-{rule["context"]}-{value}"]')
    submit(page)
    sent = json.loads(next(b for b in bodies if '"context"' in b))
    assert sent["context"][excluding["context"]] is False

    page.click(f'label[for="c-{excluding["context"]}-true"]')
    assert stale(page)
    page.click("#submit-button")

    panel = page.wait_for_selector("#not-applicable")
    assert panel is not None and excluding["description"] in panel.inner_text()
    assert page.query_selector("#probability") is None


# ------------------------------------------------------------------ directions


@pytest.mark.parametrize("name", ["cvd", "diabetes"])
def test_inputs_without_a_clinical_direction_are_shown_as_associations(
    page: Page, live_server: LiveServer, name: str
) -> None:
    score(page, live_server, name, PATIENTS[name])

    specs = {f["name"]: f for f in live_server.model(name)["features"]}
    contributions = live_server.predict(name, PATIENTS[name])["explanation"]["contributions"]
    bars = page.query_selector_all("svg.waterfall-svg rect.wf-bar")
    assert len(bars) == len(contributions)
    associations = 0
    for bar, contribution in zip(bars, contributions, strict=True):
        spec = specs.get(contribution["feature"], {})
        expected = spec.get("direction") == 0 and contribution["direction"] != "no effect"
        associations += expected
        assert ("association" in (bar.get_attribute("class") or "")) == expected, spec.get("name")
    note = page.inner_text(".waterfall .section-note")
    assert ("associations in the training data" in note) == bool(associations)


def test_every_served_model_has_a_form_and_a_model_page(
    page: Page, live_server: LiveServer
) -> None:
    with live_server.api() as client:
        listed = client.get("/v1/models", headers=live_server.keys.header("predict")).json()
    connect(page, live_server.keys.predict)

    for entry in listed:
        choose_model(page, entry["name"])
        model = live_server.model(entry["name"])
        fields = page.eval_on_selector_all(
            "#form-fields [data-feature]", "els => els.map(e => e.dataset.feature)"
        )
        assert sorted(fields) == sorted(f["name"] for f in model["features"])
        page.click("#nav-model")
        page.wait_for_selector("#model-view:not([hidden]) #model-card")
        assert page.inner_text("#model-title") == model["title"]
        if model["validation"] is None:
            assert page.is_visible("#no-local-validation")
        page.click("#nav-score")
