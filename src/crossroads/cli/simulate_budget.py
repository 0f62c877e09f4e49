"""``crossroads simulate --budget USD/PERIOD[:pace|cap]``: one budget period of day/night traffic, paced."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from crossroads.cli.common import embed, load_data
from crossroads.errors import CrossroadsError


def add_budget_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("budget pacing (with --budget; see docs/budgets.md)")
    group.add_argument("--budget", metavar="USD/PERIOD[:MODE]",
                       help="pace this budget over one simulated period of day/night traffic instead of scoring "
                       "learners, e.g. 2/day or 10/week:cap; --queries is the period's expected request count")
    group.add_argument("--burst-at", type=float, metavar="SHARE", help="a traffic burst starting at this share of "
                       "the period (e.g. 0.5)")
    group.add_argument("--burst-x", type=float, default=3.0, metavar="X", help="the burst's traffic factor (default 3)")
    group.add_argument("--burst-len", type=float, default=0.05, metavar="SHARE",
                       help="the burst's length as a share of the period (default 0.05)")
    group.add_argument("--amplitude", type=float, default=0.6,
                       help="day/night swing of the arrival rate, in [0, 1) (default 0.6: noon 4x midnight)")
    group.add_argument("--router", default="knn", metavar="SPEC",
                       help="the router predicting each model's quality, trained on the other part (default knn)")
    group.add_argument("--test-share", type=float, default=0.5,
                       help="share of the queries streamed; the router trains on the rest (default 0.5)")
    group.add_argument("--profile", choices=["learned", "uniform"], default="learned",
                       help="the controller's traffic profile: learned from a previous period (default) or uniform")


def run_budget(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from crossroads.evaluate.budget_simulation import Traffic, held_out_predictions, plot_budget, simulate_budget
    from crossroads.objective.budget import parse_budget

    budget = parse_budget(args.budget)
    traffic = Traffic(args.queries or 5000, args.amplitude, args.burst_at, args.burst_x, args.burst_len)
    if args.seeds < 1:
        raise CrossroadsError(f"--seeds must be >= 1, got {args.seeds}")
    dataset = load_data(args.dataset, args.models)
    embeddings, _ = embed(dataset.prompts, args.embedder, not args.no_cache)
    rows, predicted, expected = held_out_predictions(dataset, embeddings, router=args.router,
                                                     test_share=args.test_share, seed=args.seed)
    runs = [simulate_budget(dataset.quality[rows], dataset.cost_usd[rows], predicted, expected, budget, traffic,
                            seed=args.seed + k, profile=args.profile, model_names=dataset.model_names)
            for k in range(args.seeds)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"setup": {"budget": str(budget), "requests": traffic.requests, "amplitude": traffic.amplitude,
                        "burst_at": traffic.burst_at, "burst_x": traffic.burst_x, "burst_len": traffic.burst_len,
                        "router": args.router, "test_share": args.test_share, "profile": args.profile,
                        "models": dataset.model_names, "seeds": args.seeds, "seed": args.seed},
              "runs": [run.to_json() for run in runs]}
    (out / "budget.json").write_text(json.dumps(result, indent=1))
    plot = plot_budget(runs[0], out / "budget.png", traffic)
    table = Table(title=f"{budget} over one {budget.per}: {traffic.requests} requests expected, "
                  f"{len(dataset.model_names)} models, router {args.router}", title_justify="left")
    for heading in ("seed", "spend / budget", "mean quality", "best fixed at equal spend", "ratio",
                    "max |spend - target|", "back on track after burst", "refused"):
        table.add_column(heading, justify="right")
    for k, run in enumerate(runs):
        s = run.summary
        table.add_row(str(args.seed + k), f"{s['spend_over_budget']:.3f}", f"{s['mean_quality']:.4f}",
                      _number(s["best_fixed_quality"], ".4f"), _number(s["quality_vs_best_fixed"], ".3f"),
                      f"{100 * s['max_deviation']:.1f}% of budget",
                      _number(s.get("recovery"), ".3f", " of the period", "-"), f"{100 * s['refused_share']:.1f}%")
    console = Console()
    console.print(table)
    console.print(f"wrote {out / 'budget.json'}, {plot}")
    return 0


def _number(value, form: str, suffix: str = "", missing: str = "never") -> str:
    if value is None:
        return "-"
    return missing if math.isnan(value) else f"{value:{form}}{suffix}"
