"""Virtual keys and teams (issue 15, section 1): stored hashed, managed over the admin API and the CLI,
enforced on client requests (routes, models, rate limit, cap budget, revocation, expiry), and attributed in
the store and in `crossroads report`.

The real app in process (uvicorn on a socket) on real SQLite; the fake upstream only stands in for paid
models.  Two replicas on the real PostgreSQL are in tests/test_keys_replicas.py.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time

import httpx
import pytest
from serve_helpers import ServerThread

from crossroads.cli.main import main as cli
from crossroads.errors import CrossroadsError
from crossroads.evaluate.report import build_report
from crossroads.objective.budget import Budget
from crossroads.serve.config import parse_config
from crossroads.serve.gateway import Gateway
from crossroads.store import open_store
from crossroads.store.keys import KeySettingsError, key_budget, period, store_keys
from crossroads.upstream.fake import FAKE_BASE_URL, FakeUpstream

ADMIN = "the-admin-key"
CONFIG_KEY = "a-config-file-key"
HELLO = [{"role": "user", "content": "hello there"}]
#: What one HELLO answered by `big` costs: 3 tokens in at US$10 per million (the fake's echo).
BIG_HELLO_USD = 3 * 10.0 / 1e6


def raw_config(store: str, **security) -> dict:
    models = [{"name": name, "base_url": FAKE_BASE_URL, "upstream_model": "echo", "max_retries": 0,
               "price_per_mtok_in": price, "price_per_mtok_out": 0.0} for name, price in (("big", 10.0), ("small", 0.1))]
    return {"models": models, "store": store,
            "routes": {"auto": {"learner": "thompson:seed=0", "objective": "quality=1,cost=0.5"},
                       "cheap": {"learner": "ucb", "models": ["small"]}},
            "security": {"admin_key_env": "CROSSROADS_TEST_ADMIN", **security}}


@pytest.fixture
def serve(tmp_path, monkeypatch):
    """serve(**security) -> a running server on SQLite and the fake upstream; stopped at the end."""
    monkeypatch.setenv("CROSSROADS_TEST_ADMIN", ADMIN)
    monkeypatch.setenv("CROSSROADS_TEST_KEYS", CONFIG_KEY)
    running = []

    def start(**security):
        config = parse_config(raw_config(f"sqlite:///{tmp_path}/store.db", **security))
        server = ServerThread(Gateway(config, http_client=FakeUpstream().async_client())).__enter__()
        running.append(server)
        return server

    yield start
    for server in running:
        server.__exit__(None, None, None)


def admin(server, method: str, path: str, body=None, params=None) -> httpx.Response:
    return httpx.request(method, server.url + path, json=body, params=params,
                         headers={"authorization": f"Bearer {ADMIN}"}, timeout=10)


def new_key(server, team: str = "search", **settings) -> tuple[dict, str]:
    admin(server, "POST", "/admin/teams", {"name": team})
    answer = admin(server, "POST", "/admin/keys", {"name": "bot", "team": team, **settings})
    assert answer.status_code == 201, answer.text
    return answer.json()["key"], answer.json()["secret"]


def chat(server, secret: str | None, model: str = "auto", **extra) -> httpx.Response:
    headers = {} if secret is None else {"authorization": f"Bearer {secret}"}
    return httpx.post(server.url + "/v1/chat/completions", json={"model": model, "messages": HELLO, **extra},
                      headers=headers, timeout=10)


def assert_error(answer: httpx.Response, status: int, *fragments: str) -> dict:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for fragment in fragments:
        assert fragment in error["message"], error["message"]
    return error


# -- the store --------------------------------------------------------------------------------
def test_the_secret_is_stored_only_as_its_digest(tmp_path):
    path = tmp_path / "store.db"
    with open_store(f"sqlite:///{path}") as store:
        keys = store_keys(store)
        keys.create_team("search")
        key, secret = keys.create("bot", "search", budget="5/week:cap", routes=["auto"])
        assert secret.startswith("cr-") and len(secret) > 40
        assert keys.by_secret(secret) == key and keys.by_secret(secret + "x") is None
        assert key.budget == Budget(5.0, "week", "cap") and key.routes == ("auto",)
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT * FROM keys").fetchall()
        columns = [c[1] for c in db.execute("PRAGMA table_info(keys)")]
    assert len(rows) == 1
    stored = dict(zip(columns, rows[0]))
    assert stored["key_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert all(secret not in str(value) for value in stored.values())
    assert stored["prefix"] == secret[:10]


@pytest.mark.parametrize("per, when, name, start, end", [
    ("day", "2026-03-04T15:00:00", "day:2026-03-04", "2026-03-04", "2026-03-05"),
    ("week", "2026-03-04T15:00:00", "week:2026-W10", "2026-03-02", "2026-03-09"),  # a Wednesday: from Monday
    ("month", "2026-12-31T23:59:00", "month:2026-12", "2026-12-01", "2027-01-01"),
])
def test_budget_periods_start_at_utc_midnight(per, when, name, start, end):
    def epoch(text: str) -> float:
        import datetime as dt
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp()

    assert period(per, epoch(when)) == (name, epoch(start), epoch(end))


def test_spend_is_added_atomically_per_period(tmp_path):
    with open_store(f"sqlite:///{tmp_path}/store.db") as store:
        keys = store_keys(store)
        keys.create_team("t")
        key, _ = keys.create("k", "t")
        for _ in range(3):
            keys.charge(key.key_id, 0.25)
        assert [keys.spent(key.key_id, per) for per in ("day", "week", "month")] == [0.75] * 3
        assert keys.spent(key.key_id, "day", time.time() + 2 * 86400) == 0.0  # a new day starts from nothing


# -- the admin API ----------------------------------------------------------------------------
def test_keys_are_created_listed_changed_and_revoked_over_the_admin_api(serve):
    server = serve()
    key, secret = new_key(server, routes=["auto"], rate_limit_per_s=5, budget={"usd": 2, "per": "month"},
                          expires_in_s=3600)
    assert key["state"] == "active" and key["budget"] == {"usd": 2.0, "per": "month", "mode": "cap"}
    assert 3590 < key["expires_s"] - time.time() <= 3600
    new_key(server, team="ads")
    listed = admin(server, "GET", "/admin/keys").json()["keys"]
    assert [k["team"] for k in listed] == ["search", "ads"]
    assert secret not in json.dumps(listed) and all("secret" not in k and "key_hash" not in k for k in listed)
    assert [k["key_id"] for k in admin(server, "GET", "/admin/keys", params={"team": "search"}).json()["keys"]] == [
        key["key_id"]]
    changed = admin(server, "PATCH", f"/admin/keys/{key['key_id']}", {"routes": None, "team": "ads",
                                                                      "budget": "1/day"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["routes"] is None and changed.json()["team"] == "ads"
    assert changed.json()["budget"] == {"usd": 1.0, "per": "day", "mode": "cap"}  # a key's budget caps
    assert changed.json()["rate_limit_per_s"] == 5.0  # untouched settings stay
    assert [{field: team[field] for field in ("name", "created_s", "keys")}  # budgets: tests/test_team_budgets.py
            for team in admin(server, "GET", "/admin/teams").json()["teams"]] == [
        {"name": "ads", "created_s": pytest.approx(time.time(), abs=60), "keys": 2},
        {"name": "search", "created_s": pytest.approx(time.time(), abs=60), "keys": 0}]
    revoked = admin(server, "DELETE", f"/admin/keys/{key['key_id']}")
    assert revoked.json()["state"] == "revoked"
    assert_error(admin(server, "PATCH", f"/admin/keys/{key['key_id']}", {"name": "again"}), 400, "revoked")
    assert_error(admin(server, "POST", "/admin/keys/key_nope/revoke"), 404, "no key 'key_nope'")
    assert_error(httpx.get(server.url + "/admin/keys", timeout=10), 401, "admin key")
    assert_error(httpx.get(server.url + "/admin/keys", headers={"authorization": f"Bearer {secret}"}, timeout=10),
                 401, "admin key")


@pytest.mark.parametrize("body, fragment", [
    ({"team": "nobody"}, "unknown team 'nobody'"),
    ({"budget": {"usd": -1, "per": "day"}}, "cannot be negative"),
    ({"budget": "-1/day"}, "cannot be negative"),
    ({"budget": "0/day"}, "cannot be negative or zero"),
    ({"budget": {"usd": 5, "per": "day", "mode": "cap", "floor_model": "small"}}, "a key's cap budget refuses"),
    ({"budget": {"usd": 5, "per": "year"}}, "'year' is not a budget period; use one of day, week, month"),
    ({"budget": "5/fortnight:cap"}, "'fortnight' is not a budget period"),
    ({"budget": {"usd": 5, "per": "day", "mode": "soft"}}, "'soft' is not a budget mode"),
    ({"expires_s": 1000.0}, "is in the past"),
    ({"expires_in_s": -5}, "expires_in_s must be a number of seconds > 0"),
    ({"rate_limit_per_s": -2}, "rate_limit_per_s must be a number"),
    ({"rate_burst": 0}, "rate_burst must be a whole number >= 1"),
    ({"routes": ["nowhere"]}, "'nowhere' unknown to this server"),
    ({"models": ["gpt-9"]}, "'gpt-9' unknown to this server"),
    ({"models": []}, "non-empty list"),
    ({"name": "two words"}, "is not a name"),
    ({"colour": "red"}, "unknown field(s) colour"),
])
def test_bad_settings_are_refused_whole_with_a_clear_error(serve, body, fragment):
    server = serve()
    admin(server, "POST", "/admin/teams", {"name": "search"})
    error = assert_error(admin(server, "POST", "/admin/keys", {"name": "bot", "team": "search", **body}), 400,
                         fragment)
    assert error["type"] == "invalid_request_error" and error["param"]
    assert admin(server, "GET", "/admin/keys").json()["keys"] == []  # nothing written half-way
    key, _ = new_key(server)
    if "name" not in body and "colour" not in body and "team" not in body:
        assert_error(admin(server, "PATCH", f"/admin/keys/{key['key_id']}", body), 400, fragment)
    assert admin(server, "GET", f"/admin/keys/{key['key_id']}").json() == key  # the update changed nothing


def test_an_unknown_team_in_a_listing_or_an_update_is_refused(serve):
    server = serve()
    key, _ = new_key(server)
    assert_error(admin(server, "GET", "/admin/keys", params={"team": "ghosts"}), 400, "unknown team 'ghosts'")
    assert_error(admin(server, "PATCH", f"/admin/keys/{key['key_id']}", {"team": "ghosts"}), 400,
                 "unknown team 'ghosts'", "teams: search")


# -- client requests --------------------------------------------------------------------------
def test_virtual_keys_work_beside_config_file_keys_and_decisions_are_attributed(serve):
    server = serve(api_keys_env="CROSSROADS_TEST_KEYS")
    key, secret = new_key(server)
    answer = chat(server, secret)
    assert answer.status_code == 200, answer.text
    assert chat(server, CONFIG_KEY).status_code == 200  # config-file keys keep working
    assert_error(chat(server, None), 401, "missing or wrong API key")
    assert_error(chat(server, "cr-not-a-real-key"), 401, "missing or wrong API key")
    decision_id = answer.headers["x-crossroads-decision-id"]
    feedback = httpx.post(server.url + "/v1/feedback", json={"decision_id": decision_id, "reward": 1.0},
                          headers={"authorization": f"Bearer {secret}"}, timeout=10)
    assert feedback.status_code == 200, feedback.text
    other = httpx.post(server.url + "/v1/feedback", json={"decision_id": decision_id, "reward": 0.0},
                       headers={"authorization": f"Bearer {CONFIG_KEY}"}, timeout=10)
    assert_error(other, 403, "another client key")
    decision = server.gateway.store.decision(decision_id)
    assert (decision["key_id"], decision["team"]) == (key["key_id"], "search")
    assert decision["client"] == hashlib.sha256(secret.encode()).hexdigest()
    config_decision = server.gateway.store.decision(chat(server, CONFIG_KEY).headers["x-crossroads-decision-id"])
    assert (config_decision["key_id"], config_decision["team"]) == (None, None)


def test_once_the_store_holds_a_key_every_client_request_needs_one(serve):
    server = serve()  # no config-file keys: open to all ...
    assert chat(server, None).status_code == 200
    new_key(server)
    time.sleep(0.6)  # ... until a key exists (the ring rechecks within CACHE_TTL_S; this replica knew at once)
    assert_error(chat(server, None), 401, "missing or wrong API key")


def test_allowed_routes_and_models_are_enforced(serve):
    server = serve()
    _, routes_only = new_key(server, routes=["cheap"])
    assert chat(server, routes_only, "cheap").status_code == 200
    error = assert_error(chat(server, routes_only, "auto"), 403, "may not use 'auto'", "it may use: cheap")
    assert error["code"] == "route_not_allowed" and error["type"] == "permission_error"
    assert_error(chat(server, routes_only, "big"), 403, "may not use 'big'")
    _, small_only = new_key(server, models=["small"])
    served = {chat(server, small_only, "auto").json()["model"] for _ in range(8)}
    assert served == {"small"}  # the route's candidates are narrowed to the key's models
    assert_error(chat(server, small_only, "big"), 403, "may not use model(s) big", "its models: small")
    assert_error(chat(server, small_only, "auto", crossroads={"allowed_models": ["big"]}), 403,
                 "may not use model(s) big")
    decided = httpx.post(server.url + "/v1/route", json={"model": "big", "prompt": "hi"},
                         headers={"authorization": f"Bearer {small_only}"}, timeout=10)
    assert_error(decided, 403, "may not use model(s) big")


def test_a_key_has_its_own_rate_limit(serve):
    server = serve()
    _, limited = new_key(server, rate_limit_per_s=0.2, rate_burst=2)
    _, free = new_key(server)
    statuses = [chat(server, limited, "cheap").status_code for _ in range(4)]
    assert statuses == [200, 200, 429, 429]
    error = assert_error(chat(server, limited, "cheap"), 429, "rate limit of the API key", "0.2 requests/s")
    assert error["code"] == "rate_limit_exceeded"
    assert all(chat(server, free, "cheap").status_code == 200 for _ in range(4))  # another key is not limited


def test_a_cap_budget_refuses_once_spent(serve):
    server = serve()
    key, capped = new_key(server, budget={"usd": 1.5 * BIG_HELLO_USD, "per": "day", "mode": "cap"})
    answers = [chat(server, capped, "big") for _ in range(3)]
    assert [a.status_code for a in answers[:2]] == [200, 200]  # the second starts below the cap and passes it
    assert answers[0].json()["crossroads"]["cost_usd"] == pytest.approx(BIG_HELLO_USD)
    error = assert_error(answers[2], 429, "has spent US$6e-05 of its budget of 4.5e-05 US$/day (cap)",
                         "refused until the budget resets at")
    assert error["code"] == "budget_exceeded" and int(answers[2].headers["retry-after"]) >= 1
    assert store_keys(server.gateway.store).spent(key["key_id"], "day") == pytest.approx(2 * BIG_HELLO_USD)
    raised = admin(server, "PATCH", f"/admin/keys/{key['key_id']}", {"budget": "1/day:cap"})
    assert raised.status_code == 200 and chat(server, capped, "big").status_code == 200  # at once on this replica


def test_a_streamed_answer_is_charged_before_its_end(serve):
    server = serve()
    key, capped = new_key(server, budget={"usd": BIG_HELLO_USD / 2, "per": "week"})
    with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=10,
                      json={"model": "big", "messages": HELLO, "stream": True},
                      headers={"authorization": f"Bearer {capped}"}) as stream:
        assert stream.status_code == 200
        lines = [line for line in stream.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert store_keys(server.gateway.store).spent(key["key_id"], "week") > 0
    assert_error(chat(server, capped, "big"), 429, "budget of")


def test_revoked_and_expired_keys_get_401_saying_so(serve):
    server = serve()
    key, secret = new_key(server)
    _, expiring = new_key(server, expires_in_s=0.5)
    assert chat(server, secret).status_code == 200 and chat(server, expiring).status_code == 200
    assert admin(server, "POST", f"/admin/keys/{key['key_id']}/revoke").status_code == 200
    error = assert_error(chat(server, secret), 401, "was revoked at", "'bot', team 'search'")
    assert error["code"] == "revoked_api_key"
    time.sleep(0.6)
    assert assert_error(chat(server, expiring), 401, "expired at")["code"] == "expired_api_key"
    listed = {k["key_id"]: k["state"] for k in admin(server, "GET", "/admin/keys").json()["keys"]}
    assert sorted(listed.values()) == ["expired", "revoked"]


def test_the_report_breaks_down_by_key_and_team(serve):
    server = serve(api_keys_env="CROSSROADS_TEST_KEYS")
    _, search = new_key(server, team="search")
    admin(server, "POST", "/admin/teams", {"name": "ads"})
    ads = admin(server, "POST", "/admin/keys", {"name": "banner", "team": "ads"}).json()
    for secret, n in ((search, 3), (ads["secret"], 2), (CONFIG_KEY, 1)):
        for _ in range(n):
            assert chat(server, secret, "big").status_code == 200
    report = build_report(server.gateway.store, replicates=20)
    teams = {row["name"]: row for row in report["breakdown"]["team"]}
    assert {name: row["requests"] for name, row in teams.items()} == {"search": 3, "ads": 2, "(no virtual key)": 1}
    assert teams["search"]["spend_usd"] == pytest.approx(3 * BIG_HELLO_USD)
    assert teams["ads"]["tokens_in"] == 6 and teams["ads"]["errors"] == 0
    keys = {row["name"]: row["requests"] for row in report["breakdown"]["key"]}
    assert keys[f"banner ({ads['key']['key_id']})"] == 2


# -- the CLI ----------------------------------------------------------------------------------
def test_the_cli_manages_keys(serve, monkeypatch, capsys):
    server = serve()
    monkeypatch.setenv("CROSSROADS_ADMIN_KEY", ADMIN)
    base = ["keys", "--server", server.url]
    assert cli([*base, "create-team", "search"]) == 0
    assert cli([*base, "create", "--name", "bot", "--team", "search", "--routes", "auto", "--models", "small",
                "--rate-limit-per-s", "3", "--budget", "20/month:cap", "--expires-in", "30d"]) == 0
    out = capsys.readouterr().out
    secret = out.split("secret (shown this once; the server keeps only its digest): ")[1].strip()
    key_id = out.split("created ")[1].split()[0]
    assert chat(server, secret).json()["model"] == "small"
    assert cli([*base, "list", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["key_id"] == key_id and listed["budget"] == {"usd": 20.0, "per": "month", "mode": "cap"}
    assert 29.9 * 86400 < listed["expires_s"] - time.time() <= 30 * 86400
    assert cli([*base, "update", key_id, "--models", "none", "--budget", "none"]) == 0
    assert admin(server, "GET", f"/admin/keys/{key_id}").json()["models"] is None
    assert cli([*base, "list"]) == 0
    assert "budget=none" in capsys.readouterr().out
    assert cli([*base, "revoke", key_id]) == 0
    assert_error(chat(server, secret), 401, "revoked")
    assert cli([*base, "create", "--name", "x", "--team", "ghosts"]) == 2
    assert "unknown team 'ghosts'" in capsys.readouterr().err
    assert cli([*base, "create", "--name", "x", "--team", "search", "--budget", "5/year"]) == 2
    assert "'year' is not a budget period" in capsys.readouterr().err
    monkeypatch.delenv("CROSSROADS_ADMIN_KEY")
    assert cli([*base, "list"]) == 2
    assert "$CROSSROADS_ADMIN_KEY is not set" in capsys.readouterr().err


def test_budget_parsing_errors_name_the_setting():
    with pytest.raises(KeySettingsError, match="budget: budget 'lots' is not USD/PERIOD"):
        key_budget("lots")
    with pytest.raises(CrossroadsError, match="'hour' is not a budget period"):
        key_budget({"usd": 1, "per": "hour"})
    assert key_budget("2/day") == Budget(2.0, "day", "cap") and key_budget(None) is None
