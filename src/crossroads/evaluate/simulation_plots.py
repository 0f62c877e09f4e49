"""Figures of an online simulation: how a learner converges, and reward and regret over the stream.

:func:`plot_convergence` redraws PickLLM's convergence figure (arXiv 2412.12170): for
several learning rates, each model's selection probability request by request.
:func:`plot_rewards` draws the cumulative reward and the cumulative regret against the
per-query oracle of every entry of a :class:`SimulationResult` on its first stream, and
marks the steps where a model drifts, joins or leaves.  Both return the numbers they
drew, so they can be checked or re-plotted; :func:`draw_convergence` and
:func:`draw_rewards` give their figures unsaved.  Colours and line styles are those of
:mod:`crossroads.evaluate.plots`.
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
from crossroads.evaluate.plots import entry_styles, legend_outside, line_styles, save_figure, title_over_panels
from crossroads.evaluate.simulate import SimulationResult, simulate
from crossroads.objective import Objective, Reward
from crossroads.online import make_learner

#: The constructor argument that plays the learning rate, per learner.
LEARNING_RATE_PARAM = {"automaton": "learning_rate", "qlearning": "step_size"}
#: A drift's changes and the values that change nothing (the defaults of crossroads.evaluate.simulate.Drift).
DRIFT_DEFAULTS = {"quality_delta": 0.0, "cost_factor": 1.0, "latency_factor": 1.0}
#: How a step where the pool changes is marked.
EVENT_LINE = {"color": "black", "lw": 0.9, "ls": (0, (1, 2))}


@dataclass
class ConvergenceData:
    """Per learning rate, each model's selection probability after each request, shape (steps, models).

    ``kind`` is ``"probability"`` (the automaton's own probability vector) or
    ``"window share"`` (share of the last ``window`` selections, for other learners).
    Every curve is one session over all categories, on the stream of ``seed``.
    """

    path: Path
    learner: str
    models: list[str]
    kind: str
    window: int
    probabilities: dict[float, np.ndarray]
    seed: int = 0


@dataclass
class RewardCurves:
    """Per entry of the simulation, cumulative reward and cumulative regret vs the oracle on the first stream.

    ``events`` holds the marked steps: after how many requests a model drifts, joins
    or leaves, with what the user wrote (``MODEL@STEP``).
    """

    path: Path
    cumulative_reward: dict[str, np.ndarray]
    cumulative_regret: dict[str, np.ndarray]
    events: dict[int, list[str]]


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

    data = ConvergenceData(Path(out_path), learner_name, names, kind, window, curves, seed)
    save_figure(draw_convergence(data), data.path, dpi=110)
    return data


def plot_rewards(result: SimulationResult, out_path: str | Path) -> RewardCurves:
    """Write two panels: cumulative reward and cumulative regret vs the oracle, by entry, over the first stream."""
    try:
        oracle = result["oracle"].reward_trace
    except KeyError:
        raise CrossroadsError("the simulation has no oracle entry to measure regret against") from None
    curves = RewardCurves(
        Path(out_path),
        {entry.name: np.cumsum(entry.reward_trace) for entry in result.entries},
        {entry.name: np.cumsum(oracle - entry.reward_trace) for entry in result.entries},
        pool_events(result.setup),
    )
    save_figure(draw_rewards(result, curves), curves.path, dpi=110)
    return curves


def pool_events(setup: dict) -> dict[int, list[str]]:
    """The steps where the pool changes, from a simulation's setup, as the options were written.

    ``{500: ["drift gpt-4@500:quality_delta=-0.3", "add claude-3@500"], 900: ["remove gpt-4@900"]}``
    """
    events: dict[int, list[str]] = {}
    for change in setup.get("drift", []):
        changed = ",".join(f"{key}={change[key]:g}" for key, unchanged in DRIFT_DEFAULTS.items()
                           if change.get(key, unchanged) != unchanged)
        events.setdefault(change["at_step"], []).append(
            f"drift {change['model']}@{change['at_step']}" + (f":{changed}" if changed else ""))
    for what, key in (("add", "add_at"), ("remove", "remove_at")):
        for model, step in setup.get(key, {}).items():
            events.setdefault(step, []).append(f"{what} {model}@{step}")
    return dict(sorted(events.items()))


def draw_rewards(result: SimulationResult, curves: RewardCurves):
    """The figure of :func:`plot_rewards`, unsaved.

    The x axis counts requests served, so a change at step ``s`` (``MODEL@s``) is
    drawn at ``s``: it applies from the next request on.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    styles = entry_styles(result.entries)
    served = np.arange(1, len(result["oracle"].reward_trace) + 1)
    for entry in result.entries:
        axes[0].plot(served, curves.cumulative_reward[entry.name], label=entry.name, **styles[entry.name])
        if entry.kind != "oracle":
            axes[1].plot(served, curves.cumulative_regret[entry.name], **styles[entry.name])
    axes[0].set_ylabel("cumulative reward")
    axes[1].set_ylabel("cumulative regret vs oracle")
    for ax in axes:
        ax.set_xlabel("requests served")
        ax.grid(alpha=0.3)
        _mark_events(ax, curves.events, labelled=ax is axes[0])
    legend_outside(fig, axes[1])
    title_over_panels(fig, f"{len(served)} requests, objective {result.setup.get('objective', '?')}\n"
                      + _streams_note(result.setup))
    return fig


def _streams_note(setup: dict) -> str:
    seeds = setup.get("seeds", 1)
    if seeds == 1:
        return "the curves follow the simulation's only stream"
    return (f"the curves follow the first of the {seeds} seeded streams only; "
            f"the table and metrics.json average all {seeds}")


def _mark_events(ax, events: dict[int, list[str]], labelled: bool) -> None:
    """A numbered vertical line at each step where the pool changes; the legend says what changed (if ``labelled``).

    The numbers sit above the axes and the words in the legend, so neither hides a curve.
    """
    for number, (step, changes) in enumerate(events.items(), start=1):
        ax.axvline(step, label=f"{number}: {'; '.join(changes)}" if labelled else None, **EVENT_LINE)
        ax.annotate(str(number), (step, 1), xycoords=("data", "axes fraction"), xytext=(0, 2),
                    textcoords="offset points", ha="center", va="bottom", fontsize=8)


def _window_share(model_trace: np.ndarray, m: int, window: int) -> np.ndarray:
    """Share of each model among the last ``window`` selections (fewer at the start), shape (steps, m)."""
    onehot = np.zeros((len(model_trace) + 1, m))
    onehot[np.arange(1, len(model_trace) + 1), model_trace] = 1.0
    counts = np.cumsum(onehot, axis=0)
    steps = np.arange(1, len(model_trace) + 1)
    start = np.maximum(steps - window, 0)
    return (counts[steps] - counts[start]) / (steps - start)[:, None]


def draw_convergence(data: ConvergenceData):
    """The figure of :func:`plot_convergence`, unsaved: one panel per learning rate, titled with its session."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = data.probabilities
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 4), squeeze=False, sharey=True)
    param = LEARNING_RATE_PARAM[data.learner]
    styles = line_styles(data.models)
    for ax, (rate, curve) in zip(axes[0], curves.items()):
        for j, name in enumerate(data.models):
            ax.plot(np.arange(1, len(curve) + 1), curve[:, j], label=name, **{**styles[name], "lw": 1.4})
        ax.set_title(f"{param}={rate:g}")
        ax.set_xlabel("requests served")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("selection probability" if data.kind == "probability"
                          else f"share of last {data.window} selections")
    legend_outside(fig, axes[0][-1])
    steps = len(next(iter(curves.values())))
    title_over_panels(fig, f"{data.learner}: one session over all categories (sessions=none), "
                      f"{steps} requests of the stream of seed {data.seed}")
    return fig
