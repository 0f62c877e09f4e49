"""Team budgets (issue 15): a ``cap`` budget on a team, shared by all its keys, set and changed over the admin API
and the CLI, enforced on every request of the team's keys, with the team's spend kept in the store beside the keys'.

The real app in process (uvicorn on a socket) on real SQLite, and two replicas on the real PostgreSQL; the fake
upstream only stands in for paid models.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from postgres_server import fresh_database
from serve_helpers import ServerThread
from test_keys import ADMIN, BIG_HELLO_USD, HELLO, admin, assert_error, chat, new_key, raw_config, serve  # noqa: F401

import crossroads.store.records as records
from crossroads.cli.main import main as cli
from crossroads.objective.budget import Budget
from crossroads.serve.config import parse_config
from crossroads.serve.gateway import Gateway
from crossroads.serve.keys import CACHE_TTL_S, KeyRing
from crossroads.store import open_store
from crossroads.store.keys import store_keys
from crossroads.upstream.fake import FakeUpstream

#: A team cap that one answer of `big` does not reach and two pass.
CAP = {"usd": 1.5 * BIG_HELLO_USD, "per": "day", "mode": "cap"}


def new_team(server, name: str, budget=None) -> dict:
    answer = admin(server, "POST", "/admin/teams", {"name": name} if budget is None else {"name": name,
                                                                                            "budget": budget})
    assert answer.status_code == 201, answer.text
    return answer.json()


def listed(server) -> dict[str, dict]:
    return {team["name"]: team for team in admin(server, "GET", "/admin/teams").json()["teams"]}


# -- the store --------------------------------------------------------------------------------
def test_a_teams_spend_is_the_sum_of_what_its_keys_spent_while_they_were_its_own(tmp_path):
    with open_store(f"sqlite:///{tmp_path}/store.db") as store:
        keys = store_keys(store)
        keys.create_team("search", budget="2/week")
        keys.create_team("ads")
        one, _ = keys.create("one", "search")
        two, _ = keys.create("two", "search")
        banner, _ = keys.create("banner", "ads")
        for key, cost in ((one, 0.25), (two, 0.5), (one, 0.125), (banner, 1.0)):
            keys.charge(key.key_id, cost)
        for per in ("day", "week", "month"):
            assert keys.team_spent("search", per) == keys.spent(one.key_id, per) + keys.spent(two.key_id, per) == 0.875
            assert keys.team_spent("ads", per) == 1.0
        assert keys.team_spent("search", "day", time.time() + 2 * 86400) == 0.0  # a new day starts from nothing
        keys.update(two.key_id, {"team": "ads"})
        keys.charge(two.key_id, 2.0)
        assert (keys.team_spent("search", "week"), keys.team_spent("ads", "week")) == (0.875, 3.0)
        assert keys.team_budget("search") == Budget(2.0, "week", "cap") and keys.team_budget("ads") is None


def test_a_store_of_schema_version_5_opens_and_carries_its_keys_spend_over_to_their_teams(tmp_path, monkeypatch):
    url, path = f"sqlite:///{tmp_path}/store.db", tmp_path / "store.db"
    every_step = records.MIGRATIONS
    monkeypatch.setattr(records, "MIGRATIONS", every_step[:5])
    with open_store(url) as store:
        assert store.schema_version == 5
    with sqlite3.connect(path) as db:  # what crossroads with keys but no team budgets wrote
        db.execute("INSERT INTO teams (name, created_s) VALUES ('search', 0)")
        for key_id in ("key_a", "key_b"):
            db.execute("INSERT INTO keys (key_id, name, team, key_hash, prefix, created_s, updated_s) "
                       "VALUES (?, 'bot', 'search', ?, 'cr-x', 0, 0)", (key_id, key_id + "-hash"))
        db.executemany("INSERT INTO key_spend (key_id, period, spent_usd) VALUES (?, ?, ?)",
                       [("key_a", "day:2026-03-04", 0.5), ("key_b", "day:2026-03-04", 0.25),
                        ("key_a", "month:2026-03", 1.0)])
    monkeypatch.setattr(records, "MIGRATIONS", every_step)
    with open_store(url) as store:
        assert store.schema_version == len(every_step) >= 6
        keys = store_keys(store)
        assert keys.team("search")["budget"] is None
        now = dt.datetime(2026, 3, 4, 12, tzinfo=dt.timezone.utc).timestamp()
        assert keys.team_spent("search", "day", now) == 0.75 and keys.team_spent("search", "month", now) == 1.0
        assert keys.update_team("search", {"budget": "5/day"})["budget"] == {"usd": 5.0, "per": "day", "mode": "cap"}


# -- client requests --------------------------------------------------------------------------
def test_a_team_cap_refuses_the_teams_other_key_once_one_key_spent_it(serve):  # noqa: F811
    server = serve()
    created = new_team(server, "search", CAP)
    assert created["budget"] == CAP and created["spent_usd"] == 0.0 and created["period"].startswith("day:")
    first, first_secret = new_key(server, "search")
    second, second_secret = new_key(server, "search")
    other, other_secret = new_key(server, "ads")
    answers = [chat(server, first_secret, "big") for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200]  # the second starts below the cap and passes it
    refused = chat(server, second_secret, "big")  # a key that spent nothing itself
    error = assert_error(refused, 429, "team 'search' (of the API key", "has spent US$6e-05 of its budget of "
                         "4.5e-05 US$/day (cap)", "refused until the budget resets at")
    assert error["code"] == "budget_exceeded" and error["type"] == "rate_limit_error"
    assert 1 <= int(refused.headers["retry-after"]) <= 86400
    assert_error(chat(server, first_secret, "cheap"), 429, "team 'search'")  # any route: the team pays for all
    assert chat(server, other_secret, "big").status_code == 200  # another team is not limited
    keys = store_keys(server.gateway.store)
    assert keys.team_spent("search", "day") == pytest.approx(2 * BIG_HELLO_USD)
    assert keys.spent(first["key_id"], "day") + keys.spent(second["key_id"], "day") == keys.team_spent("search",
                                                                                                       "day")
    teams = listed(server)
    assert teams["search"]["spent_usd"] == pytest.approx(2 * BIG_HELLO_USD) and teams["search"]["keys"] == 2
    assert teams["search"]["resets_s"] - time.time() <= 86400
    assert (teams["ads"]["budget"], teams["ads"]["period"][:6]) == (None, "month:")
    assert teams["ads"]["spent_usd"] == pytest.approx(BIG_HELLO_USD) == keys.spent(other["key_id"], "month")
    decided = httpx.post(server.url + "/v1/route", json={"model": "big", "prompt": "hi"},
                         headers={"authorization": f"Bearer {second_secret}"}, timeout=10)
    assert decided.status_code == 200  # deciding spends nothing: no budget refuses it


def test_a_streamed_answer_is_charged_to_the_team(serve):  # noqa: F811
    server = serve()
    new_team(server, "search", {"usd": BIG_HELLO_USD / 2, "per": "week"})
    _, secret = new_key(server, "search")
    with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=10,
                      json={"model": "big", "messages": HELLO, "stream": True},
                      headers={"authorization": f"Bearer {secret}"}) as stream:
        assert stream.status_code == 200
        assert [line for line in stream.iter_lines() if line][-1] == "data: [DONE]"
    assert store_keys(server.gateway.store).team_spent("search", "week") == pytest.approx(BIG_HELLO_USD)
    assert_error(chat(server, secret, "big"), 429, "team 'search'", "US$/week (cap)")


def test_changing_a_teams_budget_takes_effect(serve):  # noqa: F811
    server = serve()
    new_team(server, "search", CAP)
    _, secret = new_key(server, "search")
    assert [chat(server, secret, "big").status_code for _ in range(3)] == [200, 200, 429]
    raised = admin(server, "PATCH", "/admin/teams/search", {"budget": "1/day"})
    assert raised.status_code == 200, raised.text
    assert raised.json()["budget"] == {"usd": 1.0, "per": "day", "mode": "cap"}  # a team's budget caps
    assert raised.json()["spent_usd"] == pytest.approx(2 * BIG_HELLO_USD)  # what was spent still counts
    assert chat(server, secret, "big").status_code == 200  # at once on the replica that changed it
    lowered = admin(server, "PATCH", "/admin/teams/search", {"budget": {"usd": BIG_HELLO_USD, "per": "week"}})
    assert lowered.status_code == 200 and lowered.json()["period"].startswith("week:")
    assert_error(chat(server, secret, "big"), 429, "budget of 3e-05 US$/week (cap)")
    removed = admin(server, "PATCH", "/admin/teams/search", {"budget": None})
    assert removed.status_code == 200 and removed.json()["budget"] is None
    assert chat(server, secret, "big").status_code == 200
    assert admin(server, "GET", "/admin/teams/search").json()["budget"] is None


def test_a_replica_sees_a_team_budget_changed_elsewhere_within_its_cache_ttl(tmp_path):
    with open_store(f"sqlite:///{tmp_path}/store.db") as store:
        keys = store_keys(store)
        keys.create_team("search")
        key, _ = keys.create("bot", "search")
        keys.charge(key.key_id, 1.0)
        ring = KeyRing(store)
        ring.check_budget(key)  # no budget yet: looked up, and cached
        keys.update_team("search", {"budget": "1/day"})  # as another replica would
        ring.check_budget(key)  # still within the cache's lifetime
        time.sleep(CACHE_TTL_S + 0.05)
        with pytest.raises(Exception, match="team 'search' .* has spent US\\$1 of its budget of 1 US\\$/day"):
            ring.check_budget(key)


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("body, param, fragment", [
    ({"budget": {"usd": -1, "per": "day"}}, "budget", "budget usd is -1: a budget cannot be negative"),
    ({"budget": "0/day"}, "budget", "budget usd is 0: a budget cannot be negative or zero"),
    ({"budget": {"usd": "lots", "per": "day"}}, "budget", "budget usd must be a number"),
    ({"budget": {"usd": 5, "per": "year"}}, "budget", "'year' is not a budget period; use one of day, week, month"),
    ({"budget": "5/fortnight"}, "budget", "'fortnight' is not a budget period"),
    ({"budget": {"usd": 5, "per": "day", "mode": "soft"}}, "budget", "'soft' is not a budget mode"),
    ({"budget": {"usd": 5, "per": "day", "floor_model": "small"}}, "budget", "a team's cap budget refuses"),
    ({"budget": {"usd": 5, "per": "day", "colour": "red"}}, "budget", "colour"),
    ({"colour": "red"}, "colour", "unknown field(s) colour"),
])
def test_bad_team_budgets_are_refused_with_a_clear_error_naming_the_field(serve, body, param, fragment):  # noqa: F811
    server = serve()
    error = assert_error(admin(server, "POST", "/admin/teams", {"name": "search", **body}), 400, fragment)
    assert (error["param"], error["type"]) == (param, "invalid_request_error")
    assert listed(server) == {}  # nothing written
    new_team(server, "search", "2/day")
    assert_error(admin(server, "PATCH", "/admin/teams/search", body), 400, fragment)
    assert listed(server)["search"]["budget"] == {"usd": 2.0, "per": "day", "mode": "cap"}  # unchanged


def test_a_pace_budget_is_taken_and_unknown_teams_get_404(serve):  # noqa: F811
    server = serve()
    new_team(server, "search")
    assert admin(server, "POST", "/admin/teams", {"name": "ads", "budget": "5/day:pace"}).status_code == 201
    assert listed(server)["ads"]["budget"]["mode"] == "pace"  # paced, never refused: tests/test_key_pacing.py
    for method, body in (("PATCH", {"budget": "5/day"}), ("GET", None)):
        error = assert_error(admin(server, method, "/admin/teams/ghosts", body), 404, "no team 'ghosts'",
                             "teams: ads, search")
        assert (error["code"], error["param"]) == ("team_not_found", "team")
    assert_error(admin(server, "PATCH", "/admin/teams/search", {}), 400, "nothing to change")
    new_team(server, "search")  # declaring it again changes nothing ...
    new_team(server, "search", None)
    assert_error(admin(server, "POST", "/admin/teams", {"name": "search", "budget": "5/day"}), 400,
                 "team 'search' exists already, with budget none", "PATCH /admin/teams/search")  # ... but a budget
    assert listed(server)["search"]["budget"] is None


# -- the CLI ----------------------------------------------------------------------------------
def test_the_cli_sets_lists_and_changes_team_budgets(serve, monkeypatch, capsys):  # noqa: F811
    server = serve()
    monkeypatch.setenv("CROSSROADS_ADMIN_KEY", ADMIN)
    base = ["keys", "--server", server.url]
    assert cli([*base, "create-team", "search", "--budget", "20/month"]) == 0
    assert "team search declared (budget=US$20/month:cap)" in capsys.readouterr().out
    assert cli([*base, "create-team", "ads"]) == 0
    assert cli([*base, "teams"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].startswith("ads\t0 key(s)\tbudget=none\tspent=US$0 (month:")
    assert lines[-1].startswith("search\t0 key(s)\tbudget=US$20/month:cap\tspent=US$0 (month:")
    assert cli([*base, "update-team", "ads", "--budget", "3/week"]) == 0
    assert listed(server)["ads"]["budget"] == {"usd": 3.0, "per": "week", "mode": "cap"}
    assert cli([*base, "update-team", "search", "--budget", "none"]) == 0
    assert "updated team search (budget=none)" in capsys.readouterr().out
    assert listed(server)["search"]["budget"] is None
    assert cli([*base, "update-team", "ghosts", "--budget", "1/day"]) == 2
    assert "no team 'ghosts'" in capsys.readouterr().err
    assert cli([*base, "create-team", "ops", "--budget", "5/day:fast"]) == 2
    assert "'fast' is not a budget mode" in capsys.readouterr().err
    assert cli([*base, "create-team", "ops", "--budget=-5/day"]) == 2
    assert "cannot be negative" in capsys.readouterr().err
    assert "ops" not in listed(server)


# -- replicas on PostgreSQL ---------------------------------------------------------------------
@pytest.fixture
def replicas(postgres_url, monkeypatch):
    """Two servers of one config on a fresh PostgreSQL database; stopped at the end."""
    monkeypatch.setenv("CROSSROADS_TEST_ADMIN", ADMIN)
    url = fresh_database(postgres_url)
    servers = [ServerThread(Gateway(parse_config(raw_config(url)), http_client=FakeUpstream().async_client()))
               .__enter__() for _ in range(2)]
    yield servers
    for server in servers:
        server.__exit__(None, None, None)


def test_a_team_cap_holds_under_concurrent_requests_of_its_keys_on_both_replicas(replicas):
    a, b = replicas
    cap_usd = 10 * BIG_HELLO_USD
    new_team(a, "search", {"usd": cap_usd, "per": "day", "mode": "cap"})
    members = [new_key(a, "search") for _ in range(2)]
    _, outsider = new_key(a, "ads")
    threads = 8

    def one(i: int) -> int:
        return chat(replicas[i % 2], members[(i // 2) % 2][1], "big").status_code

    with ThreadPoolExecutor(threads) as pool:
        statuses = list(pool.map(one, range(60)))
    keys = store_keys(a.gateway.store)
    spent = keys.team_spent("search", "day")
    passed = statuses.count(200)
    print(f"\n60 requests of 2 keys from {threads} threads over 2 replicas, team cap US${cap_usd:.2g}: {passed} "
          f"answered, team spent US${spent:.2g}")
    assert set(statuses) == {200, 429}
    assert passed >= 10  # the cap is reached, not refused early
    # the spend passes the cap by at most the requests in flight when it was reached: one per thread
    assert cap_usd <= spent <= cap_usd + threads * BIG_HELLO_USD + 1e-12
    assert spent == pytest.approx(passed * BIG_HELLO_USD)  # every answer was charged to the team, once
    assert spent == pytest.approx(sum(keys.spent(key["key_id"], "day") for key, _ in members))
    for server in replicas:
        error = assert_error(chat(server, members[1][1], "big"), 429, "team 'search'", "budget of")
        assert error["code"] == "budget_exceeded"
    assert chat(b, outsider, "big").status_code == 200  # another team is not limited

    # a budget raised on replica a reaches replica b within its cache's lifetime
    assert admin(a, "PATCH", "/admin/teams/search", {"budget": "1/day"}).status_code == 200
    changed_s = time.monotonic()
    while chat(b, members[0][1], "big").status_code == 429:
        assert time.monotonic() - changed_s < 1.0
    seen_s = time.monotonic() - changed_s
    print(f"raised on replica a; replica b served the team {seen_s * 1e3:.0f} ms later")
    assert seen_s < CACHE_TTL_S + 0.3
    assert listed(b)["search"]["spent_usd"] == pytest.approx(spent + BIG_HELLO_USD)
