"""``crossroads simulate``: replay recorded outcomes as a stream and score online learners."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from crossroads.cli.common import add_data_options, checked_specs, embed, load_data
from crossroads.errors import CrossroadsError

#: The outcome changes a --drift may name (the fields of crossroads.evaluate.simulate.Drift).
DRIFT_FIELDS = ("quality_delta", "cost_factor", "latency_factor")

DEFAULT_LEARNERS = ["automaton", "qlearning", "ucb", "thompson"]
#: Printed columns: (metric key, heading, shown as "number", "count" or "percent"); headings name the
#: baseline each one is measured against, and the table's caption says how (crossroads.evaluate.simulate).
COLUMNS = [
    ("mean_reward", "mean reward", "number"),
    ("regret_vs_best_fixed", "regret vs best fixed", "number"),
    ("regret_vs_oracle", "regret vs oracle", "number"),
    ("convergence_step", "converged after (selections)", "count"),
    ("quality_retained", "quality kept vs most expensive", "percent"),
    ("cost_reduction_vs_most_expensive", "cost saved vs most expensive", "percent"),
    ("latency_reduction_vs_random", "latency saved vs random", "percent"),
]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="replay recorded outcomes as a stream of requests and score online learners (PickLLM-style)",
        description="Shuffle the dataset's queries into a stream; at each request every learner picks a model, "
        "earns the objective's reward of that model's recorded outcome and learns from it. Baselines: random "
        "(expected), best fixed model in hindsight, most expensive model and the per-query oracle. Metrics are "
        "averaged over --seeds streams. Writes OUT/metrics.json, OUT/rewards.png (cumulative reward and regret "
        "on the first stream, with drift, --add and --remove steps marked) and, when an automaton or qlearning "
        "learner is simulated, OUT/convergence.png (each model's selection probability for each of "
        "--learning-rates, one session over all categories).",
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
    parser.add_argument("--reward", choices=["linear", "pickllm"], default="linear",
                        help="linear: weights over quality and pool-scaled cost and latency, in [0, 1] (default); "
                        "pickllm: PickLLM's w_a*quality - w_c*cost_usd - w_l*t_scaling*log10(latency_s)")
    parser.add_argument("--t-scaling", type=float, default=1.0, help="PickLLM reward's latency scaling (default 1)")
    parser.add_argument("--drift", action="append", metavar="MODEL@STEP:k=v,...",
                        help="from STEP on, change MODEL's outcomes: quality_delta=-0.3, cost_factor=2, "
                        "latency_factor=1.5 (repeatable)")
    parser.add_argument("--add", action="append", metavar="MODEL@STEP", help="MODEL joins the pool at STEP (repeatable)")
    parser.add_argument("--remove", action="append", metavar="MODEL@STEP", help="MODEL leaves the pool at STEP (repeatable)")
    parser.add_argument("--latency-profiles", metavar="FILE.json",
                        help='per-model latency model where the data has none: {"model": {"ttft_s": 0.4, '
                        '"tokens_per_s": 70}, ...}; models left out get the price-tier default')
    parser.add_argument("--learning-rates", default="0.05,0.1,0.3", metavar="R1,R2,...",
                        help="learning rates of the convergence plot, drawn for the first automaton or qlearning "
                        "learner (default 0.05,0.1,0.3)")
    parser.add_argument("--out", default="crossroads-simulate", metavar="DIR",
                        help="output directory (default ./crossroads-simulate)")
    from crossroads.cli.simulate_budget import add_budget_options

    add_budget_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from crossroads.evaluate.simulate import simulate
    from crossroads.objective import make_reward, parse_objective
    from crossroads.online import LEARNERS

    if args.budget:
        from crossroads.cli.simulate_budget import run_budget

        return run_budget(args)
    # everything the user typed is checked before any loading
    specs = checked_specs(LEARNERS, args.learner or DEFAULT_LEARNERS)
    objective = parse_objective(args.objective)
    reward = objective if args.reward == "linear" else make_reward(objective, form="pickllm", t_scaling=args.t_scaling)
    drifts = [_drift(text) for text in args.drift or []]
    add_at, remove_at = _model_steps(args.add, "--add"), _model_steps(args.remove, "--remove")
    profiles = _latency_profiles(args.latency_profiles) if args.latency_profiles else None
    rates = _rates(args.learning_rates)
    dataset = load_data(args.dataset, args.models)
    embeddings = None
    if any(LEARNERS.load(spec.name).contextual for spec in specs):
        embeddings, _ = embed(dataset.prompts, args.embedder, not args.no_cache)
    result = simulate(dataset, specs, reward, queries=args.queries, seeds=args.seeds, seed=args.seed,
                      sessions=args.sessions, embeddings=embeddings, drift=drifts, add_at=add_at,
                      remove_at=remove_at, latency_profiles=profiles)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result.to_json(), indent=1))
    from crossroads.evaluate.simulation_plots import (
        LEARNING_RATE_PARAM,
        plot_convergence,
        plot_rewards,
    )

    written = [out / "metrics.json", plot_rewards(result, out / "rewards.png").path]
    rated = [spec for spec in specs if spec.name in LEARNING_RATE_PARAM]
    if rated:  # PickLLM's figure: each model's selection probability, one panel per learning rate
        params = {k: v for k, v in rated[0].params.items() if k != LEARNING_RATE_PARAM[rated[0].name]}
        written.append(plot_convergence(dataset, rated[0].name, rates, out / "convergence.png", objective=reward,
                                        queries=args.queries, seed=args.seed, latency_profiles=profiles,
                                        **params).path)
    print_table(result)
    Console().print("wrote " + ", ".join(str(path) for path in written))
    return 0


def _drift(text: str):
    """A Drift from ``MODEL@STEP:quality_delta=-0.3,cost_factor=2``."""
    from crossroads.evaluate.simulate import Drift
    from crossroads.registry import Spec, bind

    model, sep, rest = text.rpartition("@")
    spec = Spec.parse(rest, f"--drift {text!r}")
    model, step = _model_step(f"{model}{sep}{spec.name}", "--drift")
    unknown = sorted(set(spec.params) - set(DRIFT_FIELDS))
    if spec.positional is not None or unknown:
        raise CrossroadsError(f"--drift {text!r}: {spec.positional or unknown[0]!r} is not one of "
                              f"{', '.join(DRIFT_FIELDS)}=NUMBER")
    if not spec.params:
        raise CrossroadsError(f"--drift {text!r} changes nothing: add e.g. :quality_delta=-0.3 or :cost_factor=2")
    return Drift(at_step=step, model=model, **bind(Drift, spec, f"--drift {text!r}", required=False))


def _model_step(text: str, option: str) -> tuple[str, int]:
    model, sep, step = text.rpartition("@")
    if not sep or not model or not step.strip().isdigit():
        raise CrossroadsError(f"{option} {text!r}: write MODEL@STEP, the step a whole number >= 0 (e.g. gpt-4@500)")
    return model, int(step)


def _model_steps(texts: list[str] | None, option: str) -> dict[str, int]:
    return dict(_model_step(text, option) for text in texts or [])


def _latency_profiles(path: str) -> dict:
    from crossroads.evaluate.latency import LatencyProfile

    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise CrossroadsError(f"cannot read --latency-profiles {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise CrossroadsError(f"--latency-profiles {path} is not valid JSON: {exc}") from None
    example = '{"model": {"ttft_s": 0.4, "tokens_per_s": 70}}'
    if not isinstance(raw, dict):
        raise CrossroadsError(f"--latency-profiles {path} must map model names to profiles, e.g. {example}")
    profiles = {}
    for model, profile in raw.items():
        if not isinstance(profile, dict) or set(profile) != {"ttft_s", "tokens_per_s"}:
            raise CrossroadsError(f"--latency-profiles {path}: {model!r} needs exactly ttft_s and tokens_per_s, e.g. {example}")
        profiles[model] = LatencyProfile(**profile)
    return profiles


def _rates(text: str) -> list[float]:
    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CrossroadsError(f"--learning-rates {text!r}: write numbers separated by commas, e.g. 0.05,0.1,0.3") from None
    if not rates:
        raise CrossroadsError("--learning-rates is empty: give at least one rate, e.g. 0.1")
    return rates


def print_table(result) -> None:
    """Print the metrics of every learner and baseline, whole names first, with what each column is measured by."""
    from rich.table import Table

    from crossroads.cli.data import print_whole

    setup = result.setup
    table = Table(title=f"{setup['queries']} requests x {setup['seeds']} seeds, {len(setup['models'])} models, "
                  f"objective {setup['objective']}, sessions by {setup['sessions']} (mean over seeds)",
                  caption=_caption(result), title_justify="left", caption_justify="left")
    table.add_column("learner / baseline", no_wrap=True)
    for _, heading, _ in COLUMNS:
        table.add_column(heading, justify="right", no_wrap=False)
    for entry in result.entries:
        table.add_row(entry.name, *(_cell(entry.metrics.get(key), shown) for key, _, shown in COLUMNS))
    print_whole(table)


def _caption(result) -> str:
    """What the table's relative columns divide by, naming the most expensive model."""
    return (f"quality kept = mean quality / most_expensive's ({_most_expensive_model(result)} on the first "
            "stream); cost saved = 1 - total cost / most_expensive's; latency saved = 1 - mean latency / random's; "
            "converged after: selections a session had made when its learner converged, mean over the sessions "
            "that did (- if none did); regret: the baseline's cumulative reward minus the entry's.")


def _most_expensive_model(result) -> str:
    import numpy as np

    trace = result["most_expensive"].model_trace
    chosen = trace[trace >= 0]
    return result.setup["models"][int(np.bincount(chosen).argmax())] if chosen.size else "-"


def _cell(value, shown: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if shown == "percent":
        return f"{100 * value:.1f}%"
    return f"{value:.0f}" if shown == "count" else f"{value:.3f}"
