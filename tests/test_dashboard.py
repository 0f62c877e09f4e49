"""The dashboard's endpoints (issue 15, section 3) against a server that has served replayed traffic: who may look
at what, figures that agree with `crossroads report` and `/metrics`, the decision log, the playground (which calls
no model and logs nothing), and clear errors.  The page itself is driven in a real browser in
tests/test_dashboard_browser.py."""

from __future__ import annotations

import json

import httpx
import pytest
from dashboard_traffic import REQUESTS, serve_replayed_traffic
from prometheus_client.parser import text_string_to_metric_families

from crossroads.evaluate.report import build_report
from crossroads.serve.dashboard import REPORT_REPLICATES


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with serve_replayed_traffic(tmp_path_factory.mktemp("dashboard")) as served:
        yield served


def get(served, path: str, key: str | None, **params) -> httpx.Response:
    headers = {} if key is None else {"authorization": f"Bearer {key}"}
    return httpx.get(served.url + path, headers=headers, params=params, timeout=60)


def test_the_page_and_its_files_come_from_the_server(served):
    page = httpx.get(served.url + "/ui", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name, kind in (("app.js", "javascript"), ("app.css", "css")):
        asset = httpx.get(f"{served.url}/ui/{name}", timeout=10)
        assert asset.status_code == 200 and kind in asset.headers["content-type"] and len(asset.content) > 1000
        assert "http://" not in asset.text and "https://" not in asset.text  # nothing fetched from elsewhere
    missing = httpx.get(served.url + "/ui/../../etc/passwd.js", timeout=10)
    assert missing.status_code == 404
    assert httpx.get(served.url + "/ui/nothing.js", timeout=10).json()["error"]["message"].startswith("no dashboard")


def test_the_report_is_crossroads_reports_and_the_live_counters_are_metrics(served, admin_key):
    shown = get(served, "/ui/api/report", admin_key).json()
    expected = build_report(served.store, replicates=REPORT_REPLICATES)
    assert shown["report"] == json.loads(json.dumps(expected))  # same code, same window, same seed: same figures
    assert shown["report"]["totals"]["requests"] == sum(REQUESTS.values())
    metrics = httpx.get(served.url + "/metrics", headers={"authorization": f"Bearer {served.secrets['search']}"},
                        timeout=10).text
    totals = {family.name: sum(s.value for s in family.samples if s.name.endswith("_total"))
              for family in text_string_to_metric_families(metrics)}
    assert shown["live"]["decisions"] == totals["crossroads_decisions"] == sum(REQUESTS.values())
    assert shown["live"]["cost_usd"] == pytest.approx(totals["crossroads_cost_usd"])
    assert shown["live"]["cost_usd"] == pytest.approx(expected["savings"]["served_usd"])
    assert shown["live"]["feedback"] == totals["crossroads_feedback"] == sum(REQUESTS.values())


def test_a_team_key_sees_its_team_only(served, admin_key):
    for team, other in (("search", "support"), ("support", "search")):
        key = served.secrets[team]
        me = get(served, "/ui/api/me", key).json()
        assert me["admin"] is False and me["team"] == team
        report = get(served, "/ui/api/report", key).json()
        assert report["live"] is None  # the process's counters mix every team
        assert report["report"]["totals"]["requests"] == REQUESTS[team]
        assert [row["name"] for row in report["report"]["breakdown"]["team"]] == [team]
        decisions = get(served, "/ui/api/decisions", key, per_page=200).json()
        assert decisions["total"] == REQUESTS[team] and {d["team"] for d in decisions["decisions"]} == {team}
        theirs = get(served, "/ui/api/decisions", served.secrets[other], per_page=1).json()["decisions"][0]
        refused = get(served, f"/ui/api/decisions/{theirs['decision_id']}", key)
        assert refused.status_code == 404  # another team's decision does not exist for this key
        keys = get(served, "/ui/api/budgets", key).json()
        assert {k["team"] for k in keys["keys"]} == {team} and keys["routes"] == []
        assert [t["name"] for t in keys["teams"]] == [team]
        assert get(served, "/ui/api/learners", key).json()["routes"] == {}
    admin_view = get(served, "/ui/api/decisions", admin_key, per_page=1).json()
    assert admin_view["total"] == sum(REQUESTS.values())


def test_who_may_not_look_is_told_why(served):
    nothing = get(served, "/ui/api/report", None)
    assert nothing.status_code == 401 and "Authorization: Bearer" in nothing.json()["error"]["message"]
    config_key_only = get(served, "/ui/api/report", served.secrets["search"] + "x")
    assert config_key_only.status_code == 401
    wrong = get(served, "/ui/api/report", "not-a-key")
    assert wrong.status_code == 401 and "API key" in wrong.json()["error"]["message"]


def test_the_decision_log_searches_pages_and_shows_a_decision_in_full(served, admin_key):
    first = get(served, "/ui/api/decisions", admin_key, per_page=10, page=1).json()
    second = get(served, "/ui/api/decisions", admin_key, per_page=10, page=2).json()
    ids = [d["decision_id"] for d in first["decisions"] + second["decisions"]]
    assert len(set(ids)) == 20
    times = [d["created_s"] for d in first["decisions"] + second["decisions"]]
    assert times == sorted(times, reverse=True)
    math = get(served, "/ui/api/decisions", admin_key, q="ABOUT MATH", per_page=200).json()
    assert math["total"] > 0 and all("about math" in d["prompt"] for d in math["decisions"])
    assert math["total"] == sum(1 for p in _logged_prompts(served) if "about math" in p)
    by_route = get(served, "/ui/api/decisions", admin_key, route="priced", per_page=200).json()
    assert by_route["total"] == REQUESTS["support"]
    assert get(served, "/ui/api/decisions", admin_key, q="100%_").json()["total"] == 0  # no wildcard leaks
    one = first["decisions"][0]
    by_id = get(served, "/ui/api/decisions", admin_key, q=one["decision_id"][:12]).json()
    assert one["decision_id"] in [d["decision_id"] for d in by_id["decisions"]]
    detail = get(served, f"/ui/api/decisions/{one['decision_id']}", admin_key).json()
    stored = served.store.decision(one["decision_id"])
    assert detail["candidates"] == stored["candidates"] and detail["probability"] == stored["probability"]
    assert detail["outcome"]["cost_usd"] == stored["outcome"]["cost_usd"]
    assert [f["quality"] for f in detail["feedback"]] == [one["quality"]]
    assert detail["prompt"].startswith("question ") and "context" not in detail
    assert get(served, "/ui/api/decisions/dec_nope", admin_key).status_code == 404
    for params, fragment in (({"per_page": 0}, "per_page"), ({"page": -1}, "page"), ({"page": "x"}, "not a number")):
        bad = get(served, "/ui/api/decisions", admin_key, **params)
        assert bad.status_code == 400 and fragment in bad.json()["error"]["message"]


def _logged_prompts(served) -> list[str]:
    with served.store._db.transaction():
        return [p for (p,) in served.store._db.execute("SELECT prompt FROM decisions")]


def test_the_playground_previews_every_route_without_calling_or_logging(served, admin_key):
    before = get(served, "/ui/api/decisions", admin_key, per_page=1).json()["total"]
    learner = served.server.gateway.learners.learner("bandit", None)
    steps = learner.steps_
    prompt = served.dataset.prompts[0]
    preview = httpx.post(served.url + "/ui/api/playground", json={"prompt": prompt},
                         headers={"authorization": f"Bearer {admin_key}"}, timeout=60)
    assert preview.status_code == 200, preview.text
    routes = {r["route"]: r for r in preview.json()["routes"]}
    assert set(routes) == {"bandit", "priced"}
    priced = routes["priced"]["models"]
    assert set(priced) == {"cheap", "middle", "dear"}
    assert priced["cheap"]["expected_cost_usd"] < priced["middle"]["expected_cost_usd"] < priced["dear"]["expected_cost_usd"]
    assert all(0 <= m["predicted_quality"] <= 1 for m in priced.values())
    assert "willingness to pay" in routes["priced"]["reason"]
    bandit = routes["bandit"]["models"]
    assert sum(m["probability"] for m in bandit.values()) == pytest.approx(1.0)
    assert routes["bandit"]["model"] in bandit
    assert learner.steps_ == steps  # the learner did not move
    assert get(served, "/ui/api/decisions", admin_key, per_page=1).json()["total"] == before  # nothing logged
    for body, fragment in (({}, "prompt"), ({"prompt": "  "}, "prompt"), ({"prompt": "x", "category": 3}, "category")):
        bad = httpx.post(served.url + "/ui/api/playground", json=body,
                         headers={"authorization": f"Bearer {admin_key}"}, timeout=10)
        assert bad.status_code == 400 and fragment in bad.json()["error"]["message"]


def test_budgets_show_the_routes_pacing_and_the_keys_spend(served, admin_key):
    budgets = get(served, "/ui/api/budgets", admin_key).json()
    [priced] = budgets["routes"]
    assert priced["route"] == "priced" and priced["usd"] == 0.05 and priced["mode"] == "pace"
    spent = build_report(served.store, route="priced", since_s=priced["period_start_s"], replicates=20)
    assert priced["spent_usd"] == pytest.approx(spent["savings"]["served_usd"])
    burn = priced["burn_down"]
    so_far = [usd for usd in burn["spent_usd"] if usd is not None]
    assert so_far[-1] == pytest.approx(priced["spent_usd"]) and so_far == sorted(so_far)
    assert burn["time_s"][-1] == priced["period_end_s"] and burn["spent_usd"][-1] is None  # the target runs on
    assert burn["target_usd"] == sorted(burn["target_usd"]) and burn["target_usd"][-1] == pytest.approx(priced["usd"])
    assert priced["willingness_to_pay"] == served.server.gateway.routes.budgets.controllers["priced"].willingness_to_pay
    support = next(k for k in budgets["keys"] if k["team"] == "support")
    assert support["budget"]["usd"] == 100 and support["spent_usd"] == pytest.approx(priced["spent_usd"])
    teams = {t["name"]: t for t in budgets["teams"]}
    assert set(teams) == {"search", "support"}
    assert teams["support"]["spent_usd"] == pytest.approx(support["spent_usd"])  # the team pays what its key spent


@pytest.fixture(scope="module")
def admin_key():
    from dashboard_traffic import ADMIN

    return ADMIN


def test_a_server_without_keys_says_how_to_open_its_dashboard(tmp_path):
    from serve_helpers import ServerThread

    from crossroads.serve.config import parse_config
    from crossroads.serve.gateway import Gateway
    from crossroads.upstream.fake import FAKE_BASE_URL, FakeUpstream

    config = parse_config({"models": [{"name": "echo", "base_url": FAKE_BASE_URL}],
                           "store": f"sqlite:///{tmp_path}/store.db"})
    with ServerThread(Gateway(config, http_client=FakeUpstream().async_client())) as server:
        refused = httpx.get(server.url + "/ui/api/me", timeout=10)
    assert refused.status_code == 403
    message = refused.json()["error"]["message"]
    assert "admin key" in message and "security.admin_key_env" in message
