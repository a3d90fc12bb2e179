"""The clinician page launched by an EHR (SMART App Launch, issue 12), end to end.

Three real HTTP servers: clinrisk, a test EHR's authorization server (Authlib: authorization code
grant with PKCE required) and its FHIR server serving the Synthea patient Dirk Kuhlman
(``tests/ui/smart_ehr.py``). Chromium opens ``/ui?iss=…&launch=…`` as an EHR would; the page
goes to the EHR's sign-in and back, and clinrisk reads the chart with the granted token. The
expected values are read from the Synthea bundle here, not through clinrisk's mapping.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from models.predictor import Predictor
from models.registry import Registry
from service import smart
from service.app import create_app
from service.cds_hooks import fhir
from service.settings import Settings, SmartEhr
from tests.conftest import MODELS_DIR, Keys, make_keys, running_server
from tests.ui.conftest import LAPTOP, BrowserLog, save_screenshot
from tests.ui.smart_ehr import (
    CLIENT_ID,
    TAMPER_STATE_LAUNCH,
    Client,
    EhrState,
    authorization_app,
    fhir_app,
    load_patient,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

PATIENT = "Dirk_Kuhlman"
PSEUDONYM_KEY = "smart-test-pseudonym-key"
DOWN_EHR = "http://127.0.0.1:9/fhir"  # allowlisted, but nothing listens there (discard port)


@dataclass
class Launchable:
    clinrisk: str
    fhir: str
    ehr: EhrState
    rogue_fhir: str
    rogue: EhrState
    keys: Keys
    settings: Settings

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.clinrisk, timeout=httpx.Timeout(20.0))


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launchable]:
    # Authlib refuses plain http unless told: the test servers are on loopback only.
    previous = os.environ.get("AUTHLIB_INSECURE_TRANSPORT")
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"
    root = tmp_path_factory.mktemp("smart")
    pid, resources = load_patient(PATIENT)
    ehr = EhrState(patient_id=pid, resources=resources)
    rogue = EhrState(patient_id=pid, resources=resources)
    try:
        with (
            running_server(authorization_app(ehr)) as auth_url,
            running_server(fhir_app(ehr)) as fhir_url,
            running_server(fhir_app(rogue)) as rogue_url,
        ):
            ehr.auth_url, ehr.fhir_url = auth_url, fhir_url
            rogue.auth_url, rogue.fhir_url = auth_url, rogue_url
            keys = make_keys(root / "keys.json")
            settings = Settings(
                models_dir=MODELS_DIR,
                database_url=f"sqlite:///{root / 'audit.db'}",
                api_keys_file=keys.file,
                pseudonym_key=PSEUDONYM_KEY,  # type: ignore[arg-type]
                log_level="INFO",
                smart_ehrs={
                    fhir_url: SmartEhr(client_id=CLIENT_ID, name="Test EHR"),
                    DOWN_EHR: SmartEhr(client_id=CLIENT_ID, name="EHR that is down"),
                },
            )
            with running_server(create_app(settings)) as clinrisk_url:
                ehr.client = Client(CLIENT_ID, [f"{clinrisk_url}/ui"], " ".join(SCOPE_LIST))
                yield Launchable(clinrisk_url, fhir_url, ehr, rogue_url, rogue, keys, settings)
    finally:
        if previous is None:
            os.environ.pop("AUTHLIB_INSECURE_TRANSPORT", None)
        else:
            os.environ["AUTHLIB_INSECURE_TRANSPORT"] = previous


SCOPE_LIST = [
    "launch",
    "patient/Patient.read",
    "patient/Observation.read",
    "patient/Condition.read",
    "patient/MedicationRequest.read",
    "patient/Encounter.read",
    "patient/Procedure.read",
]


@pytest.fixture
def smart_page(browser: Browser, servers: Launchable, browser_log: BrowserLog) -> Iterator[Page]:
    context = browser.new_context(viewport=LAPTOP, base_url=servers.clinrisk)
    context.set_default_timeout(20_000)
    opened = context.new_page()
    opened.on("pageerror", lambda error: browser_log.exceptions.append(str(error)))
    opened.on("request", lambda request: browser_log.requests.append(request.url))
    yield opened
    context.close()
    assert browser_log.exceptions == [], "the page threw"


# --- what the chart says, read here without clinrisk's mapping ------------------------------


def latest_value(servers: Launchable, loinc: str) -> tuple[float, str]:
    """The latest value of a LOINC code, standalone or as a panel component, and its date."""
    found: list[tuple[str, float]] = []
    for obs in servers.ehr.resources["Observation"]:
        when = obs.get("effectiveDateTime", "")
        for holder in [obs, *obs.get("component", [])]:
            codes = {c["code"] for c in holder["code"]["coding"]}
            if loinc in codes and "valueQuantity" in holder:
                found.append((when, holder["valueQuantity"]["value"]))
    when, value = max(found)
    return value, when[:10]


def completed_years(birth: str, on: date) -> int:
    born = date.fromisoformat(birth)
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def launch_url(iss: str, launch: str) -> str:
    return f"/ui?iss={quote(iss, safe='')}&launch={quote(launch, safe='')}"


# --- end to end in Chromium ------------------------------------------------------------------


def test_ehr_launch_fills_the_form_from_the_chart_and_scores(
    smart_page: Page, servers: Launchable, browser_log: BrowserLog, tmp_path: Path
) -> None:
    page = smart_page
    ehr = servers.ehr
    with page.expect_response(re.compile(r"/ui/smart/session$")) as session_answer:
        page.goto(launch_url(servers.fhir, ehr.new_launch()))
    answer = session_answer.value
    assert answer.status == 200
    body_text = answer.text()
    page.locator("#score-view:not([hidden])").wait_for()
    assert "Launched from Test EHR" in page.locator("#key-status").inner_text()
    # Neither the launch nor the code stays in the address bar or the history entry.
    assert urlsplit(page.url).query == ""
    assert not page.locator("#api-key").is_visible()

    page.select_option("#model-select", "cvd")
    page.wait_for_function("() => location.hash === '#score/cvd'")
    page.locator('[data-source-for="systolic_bp_mm_hg"]').wait_for()
    systolic, when = latest_value(servers, "8480-6")
    assert float(page.input_value("#f-systolic_bp_mm_hg")) == pytest.approx(systolic, abs=0.05)
    source = page.locator('[data-source-for="systolic_bp_mm_hg"]').inner_text()
    assert "From the chart" in source and "8480-6" in source
    assert date.fromisoformat(when).strftime("%Y") in source
    patient = ehr.resources["Patient"][0]
    assert page.is_checked("#f-sex_male-1") == (patient["gender"] == "male")
    # Age in completed years on the date the mapping states (the launch's date, or the one the
    # CDS Hooks mapping names in the source).
    age_source = page.locator('[data-source-for="age_years"]').inner_text()
    stated = re.search(r"age on (\d{4}-\d{2}-\d{2})", age_source)
    on = date.fromisoformat(stated.group(1)) if stated else date.today()
    assert int(page.input_value("#f-age_years")) == completed_years(patient["birthDate"], on)
    assert page.input_value("#patient-id") == ehr.patient_id
    assert patient["name"][0]["family"] in page.input_value("#patient-name")
    assert "Filled from Test EHR" in page.locator("#chart-notes").inner_text()

    page.click("#submit-button")
    probability = page.locator(".result-body").get_by_text(re.compile(r"\d+(\.\d+)?%")).first
    probability.wait_for()
    first = page.locator("#result-body").inner_text()
    save_screenshot(page, tmp_path, "smart-launch-cvd")

    # What-if: the chart's value stays editable; the source says it was changed here.
    assert not page.locator('[data-source-for="systolic_bp_mm_hg"] .chart-edited').is_visible()
    page.fill("#f-systolic_bp_mm_hg", "118")
    assert page.locator('[data-source-for="systolic_bp_mm_hg"] .chart-edited').is_visible()
    assert page.locator("#result-stale").is_visible()
    page.click("#submit-button")
    page.locator("#result-stale").wait_for(state="hidden")
    assert page.locator("#result-body").inner_text() != first

    # Where the tokens went: the EHR's access token never reached the page; the clinrisk session
    # is in memory only; no address carried a token; the launch's PKCE record is gone.
    assert ehr.tokens, "the EHR issued no token"
    for access_token in ehr.tokens:
        assert access_token not in body_text
    session_token = answer.json()["session"]["token"]
    assert session_token.startswith("crs_")
    storage = page.evaluate("() => JSON.stringify([{...localStorage}, {...sessionStorage}])")
    assert storage == "[{},{}]"
    for url in browser_log.requests:
        assert session_token not in url and not any(t in url for t in ehr.tokens)
    # The page's two scoring calls are in the audit trail as the EHR's session caller.
    with servers.api() as api:
        audit = api.get(
            "/v1/audit",
            headers=servers.keys.header("admin"),
            params={"patient_id": ehr.patient_id, "model": "cvd"},
        )
    assert audit.status_code == 200, audit.text
    callers = [record["caller"] for record in audit.json()["records"]]
    caller = smart.session_caller(servers.fhir, servers.settings.smart_ehrs[servers.fhir])
    assert callers == [caller.key_id, caller.key_id]


def test_a_launch_from_a_cds_card_opens_the_model_its_app_context_names(
    smart_page: Page, servers: Launchable
) -> None:
    page = smart_page
    launch = servers.ehr.new_launch(app_context='{"model": "diabetes"}')
    page.goto(launch_url(servers.fhir, launch))
    page.locator("#score-view:not([hidden])").wait_for()
    assert page.evaluate("() => location.hash") == "#score/diabetes"
    assert page.input_value("#model-select") == "diabetes"
    page.locator('[data-source-for="age_years"]').wait_for()
    # An appContext naming no model this service has is ignored (the first model opens).
    other = servers.ehr.new_launch(app_context='{"model": "no-such-model"}')
    page.goto(launch_url(servers.fhir, other))
    page.locator("#score-view:not([hidden])").wait_for()
    assert page.evaluate("() => location.hash") != "#score/no-such-model"


def test_a_launch_from_a_server_not_allowlisted_is_refused_before_any_request_to_it(
    smart_page: Page, servers: Launchable, tmp_path: Path
) -> None:
    page = smart_page
    page.goto(launch_url(servers.rogue_fhir, "anything"))
    status = page.locator("#launch-status")
    status.wait_for()
    page.wait_for_function(
        "() => !document.getElementById('launch-status').textContent.includes('Connecting')"
    )
    text = status.inner_text()
    assert "refused" in text and "iss" in text
    assert page.locator("#api-key").is_visible()  # the stand-alone way in is still there
    save_screenshot(page, tmp_path, "smart-launch-refused")
    assert urlsplit(page.url).netloc == urlsplit(servers.clinrisk).netloc  # no redirect away
    assert servers.rogue.fhir_requests == []  # not even its discovery document (no SSRF)
    with servers.api() as api:
        for iss in (servers.rogue_fhir, f"{servers.fhir}/../other", "javascript:alert(1)", 7):
            response = api.post("/ui/smart/launch", json={"iss": iss})
            assert response.status_code == 400, iss
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["errors"][0]["field"] == "iss"
    assert servers.rogue.fhir_requests == []


def test_an_answer_with_another_state_is_refused_and_its_code_never_redeemed(
    smart_page: Page, servers: Launchable
) -> None:
    ehr = servers.ehr
    ehr.launches[TAMPER_STATE_LAUNCH] = ehr.patient_id
    codes_before, token_requests = set(ehr.codes), ehr.token_requests
    page = smart_page
    page.goto(launch_url(servers.fhir, TAMPER_STATE_LAUNCH))
    page.get_by_text("state mismatch").wait_for()
    assert ehr.token_requests == token_requests  # the code was not sent to the token endpoint
    assert set(ehr.codes) - codes_before, "the EHR issued a code, which stays unused"
    assert urlsplit(page.url).query == ""
    assert page.locator("#score-view").is_hidden()
    assert page.evaluate("() => sessionStorage.length") == 0

    # Login CSRF: a link carrying someone else's code, in a tab that started no launch.
    code = next(iter(set(ehr.codes) - codes_before))
    page.goto(f"/ui?code={quote(code)}&state=whatever")
    page.get_by_text("state mismatch").wait_for()
    assert ehr.token_requests == token_requests
    # The EHR's own refusal (the user declined) is shown, and nothing is redeemed either.
    page.goto("/ui?error=access_denied&state=whatever")
    page.get_by_text("did not authorise").wait_for()
    assert ehr.token_requests == token_requests


# --- the launch without a browser: what clinrisk accepts and refuses -------------------------


def redeem(
    servers: Launchable,
    api: httpx.Client,
    *,
    verifier_ok: bool = True,
    encounter: str | None = None,
) -> dict[str, Any]:
    """Step through the launch as the page does: discovery via clinrisk, the EHR's authorize
    endpoint (which redirects with a code), then clinrisk's session call."""
    launch = api.post("/ui/smart/launch", json={"iss": servers.fhir})
    assert launch.status_code == 200, launch.text
    config = launch.json()
    verifier = "v" * 43 + "0123456789"
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    redirect_uri = f"{servers.clinrisk}/ui"
    authorize = httpx.get(
        config["authorization_endpoint"],
        params={
            "response_type": "code",
            "client_id": config["client_id"],
            "redirect_uri": redirect_uri,
            "launch": servers.ehr.new_launch(encounter=encounter),
            "scope": config["scope"],
            "state": "s-123",
            "aud": config["aud"],
            "code_challenge": challenge.decode(),
            "code_challenge_method": "S256",
        },
    )
    assert authorize.status_code == 302, authorize.text
    query = parse_qs(urlsplit(authorize.headers["location"]).query)
    assert query["state"] == ["s-123"]
    body = {
        "iss": servers.fhir,
        "code": query["code"][0],
        "code_verifier": verifier if verifier_ok else "w" * 43,
        "redirect_uri": redirect_uri,
    }
    return body


def test_session_tokens_are_checked_by_clinrisk(servers: Launchable) -> None:
    with servers.api() as api, capture_logs() as logs:
        body = redeem(servers, api)
        session = api.post("/ui/smart/session", json=body)
        assert session.status_code == 200, session.text
        assert session.headers["cache-control"] == "no-store"
        answer = session.json()
        token = answer["session"]["token"]
        features = answer["models"]["cvd"]["features"]
        auth = {"Authorization": f"Bearer {token}"}
        scored = api.post("/v1/models/cvd/predict", headers=auth, json={"features": features})
        assert scored.status_code == 200, scored.text
        # The session is a caller with the predict scope only.
        assert api.get("/v1/audit", headers=auth).status_code == 403

        # A code is used once; a replay is refused by the EHR, and clinrisk says so (no session).
        replay = api.post("/ui/smart/session", json=body)
        assert replay.status_code == 400
        assert replay.json()["errors"][0]["field"] == "code"

        refused: dict[str, str] = {}
        header, payload, signature = token[len("crs_") :].split(".")
        flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
        refused["tampered signature"] = f"crs_{header}.{payload}.{flipped}"
        sessions = smart.sessions_for(servers.settings)
        assert sessions is not None
        past = datetime.now(UTC) - timedelta(hours=3)
        refused["expired"] = sessions.issue(servers.fhir, now=past)[0]
        other = smart.SmartSessions(b"another-secret", servers.settings.smart_ehrs, 60)
        refused["signed with another key"] = other.issue(servers.fhir)[0]
        refused["for an EHR not configured"] = sessions.issue(servers.rogue_fhir)[0]
        refused["not a token"] = "crs_not-a-jwt"
        for why, bad in refused.items():
            response = api.post(
                "/v1/models/cvd/predict",
                headers={"Authorization": f"Bearer {bad}"},
                json={"features": features},
            )
            assert response.status_code == 401, why
            assert response.headers["www-authenticate"].startswith("Bearer"), why

        # PKCE: the code with a verifier that does not match its challenge is refused.
        wrong = api.post("/ui/smart/session", json=redeem(servers, api, verifier_ok=False))
        assert wrong.status_code == 400
        # A session call from a server that is not allowlisted never reaches it.
        rogue = api.post("/ui/smart/session", json={**body, "iss": servers.rogue_fhir})
        assert rogue.status_code == 400
    assert servers.rogue.fhir_requests == []
    # Nothing secret or identifying in the logs: no token, code, verifier or patient id.
    logged = repr(logs)
    for secret in [token, body["code"], body["code_verifier"], servers.ehr.patient_id]:
        assert secret not in logged
    for access_token in servers.ehr.tokens:
        assert access_token not in logged


def test_the_chart_goes_through_the_cds_hooks_mapping_with_every_page_read(
    servers: Launchable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small pages make clinrisk follow the FHIR server's next links; the form values equal the
    CDS Hooks mapping run on the patient's whole record."""
    monkeypatch.setattr(smart, "PAGE_SIZE", 7)
    with servers.api() as api:
        answer = api.post("/ui/smart/session", json=redeem(servers, api))
    assert answer.status_code == 200, answer.text
    models = answer.json()["models"]
    resources = servers.ehr.resources
    registry_models = {name: servers_model(servers, name) for name in models}
    # The whole record, as the CDS Hooks tests read a Synthea bundle.
    everything = fhir.Chart.from_resources(
        [r for kind in resources.values() for r in kind], servers.ehr.patient_id
    )
    for name, chart in models.items():
        expected = fhir.chart_features(registry_models[name].specs, everything, on=date.today())
        assert chart["features"] == expected.features, name
        assert [s["feature"] for s in chart["sources"]] == [s.feature for s in expected.sources]
        assert [s["reference"] for s in chart["sources"]] == [s.reference for s in expected.sources]
    assert set(models) >= {"cvd", "diabetes"}


@cache
def _registry(models_dir: Path) -> Registry[Predictor]:
    registry: Registry[Predictor] = Registry(Predictor)
    registry.load_dir(models_dir, trust=Settings(models_dir=models_dir).trust_policy())
    return registry


def servers_model(servers: Launchable, name: str) -> Predictor:
    """The model the service serves under ``name`` (its default version), loaded here."""
    return _registry(servers.settings.models_dir).get(name)


def test_bad_launch_requests_are_problems_naming_the_field(servers: Launchable) -> None:
    good = {
        "iss": servers.fhir,
        "code": "abc",
        "code_verifier": "v" * 43,
        "redirect_uri": f"{servers.clinrisk}/ui",
    }
    token_requests = servers.ehr.token_requests
    cases: list[tuple[Any, str | None]] = [
        ({**good, "code_verifier": "short"}, "code_verifier"),
        ({**good, "code_verifier": "v" * 42 + "!"}, "code_verifier"),
        ({**good, "code": ""}, "code"),
        ({**good, "redirect_uri": "https://evil.example/cb"}, "redirect_uri"),
        ({k: v for k, v in good.items() if k != "iss"}, "iss"),
        ([good], None),
    ]
    with servers.api() as api:
        for body, field in cases:
            response = api.post("/ui/smart/session", json=body)
            assert 400 <= response.status_code < 500, (body, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            if field is not None:
                assert response.json()["errors"][0]["field"] == field, body
        not_json = api.post(
            "/ui/smart/launch", content=b"{", headers={"Content-Type": "application/json"}
        )
        assert not_json.status_code == 422
        # An allowlisted EHR that cannot be reached: 502 naming what failed, quickly.
        down = api.post("/ui/smart/launch", json={"iss": DOWN_EHR})
        assert down.status_code == 502
        assert "SMART configuration" in down.json()["detail"]
    assert servers.ehr.token_requests == token_requests  # nothing above reached the EHR


@pytest.mark.parametrize(
    "url", ["ftp://ehr.example.org/fhir", "https://ehr.example.org/fhir/", "ehr.example.org"]
)
def test_an_allowlist_entry_must_be_an_http_fhir_base_url(url: str) -> None:
    with pytest.raises(ValueError, match="FHIR base URL"):
        Settings(
            models_dir=MODELS_DIR,
            pseudonym_key=PSEUDONYM_KEY,  # type: ignore[arg-type]
            smart_ehrs={url: SmartEhr(client_id=CLIENT_ID)},
        )


def test_a_launch_in_an_encounter_fills_the_stay_model_from_that_stay(servers: Launchable) -> None:
    """With an encounter in the launch context, the readmission model's stay features come from
    that encounter's linked resources, as the discharge hook reads them."""
    resources = servers.ehr.resources
    stay = next(e for e in resources["Encounter"] if e["class"]["code"] == "IMP")
    with servers.api() as api:
        answer = api.post("/ui/smart/session", json=redeem(servers, api, encounter=stay["id"]))
    assert answer.status_code == 200, answer.text
    chart = answer.json()["models"]["readmission"]
    everything = fhir.Chart.from_resources(
        [r for kind in resources.values() for r in kind], servers.ehr.patient_id
    )
    model = servers_model(servers, "readmission")
    expected = fhir.chart_features(
        model.specs, everything, on=date.today(), encounter_id=stay["id"]
    )
    assert chart["features"] == expected.features
    assert chart["features"]["time_in_hospital_days"] >= 1
    stay_source = next(s for s in chart["sources"] if s["feature"] == "time_in_hospital_days")
    assert stay_source["reference"] == f"Encounter/{stay['id']}"


def test_a_chart_the_ehr_lets_be_read_only_in_part_fills_nothing(servers: Launchable) -> None:
    """Without the Condition grant the problem list would look empty (no diabetes, no
    hypertension): the launch stops with a 502 saying what could not be read."""
    client = servers.ehr.client
    assert client is not None
    full = client.scope
    client.scope = " ".join(s for s in SCOPE_LIST if s != "patient/Condition.read")
    try:
        with servers.api() as api:
            answer = api.post("/ui/smart/session", json=redeem(servers, api))
    finally:
        client.scope = full
    assert answer.status_code == 502
    problem = answer.json()
    assert "Condition" in problem["detail"] and "not filled" in problem["detail"]
    assert "session" not in problem


def test_search_pages_left_unread_are_said_with_the_values(
    servers: Launchable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(smart, "PAGE_SIZE", 3)
    monkeypatch.setattr(smart, "MAX_PAGES", 1)
    with servers.api() as api:
        answer = api.post("/ui/smart/session", json=redeem(servers, api))
    assert answer.status_code == 200, answer.text
    warnings = answer.json()["models"]["cvd"]["warnings"]
    assert "Only the first 3 Observation resources were read" in " ".join(warnings)
    assert "Only the first 3 Condition resources were read" in " ".join(warnings)


def test_the_page_may_be_framed_only_by_the_configured_ehr_origins(tmp_path: Path) -> None:
    def headers(origins: list[str]) -> Any:
        settings = Settings(
            models_dir=MODELS_DIR,
            database_url=f"sqlite:///{tmp_path / 'audit.db'}",
            api_keys_file=tmp_path / "keys.json",
            pseudonym_key=PSEUDONYM_KEY,  # type: ignore[arg-type]
            smart_frame_ancestors=origins,
        )
        with TestClient(create_app(settings)) as client:
            return client.get("/ui").headers, client.get("/ui/static/app.js").headers

    page, script = headers([])
    assert "frame-ancestors 'none'" in page["content-security-policy"]
    assert page["x-frame-options"] == "DENY"
    page, script = headers(["https://ehr.example.org", "https://ehr2.example.org:8443"])
    csp = page["content-security-policy"]
    assert "frame-ancestors https://ehr.example.org https://ehr2.example.org:8443" in csp
    assert "'none'" not in csp.split("frame-ancestors")[1]
    assert "x-frame-options" not in page
    assert "connect-src 'self'" in csp and "form-action 'none'" in csp  # the rest unchanged
    assert script["x-frame-options"] == "DENY"  # only the page itself may be framed
    for bad in ("*", "https://*.example.org", "https://ehr.example.org/path", "ehr.example.org"):
        with pytest.raises(ValueError, match="not an origin"):
            Settings(models_dir=MODELS_DIR, smart_frame_ancestors=[bad])
