"""Trained routers behind the server: named routes with a router file, and RouteLLM's router-<router>-<threshold>."""

from __future__ import annotations

import httpx
import numpy as np
import openai
import pytest
from serve_helpers import ServerThread
from topics import topics_dataset

from crossroads.data.dataset import ModelInfo, RoutingDataset
from crossroads.embeddings import make_embedder
from crossroads.routers import make_router
from crossroads.serve.config import parse_config
from crossroads.serve.gateway import Gateway
from crossroads.upstream.fake import FAKE_BASE_URL, FakeUpstream


@pytest.fixture(scope="module")
def router_file(tmp_path_factory):
    """A knn router trained on real embeddings: `big` answers math well, `small` answers poems well."""
    dataset = topics_dataset([ModelInfo("big", 10, 30), ModelInfo("small", 0.1, 0.3)])
    embedder = make_embedder("minilm-onnx", cache=False)
    router = make_router("knn", k=3).fit(dataset, embedder.embed(dataset.prompts), embedder=embedder.name)
    return router.save(tmp_path_factory.mktemp("routers") / "knn.npz")


@pytest.fixture(scope="module")
def task_router_file(tmp_path_factory):
    """A gbt router for which only the request's category tells: `big` wins "exam" queries, `small` "chat" ones."""
    prompts = topics_dataset([ModelInfo("big"), ModelInfo("small")]).prompts * 30
    exam = np.random.default_rng(3).random(len(prompts)) < 0.6
    dataset = RoutingDataset(
        query_ids=[f"q{i}" for i in range(len(prompts))], prompts=prompts,
        categories=["exam" if e else "chat" for e in exam], sources=["test"] * len(prompts),
        models=[ModelInfo("big", 10, 30), ModelInfo("small", 0.1, 0.3)],
        quality=np.stack([exam, ~exam], axis=1).astype(float), cost_usd=np.tile([1e-2, 1e-4], (len(prompts), 1)))
    embedder = make_embedder("minilm-onnx", cache=False)
    router = make_router("gbt").fit(dataset, embedder.embed(prompts), embedder=embedder.name)
    return router.save(tmp_path_factory.mktemp("routers") / "gbt.npz")


@pytest.fixture(scope="module")
def server(router_file, task_router_file, tmp_path_factory):
    models = [{"name": name, "base_url": FAKE_BASE_URL, "upstream_model": "echo", "max_retries": 0,
               "price_per_mtok_in": price, "price_per_mtok_out": 3 * price, "tier": tier}
              for name, price, tier in (("big", 10, "frontier"), ("small", 0.1, "small"))]
    config = parse_config({
        "models": models,
        "routes": {"best": {"router_file": str(router_file), "objective": "quality=1"},
                   "thrifty": {"router_file": str(router_file), "objective": "quality=1,cost=5"},
                   "by-task": {"router_file": str(task_router_file), "objective": "quality=1"},
                   "pretrained": {"router_file": "default", "objective": "quality=1"},
                   "pretrained-thrifty": {"router_file": "default", "objective": "quality=1,cost=5"},
                   "adaptive": {"router_file": str(router_file), "learner": "linucb", "objective": "quality=1"}},
        "routellm": {"strong": "big", "weak": "small", "routers": {"knn": str(router_file)}},
        "store": f"sqlite:///{tmp_path_factory.mktemp('store')}/store.db",
    })
    with ServerThread(Gateway(config, http_client=FakeUpstream().async_client())) as running:
        yield running


def ask(server, route, prompt, **overrides):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    return client.chat.completions.create(model=route, messages=[{"role": "user", "content": prompt}],
                                          extra_body={"crossroads": overrides} if overrides else None)


def test_router_route_sends_each_prompt_to_the_model_predicted_best(server):
    assert ask(server, "best", "What is 12 times 12?").model == "big"
    assert ask(server, "best", "Write a short poem about snow.").model == "small"


def test_cost_weight_moves_the_router_route_to_the_cheaper_model(server):
    answer = ask(server, "thrifty", "What is 12 times 12?")
    assert answer.model == "small"
    assert answer.crossroads["scores"]["small"] > answer.crossroads["scores"]["big"]


@pytest.mark.parametrize("threshold, math_model", [("0.3", "big"), ("0.99", "small")])
def test_routellm_names_route_by_win_probability_and_threshold(server, threshold, math_model):
    answer = ask(server, f"router-knn-{threshold}", "What is 12 times 12?")
    assert answer.model == math_model
    assert answer.crossroads["kind"] == "routellm" and "threshold" in answer.crossroads["reason"]
    assert ask(server, f"router-knn-{threshold}", "Write a short poem about snow.").model == "small"


def test_the_request_category_reaches_a_router_that_reads_categories(server):
    assert ask(server, "by-task", "What is 12 times 12?", category="exam").model == "big"
    assert ask(server, "by-task", "What is 12 times 12?", category="chat").model == "small"


def test_the_pretrained_default_router_places_configured_models_by_price_and_tier(server):
    """Neither `big` nor `small` is known to the default router: their tier and price place them."""
    answer = ask(server, "pretrained", "Prove that the square root of 2 is irrational.")
    assert answer.model == "big" and answer.crossroads["kind"] == "router"
    assert "predicted quality" in answer.crossroads["reason"]
    assert ask(server, "pretrained-thrifty", "Prove that the square root of 2 is irrational.").model == "small"


def test_a_learner_on_top_of_a_router_starts_from_it_and_learns_where_it_is_wrong(server):
    """Math goes to `big` as the router predicts, until feedback says `small` does math as well at less cost."""
    math, poem = "What is 12 times 12?", "Write a short poem about snow."
    first = ask(server, "adaptive", math)
    assert first.model == "big" and ask(server, "adaptive", poem).model == "small"
    assert first.crossroads["kind"] == "learner" and "starting from the router's expected rewards" in first.crossroads["reason"]
    for _ in range(20):  # feedback: big answers math badly, small well
        answer = ask(server, "adaptive", math)
        reward = 0.0 if answer.model == "big" else 1.0
        httpx.post(server.url + "/v1/feedback", json={"decision_id": answer.crossroads["decision_id"], "reward": reward})
    assert [ask(server, "adaptive", math).model for _ in range(3)] == ["small"] * 3
    learner = server.gateway.learners.learner("adaptive", None)
    assert learner.updates_ == 20 and learner.arms_["big"]["pulls"] >= 1
