"""The monitoring page (issue 13) in headless Chromium against a real uvicorn server, after the
simulation's traffic (bench/monitoring_drift.py): held-out rows of the diabetes model scored
through the API and their outcomes recorded. Shifted traffic with miscalibrated outcomes must
show the alarms, the breaching inputs and the live calibration curve; unshifted traffic none."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from bench import monitoring_drift as simulation
from service.app import create_app
from service.auth import create_key
from service.settings import Settings
from tests.conftest import MODELS_DIR, make_keys, running_server
from tests.ui.conftest import LAPTOP, BrowserLog, LiveServer, open_page, save_screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ROWS = 3000


@pytest.fixture(scope="module", params=["shifted", "unshifted"])
def monitored(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, LiveServer, dict[str, Any]]]:
    root = tmp_path_factory.mktemp(f"monitoring-{request.param}")
    keys = make_keys(root / "keys.json")
    outcomes_key = create_key(keys.file, "registry", ["outcomes"])
    settings = Settings(
        models_dir=MODELS_DIR,
        database_url=f"sqlite:///{root / 'audit.db'}",
        api_keys_file=keys.file,
        pseudonym_key="ui-monitoring-key",  # type: ignore[arg-type]
        max_batch_size=1000,
        max_body_bytes=16 * 1024 * 1024,
        log_level="WARNING",
    )
    if request.param == "shifted":
        (frame, y), outcomes = simulation.shifted(ROWS), simulation.miscalibrated()
    else:
        (frame, y), outcomes = simulation.unshifted(ROWS), simulation.real_outcomes
    with running_server(create_app(settings)) as url:
        with httpx.Client(base_url=url, timeout=httpx.Timeout(60.0)) as http:
            replay_keys = simulation.Keys(batch=keys.batch, outcomes=outcomes_key, admin=keys.admin)
            counts = simulation.replay(http, replay_keys, frame, y, outcomes)
            live, drift = simulation.reports(http, replay_keys)
            decision = http.post(
                f"/v1/models/{simulation.MODEL}/versions/{simulation.version()}/lifecycle",
                json={"state": "shadow", "reason": f"{request.param} pilot"},
                headers=keys.header("admin"),
            )
            assert decision.status_code == 200, decision.text
        yield (
            request.param,
            LiveServer(url=url, keys=keys),
            {
                "counts": counts,
                "live": live,
                "drift": drift,
            },
        )


@pytest.fixture
def monitoring_page(
    browser: Browser, monitored: tuple[str, LiveServer, dict[str, Any]], browser_log: BrowserLog
) -> Iterator[Page]:
    _, server, _ = monitored
    page = open_page(browser, server, browser_log, LAPTOP)
    page.goto("/ui/monitoring")
    page.fill("#api-key", server.keys.admin)
    page.click("#key-connect")
    page.wait_for_selector("#picker:not([hidden])")
    page.select_option("#model-select", simulation.MODEL)
    # The first model in the list loads first: wait for the chosen one's figures.
    page.wait_for_selector(
        f"#overview:not([hidden])[data-model='{simulation.MODEL}@{simulation.version()}']"
    )
    yield page
    page.context.close()
    assert browser_log.exceptions == [], "the page threw"
    assert browser_log.console_errors == [], "the page logged errors (CSP violations?)"
    assert all(u.startswith((server.url, "data:")) for u in browser_log.requests)


def test_monitoring_page_shows_what_the_api_reports(
    monitoring_page: Page, monitored: tuple[str, LiveServer, dict[str, Any]], tmp_path: Path
) -> None:
    scenario, _, expected = monitored
    page = monitoring_page
    live, drift = expected["live"], expected["drift"]

    save_screenshot(page, tmp_path, f"monitoring-{scenario}")
    alarms = page.locator("#alarms")
    live_points = page.locator("#calibration-chart circle[data-series='live']")
    validation_points = page.locator("#calibration-chart circle[data-series='validation']")
    groups = page.locator("#subgroup-table tbody tr")
    breach_rows = page.locator("#drift-table tbody tr.breach")
    all_row = page.locator("#subgroup-table tbody tr[data-group='All patients']")

    assert validation_points.count() == len(live["overall"]["calibration_curve"])
    assert live_points.count() == sum(
        1 for c in live["overall"]["calibration_curve"] if c["live"]["n"] > 0
    )
    assert groups.count() == 1 + len(live["subgroups"])
    assert all_row.locator("td").nth(1).inner_text() == str(live["overall"]["outcomes_known"])
    breaching = {
        page.locator("#drift-table tbody tr.breach").nth(i).get_attribute("data-feature")
        for i in range(breach_rows.count())
    }
    assert page.locator("#auroc-chart circle[data-series='auroc']").count() >= 1
    assert page.locator("#lifecycle-note").get_attribute("data-state") == "shadow"
    decision = page.locator("#lifecycle-table tbody tr").first.inner_text()
    assert f"{scenario} pilot" in decision and "candidate → shadow" in decision
    if scenario == "shifted":
        assert alarms.locator("[data-alarm='worse']").count() >= 1
        assert alarms.locator("[data-alarm='drift']").count() == len(drift["breaches"])
        assert "Worse than validation" in alarms.inner_text()
        assert {"age_years", "bmi_kg_m2", "@risk", "@tier"} <= breaching
        assert "Worse than validation" in all_row.inner_text()
        high = page.locator("#tier-table tbody tr[data-tier='high'] td").first.inner_text()
        share = next(t for t in drift["tiers"]["shares"] if t["tier"] == "high")["share"]
        assert high == f"{100 * share:.1f}%"
    else:
        # Overall and drift stay quiet; a subgroup may cross by chance (many comparisons at
        # 95%), and then the page must show exactly the groups the API judged worse.
        worse_groups = {g["key"] for g in live["subgroups"] if g.get("worse_than_validation")}
        assert alarms.locator("[data-alarm='drift']").count() == 0
        assert alarms.locator("[data-group='all']").count() == 0
        assert alarms.locator("[data-alarm='worse']").count() == len(worse_groups)
        if not worse_groups:
            assert "No alarm" in alarms.inner_text()
        assert breaching == set()
        assert "Consistent with validation" in all_row.inner_text()


def test_a_key_without_admin_scope_is_told_why(
    browser: Browser, monitored: tuple[str, LiveServer, dict[str, Any]], browser_log: BrowserLog
) -> None:
    _, server, _ = monitored
    page = open_page(browser, server, browser_log, LAPTOP)
    page.goto("/ui/monitoring")
    page.fill("#api-key", server.keys.predict)
    page.click("#key-connect")

    page.wait_for_selector("#problem:not([hidden])")

    assert "admin scope" in page.locator("#problem").inner_text()
    assert page.locator("#overview").is_hidden()
    page.context.close()
