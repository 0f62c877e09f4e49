"""Figures of an online simulation: how a learner converges, and reward and regret over the stream.

:func:`plot_convergence` redraws PickLLM's convergence figure (arXiv 2412.12170): for
several learning rates, each model's selection probability request by request.
:func:`plot_rewards` draws the cumulative reward and the cumulative regret against the
per-query oracle of every entry of a :class:`SimulationResult` (its seed-0 stream).
Both return the numbers they drew, so they can be checked or re-plotted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossroads.data.dataset import RoutingDataset
from crossroads.errors import CrossroadsError
from crossroads.evaluate.latency import LatencyProfile
from crossroads.evaluate.simulate import SimulationResult, simulate
from crossroads.objective import Objective, Reward
from crossroads.online import make_learner

#: The constructor argument that plays the learning rate, per learner.
LEARNING_RATE_PARAM = {"automaton": "learning_rate", "qlearning": "step_size"}


@dataclass
class ConvergenceData:
    """Per learning rate, each model's selection probability after each request, shape (steps, models).

    ``kind`` is ``"probability"`` (the automaton's own probability vector) or
    ``"window share"`` (share of the last ``window`` selections, for other learners).
    """

    path: Path
    learner: str
    models: list[str]
    kind: str
    window: int
    probabilities: dict[float, np.ndarray]


@dataclass
class RewardCurves:
    """Per entry of the simulation, cumulative reward and cumulative regret vs the oracle (seed 0)."""

    path: Path
    cumulative_reward: dict[str, np.ndarray]
    cumulative_regret: dict[str, np.ndarray]


def plot_convergence(
    dataset: RoutingDataset,
    learner_name: str,
    learning_rates: Sequence[float],
    out_path: str | Path,
    *,
    objective: Objective | Reward | str = "quality=1",
    models: Sequence[str] | None = None,
    latency_profiles: Mapping[str, LatencyProfile] | None = None,
    queries: int | None = None,
    seed: int = 0,
    window: int = 50,
    **learner_params: Any,
) -> ConvergenceData:
    """Write one panel per learning rate: every model's selection probability over the requests.

    Each run is :func:`simulate` with one session (``sessions="none"``) on the same
    seeded stream.  The automaton's curve is its probability vector after each update;
    for Q-learning (``step_size`` as the learning rate) it is the share of each model in
    the last ``window`` selections.
    """
    if learner_name not in LEARNING_RATE_PARAM:
        raise CrossroadsError(
            f"the {learner_name} learner has no learning rate; choose one of: {', '.join(LEARNING_RATE_PARAM)}"
        )
    rates = list(learning_rates)
    if not rates:
        raise CrossroadsError("no learning rate to plot: give at least one")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise CrossroadsError(f"window must be a positive number of requests, got {window!r}")
    if models is not None:
        dataset = dataset.select_models(list(models))
    names = dataset.model_names
    kind = "probability" if learner_name == "automaton" else "window share"
    curves: dict[float, np.ndarray] = {}
    for rate in rates:
        trace: list[list[float]] = []

        def factory(learner_seed: int, rate=rate, trace=trace):
            params = {**learner_params, LEARNING_RATE_PARAM[learner_name]: rate, "seed": learner_seed}
            learner = make_learner(learner_name, **params)
            if kind == "probability":
                update = learner.update

                def recording_update(decision, reward, context=None):
                    update(decision, reward, context)
                    trace.append([learner.arms_[m]["p"] if m in learner.arms_ else 0.0 for m in names])

                learner.update = recording_update
            return learner

        result = simulate(dataset, [factory], objective, queries=queries, seed=seed, sessions="none",
                          latency_profiles=latency_profiles)
        if kind == "probability":
            curves[rate] = np.array(trace)
        else:
            curves[rate] = _window_share(result.entries[0].model_trace, len(names), window)

    path = _draw_convergence(curves, names, learner_name, kind, window, Path(out_path))
    return ConvergenceData(path, learner_name, names, kind, window, curves)


def plot_rewards(result: SimulationResult, out_path: str | Path) -> RewardCurves:
    """Write two panels: cumulative reward and cumulative regret vs the oracle, by entry, over seed 0's stream."""
    try:
        oracle = result["oracle"].reward_trace
    except KeyError:
        raise CrossroadsError("the simulation has no oracle entry to measure regret against") from None
    rewards = {entry.name: np.cumsum(entry.reward_trace) for entry in result.entries}
    regrets = {entry.name: np.cumsum(oracle - entry.reward_trace) for entry in result.entries}

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    steps = np.arange(1, len(oracle) + 1)
    for entry in result.entries:
        style = {"lw": 1.8} if entry.kind == "learner" else {"lw": 1.1, "ls": "--"}
        axes[0].plot(steps, rewards[entry.name], label=entry.name, **style)
        if entry.kind != "oracle":
            axes[1].plot(steps, regrets[entry.name], label=entry.name, **style)
    axes[0].set_ylabel("cumulative reward")
    axes[1].set_ylabel("cumulative regret vs oracle")
    for ax in axes:
        ax.set_xlabel("request")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{len(oracle)} requests, objective {result.setup.get('objective', '?')} (seed 0)")
    fig.tight_layout()
    return RewardCurves(_save(fig, Path(out_path)), rewards, regrets)


def _window_share(model_trace: np.ndarray, m: int, window: int) -> np.ndarray:
    """Share of each model among the last ``window`` selections (fewer at the start), shape (steps, m)."""
    onehot = np.zeros((len(model_trace) + 1, m))
    onehot[np.arange(1, len(model_trace) + 1), model_trace] = 1.0
    counts = np.cumsum(onehot, axis=0)
    steps = np.arange(1, len(model_trace) + 1)
    start = np.maximum(steps - window, 0)
    return (counts[steps] - counts[start]) / (steps - start)[:, None]


def _draw_convergence(curves, names, learner_name, kind, window, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 4), squeeze=False, sharey=True)
    param = LEARNING_RATE_PARAM[learner_name]
    for ax, (rate, curve) in zip(axes[0], curves.items()):
        for j, name in enumerate(names):
            ax.plot(np.arange(1, len(curve) + 1), curve[:, j], label=name, lw=1.4)
        ax.set_title(f"{learner_name}, {param}={rate:g}")
        ax.set_xlabel("request")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("selection probability" if kind == "probability" else f"share of last {window} selections")
    axes[0][-1].legend(fontsize=7, loc="center right")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
