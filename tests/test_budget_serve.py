"""Route budgets in `crossroads serve`: config errors, a cap that refuses with 429, a pace that turns to cheaper models.

The store is a real SQLite file that the test fills with earlier spend of the route before the
server starts; upstreams are crossroads' fake OpenAI-compatible upstream with priced models.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from serve_helpers import ServerThread

from crossroads.errors import CrossroadsError
from crossroads.objective.budget import period_bounds
from crossroads.serve.config import parse_config
from crossroads.serve.gateway import Gateway
from crossroads.store import open_store
from crossroads.upstream.fake import FAKE_BASE_URL, FakeUpstream

HELLO = [{"role": "user", "content": "hello there"}]


def model(name, **extra):
    return {"name": name, "base_url": FAKE_BASE_URL, "upstream_model": "echo", "max_retries": 0, "timeout_s": 2,
            **extra}


MODELS = [model("big", price_per_mtok_in=10, price_per_mtok_out=30),
          model("small", price_per_mtok_in=0.1, price_per_mtok_out=0.3)]


@pytest.fixture(scope="module")
def upstream():
    return FakeUpstream()


@pytest.fixture
def serve(upstream, tmp_path):
    """serve(routes, spent_usd=...) -> a running server whose store already holds ``spent_usd`` on route ``paid``."""
    running = []

    def start(routes, spent_usd=0.0):
        url = f"sqlite:///{tmp_path}/store-{len(running)}.db"
        if spent_usd:
            with open_store(url) as store:  # earlier spend this period, by another replica
                now = time.time()
                created_s = max(period_bounds("day", now)[0], now - 60)
                decision_id = "dec_" + uuid.uuid4().hex
                store.record_decision(decision_id, route="paid", model="big", learner_key=None, candidates=["big"],
                                      probability=1.0, scores=None, context=None, created_s=created_s)
                store.record_outcome(decision_id, model="big", status="ok", cost_usd=spent_usd, latency_s=0.1,
                                     ttft_s=None, tokens_in=10, tokens_out=10, fallbacks=0)
        config = parse_config({"models": MODELS, "routes": routes, "store": url})
        server = ServerThread(Gateway(config, http_client=upstream.async_client())).__enter__()
        running.append(server)
        return server

    yield start
    for server in running:
        server.__exit__(None, None, None)


def chat(server, route="paid"):
    return httpx.post(server.url + "/v1/chat/completions", json={"model": route, "messages": HELLO}, timeout=10)


# -- config ------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget, message", [
    ({"usd": -1, "per": "day"}, "routes.paid.budget: budget usd is -1: a budget cannot be negative"),
    ({"usd": 5, "per": "year"}, "routes.paid.budget: 'year' is not a budget period; use one of day, week, month"),
    ({"usd": 5, "mode": "stop"}, "routes.paid.budget: 'stop' is not a budget mode; use pace"),
    ({"usd": 5, "floor_model": "tiny"}, "routes.paid.budget: floor_model 'tiny' is not among the route's models"),
    ("5 per day", "routes.paid.budget: budget '5 per day' is not USD/PERIOD"),
])
def test_budget_config_errors_name_the_route(budget, message):
    with pytest.raises(CrossroadsError, match=message):
        parse_config({"models": MODELS, "routes": {"paid": {"learner": "thompson", "budget": budget}}})


def test_budget_config_reads_both_forms():
    config = parse_config({"models": MODELS, "routes": {
        "a": {"learner": "thompson", "budget": "5/week:cap"},
        "b": {"learner": "ucb", "budget": {"usd": 2, "per": "month", "floor_model": "small"}}}})
    a, b = config.routes
    assert (a.budget.usd, a.budget.per, a.budget.mode) == (5.0, "week", "cap")
    assert (b.budget.mode, b.budget.floor_model) == ("pace", "small")


# -- cap ---------------------------------------------------------------------------------------
def test_cap_budget_refuses_with_429_once_the_store_holds_the_spend(serve):
    routes = {"paid": {"learner": "thompson:seed=0", "budget": "0.5/day:cap"},
              "free": {"learner": "thompson:seed=0"}}
    server = serve(routes, spent_usd=0.5)
    refused = chat(server)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "budget_exhausted"
    assert "route 'paid' has spent 0.5 US$ of its budget of 0.5 US$ per day" in error["message"]
    assert "resets at" in error["message"] and int(refused.headers["retry-after"]) >= 1
    assert chat(server, "free").status_code == 200  # other routes are not limited


def test_cap_budget_serves_while_money_is_left_and_reports_its_state(serve):
    server = serve({"paid": {"learner": "thompson:seed=0", "budget": "100/day:cap"}})
    answer = chat(server)
    assert answer.status_code == 200
    budget = answer.json()["crossroads"]["budget"]
    assert budget["spent_usd"] == 0.0 and budget["remaining_usd"] == 100.0
    metrics = httpx.get(server.url + "/metrics").text
    assert 'crossroads_budget{quantity="budget_usd",route="paid"} 100.0' in metrics
    assert 'crossroads_budget{quantity="lambda",route="paid"}' in metrics


def test_cap_budget_counts_this_servers_own_spend(serve):
    # "big" costs about 1.7e-4 US$ a request here, "small" 1.7e-6: a budget of a few big calls
    server = serve({"paid": {"learner": "thompson:seed=0", "budget": {"usd": 0.0004, "per": "day", "mode": "cap"}}})
    statuses = [chat(server).status_code for _ in range(400)]
    assert statuses[0] == 200 and 429 in statuses
    server.gateway.store.flush()
    spent = server.gateway.routes.budgets.spent_usd("paid")
    assert spent <= 0.0004


# -- pace --------------------------------------------------------------------------------------
def test_pace_budget_turns_to_the_cheaper_model_as_the_budget_runs_out(serve):
    routes = {"paid": {"learner": "thompson:seed=0", "budget": "1000/day"}}
    rich = serve(routes)
    rich_models = [chat(rich).json()["model"] for _ in range(30)]
    assert "big" in rich_models  # money to spare: the learner's own preferences show
    spent = serve({"paid": {"learner": "thompson:seed=0", "budget": "0.01/day"}}, spent_usd=0.02)
    answers = [chat(spent).json() for _ in range(30)]
    assert {a["model"] for a in answers} == {"small"}  # spent: the cheapest answers, the route keeps serving
    assert "exhausted" in answers[0]["crossroads"]["reason"]


def test_pace_budget_serves_its_floor_model_once_spent(serve):
    routes = {"paid": {"learner": "thompson:seed=0", "budget": {"usd": 0.01, "floor_model": "big"}}}
    server = serve(routes, spent_usd=0.02)
    assert {chat(server).json()["model"] for _ in range(5)} == {"big"}


# -- the spend ledger ----------------------------------------------------------------------------
def test_spend_ledger_sums_the_routes_served_cost_since_a_time(tmp_path):
    from crossroads.store.spend import SpendLedger

    url = f"sqlite:///{tmp_path}/ledger.db"
    with open_store(url) as store:
        for i, (route, created_s, cost) in enumerate([("a", 100.0, 0.25), ("a", 200.0, 0.5), ("b", 200.0, 4.0),
                                                       ("a", 300.0, None)]):
            store.record_decision(f"dec_{i}", route=route, model="m", learner_key=None, candidates=["m"],
                                  probability=1.0, scores=None, context=None, created_s=created_s)
            store.record_outcome(f"dec_{i}", model="m", status="ok" if cost else "failed", cost_usd=cost,
                                 latency_s=0.1, ttft_s=None, tokens_in=1, tokens_out=1, fallbacks=0)
        store.record_decision("dec_open", route="a", model="m", learner_key=None, candidates=["m"],
                              probability=1.0, scores=None, context=None, created_s=250.0)
    ledger = SpendLedger(url)
    try:
        assert ledger.route_spend_usd("a", since_s=0) == pytest.approx(0.75)
        assert ledger.route_spend_usd("a", since_s=150) == pytest.approx(0.5)
        assert ledger.route_spend_usd("a", since_s=0, until_s=150) == pytest.approx(0.25)
        assert ledger.route_spend_usd("c", since_s=0) == 0.0
        assert ledger.settled(["dec_0", "dec_open", "dec_unknown"]) == {"dec_0"}
    finally:
        ledger.close()


def test_router_route_budget_replaces_the_rules_willingness_to_pay(serve):
    """With money to spare the budgeted router route decides as the router alone; nearly spent, the cheap model."""
    tiers = {"big": "frontier", "small": "small"}
    plain = {"router_file": "default", "objective": "quality=1"}
    global MODELS
    saved, MODELS = MODELS, [dict(m, tier=tiers[m["name"]]) for m in MODELS]
    prompts = ["hello there", "Prove that the square root of 2 is irrational, step by step.",
               "Write a Python function that merges k sorted linked lists in O(n log k) and explain its complexity.",
               "Solve for x: 3x^2 - 12x + 7 = 0, and give both roots exactly."]

    def models(server, route):
        return [httpx.post(server.url + "/v1/chat/completions", timeout=10, json={
            "model": route, "messages": [{"role": "user", "content": p}]}).json()["model"] for p in prompts]

    try:
        rich = serve({"paid": {**plain, "budget": "1000/day"}, "plain": plain})
        alone = models(rich, "plain")
        assert "big" in alone  # some prompt is worth the frontier model to the router
        assert models(rich, "paid") == alone
        spent = serve({"paid": {**plain, "budget": "0.01/day:cap"}}, spent_usd=0.0099)
        assert models(spent, "paid") == ["small"] * len(prompts)  # what is left pays for the small model only
    finally:
        MODELS = saved


def test_route_budget_learns_the_daily_traffic_profile_from_the_store(tmp_path):
    from types import SimpleNamespace

    from crossroads.objective.budget import parse_budget
    from crossroads.serve.budgets import Budgets

    url = f"sqlite:///{tmp_path}/profile.db"
    today, _ = period_bounds("day", time.time())
    with open_store(url) as store:  # yesterday: 600 decisions at 12:xx UTC and 100 at 03:xx
        for i in range(700):
            hour = 12 if i < 600 else 3
            store.record_decision(f"dec_{i}", route="paid", model="m", learner_key=None, candidates=["m"],
                                  probability=1.0, scores=None, context=None,
                                  created_s=today - 86400 + hour * 3600 + i)
        store.flush()
        budgets = Budgets([SimpleNamespace(name="paid", budget=parse_budget("1/day"))], url, store)
        try:
            budgets.spent_usd("paid", today + 10)
            weights = budgets.controllers["paid"].profile.weights
        finally:
            budgets.close()
    assert len(weights) == 24 and weights.argmax() == 12
    assert weights[12] == pytest.approx(601 / (700 + 24)) and weights[3] == pytest.approx(101 / 724)
