"""The dashboard in a real browser (issue 15, section 3): headless Chromium from Debian's `chromium` package, driven by
Playwright with that browser as its executable, against a server that has served replayed traffic.  Every view is
clicked through, its figures are checked against the store (`crossroads report`'s code) and `/metrics`, a team's key
sees its team only, keys are made and revoked from the page, and each view is saved as a screenshot under the test's
output directory (printed at the end; `pytest -s` shows it)."""

from __future__ import annotations

import os
import shutil

import httpx
import pytest
from dashboard_traffic import ADMIN, REQUESTS, serve_replayed_traffic
from prometheus_client.parser import text_string_to_metric_families

from crossroads.evaluate.report import build_report
from crossroads.serve.dashboard import REPORT_REPLICATES

#: The browser: $CROSSROADS_CHROMIUM, else Debian's chromium on the PATH.
CHROMIUM = os.environ.get("CROSSROADS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
INSTALL = ("install Debian's headless Chromium (`apt-get install chromium chromium-driver`; .ci/run does this) or "
           "point $CROSSROADS_CHROMIUM at a Chromium executable")
VIEWS = ("overview", "routing", "budgets", "decisions", "playground", "keys")


@pytest.fixture(scope="module")
def browser(served):  # after the traffic: Playwright's sync API holds an event loop in this thread, replay runs its own
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests drive Chromium with Playwright: pip install -e '.[test]' installs it")
    if CHROMIUM is None:
        pytest.fail(f"no Chromium found: {INSTALL}")
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        except Exception as error:
            pytest.fail(f"Chromium at {CHROMIUM} did not start ({str(error).splitlines()[0]}): {INSTALL}")
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with serve_replayed_traffic(tmp_path_factory.mktemp("dashboard-browser")) as served:
        yield served


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dashboard-screenshots")
    yield folder
    print(f"\ndashboard screenshots: {folder}")


def sign_in(browser, served, key: str):
    page = browser.new_page(viewport={"width": 1366, "height": 900})  # a laptop's screen
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" and
            not message.text.startswith("Failed to load resource") else None)  # refusals the page shows are tested
    page.goto(served.url + "/ui")
    page.fill("#key", key)
    page.click("#login-form button")
    page.wait_for_selector("#view[data-ready=yes]")
    page.errors = errors
    return page


def open_view(page, view: str):
    page.click(f"nav a[data-view={view}]")
    page.wait_for_selector(f"#view[data-view={view}][data-ready=yes]")
    assert not page.query_selector("[data-testid=view-error]"), page.inner_text("#view")


def value(page, selector: str) -> str:
    return page.get_attribute(selector, "data-value")


def column(page, table: str, name: str) -> list[str]:
    return [cell.get_attribute("data-value") for cell in
            page.query_selector_all(f"table[data-testid='{table}'] tbody td[data-col='{name}']")]


def test_the_admin_clicks_through_every_view_and_the_figures_are_the_stores(browser, served, screenshots):
    page = sign_in(browser, served, ADMIN)
    report = build_report(served.store, replicates=REPORT_REPLICATES)
    assert page.inner_text("#who") == "admin"

    open_view(page, "overview")
    assert int(value(page, "[data-testid=requests] .value")) == report["totals"]["requests"] == sum(REQUESTS.values())
    assert float(value(page, "[data-testid=spend] .value")) == report["savings"]["served_usd"]
    dearest = report["savings"]["dearest"]
    assert float(value(page, "[data-testid=savings] .value")) == report["savings"]["models"][dearest]["savings"]["value"]
    assert dearest in page.inner_text("[data-testid=savings]")
    assert float(value(page, "[data-testid=quality] .value")) == report["quality"]["served"]["value"]
    assert "95% interval" in page.inner_text("[data-testid=quality]")
    metrics = httpx.get(served.url + "/metrics", headers={"authorization": f"Bearer {served.secrets['search']}"},
                        timeout=10).text
    decided = sum(s.value for family in text_string_to_metric_families(metrics) if family.name == "crossroads_decisions"
                  for s in family.samples if s.name.endswith("_total"))
    assert float(value(page, "[data-testid=live-decisions] .value")) == decided
    assert len(page.query_selector_all(".chart svg")) == 3
    page.screenshot(path=str(screenshots / "overview.png"), full_page=True)

    open_view(page, "routing")
    by_model = {row["name"]: row["requests"] for row in report["breakdown"]["model"]}
    shown = dict(zip(column(page, "by-model", "name"), map(int, column(page, "by-model", "requests"))))
    assert shown == by_model
    assert set(column(page, "by-team", "name")) == {"search", "support"}
    probabilities = list(map(float, column(page, "learner-bandit", "probability")))
    assert len(probabilities) == 3 and sum(probabilities) == pytest.approx(1.0)
    assert page.query_selector_all(".chart svg rect")  # each model's share over time
    page.screenshot(path=str(screenshots / "routing.png"), full_page=True)

    open_view(page, "budgets")
    spent = httpx.get(served.url + "/ui/api/budgets", headers={"authorization": f"Bearer {ADMIN}"}).json()
    assert float(value(page, "[data-testid=budget-priced] .value")) == pytest.approx(spent["routes"][0]["spent_usd"])
    assert "burn-down" in page.inner_text(".chart h3")
    assert column(page, "key-budgets", "spent_usd") and page.inner_text("table[data-testid=key-budgets]").count("support")
    page.screenshot(path=str(screenshots / "budgets.png"), full_page=True)

    open_view(page, "decisions")
    assert int(value(page, "[data-testid=decision-count]")) == sum(REQUESTS.values())
    page.fill("#search", "about math")
    page.click("#search-form button")
    page.wait_for_selector("[data-testid=decision-count]:not([data-value='72'])")
    math = int(value(page, "[data-testid=decision-count]"))
    assert 0 < math < sum(REQUESTS.values())
    page.click("table[data-testid=decisions] tbody tr")
    page.wait_for_selector("[data-testid=decision-detail]")
    decision_id = page.get_attribute("[data-testid=decision-detail]", "data-id")
    stored = served.store.decision(decision_id)
    assert "about math" in stored["prompt"]
    assert len(page.query_selector_all("table[data-testid=candidates] tbody tr")) == len(stored["candidates"])
    assert stored["outcome"]["model"] in page.inner_text("[data-testid=outcome]")
    page.screenshot(path=str(screenshots / "decisions.png"), full_page=True)
    page.fill("#search", "")
    page.click("#search-form button")
    page.wait_for_selector("[data-testid=decision-count][data-value='72']")
    page.click("#next")
    page.wait_for_selector("[data-testid=decision-count]:has-text('page 2 of')")
    page.click("#prev")  # back to where the first page's cursor starts
    page.wait_for_selector("[data-testid=decision-count]:has-text('page 1 of')")

    open_view(page, "playground")
    page.fill("#prompt", served.dataset.prompts[1])
    page.click("#play-form button")
    page.wait_for_selector("[data-testid=play-priced]")
    picked = page.get_attribute("[data-testid=play-priced]", "data-model")
    assert page.inner_text("table[data-testid=play-table-priced] tr.picked td[data-col=model]") == picked
    assert len(column(page, "play-table-bandit", "probability")) == 3
    page.screenshot(path=str(screenshots / "playground.png"), full_page=True)

    open_view(page, "keys")
    assert set(column(page, "keys", "name")) == {"search-app", "support-app"}
    page.fill("#team-name", "research")
    page.fill("#team-budget", "20")
    page.click("#team-form button")
    page.wait_for_selector("#key-message .ok")
    research = served.admin("GET", "/admin/teams/research").json()
    assert research["budget"]["usd"] == 20 and research["budget"]["per"] == "month"
    page.fill("#key-name", "notebook")
    page.fill("#key-team", "research")
    page.fill("#key-budget", "5")
    page.click("#key-form button")
    page.wait_for_selector("[data-testid=secret]")
    secret = page.inner_text("[data-testid=secret]").strip()
    assert httpx.get(served.url + "/v1/models", headers={"authorization": f"Bearer {secret}"}).status_code == 200
    page.screenshot(path=str(screenshots / "keys.png"), full_page=True)
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("[data-testid=revoke-notebook]")
    page.wait_for_selector("td[data-col=state][data-value=revoked]")
    refused = httpx.get(served.url + "/v1/models", headers={"authorization": f"Bearer {secret}"})
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
    page.select_option("#change-target", "team:support")
    page.fill("#change-budget", "50")
    page.select_option("#change-per", "week")
    page.select_option("#change-mode", "pace")
    page.click("#budget-form button")
    page.wait_for_selector("#key-message .ok")
    support = served.admin("GET", "/admin/teams/support").json()["budget"]
    assert (support["usd"], support["per"], support["mode"]) == (50, "week", "pace")
    open_view(page, "budgets")
    assert "research" in column(page, "team-budgets", "name")
    open_view(page, "keys")
    page.fill("#key-name", "orphan")
    page.fill("#key-team", "nosuchteam")
    page.click("#key-form button")
    page.wait_for_selector("#key-message .error")
    assert "unknown team 'nosuchteam'" in page.inner_text("#key-message")
    assert not page.errors, page.errors


def test_a_team_key_sees_its_team_only(browser, served, screenshots):
    page = sign_in(browser, served, served.secrets["support"])
    assert page.inner_text("#who").startswith("team support")
    open_view(page, "overview")
    assert int(value(page, "[data-testid=requests] .value")) == REQUESTS["support"]
    assert not page.query_selector("[data-testid=live-decisions]")  # this process's counters mix every team
    open_view(page, "routing")
    assert column(page, "by-team", "name") == ["support"]
    open_view(page, "decisions")
    assert int(value(page, "[data-testid=decision-count]")) == REQUESTS["support"]
    assert {td.inner_text() for td in page.query_selector_all("table[data-testid=decisions] tbody td:nth-child(9)")} == \
        {"support"}
    open_view(page, "keys")
    assert column(page, "keys", "team") == ["support"] and not page.query_selector("#key-form")
    open_view(page, "budgets")
    assert "Routes (paced)" not in page.inner_text("#view")
    page.screenshot(path=str(screenshots / "team-view.png"), full_page=True)
    assert not page.errors, page.errors


def test_a_wrong_key_is_told_why_and_stays_out(browser, served):
    page = browser.new_page()
    page.goto(served.url + "/ui")
    page.fill("#key", "not-a-key")
    page.click("#login-form button")
    page.wait_for_selector("#login-error:not(:empty)")
    assert "missing or wrong API key" in page.inner_text("#login-error")
    assert page.is_hidden("#view") and page.is_visible("#login")
