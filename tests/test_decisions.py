"""Decision rules: hand-worked cases and a plain-Python reference on random data."""

from __future__ import annotations

import numpy as np
import pytest

from crossroads.errors import CrossroadsError
from crossroads.objective import LinearReward, Objective, PoolScale
from crossroads.objective.rules import (
    CheapestWithin,
    MaxReward,
    MaxUtility,
    calibrate_threshold,
    decide,
    make_rule,
    parse_routellm_model,
    route_strong_weak,
)


def choose_max_utility(predicted_quality, expected_cost_usd, willingness_to_pay, **options):
    return decide(predicted_quality, expected_cost_usd, MaxUtility(willingness_to_pay), **options).chosen


def choose_cheapest_within(predicted_quality, expected_cost_usd, tolerance, **options):
    return decide(predicted_quality, expected_cost_usd, CheapestWithin(tolerance), **options).chosen


def cost_cap_unmet(predicted_quality, expected_cost_usd, max_cost_usd, allowed=None):
    return decide(predicted_quality, expected_cost_usd, MaxUtility(0.0), allowed=allowed,
                  max_cost_usd=max_cost_usd).cap_unmet


# -- strong / weak ---------------------------------------------------------------
def test_route_strong_weak_sends_equal_probability_to_strong():
    p = np.array([0.1, 0.5, 0.49999, 0.9])
    assert route_strong_weak(p, 0.5).tolist() == [False, True, False, True]
    assert route_strong_weak(p, 0.0).all()
    assert not route_strong_weak(p, 0.95).any()


def test_route_strong_weak_rejects_nan():
    with pytest.raises(CrossroadsError, match="NaN"):
        route_strong_weak(np.array([0.2, np.nan]), 0.5)
    with pytest.raises(CrossroadsError, match="threshold"):
        route_strong_weak(np.array([0.2]), float("nan"))


def test_calibrate_threshold_by_hand():
    # 5 probabilities, 40% strong: quantile 0.6 at position 0.6 * 4 = 2.4 -> 0.3 + 0.4 * (0.4 - 0.3)
    p = np.array([0.5, 0.1, 0.4, 0.2, 0.3])
    threshold = calibrate_threshold(p, 0.4)
    assert threshold == pytest.approx(0.34)
    assert route_strong_weak(p, threshold).tolist() == [True, False, True, False, False]


@pytest.mark.parametrize("n", [7, 100, 1001])
def test_calibrated_share_is_within_one_query_of_target(n):
    rng = np.random.default_rng(n)
    p = rng.random(n)  # untied
    for target in np.linspace(0.0, 1.0, 41):
        share = route_strong_weak(p, calibrate_threshold(p, target)).mean()
        assert abs(share - target) <= 1.0 / n + 1e-12


def test_calibrate_threshold_matches_pandas_quantile():
    pd = pytest.importorskip("pandas")
    p = np.random.default_rng(3).random(503)
    for share in (0.1, 0.25, 0.5, 0.73):
        assert calibrate_threshold(p, share) == pytest.approx(pd.Series(p).quantile(q=1 - share), rel=1e-15)


@pytest.mark.parametrize("share", [-0.1, 1.5, float("nan")])
def test_calibrate_threshold_rejects_share_outside_unit_interval(share):
    with pytest.raises(CrossroadsError, match="strong_share"):
        calibrate_threshold(np.array([0.2, 0.4]), share)


def test_calibrate_threshold_rejects_empty():
    with pytest.raises(CrossroadsError, match="non-empty"):
        calibrate_threshold(np.array([]), 0.5)


@pytest.mark.parametrize(
    ("name", "router", "threshold"),
    [
        ("router-sw_ranking-0.2143", "sw_ranking", 0.2143),
        ("router-mf-0.11593", "mf", 0.11593),
        ("router-causal_llm-0.5", "causal_llm", 0.5),
        ("router-bert-1", "bert", 1.0),
        ("router-mf-1e-05", "mf", 1e-05),
    ],
)
def test_parse_routellm_model(name, router, threshold):
    assert parse_routellm_model(name) == (router, threshold)


@pytest.mark.parametrize(
    "name", ["mf-0.1", "router-mf", "router--0.1", "router-mf-", "router-mf-abc", "router-sw-ranking-0.2", "gpt-4o"]
)
def test_parse_routellm_model_malformed(name):
    with pytest.raises(CrossroadsError, match="router-<router>-<threshold>"):
        parse_routellm_model(name)


@pytest.mark.parametrize("name", ["router-mf-1.5", "router-mf--0.2", "router-mf-nan", "router-mf-inf"])
def test_parse_routellm_model_threshold_out_of_range(name):
    with pytest.raises(CrossroadsError, match=r"\[0, 1\]"):
        parse_routellm_model(name)


# -- any number of models ------------------------------------------------------------
QUALITY = np.array([[0.5, 0.7, 0.9], [0.8, 0.8, 0.8], [0.9, 0.6, 0.95]])
COST = np.array([1.0, 2.0, 4.0])


def test_choose_max_utility_by_hand():
    # utilities at wtp 0.1: row 0 [0.4, 0.5, 0.5] -> tie between 1 and 2, cheaper 1 wins
    # (in floating point 0.7 - 0.2 is 0.49999999999999994: a tie up to rounding still counts)
    #                        row 1 [0.7, 0.6, 0.4] -> 0; row 2 [0.8, 0.4, 0.55] -> 0
    assert choose_max_utility(QUALITY, COST, 0.1).tolist() == [1, 0, 0]
    # wtp 0: best prediction, ties (row 1) to the cheapest
    assert choose_max_utility(QUALITY, COST, 0.0).tolist() == [2, 0, 2]
    # huge wtp: always the cheapest
    assert choose_max_utility(QUALITY, COST, 1e6).tolist() == [0, 0, 0]


def test_choose_max_utility_ties_on_cost_go_to_first_column():
    quality = np.array([[0.5, 0.9, 0.9]])
    cost = np.array([1.0, 2.0, 2.0])
    assert choose_max_utility(quality, cost, 0.0).tolist() == [1]
    assert choose_max_utility(quality, cost, 0.0, allowed=np.array([True, False, True])).tolist() == [2]


def test_choose_max_utility_per_query_wtp_and_allowed():
    wtp = np.array([0.0, 0.0, 1e6])
    allowed = np.array([[True, True, False], [False, True, True], [False, True, True]])
    # row 0: best of {0, 1} is 1; row 1: 1 and 2 tie at 0.8, 1 is cheaper; row 2: cheapest allowed is 1
    assert choose_max_utility(QUALITY, COST, wtp, allowed=allowed).tolist() == [1, 1, 1]


def test_choose_max_utility_cost_cap_and_fallback():
    cap = np.array([2.0, 2.0, 0.5])
    # rows 0, 1 choose among models 0, 1; row 2 has nothing under 0.5 -> cheapest allowed (0)
    assert choose_max_utility(QUALITY, COST, 0.0, max_cost_usd=cap).tolist() == [1, 0, 0]
    assert cost_cap_unmet(QUALITY, COST, cap).tolist() == [False, False, True]
    allowed = np.array([False, True, True])
    assert choose_max_utility(QUALITY, COST, 0.0, allowed=allowed, max_cost_usd=cap).tolist() == [1, 1, 1]
    with pytest.raises(CrossroadsError, match="no allowed model fits under max_cost_usd for 1 queries"):
        choose_max_utility(QUALITY, COST, 0.0, max_cost_usd=cap, if_none_within_cap="raise")


def test_fallback_among_equally_cheap_models_takes_best_prediction():
    quality = np.array([[0.2, 0.6, 0.4, 0.9]])
    cost = np.array([1.0, 1.0, 1.0, 3.0])
    assert choose_max_utility(quality, cost, 0.0, max_cost_usd=0.1).tolist() == [1]
    assert choose_cheapest_within(quality, cost, 0.0, max_cost_usd=0.1).tolist() == [1]


def test_choose_cheapest_within_by_hand():
    # tolerance 0.15: row 0 best 0.9 -> {1 (0.7)? no, 0.7 < 0.75; 2} -> 2
    #                 row 1 all equal -> cheapest 0; row 2 best 0.95 -> {0, 2} -> 0
    assert choose_cheapest_within(QUALITY, COST, 0.15).tolist() == [2, 0, 0]
    assert choose_cheapest_within(QUALITY, COST, 0.2).tolist() == [1, 0, 0]
    assert choose_cheapest_within(QUALITY, COST, 1.0).tolist() == [0, 0, 0]
    # tolerance 0: the best prediction, cheapest among equals
    assert choose_cheapest_within(QUALITY, COST, 0.0).tolist() == [2, 0, 2]


def test_choose_cheapest_within_cost_ties_prefer_better_prediction():
    quality = np.array([[0.8, 0.85, 0.9]])
    cost = np.array([2.0, 2.0, 5.0])
    assert choose_cheapest_within(quality, cost, 0.1).tolist() == [1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"willingness_to_pay": -1.0}, "willingness_to_pay must be finite and >= 0"),
        ({"willingness_to_pay": float("inf")}, "willingness_to_pay must be finite"),
        ({"willingness_to_pay": np.ones(2)}, "one value per query"),
        ({"expected_cost_usd": np.ones(2)}, r"expected cost must have shape \(3,\) or \(3, 3\)"),
        ({"expected_cost_usd": -COST}, ">= 0 US\\$"),
        ({"allowed": np.array([False, False, False])}, "no model is allowed for 3 of 3 queries"),
        ({"allowed": np.array([[True] * 3, [False] * 3, [True] * 3])}, "first: query 1"),
        ({"allowed": np.array([1, 0, 1])}, "boolean mask"),
        ({"predicted_quality": QUALITY[0]}, r"quality\[None, :\]"),
        ({"predicted_quality": np.where(np.eye(3, dtype=bool), np.nan, QUALITY)}, "NaN"),
        ({"max_cost_usd": -1.0}, "max_cost_usd must be >= 0"),
        ({"if_none_within_cap": "skip"}, "if_none_within_cap"),
    ],
)
def test_choose_max_utility_validation(kwargs, message):
    arguments = {"predicted_quality": QUALITY, "expected_cost_usd": COST, "willingness_to_pay": 0.5} | kwargs
    with pytest.raises(CrossroadsError, match=message):
        choose_max_utility(**arguments)


@pytest.mark.parametrize("tolerance", [-0.01, float("nan"), float("inf"), "wide"])
def test_choose_cheapest_within_rejects_bad_tolerance(tolerance):
    with pytest.raises(CrossroadsError, match="tolerance"):
        choose_cheapest_within(QUALITY, COST, tolerance)


# -- reference implementation (one query at a time) -----------------------------------------
def _competing(cost_row, allowed_row, cap):
    models = [j for j in range(len(cost_row)) if allowed_row[j] and (cap is None or cost_row[j] <= cap)]
    if not models:
        cheapest = min(cost_row[j] for j in range(len(cost_row)) if allowed_row[j])
        models = [j for j in range(len(cost_row)) if allowed_row[j] and cost_row[j] == cheapest]
    return models


def _reference_max_utility(quality, cost, wtp, allowed, cap):
    chosen = []
    for i in range(len(quality)):
        models = _competing(cost[i], allowed[i], None if cap is None else cap[i])
        utility = {j: quality[i, j] - wtp * cost[i, j] for j in models}
        best = max(utility.values())
        chosen.append(min((cost[i, j], j) for j in models if utility[j] == best)[1])
    return chosen


def _reference_cheapest_within(quality, cost, tolerance, allowed, cap):
    chosen = []
    for i in range(len(quality)):
        models = _competing(cost[i], allowed[i], None if cap is None else cap[i])
        best = max(quality[i, j] for j in models)
        close = [j for j in models if quality[i, j] >= best - tolerance]
        chosen.append(min((cost[i, j], -quality[i, j], j) for j in close)[2])
    return chosen


def tied_data(seed: int, n: int, m: int):
    """Random predictions, costs, allowed masks (at least one model per query) and caps.

    Dyadic values make ties exact, so tie-breaking is exercised.
    """
    rng = np.random.default_rng(seed)
    quality = rng.integers(0, 5, (n, m)) / 4
    cost = rng.integers(1, 5, (n, m)) / 8
    allowed = rng.random((n, m)) < 0.7
    allowed[np.arange(n), rng.integers(0, m, n)] = True
    return quality, cost, allowed, rng.integers(0, 5, n) / 8


@pytest.mark.parametrize("seed", range(4))
def test_choices_match_reference_on_random_tied_data(seed):
    n, m = 300, 6
    quality, cost, allowed, cap = tied_data(seed, n, m)
    for wtp in (0.0, 0.5, 2.0, 16.0):
        for use_cap in (None, cap):
            got = choose_max_utility(quality, cost, wtp, allowed=allowed, max_cost_usd=use_cap)
            assert got.tolist() == _reference_max_utility(quality, cost, wtp, allowed, use_cap)
    for tolerance in (0.0, 0.25, 0.5):
        got = choose_cheapest_within(quality, cost, tolerance, allowed=allowed, max_cost_usd=cap)
        assert got.tolist() == _reference_cheapest_within(quality, cost, tolerance, allowed, cap)
    unmet = [not any(allowed[i, j] and cost[i, j] <= cap[i] for j in range(m)) for i in range(n)]
    assert cost_cap_unmet(quality, cost, cap, allowed=allowed).tolist() == unmet


@pytest.mark.parametrize("seed", range(3))
def test_the_ranking_starts_with_the_choice_and_orders_candidates_before_the_rest(seed):
    m = 5
    quality, cost, allowed, _ = tied_data(seed, 200, m)
    for rule in (MaxUtility(0.5), CheapestWithin(0.25), MaxReward(Objective(quality=1, cost=0.5))):
        choices = decide(quality, cost, rule, allowed=allowed)
        assert (choices.ranking[:, 0] == choices.chosen).all(), rule
        assert all(sorted(row) == list(range(m)) for row in choices.ranking.tolist())
        in_front = np.take_along_axis(allowed, choices.ranking, axis=1)
        assert (np.sort(in_front, axis=1)[:, ::-1] == in_front).all()  # every candidate before every other model


def test_max_reward_is_the_best_linear_reward_with_cost_scaled_over_each_querys_candidates():
    rng = np.random.default_rng(1)
    quality, cost, latency = rng.random((50, 4)), rng.random((50, 4)) * 0.01, rng.random((50, 4)) * 5
    objective = Objective(quality=1, cost=0.7, latency=0.3)
    ranking = decide(quality, cost, MaxReward(objective), expected_latency_s=latency).ranking
    for i in range(50):
        scale = PoolScale.from_observed(cost[i], latency[i])
        reward = LinearReward(objective, scale)(quality[i], cost[i], latency[i])
        assert ranking[i].tolist() == sorted(range(4), key=lambda j: (-reward[j], cost[i, j], j))


def test_max_reward_takes_any_reward_and_needs_latency_when_it_weighs_it():
    quality = np.array([[0.9, 0.5]])
    cost = np.array([0.02, 0.001])
    assert decide(quality, cost, MaxReward(Objective(quality=1))).chosen.tolist() == [0]
    assert decide(quality, cost, MaxReward(Objective(quality=1, cost=1))).chosen.tolist() == [1]
    per_dollar = LinearReward(Objective(quality=1, cost=0.1), PoolScale(0.0, 1.0))  # a fixed, wide scale
    assert decide(quality, cost, MaxReward(per_dollar)).chosen.tolist() == [0]
    with pytest.raises(CrossroadsError, match="weighs latency"):
        decide(quality, cost, MaxReward(Objective(quality=1, latency=1)))


def test_rules_are_named_by_specs():
    assert make_rule("within:tolerance=0.02", Objective()) == CheapestWithin(0.02)
    assert make_rule("utility:willingness_to_pay=100", Objective()) == MaxUtility(100.0)
    assert make_rule("reward", Objective(cost=2)) == MaxReward(Objective(cost=2))
    with pytest.raises(CrossroadsError, match=r"unknown decision rule 'cheapest'; choose one of: reward \("):
        make_rule("cheapest", Objective())
    with pytest.raises(CrossroadsError, match="within.*no option 'tol'; its options: tolerance"):
        make_rule("within:tol=0.1", Objective())
    with pytest.raises(CrossroadsError, match="tolerance='tight' is not a number"):
        make_rule("within:tolerance=tight", Objective())
