"""A route's `explore` share: uniform draws mixed into its decisions, logged with their exact probability."""

from __future__ import annotations

import httpx
import numpy as np
import openai
import pytest
from serve_helpers import ServerThread
from synthetic import TopicEmbedder, topic_router_file

from crossroads.errors import CrossroadsError
from crossroads.evaluate.off_policy import fixed_policy, ips
from crossroads.serve.config import parse_config
from crossroads.serve.gateway import Gateway
from crossroads.serve.learning import RouteLearners
from crossroads.serve.requests import Overrides
from crossroads.serve.routing import Routes
from crossroads.upstream.fake import FAKE_BASE_URL, FakeUpstream

MODELS = ["A", "B", "C"]  # the router learnt: A wins on topic X, B on topic Y, C never
PROMPTS = {"x": "a chemistry question", "y": "a poetry question"}
N = 3000


@pytest.fixture(scope="module")
def router_file(tmp_path_factory):
    return topic_router_file(tmp_path_factory.mktemp("routers"))


def make_routes(seed: int, **routes: dict) -> Routes:
    """Routes over the models A, B and C with the exploration generator seeded."""
    models = [{"name": name, "base_url": FAKE_BASE_URL, "price_per_mtok_in": 1.0, "price_per_mtok_out": 1.0}
              for name in MODELS]
    config = parse_config({"models": models, "routes": routes})
    learners = RouteLearners(config.routes, config.model_names)
    return Routes(config, learners, embedder=TopicEmbedder(), rng=np.random.default_rng(seed))


def binomial_ok(share: float, p: float, n: int) -> bool:
    return abs(share - p) <= 4 * np.sqrt(p * (1 - p) / n)


# -- config ---------------------------------------------------------------------------------
@pytest.mark.parametrize("route", [{"learner": "ucb"}, {"router_file": "default"},
                                   {"router_file": "default", "learner": "linucb"}])
@pytest.mark.parametrize("explore", [0, 0.05, 0.5, 0.999])
def test_every_route_kind_takes_an_explore_share(route, explore):
    config = parse_config({"models": [{"name": "a"}], "routes": {"r": {**route, "explore": explore}}})
    assert config.routes[0].explore == explore
    assert parse_config({"models": [{"name": "a"}], "routes": {"r": route}}).routes[0].explore == 0.0


@pytest.mark.parametrize("explore", [1, 1.0, -0.05, 5, float("nan"), "5%", True, None])
def test_an_explore_share_outside_0_to_1_is_refused(explore):
    with pytest.raises(CrossroadsError, match=r"routes\.r: explore must be a number in \[0, 1\), got"):
        parse_config({"models": [{"name": "a"}], "routes": {"r": {"learner": "ucb", "explore": explore}}})


# -- decisions --------------------------------------------------------------------------------
def test_a_router_route_without_exploration_logs_probability_one(router_file):
    routes = make_routes(0, plain={"router_file": router_file})
    for topic, prompt in PROMPTS.items():
        choice = routes.decide("plain", prompt, Overrides())
        assert choice.model == ("A" if topic == "x" else "B") and choice.probability == 1.0
        assert not choice.explored and choice.to_dict()["explored"] is False
        assert "exploration" not in choice.reason


@pytest.mark.parametrize("kind", ["router", "linucb"])
def test_a_router_route_explores_the_share_it_says_and_logs_the_mixture(router_file, kind):
    """explore=0.3 over k=3: a share 0.3 x 2/3 of the answers is not the route's own choice.

    A linucb learner on top of the router has learnt nothing yet, so it follows the router's top choice.
    """
    route = {"router_file": router_file, "explore": 0.3, **({"learner": "linucb"} if kind == "linucb" else {})}
    routes = make_routes(1, plain={"router_file": router_file}, mixed=route)
    tops = {topic: routes.decide("plain", prompt, Overrides()).ranking for topic, prompt in PROMPTS.items()}
    assert tops["x"][0] == "A" and tops["y"][0] == "B"
    topics = ["x", "y"] * (N // 2)
    choices = [routes.decide("mixed", PROMPTS[topic], Overrides()) for topic in topics]
    off_top = []
    for topic, choice in zip(topics, choices):
        top = tops[topic]
        assert choice.probability == pytest.approx(0.3 / 3 + 0.7 * (choice.model == top[0]), abs=1e-12)
        assert choice.ranking[1:] == [m for m in top if m != choice.model]  # the rest keep their order
        assert choice.explored or choice.model == top[0]
        off_top.append(choice.model != top[0])
        if off_top[-1]:
            assert choice.reason.startswith(f"exploration draw (explore=0.3): {choice.model} drawn uniformly "
                                            f"among 3 candidates, instead of the route's choice {top[0]}")
    assert binomial_ok(np.mean(off_top), 0.3 * 2 / 3, N)
    assert binomial_ok(np.mean([c.explored for c in choices]), 0.3, N)


def test_a_learner_route_logs_the_mixture_of_the_learners_probabilities():
    routes = make_routes(2, auto={"learner": "automaton:learning_rate=0.5", "explore": 0.3})
    learner = routes.learners.learner("auto", None)
    for model in MODELS:
        learner.add_model(model)
    learner.update("C", 1.0)  # C: 1/3 + 0.5 x 2/3 = 2/3; A and B: 1/6 each
    own = {m: learner.arms_[m]["p"] for m in MODELS}
    assert own == pytest.approx({"A": 1 / 6, "B": 1 / 6, "C": 2 / 3})
    assert learner.select(MODELS).probabilities == pytest.approx(own)
    choices = [routes.decide("auto", "any prompt", Overrides()) for _ in range(N)]
    for choice in choices:
        assert choice.probability == pytest.approx(0.3 / 3 + 0.7 * own[choice.model], abs=1e-12)
    for model in MODELS:  # the logged probability is the chance each model had of answering
        assert binomial_ok(np.mean([c.model == model for c in choices]), 0.1 + 0.7 * own[model], N), model
    assert binomial_ok(np.mean([c.explored for c in choices]), 0.3, N)
    assert learner.arms_["C"]["p"] == pytest.approx(2 / 3)  # deciding alone teaches nothing


def test_ips_with_the_logged_probabilities_estimates_each_fixed_policy(router_file):
    """A router route with explore=0.5 logs answers on two topics; IPS recovers what "always j" would earn.

    A wins on X and B on Y, and the router sends X to A: the mean reward of A's own answers is
    inflated by that selection, the propensity-weighted estimate is not.
    """
    routes = make_routes(3, mixed={"router_file": router_file, "explore": 0.5})
    env = np.random.default_rng(4)
    topics = env.integers(0, 2, N)  # 1 = X
    noise = env.uniform(-0.1, 0.1, (N, 3))
    rewards = np.clip(np.stack([np.where(topics, 0.9, 0.1), np.where(topics, 0.1, 0.9), np.full(N, 0.5)], 1)
                      + noise, 0.0, 1.0)
    choices = [routes.decide("mixed", PROMPTS["x" if t else "y"], Overrides()) for t in topics]
    actions = np.array([MODELS.index(c.model) for c in choices])
    propensities = np.array([c.probability for c in choices])
    observed = rewards[np.arange(N), actions]
    for j in range(3):
        truth, estimate = rewards[:, j].mean(), ips(actions, propensities, observed, fixed_policy(N, 3, j))
        terms = (actions == j) / propensities * observed
        assert abs(estimate - truth) <= 4 * terms.std() / np.sqrt(N), (j, estimate, truth)
    naive = observed[actions == 0].mean()  # A's logged answers are mostly on X, where it wins
    assert naive - rewards[:, 0].mean() > 0.15


# -- learning from explored answers ------------------------------------------------------------
def test_feedback_on_an_explored_answer_teaches_the_model_that_answered(tmp_path):
    models = [{"name": name, "base_url": FAKE_BASE_URL, "upstream_model": "echo", "max_retries": 0}
              for name in ("big", "small")]
    config = parse_config({"models": models, "store": f"sqlite:///{tmp_path}/store.db", "routes": {
        "auto": {"learner": "qlearning:epsilon=0,initial_q=0,step_size=1,seed=0", "explore": 0.5}}})
    answered = {"big": 0, "small": 0}
    with ServerThread(Gateway(config, http_client=FakeUpstream().async_client())) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
        learner = server.gateway.learners.learner("auto", None)
        learner.add_model("big")
        learner.add_model("small")
        learner.update("big", 1.0)  # the learner's own choice is big from now on: Q = 1 against at most 0.25
        for _ in range(40):
            answer = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
            assert answer.crossroads["explored"] or answer.model == "big"
            answered[answer.model] += 1
            reward = 1.0 if answer.model == "big" else 0.25
            receipt = httpx.post(server.url + "/v1/feedback", json={"decision_id": answer.crossroads["decision_id"],
                                                                     "reward": reward}).json()
            assert receipt["applied"] == 1
    assert answered["small"] > 0  # draws sent requests to small, which the learner itself never chose
    assert learner.arms_["small"]["pulls"] == answered["small"] and learner.arms_["small"]["q"] == 0.25
    assert learner.arms_["big"]["pulls"] == answered["big"] + 1
