"""The evaluation plot: quality against strong-call share (pairs) and against cost (any pool).

It also holds the look every crossroads figure shares, so that a router, a learner or a
baseline is drawn the same way wherever it appears: each router or learner gets its own
colour and line style (:func:`line_styles`), baselines keep grey and black styles
(:data:`BASELINE_STYLES`), single models are grey dots (:data:`MODEL_DOT`), the legend
sits outside the axes (:func:`legend_outside`) and log axes carry a few plain tick labels
(:func:`readable_log_axis`).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from crossroads.evaluate.harness import Entry, Evaluation

#: Router and learner colours: matplotlib's tab10 without its grey, which baselines and single models keep.
ROUTER_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                  "tab:olive", "tab:cyan")
#: Router and learner line styles.  Router k gets colour k mod 9 and style k mod 4; as 9 and 4 share no
#: factor, the first 36 routers all differ in colour or style, and neighbours (knn, ensemble, ensemble:...)
#: differ in both.
ROUTER_LINE_STYLES = ("-", "--", "-.", ":")
#: Baselines of the evaluation and of the simulator: grey and black, never a router's colour.
BASELINE_STYLES = {
    "random": {"color": "grey", "ls": ":", "lw": 1.4},
    "oracle": {"color": "black", "ls": "--", "lw": 1.3},
    "best_fixed": {"color": "grey", "ls": "--", "lw": 1.3},
    "most_expensive": {"color": "black", "ls": "-.", "lw": 1.3},
}
#: Single models on the cost panel: grey dots with a black rim.
MODEL_DOT = {"color": "0.6", "edgecolors": "black", "linewidths": 0.6, "s": 26, "zorder": 3}
#: Single models' bars where every model costs the same: lighter than the random baseline's grey.
MODEL_BAR_COLOUR = "0.82"
#: The strong and the weak model on the strong/weak panel: flat lines, black and grey.
PAIR_STYLES = {"strong": {"color": "black", "ls": (0, (6, 2, 1, 2)), "lw": 1.0},
               "weak": {"color": "grey", "ls": (0, (6, 2, 1, 2)), "lw": 1.0}}
#: Mean costs that differ by less than this share are the same price: RouterDC's models cost the same.
SAME_COST_RTOL = 1e-6


def line_styles(names: Sequence[str]) -> dict[str, dict]:
    """A colour, line style and width for each router or learner, by its place in ``names``."""
    return {name: {"color": ROUTER_COLOURS[k % len(ROUTER_COLOURS)],
                   "ls": ROUTER_LINE_STYLES[k % len(ROUTER_LINE_STYLES)], "lw": 1.8}
            for k, name in enumerate(names)}


def entry_styles(entries: Sequence) -> dict[str, dict]:
    """Line styles of an evaluation's or a simulation's entries: routers and learners in order, baselines fixed."""
    styles = line_styles([entry.name for entry in entries if entry.kind in ("router", "learner")])
    styles.update({entry.name: BASELINE_STYLES[entry.kind] for entry in entries if entry.kind in BASELINE_STYLES})
    return styles


def legend_outside(fig, ax):
    """One legend for every labelled artist of ``fig``, right of ``ax`` (the rightmost panel), outside the axes.

    Inside, a legend hides the curves it names.  It is left out of ``tight_layout``, which
    would shrink the panels to make room; :func:`save_figure` grows the image to hold it.
    None when nothing is labelled.
    """
    labelled: dict[str, object] = {}
    for each in fig.axes:
        for handle, label in zip(*each.get_legend_handles_labels()):
            labelled.setdefault(label, handle)
    if not labelled:
        return None
    legend = ax.legend(list(labelled.values()), list(labelled), loc="upper left", bbox_to_anchor=(1.02, 1.0),
                       borderaxespad=0.0, fontsize=8)
    legend.set_in_layout(False)
    return legend


def readable_log_axis(axis) -> None:
    """A few plain tick labels (0.0005, not 5x10^-4) on a log axis, as many as its span leaves room for.

    Matplotlib labels minor ticks when a log axis spans under two decades, and their
    labels run into each other.  Here: every 1..9 under half a decade, 1-2-5 up to two
    decades, powers of ten beyond (at most eight).
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.axes.autoscale_view()
    low, high = axis.get_view_interval()
    decades = np.log10(high / low) if low > 0 else np.inf
    subs = np.arange(1.0, 10.0) if decades < 0.5 else (1.0, 2.0, 5.0) if decades <= 2 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=8))
    axis.set_major_formatter(FuncFormatter(lambda value, _: np.format_float_positional(value, trim="-")))
    axis.set_minor_formatter(NullFormatter())


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` and close it; the image grows to hold the legend and notes outside the axes.

    Those are left out of ``tight_layout`` (``set_in_layout(False)``), which would
    otherwise shrink the panels, so they are named to ``bbox_inches="tight"`` here.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    outside = [artist for ax in fig.axes for artist in (ax.get_legend(), *ax.texts)
               if artist is not None and not artist.get_in_layout()]
    fig.savefig(path, dpi=dpi, bbox_inches="tight",
                bbox_extra_artists=fig.get_default_bbox_extra_artists() + outside)
    plt.close(fig)
    return path


def plot_evaluation(evaluation: Evaluation, path: str | Path, title: str = "") -> Path:
    """Write ``curve.png``: one panel per view the evaluation supports."""
    return save_figure(draw_evaluation(evaluation, title), path)


def draw_evaluation(evaluation: Evaluation, title: str = ""):
    """The figure of :func:`plot_evaluation`, unsaved: the strong/weak panel (pairs) and the cost panel.

    When every model costs the same, the cost panel becomes quality by model
    (:func:`same_cost`): a cost axis would hold one point.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = entry_styles(evaluation.entries)
    panels = ([_strong_weak_panel] if evaluation.pair else []) + [
        _quality_by_model_panel if same_cost(_models(evaluation)) else _cost_panel]
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 5.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        panel(ax, evaluation, styles)
        ax.grid(alpha=0.3)
    legend_outside(fig, axes[0][-1])
    title_over_panels(fig, title)
    return fig


def title_over_panels(fig, title: str) -> None:
    """Lay ``fig`` out tightly with ``title`` on top, centred over the panels rather than over panels and legend."""
    heading = fig.suptitle(title) if title else None
    fig.tight_layout()
    if heading is not None:
        heading.set_x((fig.axes[0].get_position().x0 + fig.axes[-1].get_position().x1) / 2)


def same_cost(models: Sequence[Entry]) -> bool:
    """Whether the single models all have the same mean cost per query (within :data:`SAME_COST_RTOL`)."""
    costs = np.array([model.metrics["mean_cost_usd"] for model in models])
    return len(costs) > 1 and bool(np.ptp(costs) <= SAME_COST_RTOL * np.abs(costs).max())


def cost_frontier(mean_cost_usd: np.ndarray, mean_quality: np.ndarray) -> np.ndarray:
    """Which models no other model dominates (as cheap and as good, and strictly better in one), as a mask."""
    cost, quality = np.asarray(mean_cost_usd, dtype=float), np.asarray(mean_quality, dtype=float)
    cheaper = cost[None, :] <= cost[:, None]
    better = quality[None, :] >= quality[:, None]
    strictly = (cost[None, :] < cost[:, None]) | (quality[None, :] > quality[:, None])
    return ~(cheaper & better & strictly).any(axis=1)


def _models(evaluation: Evaluation) -> list[Entry]:
    return [entry for entry in evaluation.entries if entry.kind == "model"
            and np.isfinite([entry.metrics["mean_cost_usd"], entry.metrics["mean_quality"]]).all()]


def _strong_weak_panel(ax, evaluation: Evaluation, styles: dict) -> None:
    strong, weak = evaluation.pair
    for entry in evaluation.entries:
        curve = entry.strong_weak_curve
        if curve is not None:
            ax.plot(100 * curve.strong_share, curve.quality, label=entry.name, **styles[entry.name])
        elif entry.kind == "model" and "strong_share" in entry.metrics:
            role = "strong" if entry.name == strong else "weak"
            ax.axhline(entry.metrics["mean_quality"], label=f"{entry.name} ({role} model)", **PAIR_STYLES[role])
    ax.set_xlabel(f"calls to the strong model {strong} (%)")
    ax.set_ylabel("mean quality")
    ax.set_title(f"strong/weak: {strong} vs {weak}")


def _cost_panel(ax, evaluation: Evaluation, styles: dict) -> None:
    for entry in evaluation.entries:
        if entry.cost_curve is not None:
            order = entry.cost_curve.mean_cost_usd.argsort()
            ax.plot(entry.cost_curve.mean_cost_usd[order], entry.cost_curve.mean_quality[order],
                    label=entry.name, **styles[entry.name])
    ax.set_xscale("log")
    _model_dots(ax, _models(evaluation))
    readable_log_axis(ax.xaxis)
    ax.set_xlabel("mean cost per query (US$, log scale)")
    ax.set_ylabel("mean quality")
    ax.set_title("quality against cost (sweeping willingness to pay)")


def _model_dots(ax, models: list[Entry]) -> None:
    """Grey dots, the cost/quality frontier named beside its dots and the other models listed below the axes.

    Naming every dot of a large pool (29 models on MMLU-Pro) piles the names up; the
    frontier holds the models worth routing to, and the list gives the others' quality.
    """
    if not models:
        return
    cost = np.array([model.metrics["mean_cost_usd"] for model in models])
    quality = np.array([model.metrics["mean_quality"] for model in models])
    ax.scatter(cost, quality, label="single model", **MODEL_DOT)
    ax.autoscale_view()
    frontier = cost_frontier(cost, quality)
    for k in np.flatnonzero(frontier):
        _name_dot(ax, models[k].name, cost[k], quality[k])
    others = [k for k in np.argsort(-quality, kind="stable") if not frontier[k]]
    if others:
        text = ("Models not named (another is as cheap and as good, and better in one), by mean quality: "
                + ", ".join(f"{models[k].name} {quality[k]:.3f}" for k in others))
        lines = textwrap.wrap(text, 120, break_on_hyphens=False)  # model names stay whole
        box = ax.annotate("\n".join(lines), (0, 0), xycoords="axes fraction", xytext=(0, -34),
                          textcoords="offset points", va="top", fontsize=7,
                          bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7"})
        box.set_in_layout(False)  # below the axes; the saved image grows to hold it


def _name_dot(ax, name: str, x: float, y: float) -> None:
    """Write ``name`` beside its dot, on the side with room: left of the dots in the right half of the axes."""
    right_half = ax.transAxes.inverted().transform(ax.transData.transform((x, y)))[0] > 0.5
    ax.annotate(name, (x, y), fontsize=7, xytext=(-5 if right_half else 5, 3), textcoords="offset points",
                ha="right" if right_half else "left",
                bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.75})


def _quality_by_model_panel(ax, evaluation: Evaluation, styles: dict) -> None:
    """Bars of each router's best quality and each model's mean quality, for a pool whose models cost the same."""
    models = sorted(_models(evaluation), key=lambda model: -model.metrics["mean_quality"])
    bars = [(entry.name, entry.metrics.get("best_quality", np.nan), styles[entry.name]["color"])
            for entry in evaluation.entries if entry.name in styles]
    bars += [(model.name, model.metrics["mean_quality"], MODEL_BAR_COLOUR) for model in models]
    rows = np.arange(len(bars))[::-1]
    values = np.array([value for _, value, _ in bars])
    ax.barh(rows, values, color=[colour for _, _, colour in bars], edgecolor="black", linewidth=0.5)
    ax.set_yticks(rows, [name for name, _, _ in bars], fontsize=8)
    for row, value in zip(rows, values):
        ax.annotate(f"{value:.3f}", (value, row), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
    ax.set_xlim(0, 1.12 * np.nanmax(values))
    ax.set_xlabel("mean quality (routers and baselines: the best on their cost/quality curve)")
    cost = models[0].metrics["mean_cost_usd"]
    ax.set_title(f"quality by model: all {len(models)} models cost the same\n(US${cost:.3g} per query), "
                 "so a cost axis would show one point")
