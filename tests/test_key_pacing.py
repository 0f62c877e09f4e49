"""Pace budgets of virtual keys and teams (issue 15, section 2): they never refuse, and the route a key uses paces by
them, turning to cheaper models as the money runs short, whatever the route kind; a route's own budget and a key's
both count, the tighter one binding.

The real app in process on SQLite and the fake upstream (an echo: `big` costs 100 times what `small` does).
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from test_keys import BIG_HELLO_USD, admin, chat
from test_keys import serve as serve_anytime  # noqa: F401 (a fixture)

from crossroads.objective.budget import period_bounds
from crossroads.store.keys import store_keys

#: Requests per key: enough that an unpaced Thompson learner without feedback sends some to `big`.
REQUESTS = 30


@pytest.fixture
def serve(serve_anytime):  # noqa: F811
    """serve() -> a running server whose budgets see the time as one minute into today (UTC): a day's pace budget
    then has almost nothing due yet, whatever the hour the tests run (late in the day most of it would be)."""

    def start(**security):
        server = serve_anytime(**security)
        day_start, _ = period_bounds("day", time.time())
        server.gateway.routes.budgets.clock = lambda: day_start + 60.0
        return server

    return start


def answered_by(server, secret: str, n: int = REQUESTS) -> list[dict]:
    answers = []
    for _ in range(n):
        answer = chat(server, secret)
        assert answer.status_code == 200, answer.text  # a pace budget never refuses
        answers.append(answer.json()["crossroads"])
    return answers


def team_with_key(server, team: str, team_budget=None, key_budget=None) -> str:
    assert admin(server, "POST", "/admin/teams", {"name": team, **({"budget": team_budget} if team_budget else {})}
                 ).status_code == 201
    created = admin(server, "POST", "/admin/keys", {"name": f"{team}-bot", "team": team,
                                                    **({"budget": key_budget} if key_budget else {})})
    assert created.status_code == 201, created.text
    return created.json()["secret"]


def test_a_spent_key_pace_budget_keeps_serving_on_the_cheapest_model(serve):
    server = serve()
    budget_usd = 3 * BIG_HELLO_USD  # three answers of `big`
    paced = team_with_key(server, "paced", key_budget={"usd": budget_usd, "per": "day", "mode": "pace"})
    free = team_with_key(server, "free")
    paced_answers, free_answers = answered_by(server, paced), answered_by(server, free)
    assert Counter(a["model"] for a in free_answers)["big"] > 0  # without a budget the learner sends some to big
    tail = paced_answers[REQUESTS // 2:]
    assert {a["model"] for a in tail} == {"small"}, Counter(a["model"] for a in paced_answers)
    assert all("budget" in a and "of key 'key_" in a["reason"] for a in paced_answers)
    assert tail[-1]["budget"]["willingness_to_pay"] > 0
    keys = store_keys(server.gateway.store)
    spent = keys.spent(keys.all("paced")[0].key_id, "day")
    assert spent <= budget_usd + BIG_HELLO_USD  # over by at most the one request in flight when it ran out


def test_a_team_pace_budget_paces_every_key_of_the_team(serve):
    server = serve()
    first = team_with_key(server, "ads", team_budget="0.00005/day:pace")
    second = admin(server, "POST", "/admin/keys", {"name": "ads-two", "team": "ads"}).json()["secret"]
    answered_by(server, first, 10)
    late = answered_by(server, second, 10)
    assert {a["model"] for a in late} == {"small"} and "of team 'ads'" in late[-1]["reason"]
    team = admin(server, "GET", "/admin/teams/ads").json()
    assert team["budget"]["mode"] == "pace" and 0 < team["spent_usd"] <= 0.00005 + BIG_HELLO_USD


def test_the_tighter_of_a_route_budget_and_a_key_budget_binds(tmp_path, monkeypatch):
    from serve_helpers import ServerThread
    from test_keys import ADMIN, raw_config

    from crossroads.serve.config import parse_config
    from crossroads.serve.gateway import Gateway
    from crossroads.upstream.fake import FakeUpstream

    monkeypatch.setenv("CROSSROADS_TEST_ADMIN", ADMIN)
    raw = raw_config(f"sqlite:///{tmp_path}/store.db")
    raw["routes"]["auto"]["budget"] = {"usd": 1000.0, "per": "day", "mode": "pace"}
    with ServerThread(Gateway(parse_config(raw), http_client=FakeUpstream().async_client())) as server:
        tight = team_with_key(server, "tight", key_budget={"usd": BIG_HELLO_USD, "per": "day", "mode": "pace"})
        roomy = team_with_key(server, "roomy")
        tight_answers, roomy_answers = answered_by(server, tight, 12), answered_by(server, roomy, 12)
    assert {a["model"] for a in tight_answers[4:]} == {"small"}
    assert all("of key 'key_" in a["reason"] for a in tight_answers[4:])  # the key's budget binds ...
    assert all("of route 'auto'" in a["reason"] for a in roomy_answers)  # ... and the route's where it is alone
    assert Counter(a["model"] for a in roomy_answers)["big"] > 0


def test_a_pace_budget_changed_over_the_admin_api_takes_over(serve):
    server = serve()
    secret = team_with_key(server, "shifting", key_budget={"usd": BIG_HELLO_USD, "per": "day", "mode": "pace"})
    answered_by(server, secret, 8)
    key_id = admin(server, "GET", "/admin/keys", params={"team": "shifting"}).json()["keys"][0]["key_id"]
    changed = admin(server, "PATCH", f"/admin/keys/{key_id}", {"budget": None})
    assert changed.status_code == 200 and changed.json()["budget"] is None
    import time

    time.sleep(0.6)  # the key ring's cache
    answers = answered_by(server, secret, REQUESTS)
    assert Counter(a["model"] for a in answers)["big"] > 0 and not any("budget" in a for a in answers)


@pytest.mark.parametrize("budget, fragment", [
    ({"usd": 5, "per": "day", "mode": "cap", "floor_model": "small"}, "a key's cap budget refuses"),
    ({"usd": 5, "per": "hour", "mode": "pace"}, "'hour' is not a budget period"),
])
def test_bad_pace_budgets_are_refused(serve, budget, fragment):  # noqa: F811
    server = serve()
    admin(server, "POST", "/admin/teams", {"name": "t"})
    answer = admin(server, "POST", "/admin/keys", {"name": "k", "team": "t", "budget": budget})
    assert answer.status_code == 400 and fragment in answer.json()["error"]["message"]
