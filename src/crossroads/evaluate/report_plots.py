"""The figures of ``crossroads report``: traffic share by model over time, spend against single models, quality.

They share the look of the other figures (:mod:`crossroads.evaluate.plots`): legends
outside the axes, single models in the order of the report, intervals as error bars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from crossroads.evaluate.plots import ROUTER_COLOURS, legend_outside, save_figure

#: The served traffic's colour, next to the single models' grey.
SERVED_COLOUR = "tab:blue"
MODEL_COLOUR = "0.6"
CANDIDATE_COLOUR = "tab:orange"


def plot_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write ``traffic.png``, ``spend.png`` and ``quality.png`` into ``out``; their paths by name."""
    import matplotlib

    matplotlib.use("Agg")
    return {"traffic_png": save_figure(draw_traffic(report), out / "traffic.png"),
            "spend_png": save_figure(draw_spend(report), out / "spend.png"),
            "quality_png": save_figure(draw_quality(report), out / "quality.png")}


def draw_traffic(report: dict[str, Any]):
    """Requests per day, stacked by the model that answered."""
    import matplotlib.pyplot as plt

    by_day = report["model_by_day"]
    days = list(by_day)
    models = [row["name"] for row in report["breakdown"]["model"]]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    bottom = np.zeros(len(days))
    for k, model in enumerate(models):
        counts = np.array([by_day[day].get(model, 0) for day in days], dtype=float)
        ax.bar(days, counts, bottom=bottom, label=model, color=ROUTER_COLOURS[k % len(ROUTER_COLOURS)])
        bottom += counts
    ax.set_ylabel("requests")
    ax.set_title("requests per day (UTC) by the model that answered")
    ax.tick_params(axis="x", labelrotation=45 if len(days) > 6 else 0)
    legend_outside(fig, ax)
    fig.tight_layout()
    return fig


def draw_spend(report: dict[str, Any]):
    """What was spent, and what always sending every request to each single model would have cost (95% interval)."""
    import matplotlib.pyplot as plt

    savings = report["savings"]
    rows = [("served (routed)", savings["served_usd"], None, None, SERVED_COLOUR)]
    for model, entry in sorted(savings["models"].items(), key=lambda item: -(item[1]["spend_usd"]["value"] or 0)):
        spend = entry["spend_usd"]
        rows.append((f"always {model}", spend["value"], spend["low"], spend["high"], MODEL_COLOUR))
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.38 * len(rows)))
    _bars(ax, rows)
    ax.set_xlabel("US$ over the requests answered in the window")
    ax.set_title(f"spend: routed against single models ({savings['decisions']:,} answered requests)")
    fig.tight_layout()
    return fig


def draw_quality(report: dict[str, Any]):
    """Mean quality served, and each single model's and candidate router's off-policy (doubly robust) estimate,
    with 95% intervals."""
    import matplotlib.pyplot as plt

    quality = report["quality"]
    served = quality["served"]
    rows = [("served (routed)", served["value"], served["low"], served["high"], SERVED_COLOUR)]
    for model, estimates in quality["single_models"].items():
        dr = estimates["dr"]
        rows.append((f"always {model} (DR)", dr["value"], dr["low"], dr["high"], MODEL_COLOUR))
    for name, entry in report.get("candidates", {}).get("routers", {}).items():
        dr = entry["candidate"]["quality"]["dr"]
        rows.append((f"candidate {name} (DR)", dr["value"], dr["low"], dr["high"], CANDIDATE_COLOUR))
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.38 * len(rows)))
    _bars(ax, rows)
    ax.set_xlabel("mean quality (feedback, 0-1)")
    shown = [row for row in rows if row[1] is not None]
    title = "quality: served and off-policy per model"
    ax.set_title(title if shown else title + "\n(no figure: too few labelled decisions, see the report)")
    fig.tight_layout()
    return fig


def _bars(ax, rows: list[tuple[str, float | None, float | None, float | None, str]]) -> None:
    """Horizontal bars with error bars, top to bottom; a missing value is a gap labelled 'no estimate'."""
    positions = np.arange(len(rows))[::-1]
    for y, (_, value, low, high, colour) in zip(positions, rows):
        if value is None:
            ax.annotate("no estimate", (0, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
            continue
        error = None if low is None or high is None else [[max(value - low, 0)], [max(high - value, 0)]]
        ax.barh(y, value, color=colour, edgecolor="black", linewidth=0.5, xerr=error, capsize=3)
        ax.annotate(f"{value:.4g}", (value, y), xytext=(4, 6), textcoords="offset points", fontsize=7)
    ax.set_yticks(positions, [row[0] for row in rows], fontsize=8)
    ax.grid(axis="x", alpha=0.3)
