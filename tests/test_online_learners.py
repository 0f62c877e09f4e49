"""One contract every online learner passes; a new learner is covered once it is registered."""

from __future__ import annotations

import doctest
import importlib
import json
import sys
import threading

import numpy as np
import pytest

from crossroads.errors import CrossroadsError, UnknownModelError
from crossroads.online import (
    LEARNERS,
    Decision,
    KeyedLearners,
    Learner,
    make_learner,
)

MEANS = {"low": 0.2, "mid": 0.5, "high": 0.8}
DIM = 8

#: Every learner with its defaults, plus the options that forget old rewards.
CONFIGS = [(name, {}) for name in LEARNERS.names] + [
    ("ucb", {"discount": 0.95}),
    ("ucb", {"window": 40}),
    ("thompson", {"discount": 0.95}),
    ("thompson", {"window": 40}),
    ("linucb", {"discount": 0.9}),
    ("lints", {"discount": 0.9}),
]
CONFIG_IDS = [name + "".join(f"-{k}={v}" for k, v in params.items()) for name, params in CONFIGS]


def context_for(learner: Learner, rng: np.random.Generator) -> np.ndarray | None:
    """A random unit context for contextual learners: noise the reward does not depend on."""
    if not learner.contextual:
        return None
    x = rng.normal(size=DIM)
    return x / np.linalg.norm(x)


def play(learner: Learner, means: dict[str, float], steps: int, env: np.random.Generator) -> list[Decision]:
    """Bernoulli bandit: the chosen model earns 1 with probability ``means[model]``."""
    decisions = []
    for _ in range(steps):
        decision = learner.select(list(means), context=context_for(learner, env))
        learner.update(decision, float(env.random() < means[decision.model]))
        decisions.append(decision)
    return decisions


def non_sticky(name: str) -> dict:
    return {"sticky": False} if "sticky" in LEARNERS.load(name)().get_params() else {}


def assert_distribution(decision: Decision) -> None:
    """One probability per candidate, in order, in [0, 1], summing to 1; the choice's is ``probability``."""
    probabilities = decision.probabilities
    assert list(probabilities) == list(decision.candidates)
    assert all(0.0 <= p <= 1.0 for p in probabilities.values())
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-12)
    assert decision.probability == probabilities[decision.model]


# -- the contract --------------------------------------------------------------
@pytest.mark.parametrize("name", LEARNERS.names)
def test_picks_only_from_the_candidates_passed(name):
    learner, env = make_learner(name, seed=0), np.random.default_rng(100)
    pool = ["a", "b", "c", "d", "e"]
    for _ in range(300):
        candidates = list(env.choice(pool, size=int(env.integers(1, 6)), replace=False))
        decision = learner.select(candidates, context=context_for(learner, env))
        assert decision.model in candidates and decision.candidates == tuple(candidates)
        assert 0.0 < decision.probability <= 1.0 and decision.learner == name
        if len(candidates) == 1:
            assert decision.probability == 1.0
        assert_distribution(decision)
        learner.update(decision, float(env.random() < 0.3 + 0.1 * pool.index(decision.model)))
    assert sorted(learner.models) == pool
    json.dumps(decision.to_dict())


@pytest.mark.parametrize("name", LEARNERS.names)
def test_recorded_probability_is_the_chance_of_the_choice(name):
    """From one state, the share of draws that pick a model matches the probability recorded for it."""
    learner, env = make_learner(name, seed=1, **non_sticky(name)), np.random.default_rng(101)
    play(learner, MEANS, 60, env)
    state, context, n = learner.state(), context_for(learner, env), 600
    picks: dict[str, list[float]] = {}
    for i in range(n):
        decision = Learner.from_state(state).select(
            ["low", "mid", "high"], context=context, rng=np.random.default_rng(i)
        )
        picks.setdefault(decision.model, []).append(decision.probability)
    for model, probabilities in picks.items():
        share, recorded = len(probabilities) / n, float(np.mean(probabilities))
        if name not in ("thompson", "lints"):  # exact propensities: the same for every draw
            assert np.ptp(probabilities) < 1e-12
        assert abs(share - recorded) < 4 * np.sqrt(recorded * (1 - recorded) / n) + 0.03, (model, share, recorded)


@pytest.mark.parametrize("name", LEARNERS.names)
def test_probabilities_are_the_chance_of_every_candidate(name):
    """From one state, each candidate's share of seeded draws matches its probability, chosen or not.

    Two states: one reward in (UCB and Q-learning then split ties evenly) and 60 rewards in.
    The Thompson samplers estimate their probabilities, the others give them exactly.
    """
    exact = name not in ("thompson", "lints")
    candidates, n = ["low", "mid", "high"], 600
    learner, env = make_learner(name, seed=4, **non_sticky(name)), np.random.default_rng(104)
    for model in candidates:
        learner.add_model(model)
    learner.update("low", 0.0, context=context_for(learner, env))
    for steps in (0, 60):
        play(learner, MEANS, steps, env)
        state, context = learner.state(), context_for(learner, env)
        decisions = [Learner.from_state(state).select(candidates, context=context, rng=np.random.default_rng(i))
                     for i in range(n)]
        for decision in decisions:
            assert_distribution(decision)
        recorded = np.array([[d.probabilities[m] for m in candidates] for d in decisions])
        if exact:  # the same distribution whatever the draw
            assert np.ptp(recorded, axis=0).max() < 1e-12
        for j, model in enumerate(candidates):
            share, p = np.mean([d.model == model for d in decisions]), float(recorded[:, j].mean())
            tolerance = 4 * np.sqrt(p * (1 - p) / n) + (1e-12 if exact else 0.03)
            assert abs(share - p) <= tolerance, (steps, model, share, p)


@pytest.mark.parametrize("name", LEARNERS.names)
def test_converges_to_the_best_model_with_sublinear_regret(name):
    """Over three runs of 2,000 steps: the best model gets most late requests, regret flattens."""
    runs = [play(make_learner(name, seed=seed), MEANS, 2000, np.random.default_rng(100 + seed)) for seed in range(3)]
    best_share = np.mean([[d.model == "high" for d in decisions[-500:]] for decisions in runs])
    regret = np.array([[MEANS["high"] - MEANS[d.model] for d in decisions] for decisions in runs])
    assert best_share > 0.8
    assert regret[:, 1000:].sum() < regret[:, :1000].sum()


@pytest.mark.parametrize(("name", "params"), CONFIGS, ids=CONFIG_IDS)
def test_json_round_trip_mid_stream_gives_the_same_decisions(name, params):
    learner = make_learner(name, seed=3, **params)
    play(learner, MEANS, 150, np.random.default_rng(103))
    learner.add_model("new")
    restored = Learner.from_state(json.loads(json.dumps(learner.state())))
    assert type(restored) is type(learner) and restored.get_params() == learner.get_params()
    pool = {**MEANS, "new": 0.6}
    original = play(learner, pool, 150, np.random.default_rng(104))
    replayed = play(restored, pool, 150, np.random.default_rng(104))
    assert [(d.model, d.probability, d.scores) for d in original] == [
        (d.model, d.probability, d.scores) for d in replayed
    ]
    assert json.dumps(learner.state()) == json.dumps(restored.state())


@pytest.fixture
def frequent_thread_switches():
    """Switch threads every 10 microseconds instead of 5 ms, so that requests interleave."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.parametrize(("name", "params"), CONFIGS, ids=CONFIG_IDS)
def test_concurrent_updates_are_not_lost(name, params, frequent_thread_switches):
    learner, threads, per_thread = make_learner(name, seed=0, **params), 16, 500
    records: list[list[tuple[str, float, np.ndarray | None]]] = [[] for _ in range(threads)]

    def worker(thread: int) -> None:
        env, reward = np.random.default_rng(thread), (thread % 5) / 4
        for _ in range(per_thread):
            decision = learner.select(["a", "b", "c", "d"], context=context_for(learner, env))
            learner.update(decision, reward)
            records[thread].append((decision.model, reward, decision.context))

    pool = [threading.Thread(target=worker, args=(thread,)) for thread in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    total = threads * per_thread
    assert learner.steps_ == learner.updates_ == total
    applied = [record for thread in records for record in thread]
    for model, arm in learner.arms_.items():
        mine = [(reward, x) for m, reward, x in applied if m == model]
        assert arm["pulls"] == len(mine)
        if name in ("ucb", "thompson", "qlearning") and not params:
            assert arm["n"] == len(mine)
        if name in ("ucb", "thompson") and not params:
            assert arm["s"] == pytest.approx(sum(reward for reward, _ in mine))
        if learner.contextual and not params:  # the regression saw every observation once
            z = np.array([np.append(x, 1.0) for _, x in mine]).reshape(-1, DIM + 1)
            rewards = np.array([reward for reward, _ in mine])
            np.testing.assert_allclose(arm["b"], rewards @ z, atol=1e-9)
            np.testing.assert_allclose(np.linalg.inv(arm["A_inv"]), np.eye(DIM + 1) + z.T @ z, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", LEARNERS.names)
def test_models_join_and_leave_at_run_time(name):
    learner, env = make_learner(name, seed=2, **non_sticky(name)), np.random.default_rng(102)
    play(learner, {"low": 0.2, "mid": 0.5}, 300, env)
    learner.add_model("best")
    learner.add_model("best")  # adding twice changes nothing
    learner.remove_model("low")
    assert learner.models == ["mid", "best"]
    pool = {"mid": 0.5, "best": 0.9}
    decisions = play(learner, pool, 1500, env)
    assert np.mean([d.model == "best" for d in decisions[-300:]]) > 0.7
    with pytest.raises(UnknownModelError):
        learner.update("low", 1.0, context=context_for(learner, env))
    with pytest.raises(UnknownModelError):
        learner.remove_model("low")


FORGETTING = [
    ("ucb", {"discount": 0.98}),
    ("ucb", {"window": 200}),
    ("thompson", {"discount": 0.98}),
    ("thompson", {"window": 200}),
    ("qlearning", {"sticky": False}),  # a constant step size forgets
    ("linucb", {"discount": 0.98}),
    ("lints", {"discount": 0.98}),
]


@pytest.mark.parametrize(("name", "params"), FORGETTING, ids=[f"{n}-{next(iter(p))}" for n, p in FORGETTING])
def test_forgetting_learners_follow_a_drifting_pool(name, params):
    """The best model becomes the worst half-way; learners that forget old rewards switch."""
    learner, env = make_learner(name, seed=0, **params), np.random.default_rng(100)
    play(learner, {"a": 0.8, "b": 0.3}, 1000, env)
    decisions = play(learner, {"a": 0.3, "b": 0.8}, 1000, env)
    assert np.mean([d.model == "b" for d in decisions[-300:]]) > 0.7


# -- PickLLM's rules, exactly ----------------------------------------------------
def test_automaton_linear_reward_inaction():
    learner = make_learner("automaton", learning_rate=0.2, seed=0)
    for model in ["a", "b", "c", "d"]:
        learner.add_model(model)
    assert [learner.arms_[m]["p"] for m in "abcd"] == pytest.approx([0.25] * 4)
    learner.update("b", 0.5)  # p_b += 0.1 * 0.75; others *= 0.9
    assert [learner.arms_[m]["p"] for m in "abcd"] == pytest.approx([0.225, 0.325, 0.225, 0.225])
    learner.update("a", 0.0)  # inaction
    assert learner.arms_["a"]["p"] == pytest.approx(0.225)
    decision = learner.select(["b", "c"])  # renormalised over the candidates
    assert decision.probability == pytest.approx(learner.arms_[decision.model]["p"] / 0.55)
    learner.add_model("e")  # joins with 1/k, the rest scaled by (k - 1)/k
    assert learner.arms_["e"]["p"] == pytest.approx(0.2) and learner.arms_["b"]["p"] == pytest.approx(0.26)
    learner.remove_model("e")
    assert sum(arm["p"] for arm in learner.arms_.values()) == pytest.approx(1.0)


def test_automaton_converges_and_sticks():
    learner = make_learner("automaton", learning_rate=0.3, threshold=0.9, seed=0)
    while learner.converged_model is None:
        decision = learner.select(["a", "b"])
        learner.update(decision, 1.0 if decision.model == "b" else 0.0)
    assert learner.converged_model == "b" and learner.converged_step == learner.steps_
    decision = learner.select(["a", "b"])
    assert decision.model == "b" and decision.probability == 1.0 and decision.converged
    assert decision.probabilities == {"a": 0.0, "b": 1.0}
    assert learner.select(["a"]).model == "a"  # the converged model is not a candidate: learn as usual
    learner.remove_model("b")
    assert learner.converged_model is None


def test_qlearning_epsilon_greedy_probabilities_and_convergence():
    learner = make_learner("qlearning", epsilon=0.3, step_size=0.5, patience=5, seed=0)
    learner.add_model("a")
    learner.add_model("b")
    learner.add_model("c")
    learner.update("a", 0.0)
    learner.update("b", 0.0)  # c keeps its optimistic 1.0: greedy
    assert learner.arms_["a"]["q"] == 0.5
    for _ in range(50):
        decision = learner.select(["a", "b", "c"])
        expected = 1 - 0.3 + 0.3 / 3 if decision.model == "c" else 0.3 / 3
        assert decision.converged or decision.probability == pytest.approx(expected)
    assert learner.converged_model == "c" and learner.converged_step is not None
    exploring = make_learner("qlearning", epsilon=1.0, patience=3, seed=0)  # every choice is random
    for model in ("a", "b", "c"):
        exploring.add_model(model)
    for model, reward in (("a", 0.2), ("b", 0.9), ("c", 0.4)):
        exploring.update(model, reward)  # b leads from now on
    picks = [exploring.select(["a", "b", "c"]).model for _ in range(3)]
    assert picks != ["b"] * 3  # exploration drew other models ...
    assert exploring.converged_model == "b" and exploring.converged_step == 3  # ... and b still led 3 times
    decaying = make_learner("qlearning", epsilon=0.5, epsilon_decay=0.9, epsilon_min=0.05)
    decaying.steps_ = 10
    assert decaying.current_epsilon() == pytest.approx(max(0.05, 0.5 * 0.9**10))


def test_non_sticky_learners_record_convergence_but_keep_exploring():
    learner = make_learner("automaton", learning_rate=0.5, threshold=0.9, sticky=False, seed=0)
    for _ in range(50):
        decision = learner.select(["a", "b"])
        learner.update(decision, 1.0 if decision.model == "b" else 0.0)
    assert learner.converged_model == "b"
    assert not learner.select(["a", "b"]).converged


def test_ucb_tries_every_model_first_then_is_deterministic():
    learner = make_learner("ucb", seed=0)
    first = [learner.select(["a", "b", "c"]) for _ in range(1)]
    assert first[0].probability == pytest.approx(1 / 3)
    assert first[0].probabilities == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    for model in ["a", "b", "c"]:
        learner.update(model, {"a": 0.1, "b": 0.9, "c": 0.5}[model])
    decision = learner.select(["a", "b", "c"])
    assert decision.model == "b" and decision.probability == 1.0


# -- errors ----------------------------------------------------------------------
@pytest.mark.parametrize("name", LEARNERS.names)
def test_bad_input_gets_a_clear_error(name):
    learner, env = make_learner(name, seed=0), np.random.default_rng(100)
    context = context_for(learner, env)
    for candidates in ([], "a", ["a", "a"], ["a", ""], ["a", 3]):
        with pytest.raises(CrossroadsError):
            learner.select(candidates, context=context)
    decision = learner.select(["a", "b"], context=context)
    with pytest.raises(UnknownModelError):
        learner.update("zzz", 1.0, context=context)
    for reward in (float("nan"), float("inf"), "high", None):
        with pytest.raises(CrossroadsError):
            learner.update(decision, reward)
    if learner.reward_range is not None:
        for reward in (-0.1, 1.5):
            with pytest.raises(CrossroadsError, match=r"\[0, 1\]"):
                learner.update(decision, reward)
    else:
        learner.update(decision, 1.5)
    with pytest.raises(CrossroadsError):
        learner.update(42, 1.0)
    other = next(n for n in LEARNERS.names if n != name)
    with pytest.raises(CrossroadsError, match="made by"):
        learner.update(Decision("a", 1.0, other, ("a",)), 1.0)
    with pytest.raises(CrossroadsError, match="state is of"):
        LEARNERS.load(other).from_state(learner.state())
    if learner.contextual:
        with pytest.raises(CrossroadsError, match="context"):
            learner.select(["a", "b"])
        with pytest.raises(CrossroadsError, match="dimensions"):
            learner.select(["a", "b"], context=np.ones(DIM + 1))
        with pytest.raises(CrossroadsError, match="NaN"):
            learner.select(["a", "b"], context=np.full(DIM, np.nan))


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("automaton", {"learning_rate": 0.0}),
        ("automaton", {"learning_rate": 1.5}),
        ("automaton", {"threshold": float("nan")}),
        ("automaton", {"sticky": "yes"}),
        ("qlearning", {"epsilon": -0.1}),
        ("qlearning", {"step_size": 0.0}),
        ("qlearning", {"epsilon_decay": 0.0}),
        ("qlearning", {"patience": 0}),
        ("qlearning", {"initial_q": float("inf")}),
        ("ucb", {"exploration": -1.0}),
        ("ucb", {"discount": 0.0}),
        ("ucb", {"window": 0}),
        ("ucb", {"discount": 0.9, "window": 10}),
        ("thompson", {"prior_alpha": 0.0}),
        ("thompson", {"propensity_draws": 0}),
        ("linucb", {"ridge": 0.0}),
        ("linucb", {"discount": 1.2}),
        ("lints", {"exploration": "a lot"}),
        ("ucb", {"learning_rate": 0.1}),
    ],
)
def test_bad_hyper_parameters_are_refused(name, params):
    with pytest.raises(CrossroadsError):
        make_learner(name, **params)


def test_unknown_learner_name():
    with pytest.raises(CrossroadsError, match="choose one of"):
        make_learner("bandit-9000")


# -- one learner per session, topic or category ---------------------------------------
def test_keyed_learners_learn_per_key_and_round_trip():
    sessions = KeyedLearners("thompson", seed=0)
    env = np.random.default_rng(100)
    best = {"code": "coder", "poetry": "poet"}
    for _ in range(300):
        for topic, model in best.items():
            decision = sessions.select(topic, ["coder", "poet"])
            sessions.update(topic, decision, float(env.random() < (0.9 if decision.model == model else 0.2)))
    assert len(sessions) == 2 and "code" in sessions
    restored = KeyedLearners.from_state(json.loads(json.dumps(sessions.state())))
    for topic, model in best.items():
        assert sessions[topic].select(["coder", "poet"]).model == model
        assert restored[topic].select(["coder", "poet"]).model == model
    with pytest.raises(CrossroadsError, match="select"):
        sessions.update("unseen", "coder", 1.0)
    with pytest.raises(CrossroadsError, match="keys"):
        sessions.select("", ["coder"])


def test_keyed_learners_create_each_key_once_under_concurrency():
    created = []

    def factory() -> Learner:
        created.append(1)
        return make_learner("ucb")

    sessions = KeyedLearners(factory)
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        for _ in range(100):
            sessions.update("s", sessions.select("s", ["a", "b"]), 1.0)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(created) == 1 and sessions["s"].updates_ == 1600
    with pytest.raises(CrossroadsError, match="factory"):
        KeyedLearners.from_state(sessions.state())
    assert KeyedLearners.from_state(sessions.state(), factory=factory)["s"].updates_ == 1600
    with pytest.raises(CrossroadsError):
        KeyedLearners("automaton", learning_rate=7)


def test_docstring_examples_run():
    for module in ["base", "automaton", "qlearning", "ucb", "thompson", "linucb", "lints", "keyed"]:
        result = doctest.testmod(importlib.import_module(f"crossroads.online.{module}"))
        assert result.failed == 0, module
