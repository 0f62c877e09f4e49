"""A cascade route through the real server and the fake upstream: which models it calls, what it returns and charges.

Three models, cheap/mid/dear at prices 0.1/1/10.  The router (knn on real embeddings) predicts
that on math all three are likely right (cheap and mid 0.82, dear 0.99) and on poems cheap and
mid 0.95, dear 0.98; the route's objective ``quality=1,cost=0.45`` makes cheap the first call
everywhere, a second opinion from mid worth its price on math, and dear worth it only once the
two cheaper answers disagree.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from serve_helpers import ServerThread
from topics import MATH, POETRY

from crossroads.data.dataset import ModelInfo, RoutingDataset
from crossroads.embeddings import make_embedder
from crossroads.errors import CrossroadsError
from crossroads.objective import Objective
from crossroads.routers import make_router
from crossroads.serve.cascade import ServedCascade, TrustCalibration
from crossroads.serve.config import parse_config
from crossroads.serve.gateway import Gateway
from crossroads.serve.requests import BadRequest
from crossroads.store.keys import store_keys
from crossroads.upstream.fake import FAKE_BASE_URL, FakeUpstream

PRICES = {"cheap": 0.1, "mid": 1.0, "dear": 10.0}
QUESTION = "What is 17 times 23?"
ADMIN = "the-admin-key"


@pytest.fixture(scope="module")
def router_file(tmp_path_factory):
    prompts = MATH + POETRY
    quality = np.array([[0.8, 0.8, 0.99]] * len(MATH) + [[0.97, 0.97, 0.98]] * len(POETRY))
    dataset = RoutingDataset(
        query_ids=[f"q{i}" for i in range(len(prompts))], prompts=prompts,
        categories=["math"] * len(MATH) + ["poetry"] * len(POETRY), sources=["test"] * len(prompts),
        models=[ModelInfo(name, price, 3 * price) for name, price in PRICES.items()], quality=quality,
        cost_usd=np.tile([1e-4, 1e-3, 1e-2], (len(prompts), 1)))
    embedder = make_embedder("minilm-onnx", cache=False)
    router = make_router("knn", k=3).fit(dataset, embedder.embed(prompts), embedder=embedder.name)
    return router.save(tmp_path_factory.mktemp("routers") / "knn.npz")


class Answers:
    """What each fake model answers (by model name), changed per test."""

    def __init__(self):
        self.texts: dict[str, str] = {}

    def __call__(self, body) -> str:
        return self.texts.get(body["model"], "I would rather not say.")


def config(router_file, tmp_path, route=None, **cascade):
    models = [{"name": name, "base_url": FAKE_BASE_URL, "upstream_model": name, "max_retries": 0,
               "price_per_mtok_in": price, "price_per_mtok_out": 3 * price} for name, price in PRICES.items()]
    return parse_config({
        "models": models,
        "routes": {"cascade": {"router_file": str(router_file), "objective": "quality=1,cost=0.45",
                               "cascade": cascade or True, **(route or {})}},
        "store": f"sqlite:///{tmp_path}/store.db", "store_prompts": True,
        "security": {"admin_key_env": "CROSSROADS_TEST_ADMIN"},
    })


@pytest.fixture
def served(router_file, tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSROADS_TEST_ADMIN", ADMIN)
    answers = Answers()
    fake = FakeUpstream(answer=answers)
    with ServerThread(Gateway(config(router_file, tmp_path), http_client=fake.async_client())) as server:
        yield server, fake, answers


def ask(server, prompt: str, headers=None, **body) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", headers=headers, timeout=30,
                      json={"model": "cascade", "messages": [{"role": "user", "content": prompt}], **body})


def called(fake) -> list[str]:
    return [request["body"]["model"] for request in fake.requests if request["path"].endswith("/chat/completions")]


def outcome(server, response) -> dict:
    server.gateway.store.flush()
    return server.gateway.store.decision(response.headers["x-crossroads-decision-id"])["outcome"]


def cost_of(model: str, usage: dict) -> float:
    return PRICES[model] * (usage["prompt_tokens"] + 3 * usage["completion_tokens"]) / 1e6


def test_a_trusted_first_answer_ends_the_cascade(served):
    server, fake, answers = served
    answers.texts = {"cheap": "Autumn leaves drift down, / amber whispers on the wind."}
    response = ask(server, "Write a haiku about autumn leaves.")
    assert response.status_code == 200, response.text
    assert called(fake) == ["cheap"]
    body = response.json()
    assert body["model"] == "cheap"
    assert [call["model"] for call in body["crossroads"]["cascade"]["calls"]] == ["cheap"]
    assert body["crossroads"]["cost_usd"] == pytest.approx(cost_of("cheap", body["usage"]))


def test_agreeing_cheap_answers_stop_before_the_dear_model(served):
    server, fake, answers = served
    answers.texts = {"cheap": "17 x 23 = 391", "mid": "The answer is 391", "dear": "391"}
    response = ask(server, QUESTION)
    assert called(fake) == ["cheap", "mid"]
    calls = response.json()["crossroads"]["cascade"]["calls"]
    assert min(call["trust"] for call in calls) > 0.95  # two independent answers agreeing on one number


def test_disagreeing_cheap_answers_escalate_and_every_call_is_charged(served):
    server, fake, answers = served
    answers.texts = {"cheap": "17 x 23 = 391", "mid": "The answer is 392", "dear": "It is 391."}
    response = ask(server, QUESTION)
    assert called(fake) == ["cheap", "mid", "dear"]
    body = response.json()
    # cheap and dear agree: the answer returned is theirs, the first of them called
    assert body["model"] == "cheap" and body["choices"][0]["message"]["content"] == "17 x 23 = 391"
    calls = body["crossroads"]["cascade"]["calls"]
    usages = {request["body"]["model"]: request for request in fake.requests}
    assert len(usages) == 3
    by_hand = sum(call["cost_usd"] for call in calls)
    for call in calls:  # each call priced from its own token counts
        assert call["cost_usd"] == pytest.approx(PRICES[call["model"]] * (call["tokens_in"] + 3 * call["tokens_out"]) / 1e6)
    assert body["crossroads"]["cost_usd"] == pytest.approx(by_hand)
    stored = outcome(server, response)
    assert stored["cost_usd"] == pytest.approx(by_hand)
    assert stored["model"] == "cheap" and stored["response"] == "17 x 23 = 391"
    assert [call["model"] for call in stored["calls"]] == ["cheap", "mid", "dear"]
    assert stored["calls"][1]["trust"] < stored["calls"][0]["trust"]  # mid is the odd one out
    # tokens are the returned answer's (reports price other models on them); the cost is the whole chain's
    assert stored["tokens_out"] == calls[0]["tokens_out"] and stored["tokens_in"] == calls[0]["tokens_in"]
    # the store keeps prompts here, so every call's answer is kept (the client's copy carries none)
    assert [call["text"] for call in stored["calls"]] == ["17 x 23 = 391", "The answer is 392", "It is 391."]
    assert all("text" not in call for call in calls)


def test_a_request_objective_weighing_latency_is_the_clients_mistake(served, router_file, tmp_path):
    server, fake, _ = served
    response = ask(server, QUESTION, crossroads={"objective": "quality=1,latency=1"})
    assert response.status_code == 400 and "latency" in response.json()["error"]["message"]
    assert called(fake) == []
    cascade = ServedCascade(config(router_file, tmp_path).routes[0])  # models with latencies get this far
    with pytest.raises(BadRequest, match="must weigh quality and not latency"):
        cascade.chain(["cheap"], {"cheap": 0.5}, {"cheap": 1e-4}, Objective(quality=1, latency=1), QUESTION, None,
                      "cheap")


def test_the_logs_export_keeps_every_answer_of_a_chain_at_its_own_cost(served):
    from crossroads.store.export import read_logs

    server, fake, answers = served
    answers.texts = {"cheap": "17 x 23 = 391", "mid": "The answer is 392", "dear": "It is 391."}
    response = ask(server, QUESTION)
    calls = {call["model"]: call for call in response.json()["crossroads"]["cascade"]["calls"]}
    server.gateway.store.flush()
    exported = read_logs(server.gateway.store)
    assert exported.cascade == 2 and "2 other answers of cascades" in exported.summary
    dataset = exported.dataset
    row = dataset.query_ids.index(response.headers["x-crossroads-decision-id"])
    for model, call in calls.items():  # the served answer too is priced at its own call, not the chain's total
        j = dataset.model_names.index(model)
        assert dataset.cost_usd[row, j] == pytest.approx(call["cost_usd"])
        assert dataset.responses[row][j] == answers.texts[model]
    assert dataset.model_names[dataset.served[row]] == "cheap"


def test_a_model_failing_mid_cascade_is_skipped_and_not_charged(served):
    server, fake, answers = served
    answers.texts = {"cheap": "17 x 23 = 391", "dear": "391"}
    fake.script = ["17 x 23 = 391", 500]  # cheap answers, then mid fails
    response = ask(server, QUESTION)
    assert response.status_code == 200, response.text
    body = response.json()
    calls = body["crossroads"]["cascade"]["calls"]
    assert [(call["model"], call["status"]) for call in calls][:2] == [("cheap", "ok"), ("mid", "failed")]
    assert "cost_usd" not in calls[1]
    assert body["crossroads"]["fallbacks_used"] == 1
    assert body["crossroads"]["cost_usd"] == pytest.approx(sum(call.get("cost_usd", 0.0) for call in calls))
    assert outcome(server, response)["fallbacks"] == 1


def test_a_failing_first_model_falls_back_within_the_cascade(served):
    server, fake, answers = served
    answers.texts = {"mid": "It is 391"}
    fake.script = [503]  # the first call, cheap, fails
    response = ask(server, QUESTION)
    assert response.status_code == 200, response.text
    body = response.json()
    assert called(fake)[:2] == ["cheap", "mid"] and body["model"] == "mid"
    assert body["crossroads"]["cost_usd"] == pytest.approx(cost_of("mid", body["usage"]))


def test_every_model_failing_is_a_502_naming_each_failure(served):
    server, fake, _ = served
    fake.script = [500, 500, 500]
    response = ask(server, QUESTION)
    assert response.status_code == 502
    assert "cheap" in response.text and "mid" in response.text and "dear" in response.text
    assert outcome(server, response)["status"] == "failed"


def test_a_stream_sends_the_accepted_answer_once_accepted(served):
    server, fake, answers = served
    answers.texts = {"cheap": "17 x 23 = 391", "mid": "The answer is 392", "dear": "It is 391."}
    with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=30,
                      json={"model": "cascade", "stream": True,
                            "messages": [{"role": "user", "content": QUESTION}]}) as response:
        assert response.status_code == 200
        decision_id = response.headers["x-crossroads-decision-id"]
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    assert text == "17 x 23 = 391"
    assert all(request["body"].get("stream") is not True for request in fake.requests)  # the calls are not streamed
    server.gateway.store.flush()
    stored = server.gateway.store.decision(decision_id)["outcome"]
    assert len(stored["calls"]) == 3 and stored["cost_usd"] == pytest.approx(
        sum(call["cost_usd"] for call in stored["calls"]))


def test_a_keys_budget_is_charged_for_every_call(served):
    server, fake, answers = served
    admin = {"authorization": f"Bearer {ADMIN}"}
    httpx.post(server.url + "/admin/teams", json={"name": "search"}, headers=admin, timeout=10)
    created = httpx.post(server.url + "/admin/keys", json={"name": "bot", "team": "search"}, headers=admin, timeout=10)
    assert created.status_code == 201, created.text
    answers.texts = {"cheap": "17 x 23 = 391", "mid": "The answer is 392", "dear": "It is 391."}
    response = ask(server, QUESTION, headers={"authorization": f"Bearer {created.json()['secret']}"})
    assert len(response.json()["crossroads"]["cascade"]["calls"]) == 3
    spent = store_keys(server.gateway.store).spent(created.json()["key"]["key_id"], "day")
    assert spent == pytest.approx(response.json()["crossroads"]["cost_usd"])


def test_feedback_that_the_trusted_answers_were_bad_makes_the_cascade_escalate(served):
    server, fake, answers = served
    answers.texts = {"cheap": "Waves fold into foam, / the gulls write their names.", "mid": "A poem.", "dear": "A poem."}
    first = ask(server, "Compose a short poem about the sea.")
    assert called(fake) == ["cheap"]
    calibration = server.gateway.cascades["cascade"].calibration
    assert (calibration.slope, calibration.intercept) == (1.0, 0.0)
    for _ in range(30):  # the answers it trusted at 0.95 were judged bad
        response = ask(server, "Compose a short poem about the sea.")
        sent = httpx.post(server.url + "/v1/feedback", timeout=10,
                          json={"decision_id": response.headers["x-crossroads-decision-id"], "quality": 0.0})
        assert sent.status_code == 200, sent.text
    calibration = server.gateway.cascades["cascade"].calibration
    assert calibration.examples == 30
    assert calibration(np.array([0.95]))[0] < 0.5
    fake.requests.clear()
    again = ask(server, "Compose a short poem about the sea.")
    assert len(called(fake)) > 1  # it no longer takes the cheap answer on trust
    assert first.json()["crossroads"]["cascade"]["calls"][0]["trust"] > again.json()["crossroads"]["cascade"][
        "calls"][0]["trust"]


def test_an_opening_above_one_starts_the_chain_cheaper_than_the_router(served, router_file, tmp_path):
    server, fake, answers = served
    answers.texts = {"cheap": "17 x 23 = 391", "mid": "391", "dear": "391"}
    thrifty = {"objective": "quality=1,cost=0.1"}  # the router's pick: dear (0.99 - 0.1 > 0.82)
    ask(server, QUESTION, crossroads=thrifty)
    assert called(fake)[0] == "dear"
    fake = FakeUpstream(answer=answers)
    with ServerThread(Gateway(config(router_file, tmp_path / "opening", {"objective": "quality=1,cost=0.1"},
                                     opening=4.0),
                              http_client=fake.async_client())) as opened:
        response = ask(opened, QUESTION, crossroads=thrifty)
        assert called(fake)[0] == "cheap"  # 0.82 > 0.99 - 4 x 0.1
        decision = opened.gateway.store.decision(response.headers["x-crossroads-decision-id"])
        assert decision["model"] == "cheap" and decision["candidates"][0] == "cheap"
        assert decision["probability"] == 1.0  # the route's own pick, logged as such for off-policy estimates
        before = len(called(fake))
        preview = opened.gateway.routes.preview("cascade", QUESTION)
        assert preview["model"] == "cheap" and preview["reason"].startswith("cascade, first call")  # not dear
        assert len(called(fake)) == before  # the preview called nothing
    fake = FakeUpstream(answer=answers)
    with ServerThread(Gateway(config(router_file, tmp_path / "explore", {"explore": 0.5}, opening=4.0),
                              http_client=fake.async_client())) as exploring:
        logged = []
        for _ in range(12):
            decision_id = ask(exploring, QUESTION, crossroads=thrifty).headers["x-crossroads-decision-id"]
            logged.append(exploring.gateway.store.decision(decision_id))
    # the chance the route had of its first call: explore / 3 + (1 - explore) x 1 for its own pick, cheap
    assert {round(d["probability"], 4) for d in logged if d["model"] == "cheap"} == {round(0.5 / 3 + 0.5, 4)}
    assert {round(d["probability"], 4) for d in logged if d["model"] != "cheap"} <= {round(0.5 / 3, 4)}


LISTED = "What is 17 times 23?\nA) 391\nB) 401\nC) 381\nD) 411"


def test_settings_per_answer_group_start_a_multiple_choice_prompt_cheaper(router_file, tmp_path):
    thrifty = {"objective": "quality=1,cost=0.1"}  # the router's pick: dear (0.99 - 0.1 > 0.82)
    answers = Answers()
    answers.texts = {"cheap": "A) 391", "mid": "A", "dear": "The answer is A"}
    fake = FakeUpstream(answer=answers)
    grouped = config(router_file, tmp_path, thrifty, groups={"choice-4": {"opening": 4.0}})
    with ServerThread(Gateway(grouped, http_client=fake.async_client())) as server:
        ask(server, QUESTION)
        assert called(fake)[0] == "dear"  # lists no options: the route's own opening, 1
        first = len(called(fake))
        response = ask(server, LISTED)
        assert called(fake)[first] == "cheap"  # four options: choice-4's opening, 4 (0.82 > 0.99 - 4 x 0.1)
        decision = server.gateway.store.decision(response.headers["x-crossroads-decision-id"])
        assert decision["model"] == "cheap" and "cost weighed 4 times" in response.json()["crossroads"]["reason"]
        assert server.gateway.routes.preview("cascade", LISTED)["model"] == "cheap"
        assert server.gateway.routes.preview("cascade", QUESTION)["model"] == "dear"


def test_a_chain_takes_its_groups_settings_once_an_answer_shows_its_kind(router_file, tmp_path):
    from crossroads.serve.cascade import Call

    route = config(router_file, tmp_path, groups={"number": {"resolve": 0.1, "difficulty": 1.0},
                                                  "choice-4": {"resolve": 0.25}, "other": {"opening": 2.0}}).routes[0]
    cascade = ServedCascade(route)
    prior, cost = {"cheap": 0.8, "mid": 0.85, "dear": 0.99}, {"cheap": 1e-4, "mid": 1e-3, "dear": 1e-2}

    def chain(prompt):
        return cascade.chain(list(PRICES), prior, cost, Objective(quality=1, cost=0.45), prompt, None, "cheap")

    numeric, listed = chain(QUESTION), chain(LISTED)
    assert numeric.group is None and numeric.policy.resolve == 0.5  # no answer yet, no options: the route's own
    assert listed.group == "choice-4" and listed.policy.resolve == 0.25
    numeric.add(Call("cheap", "ok", text="17 x 23 = 391"))
    assert numeric.group == "number" and (numeric.policy.resolve, numeric.policy.difficulty) == (0.1, 1.0)
    prose = chain("Write a poem about the sea")
    prose.add(Call("cheap", "ok", text="Waves fold over waves, grey on grey."))
    assert prose.group == "none" and prose.policy.opening == 2.0 and prose.policy.resolve == 0.5  # other's


def test_the_python_client_runs_the_same_cascade(router_file, tmp_path):
    from crossroads import Client

    answers = Answers()
    answers.texts = {"cheap": "17 x 23 = 391", "mid": "The answer is 392", "dear": "It is 391."}
    fake = FakeUpstream(answer=answers)
    with Client(config(router_file, tmp_path), http_client=fake.async_client()) as client:
        answer = client.chat.completions.create(model="cascade", messages=[{"role": "user", "content": QUESTION}])
        assert called(fake) == ["cheap", "mid", "dear"]
        assert answer.model == "cheap" and len(answer.crossroads["cascade"]["calls"]) == 3
        streamed = list(client.chat.completions.create(model="cascade", stream=True,
                                                        messages=[{"role": "user", "content": QUESTION}]))
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "17 x 23 = 391"


def test_a_restarted_gateway_refits_its_calibration_from_the_store(router_file, tmp_path):
    fake = FakeUpstream(default="A poem.")
    first = Gateway(config(router_file, tmp_path), http_client=fake.async_client())
    for i in range(12):
        first.store.record_decision(f"d{i}", route="cascade", model="cheap", learner_key=None, candidates=["cheap"],
                                    probability=1.0, scores=None, context=None, created_s=1.0)
        first.store.record_outcome(f"d{i}", model="cheap", status="ok", cost_usd=1e-5, latency_s=0.1, ttft_s=None,
                                   tokens_in=5, tokens_out=5, fallbacks=0,
                                   calls=[{"model": "cheap", "status": "ok", "raw_trust": 0.9, "trust": 0.9}])
        first.store.flush()
        first.store.add_feedback(f"d{i}", reward=None, quality=0.0, payload=None, created_s=1.0)
    first.store.close()
    second = Gateway(config(router_file, tmp_path), http_client=fake.async_client())
    try:
        assert second.cascades["cascade"].calibration.examples == 12
        assert second.cascades["cascade"].calibration(np.array([0.9]))[0] < 0.9
    finally:
        second.store.close()


# -- the calibration and the config -----------------------------------------------------------------
def test_the_calibration_starts_as_the_identity_and_moves_with_evidence():
    trust = np.array([0.2, 0.5, 0.9])
    np.testing.assert_allclose(TrustCalibration()(trust), trust)
    few = TrustCalibration().fit([0.9], [0.0])
    many = TrustCalibration().fit([0.9] * 200, [0.0] * 200)
    assert 0.9 > few(np.array([0.9]))[0] > many(np.array([0.9]))[0]
    honest = TrustCalibration().fit(np.r_[[0.9] * 90, [0.9] * 10, [0.2] * 20, [0.2] * 80], [1.0] * 90 + [0.0] * 10
                                    + [1.0] * 20 + [0.0] * 80)
    np.testing.assert_allclose(honest(np.array([0.2, 0.9])), [0.2, 0.9], atol=0.05)  # calibrated already: kept


@pytest.mark.parametrize("route, message", [
    ({"learner": "thompson", "cascade": True}, "set `router_file`"),
    ({"router_file": "default", "learner": "linucb", "cascade": True}, "and no `learner`"),
    ({"router_file": "default", "objective": "quality=1,latency=1", "cascade": True}, "not latency"),
    ({"router_file": "default", "cascade": {"verifier": "nowhere.npz"}}, "`agreement` or the path"),
    ({"router_file": "default", "cascade": {"max_calls": 0}}, "max_calls must be an integer >= 1"),
    ({"router_file": "default", "cascade": {"max_cost_usd": -1}}, "max_cost_usd must be a positive"),
    ({"router_file": "default", "cascade": {"resolve": 2}}, "resolve must be a number in [0, 1]"),
    ({"router_file": "default", "cascade": {"opening": 0.5}}, "opening must be a number >= 1"),
    ({"router_file": "default", "cascade": {"verfier": "agreement"}}, "unknown keys ['verfier']"),
    ({"router_file": "default", "cascade": {"groups": {"choice-9": {"opening": 2}}}},
     "unknown answer group 'choice-9'"),
    ({"router_file": "default", "cascade": {"groups": {"number": {"opening": 0.5}}}},
     "groups.number.opening must be a number >= 1"),
    ({"router_file": "default", "cascade": {"groups": {"number": {"threshold": 0.5}}}},
     "groups.number must set some of difficulty, opening, resolve"),
    ({"router_file": "default", "cascade": {"groups": ["number"]}}, "groups must map answer groups"),
])
def test_wrong_cascade_configs_say_what_to_change(route, message):
    with pytest.raises(CrossroadsError, match=None) as error:
        parse_config({"models": [{"name": "a", "base_url": FAKE_BASE_URL}, {"name": "b", "base_url": FAKE_BASE_URL}],
                      "routes": {"c": route}})
    assert message in str(error.value)
