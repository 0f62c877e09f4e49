"""What ``crossroads eval --logs`` and ``crossroads promote`` share: a candidate router estimated on logged traffic."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_candidate_options(parser: argparse.ArgumentParser, seed: bool = True) -> None:
    """--objective and --rule as a server route's ``objective`` and ``rule``, --replicates (and --seed)."""
    parser.add_argument("--objective", metavar="WEIGHTS", default="quality=1",
                        help="the route's objective, e.g. quality=1,cost=0.5: the candidate decides by it and rewards "
                        "are scored by it (default quality=1)")
    parser.add_argument("--rule", metavar="SPEC", default="reward",
                        help="the route's decision rule: reward (default), within:tolerance=Q or "
                        "utility:willingness_to_pay=W")
    parser.add_argument("--replicates", type=int, default=200, metavar="N",
                        help="bootstrap replicates per 95%% interval (default 200)")
    if seed:
        parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")


def load_logs(text: str):
    """The logged dataset at ``text`` (a file written by `crossroads logs export`, or FORMAT:PATH)."""
    from crossroads.errors import CrossroadsError

    path = Path(text).expanduser()
    if path.is_file():
        from crossroads.data.jsonl import read_jsonl

        logs = read_jsonl(path)
    elif ":" in text and not path.exists():
        from crossroads.data.importers import load_datasets

        logs = load_datasets([text])
    else:
        raise CrossroadsError(f"--logs {text}: no such file; export a server's log with `crossroads logs export`")
    if not logs.logged:
        raise CrossroadsError(f"--logs {text}: these outcomes hold no logged decisions (served model and propensity "
                              "per query); export a server's log with `crossroads logs export`")
    return logs


def for_route(logs, route: str):
    """The decisions of ``route`` in an export (``source`` ``logs/ROUTE``); an export without routes as it is."""
    import numpy as np

    from crossroads.errors import CrossroadsError

    routes = sorted({s.removeprefix("logs/") for s in logs.sources if s.startswith("logs/")})
    if not routes:
        return logs
    if route not in routes:
        raise CrossroadsError(f"the logs hold no decision of route {route!r}; their routes: {', '.join(routes)}")
    return logs.subset(np.array([s == f"logs/{route}" for s in logs.sources]))


def estimate(args: argparse.Namespace, logs_text: str, router_file: str, route: str | None = None):
    """The candidate's estimate on the logs (of ``route`` only, when given): (CandidateEstimate, logs)."""
    from crossroads.cli.common import embed
    from crossroads.errors import CrossroadsError
    from crossroads.evaluate.candidate import candidate_choices, estimate_candidate
    from crossroads.objective import parse_objective
    from crossroads.objective.rules import RULES, make_rule
    from crossroads.routers import load_router

    if args.replicates < 1:
        raise CrossroadsError(f"--replicates {args.replicates}: give at least 1")
    objective = parse_objective(args.objective)
    rule_label = RULES.spec(args.rule).label
    rule = make_rule(rule_label, objective)
    router = load_router(router_file)
    logs = load_logs(logs_text)
    if route is not None:
        logs = for_route(logs, route)
    embeddings, embedder_name = embed(logs.prompts, args.embedder, not args.no_cache)
    if router.embedder_ and router.embedder_ != embedder_name:
        raise CrossroadsError(f"{router_file} was trained on {router.embedder_} embeddings, not {embedder_name}: "
                              "pass --embedder to match (as the server's config `embedder:`)")
    chosen = candidate_choices(router, logs, embeddings, rule)
    return estimate_candidate(logs, chosen, objective, rule_label, args.replicates, args.seed), logs


def print_estimate(result, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)
    table = Table(title=title)
    for heading in ("", "logged policy (observed)", "candidate IPS", "candidate SNIPS", "candidate DR", "decisions"):
        table.add_column(heading, justify="left" if not heading else "right")
    for metric in ("reward", "quality", "cost_usd"):
        by = result.candidate[metric]
        table.add_row(metric, _cell(result.logged[metric]), *(_cell(by[e]) for e in ("ips", "snips", "dr")),
                      f"{by['dr'].n} ({result.matching[metric]} match)")
    console.print(table)
    notes = {est.note for by in result.candidate.values() for est in by.values() if est.value is None and est.note}
    for note in sorted(notes):
        console.print(f"no figure: {note}", highlight=False)
    console.print("candidate picks: " + ", ".join(f"{m} {k}" for m, k in result.chosen.items() if k), highlight=False)


def _cell(estimate) -> str:
    if estimate.value is None:
        return "-"
    if estimate.low is None or estimate.high is None:
        return f"{estimate.value:.4g}"
    return f"{estimate.value:.4g} [{estimate.low:.4g}, {estimate.high:.4g}]"
