"""Verifiers and cascades on synthetic queries whose answers are known, and replay cost accounting by hand."""

from __future__ import annotations

import numpy as np
import pytest

from crossroads.errors import CrossroadsError
from crossroads.evaluate.cascade import (
    CascadeRouting,
    FixedCascade,
    next_model,
    replay,
    replay_fixed_sweep,
)
from crossroads.grading.verifiers import (
    AgreementVerifier,
    Answers,
    LearnedVerifier,
    agreement_posterior,
    answer_kinds,
    load_verifier,
)

QUESTION = "Which one?\nA) red\nB) green\nC) blue\nD) black"


def answers_of(rows: list[list[str | None]], prompt: str = QUESTION, category: str = "quiz") -> Answers:
    return Answers.from_responses(rows, [prompt] * len(rows), [category] * len(rows))


# -- answers and the vote -------------------------------------------------------------------------
def test_answer_kinds_tell_choices_numbers_and_code():
    kinds = answer_kinds([["The answer is (B).", "A"], ["so 12 apples.\n#### 12", "She pays $30."],
                          ["```python\ndef f(x):\n    return 2\n```", "def g(): return 1"]], ["mc", "math", "code"])
    assert kinds == {"mc": "choice", "math": "number", "code": "none"}


def test_options_are_counted_from_the_prompt():
    two = answers_of([["A", "B"]], prompt="Who?\nA) Jeffrey\nB) Hunter")
    assert two.options.tolist() == [2.0] and two.codes.tolist() == [[0.0, 1.0]]


def test_one_answer_keeps_its_prior_and_agreement_raises_it():
    answers = answers_of([["B", "B", "C"]])
    prior = np.array([[0.6, 0.7, 0.8]])
    alone = agreement_posterior(answers, prior, np.array([[True, False, False]]))
    assert alone[0, 0] == pytest.approx(0.6) and np.isnan(alone[0, 1])
    both = agreement_posterior(answers, prior, np.array([[True, True, False]]))
    # by hand: L(B) = .6 x .7; each of the 3 unseen letters (.4/3)(.3/3)
    assert both[0, 0] == pytest.approx(0.42 / (0.42 + 3 * (0.4 / 3) * (0.3 / 3)))
    assert both[0, 0] == both[0, 1] > 0.9
    split = agreement_posterior(answers, prior, np.array([[True, False, True]]))
    assert split[0, 0] < 0.6 and split[0, 2] > 0.6  # a disagreeing stronger model lowers the trust


def test_no_extractable_answer_abstains():
    answers = answers_of([["```python\nprint(1)\n```", "```python\nprint(2)\n```"]], prompt="Write code",
                         category="code")
    trust = AgreementVerifier().score(answers, np.array([[0.3, 0.9]]), np.ones((1, 2)), np.array([[True, True]]))
    assert trust.tolist() == [[0.3, 0.9]]


# -- the learned verifier -------------------------------------------------------------------------
def synthetic(n: int = 400, seed: int = 0):
    """Three models answering a 4-option question: cheap 60% right, middle 60%, dear 95%; wrong answers random."""
    rng = np.random.default_rng(seed)
    accuracy = np.array([0.6, 0.6, 0.95])
    truth = rng.integers(0, 4, n)
    right = rng.random((n, 3)) < accuracy
    wrong = (truth[:, None] + rng.integers(1, 4, (n, 3))) % 4
    letters = np.where(right, truth[:, None], wrong)
    rows = [[f"The answer is ({'ABCD'[k]})." for k in row] for row in letters]
    answers = answers_of(rows)
    prior = np.broadcast_to(accuracy, (n, 3)).copy()
    cost = np.broadcast_to([1.0, 1.0, 10.0], (n, 3)).copy()
    return answers, prior, cost, right.astype(float)


def test_learned_verifier_learns_that_agreement_means_right(tmp_path):
    answers, prior, cost, quality = synthetic()
    verifier = LearnedVerifier().fit(answers, prior, cost, quality)
    called = np.zeros_like(quality, dtype=bool)
    called[:, :2] = True
    trust = verifier.score(answers, prior, cost, called)[:, 0]
    agree = answers.codes[:, 0] == answers.codes[:, 1]
    assert trust[agree].mean() > 0.8 and trust[~agree].mean() < 0.45
    assert quality[agree, 0].mean() > 0.85  # the synthetic data says so too
    saved = load_verifier(verifier.save(tmp_path / "verifier.npz"))
    assert isinstance(saved, LearnedVerifier) and saved.alpha == verifier.alpha
    np.testing.assert_array_equal(saved.score(answers, prior, cost, called), verifier.score(answers, prior, cost, called))
    with np.load(tmp_path / "verifier.npz", allow_pickle=False) as data:  # plain arrays and a JSON header
        assert set(data.files) == {"__header__", "mean", "scale", "coef"}


def test_a_file_that_is_not_a_verifier_is_refused(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_text("hello")
    with pytest.raises(CrossroadsError, match="not a crossroads verifier file"):
        load_verifier(bad)


# -- cascades ---------------------------------------------------------------------------------------
def test_a_cascade_stops_at_the_first_model_when_two_cheap_answers_agree():
    answers = answers_of([["A", "A", "B"]])
    prior, cost = np.array([[0.7, 0.7, 0.95]]), np.array([[1.0, 1.0, 20.0]])
    quality, true_cost = np.array([[1.0, 1.0, 0.0]]), np.array([[1.0, 2.0, 30.0]])
    fixed = replay(FixedCascade([0, 1, 2], 0.8), AgreementVerifier(), answers, prior, cost, quality, true_cost)
    assert fixed.order.tolist() == [[0, 1]] and fixed.quality.tolist() == [1.0] and fixed.cost_usd.tolist() == [3.0]
    first = replay(FixedCascade([0, 2], 0.5), AgreementVerifier(), answers, prior, cost, quality, true_cost)
    assert first.called.tolist() == [[True, False, False]] and first.cost_usd.tolist() == [1.0]


def test_a_cascade_escalates_when_the_cheap_answers_disagree():
    answers = answers_of([["A", "C", "B"]])
    prior, cost = np.array([[0.7, 0.7, 0.95]]), np.array([[1.0, 1.0, 20.0]])
    quality, true_cost = np.array([[0.0, 0.0, 1.0]]), np.array([[1.0, 2.0, 30.0]])
    latency = np.array([[0.5, 1.0, 4.0]])
    fixed = replay(FixedCascade([0, 1, 2], 0.8), AgreementVerifier(), answers, prior, cost, quality, true_cost, latency)
    assert fixed.order.tolist() == [[0, 1, 2]] and fixed.answered.tolist() == [2] and fixed.quality.tolist() == [1.0]
    assert fixed.cost_usd.tolist() == [33.0] and fixed.latency_s.tolist() == [5.5]  # every call counted, in sequence
    routing = replay(CascadeRouting(willingness_to_pay=0.02, resolve=0.5), AgreementVerifier(), answers, prior, cost,
                     quality, true_cost, latency)
    assert routing.order[0, 0] == 0 and routing.answered.tolist() == [2] and routing.called[0, 2]


def test_cascade_routing_starts_where_the_router_would_and_stops_on_a_trusted_answer():
    answers = answers_of([["A", "A", "A"], ["A", "B", "C"]])
    prior = np.array([[0.8, 0.7, 0.95], [0.8, 0.7, 0.95]])
    cost = np.array([[1.0, 1.0, 20.0]] * 2)
    policy = CascadeRouting(willingness_to_pay=0.015, resolve=0.5)
    result = replay(policy, AgreementVerifier(), answers, prior, cost, np.ones((2, 3)), cost)
    assert result.order[:, 0].tolist() == [0, 0]  # 0.8 - 0.015 > 0.95 - 0.3
    assert not result.called[0, 2] and result.called[1, 2]  # agreement saved the dear call on the first query only
    assert next_model(policy, prior[0], cost[0], {}) == 0
    assert next_model(policy, prior[0], cost[0], {0: 0.99, 1: 0.99}) is None
    assert next_model(CascadeRouting(0.0, max_cost_usd=5.0), prior[0], cost[0], {0: 0.2}, spent_usd=1.0) == 1


def test_an_opening_above_one_starts_cheaper_than_the_router_and_only_the_first_call():
    prior, cost = np.array([0.6, 0.9]), np.array([1.0, 10.0])
    router_like = CascadeRouting(willingness_to_pay=0.02)
    assert next_model(router_like, prior, cost, {}) == 1  # 0.9 - 0.2 > 0.6 - 0.02: the router's pick
    opening = CascadeRouting(willingness_to_pay=0.02, opening=4.0)
    assert next_model(opening, prior, cost, {}) == 0  # 0.6 - 0.08 > 0.9 - 0.8
    # later calls weigh cost as before: a doubtful cheap answer still escalates
    assert next_model(opening, prior, cost, {0: 0.3}) == next_model(router_like, prior, cost, {0: 0.3}) == 1
    with pytest.raises(CrossroadsError, match="opening >= 1"):
        CascadeRouting(opening=0.5)


def test_calibrated_policies_pick_per_willingness_to_pay_what_pays_on_the_training_queries():
    from crossroads.evaluate.cascade_cv import OPENINGS, calibrated_policies

    # a cheap model right on half the queries (its answers agree with the dear one's exactly then), a dear one
    # always right: starting cheap and escalating on disagreement beats the router's dear pick at moderate prices
    n = 200
    right = np.arange(n) % 2 == 0
    answers = answers_of([["A" if r else "B", "A", "A"] for r in right])
    prior = np.tile([0.5, 0.5, 0.99], (n, 1))
    cost = np.tile([1.0, 1.0, 10.0], (n, 1))
    quality = np.stack([right, right, np.ones(n, dtype=bool)], 1).astype(float)
    args = (AgreementVerifier(), answers, prior, cost, quality, cost, np.zeros((n, 3)))
    grid = np.array([0.0, 0.03])
    policies = [p["all"] for p in calibrated_policies(grid, args, 0.5, None, 3)]
    assert [p.willingness_to_pay for p in policies] == grid.tolist()
    assert policies[1].opening in OPENINGS
    given = calibrated_policies(grid, args, 0.5, None, 3, resolve=0.25, opening=2.0)
    assert [(p["all"].resolve, p["all"].opening) for p in given] == [(0.25, 2.0), (0.25, 2.0)]
    utility = [replay(p, *args).quality.mean() - 0.03 * replay(p, *args).cost_usd.mean()
               for p in (CascadeRouting(0.03, resolve=policies[1].resolve, opening=o) for o in OPENINGS)]
    assert utility[OPENINGS.index(policies[1].opening)] == max(utility)


def test_each_answer_group_gets_the_settings_that_pay_on_its_own_queries():
    from crossroads.evaluate.cascade import answer_groups, replay_by_group
    from crossroads.evaluate.cascade_cv import calibrated_policies

    # two-option questions whose cheap answers agree with each other even when wrong (shared mistakes), and
    # four-option ones where agreement means right: starting cheap and asking a second opinion pays on the
    # second kind only (at 0.08 quality per US$: 0.64 against 0.52 for the dear model alone; 0.38 on the first)
    n = 200
    right = np.arange(n) % 2 == 0
    two = Answers.from_responses([["A" if r else "B", "A" if r else "B", "A"] for r in right],
                                 ["Pick\nA) x\nB) y"] * n, ["pairs"] * n)
    four = Answers.from_responses([["A" if r else "B", "A" if r else "C", "A"] for r in right],
                                  ["Pick\nA) x\nB) y\nC) z\nD) w"] * n, ["quads"] * n)
    answers = Answers(np.vstack([two.codes, four.codes]), np.r_[two.options, four.options], two.kinds + four.kinds,
                      np.vstack([two.length_chars, four.length_chars]), np.vstack([two.hedged, four.hedged]),
                      np.vstack([two.missing, four.missing]))
    groups = answer_groups(answers)
    assert sorted(set(groups)) == ["choice-2", "choice-4"]
    quality = np.tile(np.stack([right, right, np.ones(n, dtype=bool)], 1).astype(float), (2, 1))
    prior = np.tile([0.5, 0.5, 0.99], (2 * n, 1))
    cost = np.tile([1.0, 0.5, 6.0], (2 * n, 1))
    args = (AgreementVerifier(), answers, prior, cost, quality, cost, np.zeros((2 * n, 3)))
    (policies,) = calibrated_policies(np.array([0.08]), args, 0.5, None, 3, groups=groups)
    assert policies["choice-2"].opening == 1.0 and policies["choice-4"].opening > 1.0
    grouped = replay_by_group(policies, groups, *args)
    utility = grouped.quality - 0.08 * grouped.cost_usd
    assert grouped.called[groups == "choice-2", 2].all()  # the dear model at once
    assert utility[groups == "choice-4"].mean() > 0.6 > utility[groups == "choice-2"].mean() > 0.5
    assert answer_groups(answers, min_queries=300).tolist() == ["other"] * (2 * n)


def test_replay_accounting_on_a_small_fixture_by_hand():
    """Two queries, three models; the chain 0 -> 2 with threshold 0.75 (agreement needs two voters, so the
    single answer keeps its prior: 0.8 on query 0 stops, 0.6 on query 1 escalates)."""
    answers = answers_of([["A", "B", "A"], ["C", "C", "D"]])
    prior = np.array([[0.8, 0.5, 0.9], [0.6, 0.5, 0.9]])
    quality = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    true_cost = np.array([[0.001, 0.002, 0.010], [0.003, 0.002, 0.020]])
    latency = np.array([[1.0, 2.0, 3.0], [1.5, 2.0, 4.0]])
    result = replay(FixedCascade([0, 2], 0.75), AgreementVerifier(), answers, prior, true_cost, quality, true_cost,
                    latency)
    assert result.called.tolist() == [[True, False, False], [True, False, True]]
    np.testing.assert_allclose(result.cost_usd, [0.001, 0.003 + 0.020])
    np.testing.assert_allclose(result.latency_s, [1.0, 1.5 + 4.0])
    assert result.quality.tolist() == [1.0, 1.0] and result.calls.tolist() == [1, 2]
    (swept,) = replay_fixed_sweep([0, 2], np.array([0.75]), AgreementVerifier(), answers, prior, true_cost, quality,
                                  true_cost, latency)
    np.testing.assert_array_equal(swept.called, result.called)
    np.testing.assert_allclose(swept.cost_usd, result.cost_usd)


def test_the_threshold_sweep_matches_step_by_step_replay():
    answers, prior, cost, quality = synthetic(200, seed=3)
    verifier = LearnedVerifier().fit(answers, prior, cost, quality)
    thresholds = np.array([0.0, 0.5, 0.9, 1.01])
    swept = replay_fixed_sweep([0, 1, 2], thresholds, verifier, answers, prior, cost, quality, cost)
    for threshold, fast in zip(thresholds, swept):
        slow = replay(FixedCascade([0, 1, 2], threshold), verifier, answers, prior, cost, quality, cost)
        np.testing.assert_array_equal(fast.called, slow.called)
        np.testing.assert_array_equal(fast.quality, slow.quality)
    assert swept[0].calls.max() == 1 and swept[-1].calls.min() == 3


def test_the_cost_cap_limits_every_query():
    """At willingness to pay 0 the dear model (expected 1.5) goes first; the cheap ones (1.0) follow while they fit."""
    answers, prior, _, quality = synthetic(100, seed=1)
    expected = np.broadcast_to([1.0, 1.0, 1.5], prior.shape)
    spent = {}
    for cap in (None, 2.5, 2.0):
        result = replay(CascadeRouting(0.0, resolve=1.0, max_cost_usd=cap), AgreementVerifier(), answers, prior * 0.5,
                        expected, quality, expected)
        assert result.order[:, 0].tolist() == [2] * 100
        spent[cap] = result.cost_usd
    assert spent[None].max() == 3.5 and spent[2.5].max() == 2.5 and spent[2.0].max() == 1.5


def test_bad_cascades_are_refused():
    with pytest.raises(CrossroadsError, match="distinct model columns"):
        FixedCascade([1, 1])
    with pytest.raises(CrossroadsError, match="needs 2 thresholds"):
        FixedCascade([0, 1, 2], [0.5])
    with pytest.raises(CrossroadsError, match="resolve in"):
        CascadeRouting(1.0, resolve=2.0)


def test_a_verifier_that_knows_the_quality_bounds_what_any_verifier_adds():
    from dataclasses import replace

    from crossroads.data.dataset import ModelInfo, RoutingDataset
    from crossroads.evaluate.cascade_cv import evaluate_cascades
    from crossroads.grading.verifiers import Verifier

    class KnowsQuality(Verifier):
        name = "knows-quality"

        def _score(self, answers, prior, expected_cost_usd, called):
            return np.where(called, answers.codes, prior)

    rng = np.random.default_rng(0)
    n = 60
    quality = np.stack([rng.random(n) < 0.5, rng.random(n) < 0.6, np.ones(n, dtype=bool)], 1).astype(float)
    dataset = RoutingDataset(
        query_ids=[f"q{i}" for i in range(n)], prompts=[f"question {i}" for i in range(n)], categories=["quiz"] * n,
        sources=["test"] * n, models=[ModelInfo("a", 0.1, 0.1), ModelInfo("b", 0.2, 0.2), ModelInfo("c", 5, 5)],
        quality=quality, cost_usd=np.tile([1e-4, 2e-4, 5e-3], (n, 1)),
        responses=[["A" if q else "B" for q in row] for row in quality.astype(bool)])
    embeddings = rng.normal(size=(n, 4))
    verifier = KnowsQuality()
    known = replace(Answers.from_dataset(dataset), codes=quality)
    (bound,) = evaluate_cascades(["routing"], dataset, embeddings, router="knn:k=5", verifier=verifier, answers=known,
                                 folds=3)
    (voted,) = evaluate_cascades(["routing"], dataset, embeddings, router="knn:k=5", verifier="agreement", folds=3)
    assert bound.name == "cascade-routing:knows-quality+knn:k=5"
    # knowing which answer is right, it stops at the first right one: the best model's quality for less
    perfect = bound.quality.mean(1) == 1.0
    assert perfect.any() and bound.cost_usd.mean(1)[perfect].min() < 0.7 * dataset.cost_usd[:, 2].mean()
    assert bound.entry(dataset).metrics["aiq"] >= voted.entry(dataset).metrics["aiq"]
