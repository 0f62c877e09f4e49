"""LinUCB and LinTS route each query on its embedding, and start from an offline router's predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synthetic import two_topic_dataset

from crossroads.errors import CrossroadsError
from crossroads.online import Learner, make_learner
from crossroads.online.linucb import router_prior
from crossroads.routers import make_router

CONTEXTUAL = ["linucb", "lints"]
DIM = 16


class TwoTopicBandit:
    """Queries near centre X (model A is best) or Y (B is best); C is middling everywhere.

    Rewards are Bernoulli draws with these means, so the best fixed model earns 0.55
    and routing on the query earns 0.85.  ``extra`` more models earn 0.4 everywhere.
    """

    def __init__(self, seed: int, dim: int = DIM, extra: int = 0):
        self.rng = np.random.default_rng(seed)
        self.centres = np.eye(dim)[:2]
        self.models = ["A", "B", "C"] + [f"M{i}" for i in range(extra)]

    def query(self) -> tuple[np.ndarray, int]:
        topic = int(self.rng.integers(2))
        dim = self.centres.shape[1]
        x = self.centres[topic] + 0.3 * self.rng.normal(size=dim) / np.sqrt(dim)
        return x / np.linalg.norm(x), topic

    def mean(self, model: str, topic: int) -> float:
        return {"A": (0.85, 0.25), "B": (0.25, 0.85), "C": (0.55, 0.55)}.get(model, (0.4, 0.4))[topic]

    def run(self, learner: Learner, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Per step: the expected reward of the choice and the regret against the best model for the query."""
        earned, regret = np.empty(steps), np.empty(steps)
        for t in range(steps):
            x, topic = self.query()
            decision = learner.select(self.models, context=x)
            earned[t] = self.mean(decision.model, topic)
            regret[t] = 0.85 - earned[t]
            learner.update(decision, float(self.rng.random() < earned[t]))
        return earned, regret


def true_prior(x: np.ndarray) -> dict[str, float]:
    """What a good offline router would predict: the expected reward of each model for this query."""
    on_x = float(x[0] > x[1])
    return {"A": 0.25 + 0.6 * on_x, "B": 0.85 - 0.6 * on_x, "C": 0.55}


def reversed_prior(x: np.ndarray) -> dict[str, float]:
    """A prior that is wrong about every model."""
    return {model: 1.0 - value for model, value in true_prior(x).items()}


@pytest.mark.parametrize("name", CONTEXTUAL)
def test_beats_the_best_fixed_model_with_sublinear_regret(name):
    earned, regret = TwoTopicBandit(seed=0).run(make_learner(name, seed=0), 1500)
    assert earned[-500:].mean() > 0.55 + 0.2  # the best fixed model earns 0.55
    assert earned.mean() > 0.55
    assert regret[750:].sum() < regret[:750].sum()


@pytest.mark.parametrize("name", CONTEXTUAL)
def test_warm_start_from_predictions_helps_early_and_a_wrong_prior_is_overcome(name):
    """Six models on 64 dimensions: a cold learner spends its first 100 queries exploring."""
    cold, warm = [], []
    for seed in range(3):
        cold.append(TwoTopicBandit(seed, dim=64, extra=3).run(make_learner(name, seed=seed), 100)[0].mean())
        learner = make_learner(name, seed=seed).warm_start(lambda x: true_prior(x) | {"M0": 0.4, "M1": 0.4, "M2": 0.4})
        warm.append(TwoTopicBandit(seed, dim=64, extra=3).run(learner, 100)[0].mean())
    assert np.mean(warm) > np.mean(cold) + 0.04
    misled = make_learner(name, seed=0).warm_start(reversed_prior)
    assert TwoTopicBandit(0).run(misled, 1500)[0][-500:].mean() > 0.75


class PerCallPrior:
    """A learner given each query's prior with the call, as the server's router-plus-learner routes do."""

    def __init__(self, learner: Learner, prior):
        self.learner, self.prior = learner, prior

    def select(self, models, context):
        return self.learner.select(models, context=context, prior=self.prior(context))

    def update(self, decision, reward):
        self.learner.update(decision, reward)  # the decision carries its prior


def test_a_prior_given_with_each_call_is_followed_then_corrected():
    """LinUCB as the server's default route runs it: until feedback comes, every decision is the prior's best model
    (the exploration bonus is the same for all); a wrong prior is unlearned from the rewards."""
    bandit, learner = TwoTopicBandit(0), make_learner("linucb", seed=0)
    for _ in range(50):
        x, _ = bandit.query()
        prior = reversed_prior(x)
        assert learner.select(bandit.models, context=x, prior=prior).model == max(prior, key=prior.get)
    misled = PerCallPrior(make_learner("linucb", seed=0), reversed_prior)
    assert TwoTopicBandit(0).run(misled, 1500)[0][-500:].mean() > 0.75  # it learned where the prior is wrong


def test_only_learners_that_take_a_prior_accept_one():
    with pytest.raises(CrossroadsError, match="the ucb learner does not start from a prior; linucb and lints do"):
        make_learner("ucb").select(["a", "b"], prior={"a": 0.5, "b": 0.5})
    with pytest.raises(CrossroadsError, match="model name -> finite number"):
        make_learner("linucb").select(["a", "b"], context=np.ones(3), prior={"a": float("nan")})


@pytest.mark.parametrize("name", CONTEXTUAL)
def test_warm_start_from_an_offline_router(name):
    """A kNN router fitted on logged outcomes routes the first queries; an unknown third model gets the mean prior."""
    dataset, embeddings, topic = two_topic_dataset(n=400, dim=32, seed=0)
    router = make_router("knn", k=10).fit(dataset.subset(np.arange(400) < 200), embeddings[:200])
    models = ["model-0", "model-1", "model-2"]

    def early_reward(learner: Learner) -> float:
        rng, earned = np.random.default_rng(1), []
        for i in range(200, 300):
            decision = learner.select(models, context=embeddings[i])
            mean = 0.9 if decision.model == models[topic[i]] else 0.2
            earned.append(mean)
            learner.update(decision, float(rng.random() < mean))
        return float(np.mean(earned))

    warm = early_reward(make_learner(name, seed=0).warm_start(router))
    assert warm >= early_reward(make_learner(name, seed=0)) and warm > 0.85  # 0.9 at best
    assert router_prior(router)(embeddings[0]).keys() == {"model-0", "model-1"}


@pytest.mark.parametrize("name", CONTEXTUAL)
def test_warm_start_is_saved_or_reattached(name):
    fixed = make_learner(name, seed=0).warm_start({"A": 0.2, "B": 0.3, "C": 0.9})
    bandit = TwoTopicBandit(0)
    assert fixed.select(bandit.models, context=bandit.query()[0]).model == "C"
    bandit.run(fixed, 50)
    restored = Learner.from_state(json.loads(json.dumps(fixed.state())))
    assert restored.stats_["prior"] == {"A": 0.2, "B": 0.3, "C": 0.9}
    x = bandit.query()[0]
    assert (
        restored.select(bandit.models, context=x, rng=np.random.default_rng(5)).scores
        == fixed.select(bandit.models, context=x, rng=np.random.default_rng(5)).scores
    )
    with pytest.raises(CrossroadsError, match="before the first update"):
        fixed.warm_start(true_prior)

    by_query = make_learner(name, seed=0).warm_start(true_prior)
    bandit.run(by_query, 20)
    with pytest.raises(CrossroadsError, match="prior="):
        Learner.from_state(by_query.state())
    again = type(by_query).from_state(by_query.state(), prior=true_prior)
    assert (
        again.select(bandit.models, context=x, rng=np.random.default_rng(5)).scores
        == by_query.clone().select(bandit.models, context=x, rng=np.random.default_rng(5)).scores
    )
    with pytest.raises(CrossroadsError, match="prior"):
        make_learner(name).warm_start(42)
    with pytest.raises(CrossroadsError, match="not finite"):
        make_learner(name).warm_start({"A": float("nan")})


@pytest.mark.parametrize("name", CONTEXTUAL)
def test_models_added_before_the_first_context(name):
    learner = make_learner(name, seed=0)
    learner.add_model("A")
    learner.add_model("B")
    decision = learner.select(["A", "B", "C"], context=np.ones(4))
    learner.update(decision, 1.0)
    assert learner.stats_["dim"] == 4 and all(arm["A_inv"].shape == (5, 5) for arm in learner.arms_.values())


@pytest.mark.parametrize("name", CONTEXTUAL)
def test_discounting_follows_a_topic_whose_best_model_changes(name):
    """After 1,000 queries A and B swap topics; a discounted learner re-learns faster."""

    class Swapped(TwoTopicBandit):
        def mean(self, model, topic):
            return super().mean(model, 1 - topic)

    def after_swap(discount: float) -> float:
        learner = make_learner(name, seed=0, discount=discount)
        TwoTopicBandit(0).run(learner, 1000)
        return Swapped(1).run(learner, 300)[0].mean()

    discounted = after_swap(0.99)
    assert discounted > 0.6 and discounted > after_swap(1.0) + 0.2
