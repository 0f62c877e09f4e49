"""Simulation figures: PNGs are written, and the data behind them is right."""

from __future__ import annotations

import numpy as np
import pytest

from crossroads.data.dataset import ModelInfo, RoutingDataset
from crossroads.errors import CrossroadsError
from crossroads.evaluate.simulate import Drift, simulate
from crossroads.evaluate.simulation_plots import draw_convergence, draw_rewards, plot_convergence, plot_rewards

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _bandit(n: int = 300) -> RoutingDataset:
    """Three models; "best" always answers well, the others one time in five."""
    rng = np.random.default_rng(0)
    quality = (rng.random((n, 3)) < 0.2).astype(float)
    quality[:, 1] = 1.0
    return RoutingDataset(
        [f"q{i}" for i in range(n)], ["prompt"] * n, ["chat"] * n, ["synthetic"] * n,
        [ModelInfo("weak"), ModelInfo("best"), ModelInfo("other")], quality, np.full((n, 3), 0.001),
    )


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == PNG_MAGIC


def test_automaton_convergence(tmp_path):
    data = plot_convergence(_bandit(), "automaton", [0.05, 0.3], tmp_path / "convergence.png")
    assert _is_png(data.path) and data.kind == "probability" and data.models == ["weak", "best", "other"]
    for rate, curve in data.probabilities.items():
        assert curve.shape == (300, 3)
        assert np.allclose(curve.sum(axis=1), 1.0), rate
    assert data.probabilities[0.3][-1, 1] > 0.9
    assert data.probabilities[0.3][-1, 1] >= data.probabilities[0.05][20, 1]


def test_qlearning_convergence_is_a_window_share(tmp_path):
    data = plot_convergence(_bandit(), "qlearning", [0.1, 0.5], tmp_path / "q.png", window=40, epsilon=0.1)
    assert _is_png(data.path) and data.kind == "window share"
    for curve in data.probabilities.values():
        assert np.allclose(curve.sum(axis=1), 1.0)
        assert curve[-1, 1] > 0.8  # the best model dominates the last 40 selections


def test_convergence_refuses_learners_without_a_learning_rate(tmp_path):
    with pytest.raises(CrossroadsError, match="no learning rate"):
        plot_convergence(_bandit(), "ucb", [0.1], tmp_path / "x.png")
    with pytest.raises(CrossroadsError, match="window"):
        plot_convergence(_bandit(), "automaton", [0.1], tmp_path / "x.png", window=0)


def test_plot_rewards(tmp_path):
    result = simulate(_bandit(120), ["ucb", "automaton:learning_rate=0.3"], sessions="none")
    curves = plot_rewards(result, tmp_path / "sub" / "rewards.png")
    assert _is_png(curves.path)
    assert set(curves.cumulative_reward) == {entry.name for entry in result.entries}
    assert curves.cumulative_reward["oracle"][-1] == pytest.approx(120.0)
    assert (curves.cumulative_regret["oracle"] == 0).all()
    ucb = result["ucb"]
    assert curves.cumulative_regret["ucb"][-1] == pytest.approx(ucb.metrics["regret_vs_oracle"])
    assert (np.diff(curves.cumulative_regret["ucb"]) >= 0).all()  # nobody beats the oracle


def _legend_outside_the_panels(fig) -> bool:
    fig.canvas.draw()
    legend = next(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None).get_window_extent()
    return not any(legend.overlaps(ax.get_window_extent()) for ax in fig.axes)


def test_convergence_title_names_the_session_and_legend_is_outside(tmp_path):
    data = plot_convergence(_bandit(), "automaton", [0.1, 0.3], tmp_path / "convergence.png", seed=4)
    fig = draw_convergence(data)
    title = fig.get_suptitle()
    assert "one session over all categories" in title and "seed 4" in title and "300 requests" in title
    assert _legend_outside_the_panels(fig)


def test_reward_plot_says_which_stream_and_marks_pool_changes(tmp_path):
    drift = Drift(40, "best", quality_delta=-0.5)
    result = simulate(_bandit(120), ["ucb"], sessions="none", seeds=3, drift=drift, add_at={"other": 60},
                      remove_at={"weak": 90})
    curves = plot_rewards(result, tmp_path / "rewards.png")
    assert curves.events == {40: ["drift best@40:quality_delta=-0.5"], 60: ["add other@60"], 90: ["remove weak@90"]}
    fig = draw_rewards(result, curves)
    assert "first of the 3 seeded streams" in fig.get_suptitle() and "average all 3" in fig.get_suptitle()
    for ax in fig.axes:
        marked = sorted(line.get_xdata()[0] for line in ax.get_lines() if len(set(line.get_xdata())) == 1)
        assert marked == [40, 60, 90]
    legend = [text.get_text() for text in fig.axes[1].get_legend().get_texts()]
    assert {"1: drift best@40:quality_delta=-0.5", "2: add other@60", "3: remove weak@90"} <= set(legend)
    assert _legend_outside_the_panels(fig)


def test_reward_plot_of_one_stream_says_so(tmp_path):
    result = simulate(_bandit(50), ["ucb"], sessions="none")
    curves = plot_rewards(result, tmp_path / "rewards.png")
    assert curves.events == {}
    assert "only stream" in draw_rewards(result, curves).get_suptitle()
