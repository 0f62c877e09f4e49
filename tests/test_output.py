"""What users read: the evaluation figure's look (styles, legend, log ticks, model labels) and the simulate table."""

from __future__ import annotations

import argparse
import itertools
import re

import numpy as np
import pytest

from crossroads.data.dataset import ModelInfo, RoutingDataset
from crossroads.evaluate.harness import evaluate
from crossroads.evaluate.plots import (
    BASELINE_STYLES,
    cost_frontier,
    draw_evaluation,
    line_styles,
    plot_evaluation,
)
from crossroads.evaluate.simulate import simulate

ROUTERS = ["knn:k=5", "knn:k=9"]


def pool(cost_usd: list[float], mean_quality: list[float], n: int = 60, names: list[str] | None = None):
    """A dataset whose models cost ``cost_usd`` per query and score about ``mean_quality``, with embeddings."""
    rng = np.random.default_rng(0)
    quality = (rng.random((n, len(cost_usd))) < np.array(mean_quality)).astype(float)
    names = names or [f"model-{j}" for j in range(len(cost_usd))]
    dataset = RoutingDataset([f"q{i}" for i in range(n)], [f"question {i}" for i in range(n)], ["c"] * n,
                             ["s"] * n, [ModelInfo(name) for name in names], quality, np.tile(cost_usd, (n, 1)))
    return dataset, rng.normal(size=(n, 8)).astype(np.float32)


def evaluated(cost_usd, mean_quality, pair=None, **kwargs):
    dataset, embeddings = pool(cost_usd, mean_quality, **kwargs)
    return evaluate(ROUTERS, dataset, embeddings, folds=3, pair=pair)


def overlapping(boxes) -> list[tuple[int, int]]:
    return [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]


# -- one look for every figure ---------------------------------------------------------
def test_no_two_routers_share_both_colour_and_line_style():
    names = [f"router-{k}" for k in range(36)]
    looks = [(style["color"], style["ls"]) for style in line_styles(names).values()]
    assert len(set(looks)) == len(looks)
    assert all(a[0] != b[0] and a[1] != b[1] for a, b in itertools.pairwise(looks))  # neighbours differ in both
    baseline_colours = {style["color"] for style in BASELINE_STYLES.values()}
    assert not baseline_colours & {colour for colour, _ in looks}


def test_ensemble_and_its_variant_look_different_on_the_figure():
    dataset, embeddings = pool([1e-3, 4e-3], [0.4, 0.8])
    evaluation = evaluate(["ensemble", "ensemble:members=knn+ridge"], dataset, embeddings, folds=3)
    fig = draw_evaluation(evaluation)
    lines = {line.get_label(): line for line in fig.axes[-1].get_lines()}
    plain, variant = lines["ensemble"], lines["ensemble:members=knn+ridge"]
    assert plain.get_color() != variant.get_color() and plain.get_linestyle() != variant.get_linestyle()


def test_legend_is_outside_every_panel():
    fig = draw_evaluation(evaluated([1e-3, 4e-3], [0.4, 0.8], pair=("model-1", "model-0")))  # two panels
    assert len(fig.axes) == 2
    fig.canvas.draw()
    legend = fig.axes[-1].get_legend().get_window_extent()
    assert not any(legend.overlaps(ax.get_window_extent()) for ax in fig.axes)
    assert legend.x0 > fig.axes[-1].get_window_extent().x1


def test_log_cost_axis_has_few_plain_tick_labels_that_do_not_collide():
    # MMLU-Pro's span, 1.4e-4 to 3.5e-3 US$: matplotlib's default labels 3e-4 and 4e-4 on top of each other
    fig = draw_evaluation(evaluated([1.4e-4, 3e-4, 3.3e-4, 4e-4, 1e-3, 3.5e-3], [0.6, 0.3, 0.35, 0.4, 0.5, 0.7]))
    fig.canvas.draw()
    axis = fig.axes[0].xaxis
    low, high = axis.get_view_interval()
    labels = [label for label in axis.get_ticklabels(minor=False) + axis.get_ticklabels(minor=True)
              if label.get_text() and low <= label.get_position()[0] <= high]
    assert 2 <= len(labels) <= 8
    assert all(re.fullmatch(r"0\.\d+|\d+(\.\d+)?", label.get_text()) for label in labels), labels
    assert overlapping([label.get_window_extent() for label in labels]) == []


# -- single models ---------------------------------------------------------------------
def test_cost_frontier_keeps_the_models_nothing_beats_on_both():
    cost = np.array([1.0, 2.0, 2.0, 3.0, 0.5])
    quality = np.array([0.5, 0.7, 0.6, 0.7, 0.2])
    assert cost_frontier(cost, quality).tolist() == [True, True, False, False, True]


def test_only_frontier_models_are_named_and_the_rest_listed_with_grey_dots():
    names = ["cheap-and-good", "dear-and-best", "dominated-a", "dominated-b", "dominated-c"]
    evaluation = evaluated([1e-4, 1e-3, 5e-4, 2e-3, 3e-4], [0.6, 0.9, 0.3, 0.5, 0.2], n=80, names=names)
    ax = draw_evaluation(evaluation).axes[0]
    texts = [text.get_text() for text in ax.texts]
    assert {"cheap-and-good", "dear-and-best"} <= set(texts)
    assert not {"dominated-a", "dominated-b", "dominated-c"} & set(texts)
    listing = next(text for text in texts if text.startswith("Models not named"))
    assert all(name in listing.replace("\n", " ") for name in ("dominated-a", "dominated-b", "dominated-c"))
    dots = ax.collections[0].get_facecolors()
    assert len(dots) == 1 or len(set(map(tuple, dots))) == 1
    red, green, blue, _ = dots[0]
    assert red == green == blue  # grey, never a router's colour


def test_a_pool_whose_models_cost_the_same_draws_quality_by_model():
    evaluation = evaluated([2e-4] * 3, [0.3, 0.5, 0.7])  # RouterDC: every model costs the same
    ax = draw_evaluation(evaluation).axes[0]
    assert "cost the same" in ax.get_title() and ax.get_xscale() == "linear"
    names = {round(label.get_position()[1]): label.get_text() for label in ax.get_yticklabels()}
    bars = {names[round(bar.get_y() + bar.get_height() / 2)]: bar.get_width() for bar in ax.patches}
    assert set(bars) == {*ROUTERS, "random", "oracle", "model-0", "model-1", "model-2"}
    models = {entry.name: entry.metrics for entry in evaluation.entries}
    assert bars["model-2"] == pytest.approx(models["model-2"]["mean_quality"])
    assert bars["knn:k=5"] == pytest.approx(models["knn:k=5"]["best_quality"])


def test_a_pool_with_different_prices_keeps_the_cost_axis(tmp_path):
    evaluation = evaluated([2e-4, 1e-3, 3e-3], [0.3, 0.5, 0.7])
    ax = draw_evaluation(evaluation).axes[0]
    assert ax.get_xscale() == "log" and not ax.patches
    assert plot_evaluation(evaluation, tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


# -- the simulate table ----------------------------------------------------------------
LONG_LEARNER = "qlearning:step_size=0.1,epsilon=0.1,epsilon_decay=0.999"


def simulated():
    dataset, _ = pool([1e-3, 9e-3, 3e-3], [0.4, 0.9, 0.6], n=120,
                      names=["small-model", "the-most-expensive-model", "middle-model"])
    return simulate(dataset, [LONG_LEARNER, "automaton:learning_rate=0.5"], "quality=1,cost=0.5", seeds=2)


def test_simulate_table_keeps_names_whole_and_says_what_it_measures_against(capsys, monkeypatch):
    from crossroads.cli.simulate import print_table

    monkeypatch.setenv("COLUMNS", "80")
    result = simulated()
    print_table(result)
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split()}
    assert LONG_LEARNER in rows and "automaton:learning_rate=0.5" in rows
    step = result["automaton:learning_rate=0.5"].metrics["convergence_step"]
    assert f"{step:.0f}" in rows["automaton:learning_rate=0.5"]  # a count of selections, not 100.000
    assert "-" in rows["random"]  # baselines never converge
    caption = " ".join(out.split())
    assert "quality kept = mean quality / most_expensive's (the-most-expensive-model" in caption
    assert "cost saved = 1 - total cost / most_expensive's" in caption
    assert "latency saved = 1 - mean latency / random's" in caption


@pytest.mark.parametrize("columns", ["60", "200"])
def test_simulate_table_cuts_no_cell_at_any_width(columns, capsys, monkeypatch):
    from crossroads.cli.simulate import print_table

    monkeypatch.setenv("COLUMNS", columns)
    result = simulated()
    print_table(result)
    out = capsys.readouterr().out
    for entry in result.entries:
        assert re.search(rf"{re.escape(entry.name)}\s", out), entry.name
    assert "…" not in out
    for word in ("reward", "expensive", "random", "(selections)"):
        assert word in out


def test_simulate_help_names_every_file_it_writes(capsys):
    from crossroads.cli import simulate as command

    parser = argparse.ArgumentParser(prog="crossroads")
    command.register(parser.add_subparsers(dest="command", required=True))
    with pytest.raises(SystemExit):
        parser.parse_args(["simulate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "metrics.json" in text and "rewards.png" in text
    assert "convergence.png" in text and "automaton or qlearning" in text
