"""The evaluation plot: quality against strong-call share (pairs) and against cost (any pool)."""

from __future__ import annotations

from pathlib import Path

from crossroads.evaluate.harness import Evaluation

_STYLE = {"router": {"lw": 1.8}, "random": {"lw": 1.2, "ls": ":", "color": "grey"},
          "oracle": {"lw": 1.2, "ls": "--", "color": "black"}}


def plot_evaluation(evaluation: Evaluation, path: str | Path, title: str = "") -> Path:
    """Write ``curve.png``: one panel per view the evaluation supports."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (["strong_weak"] if evaluation.pair else []) + ["cost"]
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 5.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        (_strong_weak_panel if panel == "strong_weak" else _cost_panel)(ax, evaluation)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _strong_weak_panel(ax, evaluation: Evaluation) -> None:
    strong, weak = evaluation.pair
    for entry in evaluation.entries:
        curve = entry.strong_weak_curve
        if curve is not None:
            ax.plot(100 * curve.strong_share, curve.quality, label=entry.name, **_STYLE[entry.kind])
        elif entry.kind == "model" and "strong_share" in entry.metrics:
            colour = "tab:red" if entry.name == strong else "tab:grey"
            ax.axhline(entry.metrics["mean_quality"], color=colour, ls="-.", lw=1, label=entry.name)
    ax.set_xlabel(f"calls to the strong model {strong} (%)")
    ax.set_ylabel("mean quality")
    ax.set_title(f"strong/weak: {strong} vs {weak}")


def _cost_panel(ax, evaluation: Evaluation) -> None:
    for entry in evaluation.entries:
        if entry.cost_curve is not None:
            order = entry.cost_curve.mean_cost_usd.argsort()
            ax.plot(entry.cost_curve.mean_cost_usd[order], entry.cost_curve.mean_quality[order],
                    label=entry.name, **_STYLE[entry.kind])
        if entry.kind == "model":
            ax.scatter(entry.metrics["mean_cost_usd"], entry.metrics["mean_quality"], s=18, zorder=3)
            ax.annotate(entry.name, (entry.metrics["mean_cost_usd"], entry.metrics["mean_quality"]),
                        fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("mean cost per query (US$, log scale)")
    ax.set_ylabel("mean quality")
    ax.set_title("quality against cost (sweeping willingness to pay)")
