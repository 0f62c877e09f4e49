"""What ``crossroads eval --logs`` and ``crossroads promote`` share: a candidate router estimated on logged traffic."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path


def add_decision_options(parser: argparse.ArgumentParser) -> None:
    """--objective and --rule, as a server route's ``objective`` and ``rule``: how a candidate decides."""
    parser.add_argument("--objective", metavar="WEIGHTS", default="quality=1",
                        help="the route's objective, e.g. quality=1,cost=0.5: the candidate decides by it and rewards "
                        "are scored by it (default quality=1)")
    parser.add_argument("--rule", metavar="SPEC", default="reward",
                        help="the route's decision rule: reward (default), within:tolerance=Q or "
                        "utility:willingness_to_pay=W")


def add_candidate_options(parser: argparse.ArgumentParser, seed: bool = True) -> None:
    """--objective and --rule (:func:`add_decision_options`), --replicates (and --seed)."""
    add_decision_options(parser)
    parser.add_argument("--replicates", type=int, default=200, metavar="N",
                        help="bootstrap replicates per 95%% interval (default 200)")
    if seed:
        parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")


def load_logs(text: str):
    """The logged dataset at ``text`` (a file written by `crossroads logs export`, FORMAT:PATH, or store:URL)."""
    from crossroads.errors import CrossroadsError

    path = Path(text).expanduser()
    if path.is_file():
        from crossroads.data.jsonl import read_jsonl

        logs = read_jsonl(path)
    elif ":" in text and not path.exists():
        from crossroads.store.export import load_datasets  # every format, and store:URL

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

    candidate = prepare(args, router_file)
    logs = load_logs(logs_text)
    if route is not None:
        logs = for_route(logs, route)
    return estimate_on(args, candidate, logs, embed(logs.prompts, args.embedder, not args.no_cache)), logs


@dataclass
class Candidate:
    """A candidate router file, loaded, and the route's objective and decision rule it decides by."""

    router_file: str
    router: object
    objective: object
    rule_label: str
    rule: object


def prepare(args: argparse.Namespace, router_file: str) -> Candidate:
    """``router_file`` loaded and ``args``' objective, rule and replicates checked: everything that can be wrong
    with a candidate, found before any prompt is embedded."""
    from crossroads.errors import CrossroadsError
    from crossroads.objective import parse_objective
    from crossroads.objective.rules import RULES, make_rule
    from crossroads.routers import load_router

    if args.replicates < 1:
        raise CrossroadsError(f"--replicates {args.replicates}: give at least 1")
    objective = parse_objective(args.objective)
    rule_label = RULES.spec(args.rule).label
    return Candidate(router_file, load_router(router_file), objective, rule_label, make_rule(rule_label, objective))


def estimate_on(args: argparse.Namespace, candidate: Candidate, logs, embedded: tuple):
    """The CandidateEstimate of ``candidate`` on ``logs``, whose prompts ``embedded`` holds as (embeddings,
    embedder name); ``args`` gives the replicates and the bootstrap's seed."""
    from crossroads.errors import CrossroadsError
    from crossroads.evaluate.candidate import candidate_choices, estimate_candidate

    embeddings, embedder_name = embedded
    router = candidate.router
    if router.embedder_ and router.embedder_ != embedder_name:
        raise CrossroadsError(f"{candidate.router_file} was trained on {router.embedder_} embeddings, not "
                              f"{embedder_name}: pass --embedder to match (as the server's config `embedder:`)")
    chosen = candidate_choices(router, logs, embeddings, candidate.rule)
    return estimate_candidate(logs, chosen, candidate.objective, candidate.rule_label, args.replicates, args.seed)


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
