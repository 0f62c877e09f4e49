"""Off-policy estimators: hand-computed cases, input checks, and unbiasedness on synthetic and real logs."""

from __future__ import annotations

import numpy as np
import pytest

from crossroads.errors import CrossroadsError
from crossroads.evaluate.off_policy import (
    doubly_robust,
    fixed_policy,
    greedy_policy,
    ips,
    mean_reward_model,
    replay_log,
    snips,
    uniform_policy,
)
from crossroads.online import make_learner

# A three-request log over two models, worked by hand in the comments of each test.
ACTIONS = np.array([0, 1, 1])
PROPENSITIES = np.array([0.5, 0.25, 0.5])
REWARDS = np.array([1.0, 0.4, 0.8])
TARGET = np.array([[0.2, 0.8], [0.6, 0.4], [0.0, 1.0]])  # weights 0.4, 1.6, 2.0

REAL_MODELS = ["gpt-4-1106-preview", "zero-one-ai/Yi-34B-Chat", "mistralai/mixtral-8x7b-chat", "gpt-3.5-turbo-1106"]


def test_ips_by_hand():
    assert ips(ACTIONS, PROPENSITIES, REWARDS, TARGET) == pytest.approx((0.4 * 1.0 + 1.6 * 0.4 + 2.0 * 0.8) / 3)


def test_snips_by_hand():
    assert snips(ACTIONS, PROPENSITIES, REWARDS, TARGET) == pytest.approx(2.64 / 4.0)


def test_mean_reward_model_and_doubly_robust_by_hand():
    rhat = mean_reward_model(ACTIONS, REWARDS, 2)
    assert rhat == pytest.approx([1.0, 0.6])
    # direct terms 0.68, 0.84, 0.6; IPS residual terms 0, 1.6 * -0.2, 2.0 * 0.2
    expected = (0.68 + (0.84 - 0.32) + (0.6 + 0.4)) / 3
    assert doubly_robust(ACTIONS, PROPENSITIES, REWARDS, TARGET, rhat) == pytest.approx(expected)
    assert doubly_robust(ACTIONS, PROPENSITIES, REWARDS, TARGET, np.tile(rhat, (3, 1))) == pytest.approx(expected)


def test_mean_reward_model_fills_unseen_models_with_the_overall_mean():
    assert mean_reward_model([0, 0], [1.0, 0.0], 3) == pytest.approx([0.5, 0.5, 0.5])


def test_policy_builders():
    assert uniform_policy(2, 4) == pytest.approx(np.full((2, 4), 0.25))
    assert fixed_policy(2, 3, 1).tolist() == [[0, 1, 0], [0, 1, 0]]
    assert greedy_policy([[0.1, 0.9], [0.5, 0.5], [np.nan, 0.0]]).tolist() == [[0, 1], [0.5, 0.5], [0, 1]]
    with pytest.raises(CrossroadsError, match="j must be"):
        fixed_policy(2, 3, 3)
    with pytest.raises(CrossroadsError, match="all NaN"):
        greedy_policy([[np.nan, np.nan]])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"propensities": [0.5, 0.0, 0.5]}, r"propensities must be in \(0, 1\]"),
        ({"propensities": [0.5, 1.2, 0.5]}, r"propensities must be in \(0, 1\]"),
        ({"propensities": [0.5, np.nan, 0.5]}, r"propensities must be in \(0, 1\]"),
        ({"rewards": [1.0, np.nan, 0.0]}, "rewards contain NaN"),
        ({"rewards": [1.0, 0.0]}, r"rewards must have shape \(3,\)"),
        ({"actions": [0, 2, 1]}, r"model indices in \[0, 2\)"),
        ({"actions": [0, 0.5, np.nan]}, "integer model indices"),
        ({"target_probabilities": [[0.5, 0.5]] * 2}, r"actions must have shape \(2,\)"),
        ({"target_probabilities": [[0.5, 0.6]] * 3}, "sum to 1"),
        ({"target_probabilities": [[np.nan, 1.0]] * 3}, "target_probabilities contain NaN"),
    ],
)
def test_bad_logs_are_refused(change, message):
    log = {"actions": ACTIONS, "propensities": PROPENSITIES, "rewards": REWARDS, "target_probabilities": TARGET}
    log.update(change)
    for estimator in (ips, snips):
        with pytest.raises(CrossroadsError, match=message):
            estimator(**log)
    with pytest.raises(CrossroadsError, match=message):
        doubly_robust(**log, reward_estimates=np.zeros(2))


def test_doubly_robust_checks_the_reward_model():
    with pytest.raises(CrossroadsError, match="reward_estimates must have shape"):
        doubly_robust(ACTIONS, PROPENSITIES, REWARDS, TARGET, np.zeros(3))
    with pytest.raises(CrossroadsError, match="NaN"):
        doubly_robust(ACTIONS, PROPENSITIES, REWARDS, TARGET, [0.0, np.nan])


def test_replay_log_records_the_learners_propensities():
    rewards = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    log = replay_log(rewards, make_learner("automaton", learning_rate=0.5, seed=0), np.random.default_rng(0), passes=2)
    assert len(log) == 6 and sorted(log.rows.tolist()) == [0, 0, 1, 1, 2, 2]
    assert log.rewards.tolist() == rewards[log.rows, log.actions].tolist()
    assert log.propensities[0] == 0.5 and ((log.propensities > 0) & (log.propensities <= 1)).all()
    uniform = replay_log(rewards, None, np.random.default_rng(0))
    assert (uniform.propensities == 0.5).all()
    with pytest.raises(CrossroadsError, match="NaN"):
        replay_log([[np.nan, 1.0]], None, np.random.default_rng(0))


def _estimates(log, target, m):
    rhat = mean_reward_model(log.actions, log.rewards, m)
    return {
        "ips": ips(log.actions, log.propensities, log.rewards, target),
        "snips": snips(log.actions, log.propensities, log.rewards, target),
        "dr": doubly_robust(log.actions, log.propensities, log.rewards, target, rhat),
    }


def _assert_close(estimates, truth, tolerance=0.10):
    for name, value in estimates.items():
        assert abs(value - truth) <= tolerance * abs(truth), f"{name} = {value:.4f}, true value {truth:.4f}"


def test_unbiased_on_a_synthetic_bernoulli_bandit():
    rng = np.random.default_rng(7)
    means = np.array([0.2, 0.5, 0.7, 0.4])
    rewards = (rng.random((20_000, 4)) < means).astype(float)
    log = replay_log(rewards, None, rng)
    target = fixed_policy(len(log), 4, 2)
    truth = rewards[log.rows, 2].mean()  # the target's value replayed on the same rows
    _assert_close(_estimates(log, target, 4), truth)


def _real_quality(real_data):
    from crossroads.data.importers import load_dataset

    if not (real_data / "routerbench").is_dir():
        pytest.skip(f"routerbench data not found at {(real_data / 'routerbench').resolve()}")
    dataset = load_dataset(f"routerbench:{real_data / 'routerbench'}").select_models(REAL_MODELS).complete_rows()
    return dataset


def _rule_scores(dataset):
    """A simple cost-aware rule: mean quality on the query's category minus 100 x mean cost in USD.

    On these four models it sends mbpp to gpt-3.5 and the rest to Yi-34B: a mixed policy.
    """
    categories = np.array(dataset.categories)
    scores = np.empty_like(dataset.quality)
    for category in set(dataset.categories):
        rows = categories == category
        scores[rows] = dataset.quality[rows].mean(axis=0) - 100.0 * dataset.cost_usd[rows].mean(axis=0)
    return scores


@pytest.mark.parametrize("logging", ["uniform", "epsilon_greedy"])
def test_unbiased_on_real_routerbench_logs(real_data, logging):
    dataset = _real_quality(real_data)
    quality, m = dataset.quality, dataset.n_models
    passes = int(np.ceil(10_000 / dataset.n_queries))
    if logging == "uniform":
        learner = None
    else:  # not sticky: a converged session would give the other models probability 0
        learner = make_learner("qlearning", epsilon=0.2, sticky=False, seed=0)
    log = replay_log(quality, learner, np.random.default_rng(1), passes=passes, models=dataset.model_names)
    assert len(log) >= 10_000
    yi = dataset.model_index("zero-one-ai/Yi-34B-Chat")
    greedy = greedy_policy(_rule_scores(dataset))
    assert len(set(greedy.argmax(axis=1).tolist())) == 2  # not a fixed policy in disguise
    for target_rows in (fixed_policy(dataset.n_queries, m, yi), greedy):
        target = target_rows[log.rows]
        truth = float(np.mean(np.sum(target * quality[log.rows], axis=1)))
        _assert_close(_estimates(log, target, m), truth)
