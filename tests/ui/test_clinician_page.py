"""The clinician page end to end: headless Chromium against a real uvicorn server.

Each model's form is filled like a clinician would, and what the page shows is checked against
the public API's answer for the same input.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import MODEL_NAMES
from tests.ui.conftest import BrowserLog, LiveServer, save_screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page

PATIENTS: dict[str, dict[str, Any]] = {
    "diabetes": {
        "age_years": 57,
        "sex_male": 1,
        "bmi_kg_m2": 33,
        "high_blood_pressure": 1,
        "high_cholesterol": 1,
        "cholesterol_checked_5y": 1,
        "smoked_100_cigarettes": 1,
        "stroke_history": 0,
        "coronary_disease_or_mi": 0,
        "physically_active": 0,
        "fruit_daily": 1,
        "vegetables_daily": 1,
        "heavy_alcohol_use": 0,
        "general_health": 3,
        "poor_mental_health_days": 2,
        "poor_physical_health_days": 5,
        "difficulty_walking": 0,
    },
    "readmission": {
        "age_years": 72,
        "sex_male": 0,
        "time_in_hospital_days": 6,
        "lab_procedures": 52,
        "procedures": 1,
        "medications": 18,
        "outpatient_visits_prior_year": 1,
        "emergency_visits_prior_year": 1,
        "inpatient_admissions_prior_year": 2,
        "diagnoses_count": 9,
        "prior_encounters": 2,
        "prior_readmissions_30d": 1,
        "hba1c_result": "above_8",
        "max_glucose_serum": "not_measured",
        "insulin": "increased",
        "diabetes_medication": 1,
        "medication_change": 1,
        "discharge_disposition": "skilled_nursing",
        "admission_source": "emergency_room",
        "admission_type": "emergency",
        "primary_diagnosis": "circulatory",
    },
    "cvd": {
        "sex_male": 1,
        "age_years": 58,
        "current_smoker": 1,
        "cigarettes_per_day": 20,
        "bp_medication": 0,
        "stroke_history": 0,
        "hypertension": 1,
        "diabetes": 0,
        "total_cholesterol_mg_dl": {"value": 6.2, "unit": "mmol/L"},
        "systolic_bp_mm_hg": 152,
        "diastolic_bp_mm_hg": 94,
        "bmi_kg_m2": 29.5,
        "heart_rate_bpm": None,
        "glucose_mg_dl": {"value": 5.4, "unit": "mmol/L"},
    },
}


COLOURS = {"raised": "raise", "lowered": "lower", "no effect": "none"}  # red, blue, grey bars


# ------------------------------------------------------------------ driving the page


def connect(page: Page, key: str) -> None:
    page.goto("/ui")
    page.fill("#api-key", key)
    page.press("#api-key", "Enter")
    page.wait_for_selector("#views:not([hidden])")


def choose_model(page: Page, name: str) -> None:
    page.select_option("#model-select", name)
    page.wait_for_function(
        "name => document.querySelector(`#form-fields [data-feature]`) !== null && "
        "location.hash.endsWith('/' + name)",
        arg=name,
    )


def fill_form(page: Page, features: dict[str, Any]) -> None:
    for name, value in features.items():
        kind = page.get_attribute(f'#form-fields [data-feature="{name}"]', "class") or ""
        if "binary" in kind:
            option = "na" if value is None else str(int(value))
            page.click(f'label[for="f-{name}-{option}"]')
        elif "categorical" in kind or "choice" in kind:  # labelled choices: a select
            page.select_option(f"#f-{name}", "" if value is None else str(value))
        elif isinstance(value, dict):
            page.select_option(f"#u-{name}", value["unit"])
            page.fill(f"#f-{name}", str(value["value"]))
        else:
            page.fill(f"#f-{name}", "" if value is None else str(value))


def submit(page: Page) -> None:
    before = (
        page.get_attribute("#probability", "data-probability")
        if _has(page, "#probability")
        else None
    )
    page.click("#submit-button")
    page.wait_for_function(
        "before => { const p = document.querySelector('#probability');"
        " return p !== null && p.dataset.probability !== before; }",
        arg=before,
    )


def _has(page: Page, selector: str) -> bool:
    return page.query_selector(selector) is not None


def score(page: Page, server: LiveServer, name: str, features: dict[str, Any]) -> None:
    connect(page, server.keys.predict)
    choose_model(page, name)
    fill_form(page, features)
    submit(page)


def shown_probability(page: Page, selector: str = "#probability") -> tuple[str, float]:
    text = page.inner_text(selector)
    value = page.get_attribute(selector, "data-probability")
    assert value is not None
    return text, float(value)


def as_percent(probability: float) -> str:
    return f"{probability * 100:.1f}%"


# ------------------------------------------------------------------ scoring each model


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_page_shows_the_apis_probability_tier_and_one_bar_per_contribution(
    page: Page, live_server: LiveServer, tmp_path: Path, name: str
) -> None:
    features = PATIENTS[name]

    score(page, live_server, name, features)

    expected = live_server.predict(name, features)
    text, value = shown_probability(page)
    assert value == expected["probability"]
    assert text == as_percent(expected["probability"])
    assert page.inner_text("#tier") == expected["tier"]["label"]
    contributions = expected["explanation"]["contributions"]
    bars = page.query_selector_all("svg.waterfall-svg rect.wf-bar")
    assert [b.get_attribute("data-feature") for b in bars] == [c["feature"] for c in contributions]
    for bar, contribution in zip(bars, contributions, strict=True):
        assert COLOURS[contribution["direction"]] in (bar.get_attribute("class") or "")
    # Risk curves for the top factors, each marking the patient.
    model = live_server.model(name)
    modifiable = {f["name"] for f in model["features"] if f["modifiable"]}
    top = [
        c["feature"]
        for c in contributions
        if abs(c["contribution"]) > 1e-9 and c["feature"] in modifiable
    ][:4]
    page.wait_for_selector("#curves figure.curve" if top else "#curves-none")
    curves = page.query_selector_all("#curves figure.curve")
    assert [c.get_attribute("data-feature") for c in curves] == top
    for curve in curves:
        assert curve.query_selector("svg .patient-point, svg .patient-missing") is not None
    # The tier scale names every tier.
    scale = page.inner_text("figure.tier-scale") + (
        page.get_attribute("figure.tier-scale svg", "aria-label") or ""
    )
    for tier in model["tiers"]:
        assert tier["label"].split(" (")[0] in scale
    assert f"{name} {model['version']}" in page.inner_text(".model-ref")
    assert page.get_attribute("#card-link", "href") == f"#model/{name}"
    save_screenshot(page, tmp_path, name)


def test_missing_optional_inputs_and_unit_conversions_are_shown(
    page: Page, live_server: LiveServer
) -> None:
    score(page, live_server, "cvd", PATIENTS["cvd"])

    warnings = page.inner_text("#quality-warnings")
    assert "Heart rate missing" in warnings
    notes = page.inner_text(".unit-notes")
    assert "6.2 mmol/L converted to" in notes
    assert "mg/dL" in notes


def test_value_outside_the_training_range_shows_a_warning(
    page: Page, live_server: LiveServer, tmp_path: Path
) -> None:
    features = {**PATIENTS["diabetes"], "bmi_kg_m2": 62}

    score(page, live_server, "diabetes", features)

    expected = live_server.predict("diabetes", features)
    flagged = expected["data_quality"]["out_of_training_range"]
    assert [o["feature"] for o in flagged] == ["bmi_kg_m2"]
    warning = page.locator('#quality-warnings li[data-feature="bmi_kg_m2"]')
    assert warning.is_visible()
    assert "BMI 62.0 kg/m² is outside the training range" in warning.inner_text()
    assert shown_probability(page)[1] == expected["probability"]
    save_screenshot(page, tmp_path, "diabetes-out-of-range")


def test_what_if_shows_the_new_risk_beside_the_old_one(
    page: Page, live_server: LiveServer, tmp_path: Path
) -> None:
    features = PATIENTS["cvd"]
    score(page, live_server, "cvd", features)
    before = live_server.predict("cvd", features)

    page.select_option("#whatif-feature", "systolic_bp_mm_hg")
    assert page.input_value("#whatif-input") == "152"
    page.fill("#whatif-input", "120")
    page.click("#whatif-run")
    page.wait_for_selector("#whatif-after")

    after = live_server.predict("cvd", {**features, "systolic_bp_mm_hg": 120})
    assert shown_probability(page, "#whatif-before") == (
        as_percent(before["probability"]),
        before["probability"],
    )
    assert shown_probability(page, "#whatif-after") == (
        as_percent(after["probability"]),
        after["probability"],
    )
    assert after["probability"] < before["probability"]
    assert "Systolic BP: 120 mmHg" in page.inner_text("#whatif-result")
    assert page.inner_text("#whatif-diff").startswith("Change: \N{MINUS SIGN}")
    # The form and the main result are untouched.
    assert page.input_value("#f-systolic_bp_mm_hg") == "152"
    assert shown_probability(page)[1] == before["probability"]
    save_screenshot(page, tmp_path, "cvd-what-if")

    page.select_option("#whatif-feature", "current_smoker")
    assert page.input_value("#whatif-input") == "0"
    page.click("#whatif-run")
    page.wait_for_function(
        "p => document.querySelector('#whatif-after').dataset.probability !== p",
        arg=str(after["probability"]),
    )
    # Quitting also sets what the manifest says a non-smoker has (cigarettes per day 0).
    smoker = next(f for f in live_server.model("cvd")["features"] if f["name"] == "current_smoker")
    implied = smoker.get("implies", {}).get("0", {})
    quit_smoking = live_server.predict("cvd", {**features, **implied, "current_smoker": 0})
    assert shown_probability(page, "#whatif-after")[1] == quit_smoking["probability"]
    for feature in implied:
        assert feature in page.get_attribute("#whatif-also", "data-features") or ""


def test_what_if_is_offered_only_for_modifiable_inputs(page: Page, live_server: LiveServer) -> None:
    score(page, live_server, "diabetes", PATIENTS["diabetes"])
    offered = page.eval_on_selector_all("#whatif-feature option", "os => os.map(o => o.value)")
    model = live_server.model("diabetes")
    assert offered == [f["name"] for f in model["features"] if f["modifiable"]]

    choose_model(page, "readmission")  # none of its inputs is modifiable
    fill_form(page, PATIENTS["readmission"])
    submit(page)
    assert page.query_selector("#whatif-feature") is None
    assert "modifiable" in page.inner_text("#whatif-none")


def test_what_if_in_another_unit_is_converted(page: Page, live_server: LiveServer) -> None:
    features = PATIENTS["cvd"]
    score(page, live_server, "cvd", features)

    page.select_option("#whatif-feature", "total_cholesterol_mg_dl")
    assert page.input_value("#whatif-unit") == "mmol/L"
    page.fill("#whatif-input", "4.5")
    page.click("#whatif-run")
    page.wait_for_selector("#whatif-after")

    expected = live_server.predict(
        "cvd", {**features, "total_cholesterol_mg_dl": {"value": 4.5, "unit": "mmol/L"}}
    )
    assert shown_probability(page, "#whatif-after")[1] == expected["probability"]


# ------------------------------------------------------------------ the model page


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_page_shows_card_auroc_calibration_and_subgroups(
    page: Page, live_server: LiveServer, tmp_path: Path, name: str
) -> None:
    model = live_server.model(name)
    test = model["validation"]["test"]
    connect(page, live_server.keys.predict)
    choose_model(page, name)

    page.click("#nav-model")
    page.wait_for_selector("#model-view:not([hidden]) svg.calibration-svg")

    assert page.inner_text("#model-title") == model["title"]
    assert page.inner_text("#auroc-value") == f"{test['auroc']:.3f}"
    assert page.inner_text("#auroc-ci") == (
        f"95% CI {test['auroc_ci_low']:.3f} \N{EN DASH} {test['auroc_ci_high']:.3f}"
    )
    points = page.query_selector_all("svg.calibration-svg circle.calibration-point")
    assert len(points) == len(test["calibration_bins"])
    rows = page.query_selector_all("table.subgroup-table tbody tr")
    assert len(rows) == len(model["validation"]["subgroups"])
    first = model["validation"]["subgroups"][0]
    assert rows[0].inner_text().split("\t")[:2] == [first["factor"], first["level"]]
    card_title = model["card_markdown"].splitlines()[0].removeprefix("# ")
    assert page.inner_text("#model-card h3") == card_title
    assert page.query_selector_all("#model-card table")  # markdown tables rendered as tables
    assert "**" not in page.inner_text("#model-card")
    assert page.url.endswith(f"/ui#model/{name}")
    save_screenshot(page, tmp_path, f"model-{name}")


def test_result_links_to_the_model_card(page: Page, live_server: LiveServer) -> None:
    score(page, live_server, "readmission", PATIENTS["readmission"])

    page.click("#card-link")

    page.wait_for_selector("#model-view:not([hidden]) #model-card h3")
    assert page.evaluate("document.activeElement.id") == "model-heading"
    page.click("#nav-score")
    page.wait_for_selector("#score-view:not([hidden])")
    assert page.is_visible("#probability")  # the result is still there


# ------------------------------------------------------------------ access and privacy


def test_key_is_kept_only_in_session_storage_and_no_patient_data_in_urls(
    page: Page, live_server: LiveServer, browser_log: BrowserLog
) -> None:
    score(page, live_server, "cvd", PATIENTS["cvd"])
    page.wait_for_selector("#curves figure.curve")

    storage = page.evaluate(
        "() => ({local: localStorage.length, session: Object.keys(sessionStorage),"
        " cookies: document.cookie})"
    )
    assert storage == {"local": 0, "session": ["clinrisk.apiKey"], "cookies": ""}
    assert page.evaluate("sessionStorage.getItem('clinrisk.apiKey')") == live_server.keys.predict
    assert page.url == f"{live_server.url}/ui#score/cvd"
    assert browser_log.requests
    for url in browser_log.requests:
        assert url.startswith(live_server.url), f"the page fetched {url}"
        assert "?" not in url, f"a request carried a query string: {url}"
        assert "152" not in url and "mmol" not in url
    assert set(browser_log.requests) >= {
        f"{live_server.url}/ui",
        f"{live_server.url}/ui/static/app.js",
        f"{live_server.url}/ui/static/app.css",
        f"{live_server.url}/v1/models",
        f"{live_server.url}/v1/models/cvd/predict",
        f"{live_server.url}/v1/models/cvd/curves",
    }

    page.click("#key-forget")

    assert page.evaluate("sessionStorage.length") == 0
    assert page.is_visible("#connect-view")
    assert page.query_selector("#probability") is None
    assert page.query_selector("#f-systolic_bp_mm_hg") is None


def test_key_survives_a_reload_of_the_tab_but_not_a_new_session(
    page: Page, live_server: LiveServer
) -> None:
    connect(page, live_server.keys.predict)

    page.reload()

    page.wait_for_selector("#views:not([hidden])")
    other = page.context.browser.new_context(base_url=live_server.url)  # type: ignore[union-attr]
    fresh = other.new_page()
    fresh.goto("/ui")
    assert fresh.is_visible("#connect-view")
    assert fresh.evaluate("sessionStorage.length") == 0
    other.close()


def test_invalid_key_is_refused_with_a_message(page: Page) -> None:
    page.goto("/ui")
    page.fill("#api-key", "crk_000000000000_not-a-real-secret")
    page.click("#key-connect")

    page.wait_for_selector("#key-status.error")
    assert "not accepted" in page.inner_text("#key-status")
    assert page.evaluate("sessionStorage.length") == 0
    assert page.is_hidden("#views")


def test_key_without_the_predict_scope_cannot_score(page: Page, live_server: LiveServer) -> None:
    connect(page, live_server.keys.batch)
    choose_model(page, "cvd")
    fill_form(page, PATIENTS["cvd"])

    page.click("#submit-button")

    alert = page.wait_for_selector("#result-body .alert.error")
    assert alert is not None
    assert "predict" in alert.inner_text()
    assert page.query_selector("#probability") is None


# ------------------------------------------------------------------ form behaviour


def test_plausible_ranges_are_input_limits_in_the_chosen_unit(
    page: Page, live_server: LiveServer
) -> None:
    connect(page, live_server.keys.predict)
    choose_model(page, "cvd")
    fill_form(page, PATIENTS["cvd"])

    assert page.get_attribute("#f-total_cholesterol_mg_dl", "max") == str(round(1000 / 38.67, 2))
    page.select_option("#u-total_cholesterol_mg_dl", "mg/dL")
    assert page.get_attribute("#f-total_cholesterol_mg_dl", "max") == "1000"
    page.fill("#f-systolic_bp_mm_hg", "900")
    page.click("#submit-button")

    assert page.evaluate("document.querySelector('#f-systolic_bp_mm_hg').validity.rangeOverflow")
    assert page.query_selector("#probability") is None
    assert "optional" in page.inner_text('label[for="f-heart_rate_bpm"]')
    assert "optional" not in page.inner_text('label[for="f-age_years"]')


def test_every_control_has_a_label_and_the_form_works_from_the_keyboard(
    page: Page, live_server: LiveServer
) -> None:
    page.goto("/ui")
    assert page.evaluate("document.activeElement.id") == "api-key"
    page.keyboard.type(live_server.keys.predict)
    page.keyboard.press("Enter")
    page.wait_for_selector("#views:not([hidden])")
    choose_model(page, "diabetes")

    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, button')]
            .filter(e => !e.hidden && !(e.labels && e.labels.length)
                    && !e.getAttribute('aria-label') && !e.textContent.trim())
            .map(e => e.id || e.outerHTML)"""
    )
    assert unlabelled == []
    assert page.query_selector_all("#form-fields fieldset legend")
    # Yes/no answers are radio groups: arrow keys move between Yes and No.
    page.focus("#f-sex_male-1")
    page.keyboard.press("Space")
    page.keyboard.press("ArrowRight")
    assert page.is_checked("#f-sex_male-0")
    fill_form(page, {k: v for k, v in PATIENTS["diabetes"].items() if k != "sex_male"})
    page.focus("#f-age_years")
    page.keyboard.press("Enter")  # implicit submission

    page.wait_for_selector("#probability")
    expected = live_server.predict("diabetes", {**PATIENTS["diabetes"], "sex_male": 0})
    assert shown_probability(page)[1] == expected["probability"]
    assert "Risk " in page.inner_text("#result-status")  # announced (aria-live)
    assert page.get_attribute("#result-status", "aria-live") == "polite"


def test_server_side_errors_are_shown_next_to_the_field(
    page: Page, live_server: LiveServer
) -> None:
    connect(page, live_server.keys.predict)
    choose_model(page, "diabetes")
    fill_form(page, PATIENTS["diabetes"])
    # Remove the browser's own limit so the API's validation is what answers.
    page.evaluate("document.querySelector('#f-bmi_kg_m2').removeAttribute('max')")
    page.fill("#f-bmi_kg_m2", "150")

    page.click("#submit-button")

    page.wait_for_selector("#e-bmi_kg_m2:not([hidden])")
    assert "plausible range" in page.inner_text("#e-bmi_kg_m2")
    assert page.get_attribute("#f-bmi_kg_m2", "aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "f-bmi_kg_m2"


def test_tablet_layout_has_no_horizontal_scrolling(
    tablet_page: Page, live_server: LiveServer, tmp_path: Path
) -> None:
    score(tablet_page, live_server, "readmission", PATIENTS["readmission"])
    tablet_page.wait_for_selector("#curves figure.curve, #curves-none")

    overflow = tablet_page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    save_screenshot(tablet_page, tmp_path, "readmission-tablet")


# ------------------------------------------------------------------ serving (no browser needed)


def test_page_and_assets_are_served_by_the_service_with_a_strict_policy(
    client: TestClient,
) -> None:
    page = client.get("/ui")
    script = client.get("/ui/static/app.js")
    style = client.get("/ui/static/app.css")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "form-action 'none'" in csp
    assert page.headers["cache-control"] == "no-store"
    assert 'src="/ui/static/app.js"' in page.text
    assert "http" not in page.text.replace("http-equiv", "")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert style.status_code == 200
    assert style.headers["content-type"].startswith("text/css")
    for asset in (script.text, style.text):
        own = asset.replace('"http://www.w3.org/2000/svg"', "")  # the SVG namespace, not a URL
        assert "http://" not in own and "https://" not in own and "//cdn" not in own
        assert "@import" not in own and "url(" not in own
    again = client.get("/ui/static/app.js", headers={"if-none-match": script.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.parametrize(
    "path", ["/ui/static/index.html", "/ui/static/../router.py", "/ui/static/x.js"]
)
def test_only_the_pages_own_assets_are_served(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_the_page_is_not_part_of_the_api_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    assert not [p for p in paths if p.startswith("/ui")]
    assert "/v1/models/{name}/curves" in paths
