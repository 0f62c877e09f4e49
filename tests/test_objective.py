"""Objectives and rewards: weights, parsing, pool scaling, the linear, PickLLM and callable forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crossroads.errors import CrossroadsError, UnknownModelError
from crossroads.objective import (
    CallableReward,
    LinearReward,
    Objective,
    PickLLMReward,
    PoolScale,
    make_reward,
    parse_objective,
)

SCALE = PoolScale(cost_usd_min=0.001, cost_usd_max=0.021, latency_s_min=0.5, latency_s_max=4.5)


# -- Objective and parse_objective -----------------------------------------------------
def test_objective_defaults_and_round_trip():
    assert Objective() == Objective(quality=1.0, cost=0.0, latency=0.0)
    objective = Objective(quality=1, cost=0.5, latency=0.2)
    assert str(objective) == "quality=1,cost=0.5,latency=0.2"
    assert parse_objective(str(objective)) == objective
    assert objective.total == pytest.approx(1.7)


@pytest.mark.parametrize(
    "weights, message",
    [
        ({"quality": 1, "cost": -0.5}, "cost=-0.5 is negative"),
        ({"quality": -1}, "quality=-1 is negative"),
        ({"quality": 0, "cost": 0, "latency": 0}, "all zero"),
        ({"quality": math.nan}, "finite"),
        ({"quality": math.inf}, "finite"),
        ({"quality": "1"}, "must be a number"),
        ({"quality": True}, "must be a number"),
    ],
)
def test_bad_objectives_are_refused(weights, message):
    with pytest.raises(CrossroadsError, match=message):
        Objective(**weights)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("quality=1,cost=0.5,latency=0.2", Objective(1, 0.5, 0.2)),
        (" Latency = 2 , QUALITY=1 ", Objective(1, 0, 2)),
        ("cost=1", Objective(0, 1, 0)),
        ("quality=1e0,cost=5e-1", Objective(1, 0.5, 0)),
    ],
)
def test_parse_objective(text, expected):
    assert parse_objective(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("quality", "is not name=value"),
        ("quality=", "is not name=value"),
        ("quality=1,,cost=1", "is not name=value"),
        ("quality=high", "'high' is not a number"),
        ("speed=1", "unknown weight 'speed'; the weights are quality, cost, latency"),
        ("quality=1,quality=2", "quality is given twice"),
        ("quality=1,cost=-1", "negative"),
        ("quality=0,cost=0", "all zero"),
        ("quality=nan", "finite"),
    ],
)
def test_parse_objective_errors_say_what_is_wrong(text, message):
    with pytest.raises(CrossroadsError, match=message):
        parse_objective(text)


def test_parse_objective_reads_a_mapping_with_the_objectives_defaults():
    assert parse_objective({"cost": 0.5}) == Objective(quality=1, cost=0.5)
    assert parse_objective({"Quality": 2, "latency": 1}) == Objective(2, 0, 1)
    with pytest.raises(CrossroadsError, match="unknown weight 'speed'; the weights are quality, cost, latency"):
        parse_objective({"speed": 1})
    with pytest.raises(CrossroadsError, match="cost must be a number, got 'cheap'"):
        parse_objective({"cost": "cheap"})


# -- PoolScale -------------------------------------------------------------------------
def test_pool_scale_from_models_restricts_to_the_pool():
    costs = {"small": 0.001, "medium": 0.004, "large": 0.03}
    latencies = {"small": 0.4, "medium": 1.0, "large": 3.0}
    assert PoolScale.from_models(costs, latencies) == PoolScale(0.001, 0.03, 0.4, 3.0)
    assert PoolScale.from_models(costs, models=["small", "medium"]) == PoolScale(0.001, 0.004)


def test_pool_scale_errors_for_unknown_model_and_empty_pool():
    with pytest.raises(UnknownModelError, match="unknown model 'huge'; the pool has: small, large"):
        PoolScale.from_models({"small": 0.001, "large": 0.03}, models=["small", "huge"])
    with pytest.raises(UnknownModelError, match="'large'"):
        PoolScale.from_models({"small": 0.001, "large": 0.03}, {"small": 0.5})
    with pytest.raises(CrossroadsError, match="pool is empty"):
        PoolScale.from_models({})
    with pytest.raises(CrossroadsError, match="pool is empty"):
        PoolScale.from_models({"small": 0.001}, models=[])
    with pytest.raises(CrossroadsError, match="no observed cost_usd values"):
        PoolScale.from_observed([math.nan, math.nan])
    with pytest.raises(CrossroadsError, match="finite and >= 0"):
        PoolScale.from_observed([0.01, -0.02])
    with pytest.raises(CrossroadsError, match="above"):
        PoolScale(0.02, 0.01)
    with pytest.raises(CrossroadsError, match="both latency_s_min and latency_s_max"):
        PoolScale(0.0, 0.01, latency_s_min=1.0)


def test_pool_scale_from_observed_ignores_missing_values():
    scale = PoolScale.from_observed(np.array([[0.01, np.nan], [0.03, 0.02]]), [2.0, np.nan, 1.0])
    assert scale == PoolScale(0.01, 0.03, 1.0, 2.0)


def test_empty_range_scales_to_zero_at_the_price_and_one_above():
    scale = PoolScale(0.01, 0.01)
    assert scale.scaled_cost(0.01) == 0.0
    assert scale.scaled_cost(0.005) == 0.0
    assert scale.scaled_cost(0.02) == 1.0


# -- LinearReward ----------------------------------------------------------------------
def test_linear_reward_hand_computed():
    objective = Objective(quality=1, cost=0.5, latency=0.2)
    # cost 0.006 is 1/4 of the way from 0.001 to 0.021; latency 1.5 s is 1/4 of the way from 0.5 to 4.5
    expected = (1 * 0.8 + 0.5 * (1 - 0.25) + 0.2 * (1 - 0.25)) / 1.7
    assert LinearReward(objective, SCALE)(0.8, 0.006, 1.5) == pytest.approx(expected)
    assert LinearReward(objective, SCALE)(0.8, 0.006, 1.5) == pytest.approx(expected)
    # The pool's cheapest and fastest model with a perfect answer gets 1; the dearest, slowest wrong one 0.
    assert LinearReward(objective, SCALE)(1.0, 0.001, 0.5) == 1.0
    assert LinearReward(objective, SCALE)(0.0, 0.021, 4.5) == 0.0
    # Outside the pool's range the scaled cost is clipped.
    assert LinearReward(objective, SCALE)(0.0, 1.0, 4.5) == 0.0


def test_quality_only_objective_needs_no_scale_and_gives_the_quality():
    assert LinearReward(Objective(quality=3))(0.7) == pytest.approx(0.7)
    assert make_reward("quality=1")(np.array([0.0, 0.25, 1.0])).tolist() == [0.0, 0.25, 1.0]


def test_linear_reward_lies_in_unit_interval_and_is_monotone():
    rng = np.random.default_rng(0)
    reward = LinearReward(Objective(quality=1, cost=0.7, latency=0.3), SCALE)
    quality = rng.uniform(0, 1, 2000)
    cost = rng.uniform(0, 0.05, 2000)  # partly outside the pool's range
    latency = rng.uniform(0.1, 8, 2000)
    values = reward(quality, cost, latency)
    assert values.shape == (2000,)
    assert ((values >= 0) & (values <= 1)).all()
    grid = np.linspace(0, 1, 11)
    assert np.all(np.diff(reward(grid, 0.01, 2.0)) > 0)  # better answers, more reward
    assert np.all(np.diff(reward(0.5, np.linspace(0.0, 0.03, 31), 2.0)) <= 0)  # dearer, less
    assert reward(0.5, 0.005, 2.0) > reward(0.5, 0.015, 2.0)
    assert np.all(np.diff(reward(0.5, 0.01, np.linspace(0.1, 6, 30))) <= 0)  # slower, less
    assert reward(0.5, 0.01, 1.0) > reward(0.5, 0.01, 3.0)


def test_linear_reward_keeps_missing_quality_missing():
    reward = LinearReward(Objective(quality=1, cost=1), SCALE)
    values = reward(np.array([1.0, np.nan]), np.array([0.001, 0.001]))
    assert values[0] == 1.0 and np.isnan(values[1])


def test_linear_reward_errors():
    with pytest.raises(CrossroadsError, match="give the pool's range as a PoolScale"):
        LinearReward(Objective(quality=1, cost=1))
    with pytest.raises(CrossroadsError, match="pool's latency range is unknown"):
        LinearReward(Objective(quality=1, latency=1), PoolScale(0.0, 0.02))(1.0, 0.01, 2.0)
    with pytest.raises(CrossroadsError, match=r"weighs latency: pass latency_s \(seconds\)"):
        LinearReward(Objective(quality=1, latency=1), SCALE)(1.0, 0.01)
    with pytest.raises(CrossroadsError, match=r"weighs cost: pass cost_usd \(US\$ per query\)"):
        LinearReward(Objective(quality=1, cost=1), SCALE)(1.0)
    with pytest.raises(CrossroadsError, match=r"quality must lie in \[0, 1\]"):
        LinearReward(Objective())(7.0)
    with pytest.raises(CrossroadsError, match="cost_usd must be finite and >= 0"):
        LinearReward(Objective(quality=1, cost=1), SCALE)(1.0, -0.01)
    with pytest.raises(CrossroadsError, match="needs an Objective"):
        LinearReward("quality=1")  # type: ignore[arg-type]


# -- PickLLMReward ---------------------------------------------------------------------
def test_pickllm_reward_hand_computed():
    objective = Objective(quality=1, cost=10, latency=0.5)
    # R = w_a * a - w_c * c - w_l * t_scaling * log10(l)
    assert PickLLMReward(objective)(1.0, 0.002, 10.0) == pytest.approx(1 - 10 * 0.002 - 0.5 * 1.0)
    assert PickLLMReward(objective, t_scaling=2.0)(0.5, 0.01, 100.0) == pytest.approx(0.5 - 0.1 - 0.5 * 2 * 2)
    # Under one second log10 is negative: a fast answer gains.
    assert PickLLMReward(objective)(0.0, 0.0, 0.1) == pytest.approx(0.5)
    # Latency unweighted: no latency needed.
    assert PickLLMReward(Objective(quality=2, cost=1))(1.0, 0.5) == pytest.approx(1.5)
    # Arrays in, arrays out.
    values = make_reward(objective, form="pickllm")(np.array([0.0, 1.0]), np.array([0.0, 0.0]), np.array([1.0, 1.0]))
    assert values.tolist() == [0.0, 1.0]


def test_pickllm_reward_is_monotone_and_unbounded():
    reward = PickLLMReward(Objective(quality=1, cost=1, latency=1))
    assert reward(1.0, 0.0, 1.0) > reward(0.5, 0.0, 1.0)
    assert reward(1.0, 0.001, 1.0) > reward(1.0, 0.002, 1.0)
    assert reward(1.0, 0.001, 1.0) > reward(1.0, 0.001, 2.0)
    assert reward(0.0, 0.0, 1000.0) < 0
    assert not reward.bounded


def test_pickllm_reward_errors():
    reward = PickLLMReward(Objective(quality=1, latency=1))
    with pytest.raises(CrossroadsError, match="log10 of the latency: latency_s must be > 0"):
        reward(1.0, 0.0, 0.0)
    with pytest.raises(CrossroadsError, match="latency_s must be finite and >= 0"):
        reward(1.0, 0.0, -1.0)
    with pytest.raises(CrossroadsError, match="t_scaling must be a finite number > 0"):
        PickLLMReward(Objective(), t_scaling=0)


# -- CallableReward and make_reward ----------------------------------------------------
def test_callable_reward():
    seen = []

    def mine(quality, cost_usd, latency_s):
        seen.append((quality, cost_usd, latency_s))
        return quality - 10 * cost_usd

    reward = make_reward(mine)
    assert isinstance(reward, CallableReward)
    assert reward(1.0, 0.01, 2.0) == pytest.approx(0.9)
    assert seen[-1] == (1.0, 0.01, 2.0)
    assert reward(1.0, 0.0) == 1.0 and seen[-1][2] is None  # latency not given
    values = reward(np.array([1.0, np.nan, 0.5]), 0.01)
    assert values[0] == pytest.approx(0.9) and np.isnan(values[1]) and values[2] == pytest.approx(0.4)


def test_callable_reward_errors():
    with pytest.raises(CrossroadsError, match="not a number"):
        CallableReward(lambda q, c, l: "good")(1.0, 0.0, 1.0)
    with pytest.raises(CrossroadsError, match="must be finite"):
        CallableReward(lambda q, c, l: math.inf)(1.0, 0.0, 1.0)
    with pytest.raises(CrossroadsError, match=r"outside \[0, 1\]"):
        CallableReward(lambda q, c, l: 2.0, bounded=True)(1.0, 0.0, 1.0)
    with pytest.raises(CrossroadsError, match="must be callable"):
        CallableReward(3)  # type: ignore[arg-type]


def test_make_reward_forms_and_errors():
    assert isinstance(make_reward("quality=1,cost=1", SCALE), LinearReward)
    assert isinstance(make_reward(Objective(), form="pickllm"), PickLLMReward)
    existing = PickLLMReward(Objective())
    assert make_reward(existing) is existing
    with pytest.raises(CrossroadsError, match="unknown reward form 'exponential'; choose one of: linear, pickllm"):
        make_reward(Objective(), form="exponential")
    with pytest.raises(CrossroadsError, match="an objective is an Objective"):
        make_reward(42)  # type: ignore[arg-type]
    with pytest.raises(CrossroadsError, match="unknown weight"):
        make_reward("accuracy=1")


# -- on the real RouterBench pool ------------------------------------------------------
def test_linear_reward_on_the_real_routerbench_pool(real_data):
    from crossroads.data.importers import load_dataset

    data = load_dataset(f"routerbench:{real_data / 'routerbench' / 'arc_challenge_train.csv'}")
    mean_cost = np.nanmean(data.cost_usd, axis=0)
    scale = PoolScale.from_models(dict(zip(data.model_names, mean_cost)))
    assert scale.cost_usd_min == pytest.approx(mean_cost.min()) and scale.cost_usd_max == pytest.approx(mean_cost.max())
    reward = make_reward("quality=1,cost=1", scale)
    values = reward(data.quality, data.cost_usd)
    observed = values[~np.isnan(values)]
    assert observed.size > 0.99 * values.size  # only the missing outcomes are NaN
    assert ((observed >= 0) & (observed <= 1)).all()
    # With cost weighted, the cheapest model earns more per correct answer than GPT-4.
    cheap = int(np.argmin(mean_cost))
    gpt4 = data.model_index("gpt-4-1106-preview")
    both_right = (data.quality[:, cheap] == 1) & (data.quality[:, gpt4] == 1)
    assert np.nanmean(values[both_right, cheap]) > np.nanmean(values[both_right, gpt4])
