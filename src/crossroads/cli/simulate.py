"""``crossroads simulate``: replay recorded outcomes as a stream and score online learners."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from crossroads.cli.common import add_data_options, embed, load_data

DEFAULT_LEARNERS = ["automaton", "qlearning", "ucb", "thompson"]
#: Printed columns: (metric key, heading, shown as a percentage).
COLUMNS = [
    ("mean_reward", "mean reward", False),
    ("regret_vs_best_fixed", "regret vs best fixed", False),
    ("regret_vs_oracle", "regret vs oracle", False),
    ("convergence_step", "converged at", False),
    ("quality_retained", "quality kept", True),
    ("cost_reduction_vs_most_expensive", "cost saved", True),
    ("latency_reduction_vs_random", "latency saved vs random", True),
]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="replay recorded outcomes as a stream of requests and score online learners (PickLLM-style)",
        description="Shuffle the dataset's queries into a stream; at each request every learner picks a model, "
        "earns the objective's reward of that model's recorded outcome and learns from it. Baselines: random "
        "(expected), best fixed model in hindsight, most expensive model and the per-query oracle. Metrics are "
        "averaged over --seeds streams. Writes OUT/metrics.json and OUT/rewards.png (cumulative reward and regret).",
    )
    add_data_options(parser)
    parser.add_argument("--learner", "-l", action="append", metavar="NAME[:k=v,...]",
                        help=f"online learner, repeatable (default: {', '.join(DEFAULT_LEARNERS)}); "
                        "options after a colon, e.g. automaton:learning_rate=0.1")
    parser.add_argument("--objective", default="quality=1", metavar="WEIGHTS",
                        help="reward weights, e.g. quality=1,cost=0.5,latency=0.2 (default quality=1)")
    parser.add_argument("--queries", type=int, metavar="N",
                        help="requests per stream (default: every query once; more than the dataset has samples "
                        "with replacement)")
    parser.add_argument("--seeds", type=int, default=5, metavar="K", help="streams to average over (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--sessions", choices=["category", "none"], default="category",
                        help="one learner per query category (default, like PickLLM's sessions) or one for all")
    parser.add_argument("--out", default="crossroads-simulate", metavar="DIR",
                        help="output directory (default ./crossroads-simulate)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from crossroads.evaluate.simulate import LearnerSpec, simulate
    from crossroads.online import learner_class
    from crossroads.online.objective import parse_objective

    specs = [LearnerSpec.parse(text) for text in (args.learner or DEFAULT_LEARNERS)]
    objective = parse_objective(args.objective)  # a bad objective fails before any loading
    dataset = load_data(args.dataset, args.models)
    embeddings = None
    if any(learner_class(spec.name).contextual for spec in specs):
        embeddings, _ = embed(dataset.prompts, args.embedder, not args.no_cache)
    result = simulate(dataset, specs, objective, queries=args.queries, seeds=args.seeds, seed=args.seed,
                      sessions=args.sessions, embeddings=embeddings)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result.to_json(), indent=1))
    from crossroads.evaluate.simulation_plots import plot_rewards

    plot_rewards(result, out / "rewards.png")
    print_table(result)
    Console().print(f"wrote {out / 'metrics.json'} and {out / 'rewards.png'}")
    return 0


def print_table(result) -> None:
    from rich.console import Console
    from rich.table import Table

    setup = result.setup
    table = Table(title=f"{setup['queries']} requests x {setup['seeds']} seeds, {len(setup['models'])} models, "
                  f"objective {setup['objective']}, sessions by {setup['sessions']} (mean over seeds)")
    table.add_column("learner / baseline")
    for _, heading, _ in COLUMNS:
        table.add_column(heading, justify="right")
    for entry in result.entries:
        table.add_row(entry.name, *(_cell(entry.metrics.get(key), pct) for key, _, pct in COLUMNS))
    Console(width=max(Console().width, 120)).print(table)


def _cell(value, percent: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.1f}%" if percent else f"{value:.3f}"
