"""The replay simulator on tiny streams whose every number is computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from synthetic import two_topic_dataset

from crossroads.data.dataset import ModelInfo, RoutingDataset
from crossroads.errors import CrossroadsError, UnknownModelError
from crossroads.evaluate.latency import LatencyProfile, default_profile, latency_matrix
from crossroads.evaluate.simulate import Drift, replay_rewards, simulate
from crossroads.objective.cost import ASSUMED_OUTPUT_TOKENS
from crossroads.online.base import Learner

OBJECTIVE = "quality=1,cost=0.5"


class AlwaysFirst(Learner):
    """Test stub: always the first candidate; says it converged after two selections."""

    name = "always_first"

    def _new_arm(self, model):
        return {}

    def _select(self, candidates, context, rng):
        return candidates[0], {candidates[0]: 1.0}, None

    def _update(self, model, reward, context):
        pass

    def _converged(self):
        return next(iter(self.arms_)) if self.steps_ >= 2 else None


def always_first(seed):
    return AlwaysFirst(seed=seed)


def tiny(categories=("c", "c", "c"), latency=True) -> RoutingDataset:
    """3 queries x 2 models; A costs 0.001, B 0.003 per query; latency A 1 s, B 3 s.

    With quality=1,cost=0.5 the reward is (q + 0.5 * (1 - cost_scaled)) / 1.5, cost_scaled
    being 0 for A and 1 for B:  A earns (1, 1/3, 1/2) = 11/6 and B (2/3, 2/3, 2/3) = 2.
    """
    quality = np.array([[1.0, 1.0], [0.0, 1.0], [0.25, 1.0]])
    return RoutingDataset(
        query_ids=["q0", "q1", "q2"],
        prompts=["p0", "p1", "p2"],
        categories=list(categories),
        sources=["s"] * 3,
        models=[ModelInfo("A"), ModelInfo("B")],
        quality=quality,
        cost_usd=np.tile([0.001, 0.003], (3, 1)),
        latency_s=np.tile([1.0, 3.0], (3, 1)) if latency else None,
    )


REWARD_A = np.array([1.0, 1 / 3, 0.5])
REWARD_B = np.array([2 / 3, 2 / 3, 2 / 3])


def test_baselines_and_fixed_learner_match_hand_computation():
    result = simulate(tiny(), [always_first], OBJECTIVE, seeds=2)
    oracle, best, random, dearest = (result[name].metrics for name in ("oracle", "best_fixed", "random", "most_expensive"))
    assert oracle["cumulative_reward"] == pytest.approx(1 + 2 / 3 + 2 / 3)
    assert best["cumulative_reward"] == pytest.approx(2.0)  # B
    assert random["cumulative_reward"] == pytest.approx((REWARD_A + REWARD_B).sum() / 2)  # 23/12
    assert dearest["total_cost_usd"] == pytest.approx(0.009)
    learner = result["always_first"].metrics
    assert learner["cumulative_reward"] == pytest.approx(11 / 6)
    assert learner["mean_reward"] == pytest.approx(11 / 18)
    assert learner["regret_vs_best_fixed"] == pytest.approx(2 - 11 / 6)
    assert learner["regret_vs_oracle"] == pytest.approx(7 / 3 - 11 / 6)
    assert learner["cost_reduction_vs_most_expensive"] == pytest.approx(1 - 0.003 / 0.009)
    assert learner["latency_reduction_vs_random"] == pytest.approx(1 - 1.0 / 2.0)
    assert learner["quality_retained"] == pytest.approx((1.25 / 3) / 1.0)
    assert learner["convergence_step"] == 2 and learner["converged_share"] == 1.0
    assert result["always_first"].sd["cumulative_reward"] == 0.0  # same sums on both streams
    assert math.isnan(oracle["convergence_step"])
    assert random["latency_reduction_vs_random"] == pytest.approx(0.0)
    assert dearest["quality_retained"] == pytest.approx(1.0)


def test_traces_follow_the_stream_order():
    result = simulate(tiny(), [always_first], OBJECTIVE)
    rows = result.rows
    assert sorted(rows.tolist()) == [0, 1, 2] and result.query_ids == [f"q{i}" for i in rows]
    entry = result["always_first"]
    np.testing.assert_allclose(entry.reward_trace, REWARD_A[rows])
    assert entry.model_trace.tolist() == [0, 0, 0]
    assert result["random"].model_trace.tolist() == [-1, -1, -1]
    assert result["best_fixed"].model_trace.tolist() == [1, 1, 1]
    oracle = np.where(REWARD_A >= REWARD_B, 0, 1)[rows]
    assert result["oracle"].model_trace.tolist() == oracle.tolist()


def test_category_sessions_average_the_converged_ones():
    # session x sees two queries (converges at its 2nd selection), session y one (never)
    result = simulate(tiny(categories=("x", "x", "y")), [always_first], OBJECTIVE)
    metrics = result["always_first"].metrics
    assert metrics["convergence_step"] == 2 and metrics["converged_share"] == 0.5
    one = simulate(tiny(categories=("x", "x", "y")), [always_first], OBJECTIVE, sessions="none")
    assert one["always_first"].metrics["converged_share"] == 1.0


def test_drift_changes_outcomes_from_its_step_on():
    drift = Drift(at_step=1, model="A", quality_delta=-0.5, cost_factor=3.0)
    result = simulate(tiny(), [always_first], OBJECTIVE, drift=drift)
    rows = result.rows
    quality_a = np.array([1.0, 0.0, 0.25])[rows]
    # from step 1 on A costs 0.003 (cost_scaled 1) and its quality drops by 0.5, floored at 0
    expected = [REWARD_A[rows[0]], *(max(q - 0.5, 0.0) / 1.5 for q in quality_a[1:])]
    np.testing.assert_allclose(result["always_first"].reward_trace, expected, atol=1e-12)
    assert result["always_first"].metrics["total_cost_usd"] == pytest.approx(0.001 + 2 * 0.003)
    np.testing.assert_allclose(result.rewards[:, 0], expected, atol=1e-12)  # the stream's drifted rewards
    np.testing.assert_allclose(result.rewards[:, 1], REWARD_B[rows], atol=1e-12)


def test_models_join_and_leave_mid_stream():
    added = simulate(tiny(), [always_first], OBJECTIVE, add_at={"A": 2})
    assert added["always_first"].model_trace.tolist() == [1, 1, 0]
    removed = simulate(tiny(), [always_first], OBJECTIVE, remove_at={"A": 1})
    assert removed["always_first"].model_trace.tolist() == [0, 1, 1]
    assert np.isnan(removed.rewards[1:, 0]).all() and not np.isnan(removed.rewards[:, 1]).any()
    assert removed["oracle"].model_trace.tolist()[1:] == [1, 1]
    # a sticky automaton converged to a removed model learns again among the rest
    data = RoutingDataset([f"q{i}" for i in range(40)], ["p"] * 40, ["c"] * 40, ["s"] * 40,
                          [ModelInfo("A"), ModelInfo("B")], np.tile([1.0, 0.0], (40, 1)), np.ones((40, 2)))
    gone = simulate(data, ["automaton:learning_rate=0.9"], "quality=1", remove_at={"A": 20})
    trace = gone["automaton:learning_rate=0.9"].model_trace
    assert trace[10:20].tolist() == [0] * 10 and trace[20:].tolist() == [1] * 20
    with pytest.raises(CrossroadsError, match="no model to choose"):
        simulate(tiny(), [always_first], OBJECTIVE, models=["A"], remove_at={"A": 1})


def test_registered_learners_run_and_seeds_reproduce():
    data, _, _ = two_topic_dataset(n=60, n_models=3, seed=1)
    kwargs = {"objective": "quality=1", "queries": 80, "seeds": 2, "seed": 7}
    first = simulate(data, ["thompson", "automaton:learning_rate=0.2", "ucb"], **kwargs)
    again = simulate(data, ["thompson", "automaton:learning_rate=0.2", "ucb"], **kwargs)
    assert json.dumps(first.to_json()) == json.dumps(again.to_json())
    assert first.setup["with_replacement"] and len(first["ucb"].reward_trace) == 80
    other = simulate(data, ["thompson"], objective="quality=1", queries=80, seed=8)
    assert other.query_ids != first.query_ids
    out = first.to_json()
    assert set(out["entries"]) == {"thompson", "automaton:learning_rate=0.2", "ucb", *("random", "best_fixed",
                                                                                       "most_expensive", "oracle")}
    assert all(key == key.lower() for key in out["entries"]["ucb"]["metrics"])
    json.dumps(out, allow_nan=False)  # NaN are written as null


def test_contextual_learner_reads_embeddings():
    data, embeddings, _ = two_topic_dataset(n=80, seed=2)
    with pytest.raises(CrossroadsError, match="embeddings"):
        simulate(data, ["linucb"], "quality=1")
    result = simulate(data, ["linucb"], "quality=1", embeddings=embeddings, sessions="none", queries=200)
    assert result["linucb"].metrics["mean_reward"] > result["random"].metrics["mean_reward"] + 0.2


def test_clear_errors():
    data = tiny()
    with pytest.raises(CrossroadsError, match="pool is empty"):
        simulate(data, [always_first], OBJECTIVE, models=[])
    with pytest.raises(UnknownModelError, match="'Z'"):
        simulate(data, [always_first], OBJECTIVE, models=["A", "Z"])
    with pytest.raises(UnknownModelError):
        simulate(data, [always_first], OBJECTIVE, drift=Drift(0, "Z"))
    with pytest.raises(CrossroadsError, match="objective"):
        simulate(data, [always_first], "quality=lots")
    with pytest.raises(CrossroadsError, match="unknown online learner"):
        simulate(data, ["nope"], OBJECTIVE)
    with pytest.raises(CrossroadsError, match="sessions"):
        simulate(data, [always_first], OBJECTIVE, sessions="user")
    with pytest.raises(CrossroadsError, match="queries"):
        simulate(data, [always_first], OBJECTIVE, queries=0)
    with pytest.raises(CrossroadsError, match="at_step"):
        Drift(-1, "A")
    with pytest.raises(CrossroadsError, match="named 'ucb'"):
        simulate(data, ["ucb", "ucb"], OBJECTIVE)
    with pytest.raises(CrossroadsError, match="learner 'ucb' takes no value without a name"):
        simulate(data, ["ucb:exploration"], OBJECTIVE)
    with pytest.raises(CrossroadsError, match="learner 'ucb' has no option 'explore'; its options: exploration"):
        simulate(data, ["ucb:explore=2"], OBJECTIVE)


def test_latency_is_estimated_where_not_recorded():
    data = tiny(latency=False)
    profiles = {"A": LatencyProfile(0.5, 100.0), "B": LatencyProfile(1.0, 50.0)}
    matrix = latency_matrix(data, profiles)
    np.testing.assert_allclose(matrix[0], [0.5 + ASSUMED_OUTPUT_TOKENS / 100, 1.0 + ASSUMED_OUTPUT_TOKENS / 50])
    data.responses = [["x" * 400, None]] * 3  # 100 tokens for A, the default for B
    data.latency_s = np.array([[np.nan, 7.0]] * 3)  # a recorded latency wins
    np.testing.assert_allclose(latency_matrix(data, profiles)[0], [1.5, 7.0])
    with pytest.raises(CrossroadsError, match="not in the pool"):
        latency_matrix(data, {"Z": LatencyProfile(0.1, 10.0)})
    assert default_profile(ModelInfo("cheap", 0.1, 0.2)).tokens_per_s > default_profile(ModelInfo("gpt", 10, 30)).tokens_per_s
    # an objective weighing latency works on data without recorded latency
    result = simulate(tiny(latency=False), [always_first], "quality=1,latency=1", latency_profiles=profiles)
    assert result.setup["latency"] == "estimated"
    assert result["always_first"].metrics["latency_reduction_vs_random"] > 0


def _cli(argv):
    """``crossroads simulate`` through its own parser (the command is registered in cli/main.py separately)."""
    import argparse

    from crossroads.cli import simulate as command

    parser = argparse.ArgumentParser(prog="crossroads")
    command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_metrics(tmp_path, capsys):
    from crossroads.data.jsonl import write_jsonl

    path = write_jsonl(tiny(), tmp_path / "tiny.jsonl")
    out = tmp_path / "run"
    code = _cli(["simulate", "--dataset", f"crossroads:{path}", "--models", "A,B", "--learner", "ucb",
                 "--learner", "automaton:learning_rate=0.5", "--objective", OBJECTIVE, "--queries", "3",
                 "--seeds", "2", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["entries"]) >= {"ucb", "automaton:learning_rate=0.5", "oracle", "best_fixed"}
    assert metrics["entries"]["oracle"]["metrics"]["mean_reward"] == pytest.approx(7 / 9)  # every query once
    assert metrics["setup"]["queries"] == 3 and not metrics["setup"]["with_replacement"]
    assert (out / "rewards.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "best_fixed" in printed and "oracle" in printed
    with pytest.raises(CrossroadsError, match="objective"):
        _cli(["simulate", "--dataset", f"crossroads:{path}", "--objective", "speed=1", "--out", str(out)])
    with pytest.raises(UnknownModelError):
        _cli(["simulate", "--dataset", f"crossroads:{path}", "--models", "A,Z", "--out", str(out)])
    assert (out / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the automaton was simulated


def test_cli_drift_pool_changes_latency_profiles_and_pickllm_reward(tmp_path):
    from crossroads.data.jsonl import write_jsonl

    path = write_jsonl(tiny(latency=False), tmp_path / "tiny.jsonl")
    profiles = tmp_path / "latency.json"
    profiles.write_text(json.dumps({"A": {"ttft_s": 1.0, "tokens_per_s": 1e9}, "B": {"ttft_s": 10.0, "tokens_per_s": 1e9}}))
    out = tmp_path / "run"
    base = ["simulate", "--dataset", f"crossroads:{path}", "--learner", "qlearning", "--seeds", "1", "--out", str(out)]
    assert _cli([*base, "--objective", "quality=1,latency=1", "--reward", "pickllm", "--latency-profiles", str(profiles),
                 "--drift", "B@1:quality_delta=-1", "--remove", "A@2"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    setup, oracle = metrics["setup"], metrics["entries"]["oracle"]
    assert setup["drift"] == [{"at_step": 1, "model": "B", "quality_delta": -1.0, "cost_factor": 1.0, "latency_factor": 1.0}]
    assert setup["remove_at"] == {"A": 2} and "PickLLMReward" in setup["objective"]
    # PickLLM reward = quality - log10(latency): A earns q - 0 (1 s), B earns q - 1 (10 s)
    step_rows = [int(q[1:]) for q in metrics["trace_query_ids"]]
    quality_a, quality_b = [1.0, 0.0, 0.25], [1.0, 1.0, 1.0]
    expected = [max(quality_a[step_rows[0]], quality_b[step_rows[0]] - 1), quality_a[step_rows[1]], quality_b[step_rows[2]] - 1 - 1]
    assert oracle["trace"]["reward"] == pytest.approx(expected)
    for bad, message in ((["--drift", "B@x:quality_delta=1"], "MODEL@STEP"), (["--drift", "B@1:speed=2"], "quality_delta"),
                         (["--drift", "B@1"], "changes nothing"), (["--add", "B"], "MODEL@STEP"),
                         (["--latency-profiles", str(tmp_path / "none.json")], "cannot read"),
                         (["--learning-rates", "fast"], "learning-rates")):
        with pytest.raises(CrossroadsError, match=message):
            _cli([*base, *bad])
    profiles.write_text('{"A": {"ttft_s": 1}}')
    with pytest.raises(CrossroadsError, match="ttft_s and tokens_per_s"):
        _cli([*base, "--latency-profiles", str(profiles)])


@pytest.mark.parametrize("module", ["crossroads.evaluate.simulate", "crossroads.evaluate.latency"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def test_replay_rewards_are_the_rewards_the_simulator_pays():
    rewards = replay_rewards(tiny(), OBJECTIVE)
    np.testing.assert_allclose(rewards, np.column_stack([REWARD_A, REWARD_B]))
    data = tiny()
    data.quality[1, 0] = np.nan
    assert np.isnan(replay_rewards(data, OBJECTIVE)[1, 0])


def test_most_expensive_among_equal_prices_is_the_best_of_them():
    data = tiny()
    data.cost_usd[:] = 0.003  # A and B priced alike; B has the higher quality
    result = simulate(data, [always_first], "quality=1", seeds=1)
    assert result["most_expensive"].metrics["mean_quality"] == pytest.approx(1.0)
    data.quality[:, 1] = 0.0  # now A is the better of the two
    result = simulate(data, [always_first], "quality=1", seeds=1)
    assert result["most_expensive"].metrics["mean_quality"] == pytest.approx(1.25 / 3)
