"""``crossroads eval``: replay recorded outcomes and score routers against baselines and the oracle."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from crossroads.cli.common import add_data_options, at_least, checked_specs, embed, load_data, step_progress

DEFAULT_ROUTERS = ["sw_ranking", "mf", "knn", "mlp", "ridge", "ensemble", "gbt", "ensemble:members=knn+ridge+gbt"]
#: Printed tables: (title, [(metric key, column heading, shown as a percentage)]).
TABLES = [
    ("strong/weak (RouteLLM method; _fine = fine grid, no rising-curve assumption)",
     [("apgr", "APGR", False), ("cpt50", "CPT(50%)", True), ("cpt80", "CPT(80%)", True),
      ("apgr_fine", "APGR fine", False), ("cpt50_fine", "CPT50 fine", True), ("cpt80_fine", "CPT80 fine", True)]),
    ("any number of models (sweeping willingness to pay; cost share = of the best single model's cost)",
     [("aiq", "AIQ", False), ("best_quality", "best quality", False), ("cost_share_at_95", "cost@95%", True),
      ("cost_share_at_97", "cost@97%", True), ("cost_share_at_100", "cost@100%", True)]),
    ("cascades at their cheapest point reaching 97% of the best single model's quality",
     [("mean_calls_at_97", "calls/query", False), ("mean_latency_s_at_97", "latency (s, chain)", False)]),
]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate routers on recorded outcomes (cross-validation or train/test)",
        description="Replay recorded outcomes of real LLMs: each router predicts, for queries it did not train "
        "on, how well each model would answer; the decisions are scored against what the models actually did. "
        "Baselines in every run: random (averaged over 10 seeds), each single model and the oracle. "
        "Prints a table, writes OUT/metrics.json and OUT/curve.png.",
    )
    add_data_options(parser)
    parser.add_argument("--router", "-r", action="append", metavar="NAME[:k=v,...]",
                        help=f"router to evaluate, repeatable (default: {', '.join(DEFAULT_ROUTERS)}); "
                        "options after a colon, e.g. knn:k=100")
    parser.add_argument("--cv", type=at_least(2), default=5, metavar="K",
                        help="K-fold cross-validation by query, K >= 2 (default 5)")
    parser.add_argument("--train", action="append", metavar="FORMAT:PATH", help="train on this dataset (repeatable)")
    parser.add_argument("--test", action="append", metavar="FORMAT:PATH",
                        help="score on this dataset instead of cross-validating (repeatable; needs --train)")
    parser.add_argument("--keep-duplicates", action="store_true",
                        help="with --train/--test, keep training queries whose question also appears in the test set "
                        "(by default they are removed, matched by normalised question text, and the count reported)")
    parser.add_argument("--probes", type=int, default=0, metavar="N",
                        help="with --train/--test: N test queries (drawn with --seed) reveal the outcomes of the test "
                        "models the training set lacks, to place them (irt router), and are left out of the scoring")
    parser.add_argument("--strong", help="strong model of the pair for APGR/CPT (default for 2 models: the better one)")
    parser.add_argument("--weak", help="weak model of the pair")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fold split and random baseline")
    parser.add_argument("--out", default="crossroads-eval", metavar="DIR", help="output directory (default ./crossroads-eval)")
    cascades = parser.add_argument_group("cascades, replayed on the recorded responses (cross-validation only)")
    cascades.add_argument("--cascade", action="append", choices=["routing", "fixed"],
                          help="add a cascade (repeatable): routing = cascade routing from the router's predictions, "
                          "fixed = a chain cheapest first; scored on the queries with every model's outcome")
    cascades.add_argument("--verifier", default="learned", metavar="NAME",
                          help="what judges each answer: learned (default) or agreement; see docs/cascades.md")
    cascades.add_argument("--cascade-router", metavar="NAME[:k=v,...]",
                          help="router whose predictions the cascades start from (default: the first --router)")
    cascades.add_argument("--max-cost-usd", type=float, metavar="USD", help="per-query cost cap of cascade routing")
    logs = parser.add_argument_group("a candidate router on logged traffic (off-policy; writes OUT/candidate.json)")
    logs.add_argument("--logs", metavar="FILE.jsonl", help="a server's log (`crossroads logs export`, or store:URL to "
                      "read its store directly): estimate how --router-file, deciding as a route with --objective "
                      "and --rule would, did on that traffic")
    logs.add_argument("--router-file", metavar="FILE.npz", help="the candidate router (with --logs)")
    from crossroads.cli.candidate import add_candidate_options

    add_candidate_options(logs, seed=False)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from crossroads.errors import CrossroadsError

    if args.logs or args.router_file:
        return run_logs(args)
    from crossroads.evaluate.harness import default_pair, evaluate
    from crossroads.evaluate.plots import plot_evaluation
    from crossroads.routers import ROUTERS

    specs = checked_specs(ROUTERS, args.router or DEFAULT_ROUTERS)
    if bool(args.train) != bool(args.test):
        raise CrossroadsError("--train and --test go together; or use --dataset with --cv K")
    if args.train and args.dataset:
        raise CrossroadsError("give either --dataset (cross-validation) or --train/--test, not both")
    if args.cascade and args.test:
        raise CrossroadsError("--cascade is cross-validated on --dataset: drop --train/--test")
    cache = not args.no_cache
    train = load_data(args.train or args.dataset, args.models)
    test, removed = None, 0
    if args.test:
        test_data = load_data(args.test, args.models)
        if not args.keep_duplicates:
            from crossroads.data.dedup import overlap

            repeated = overlap(train.prompts, test_data.prompts)
            removed = int(repeated.sum())
            if removed == train.n_queries:
                raise CrossroadsError(f"every one of the {removed} training queries also appears in the test set: "
                                      "train on another dataset (or pass --keep-duplicates)")
            train = train.subset(~repeated)
        test = (test_data, embed(test_data.prompts, args.embedder, cache)[0])
    probes = None
    if args.probes:
        if not args.test:
            raise CrossroadsError("--probes needs --train/--test: probes come from the test set's new models")
        if not 0 < args.probes < test[0].n_queries:
            raise CrossroadsError(f"--probes {args.probes}: give between 1 and {test[0].n_queries - 1} "
                                  "(some test queries must remain to score on)")
        import numpy as np

        picked = np.zeros(test[0].n_queries, dtype=bool)
        picked[np.random.default_rng(args.seed).choice(test[0].n_queries, args.probes, replace=False)] = True
        probes = (test[0].subset(picked), test[1][picked])
        test = (test[0].subset(~picked), test[1][~picked])
    if not args.test and args.cv > train.n_queries:
        raise CrossroadsError(f"--cv {args.cv}: the dataset has {train.n_queries} queries; give K <= {train.n_queries}")
    train_emb, embedder_name = embed(train.prompts, args.embedder, cache)
    pair = default_pair(test[0] if test else train, args.strong, args.weak)

    steps = len(specs) * (1 if test else args.cv)
    with step_progress("fitting and predicting", steps) as on_step:
        evaluation = evaluate(specs, train, train_emb, folds=args.cv, test=test, pair=pair, seed=args.seed,
                              embedder=embedder_name, on_step=on_step, probes=probes)
    if args.cascade:
        add_cascades(args, evaluation, train, train_emb, embedder_name)
    if args.test:
        evaluation.setup["duplicates_removed"] = removed
        evaluation.setup["probes"] = args.probes
        Console().print(f"removed {removed} training queries whose question appears in the test set"
                        + (" (normalised question text)" if removed else ""))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(evaluation.to_json(), indent=1))
    from dataclasses import replace

    plotted = replace(evaluation, entries=[replace(e, kind="router") if e.kind == "cascade" else e
                                           for e in evaluation.entries])  # a cascade is drawn as a router
    plot_evaluation(plotted, out / "curve.png", title=", ".join(args.test or args.train or args.dataset or ["RouteLLM MMLU"]))
    print_table(evaluation)
    Console().print(f"wrote {out / 'metrics.json'} and {out / 'curve.png'}")
    return 0


def add_cascades(args: argparse.Namespace, evaluation, dataset, embeddings, embedder: str) -> None:
    """Cross-validate the cascades of ``--cascade`` and put their entries after the routers'."""
    import numpy as np

    from crossroads.evaluate.cascade_cv import evaluate_cascades

    complete = ~(np.isnan(dataset.quality).any(1) | np.isnan(dataset.cost_usd).any(1))
    if dataset.responses is None:
        from rich.console import Console

        Console(stderr=True).print("the dataset keeps no responses: the verifier sees only the router's predictions "
                                   "(for mmlu-pro add ,responses=true to the dataset)")
    router = args.cascade_router or (args.router or DEFAULT_ROUTERS)[0]
    with step_progress("cascades", args.cv) as on_step:
        curves = evaluate_cascades(args.cascade, dataset.subset(complete), embeddings[complete], router=router,
                                   verifier=args.verifier, folds=args.cv, seed=args.seed, embedder=embedder,
                                   max_cost_usd=args.max_cost_usd, on_step=on_step)
    entries = [curve.entry(dataset.subset(complete)) for curve in curves]
    routers = sum(entry.kind == "router" for entry in evaluation.entries)
    evaluation.entries[routers:routers] = entries
    evaluation.setup["cascades"] = {"router": router, "verifier": args.verifier, "queries": int(complete.sum()),
                                    "max_cost_usd": args.max_cost_usd,
                                    "routing_at_97": {curve.name: curve.settings_at_97(dataset.subset(complete))
                                                      for curve in curves if curve.kind == "routing"}}


def run_logs(args: argparse.Namespace) -> int:
    """``eval --logs FILE --router-file NEW.npz``: the candidate's off-policy estimates against the logging policy."""
    from crossroads.cli.candidate import estimate, print_estimate
    from crossroads.errors import CrossroadsError

    if not (args.logs and args.router_file):
        raise CrossroadsError("--logs and --router-file go together: the log to estimate on and the candidate router")
    if args.dataset or args.train or args.test or args.router:
        raise CrossroadsError("--logs estimates one --router-file on a server's log; drop --dataset/--train/--test/"
                              "--router (they evaluate on recorded full outcomes)")
    result, _ = estimate(args, args.logs, args.router_file)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"logs": args.logs, "router_file": args.router_file, **result.to_dict()}
    (out / "candidate.json").write_text(json.dumps(record, indent=1))
    print_estimate(result, f"{args.router_file} on {result.decisions} logged decisions ({result.objective}, "
                           f"rule {result.rule}); 95% intervals")
    from rich.console import Console

    Console().print(f"wrote {out / 'candidate.json'}")
    return 0


def print_table(evaluation) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 110))
    console.print(f"{evaluation.setup['method']} on {evaluation.setup['queries']} queries, "
                  f"{len(evaluation.setup['models'])} models"
                  + (f" (strong {evaluation.pair[0]}, weak {evaluation.pair[1]})" if evaluation.pair else ""))
    for title, columns in TABLES:
        if not any(key in entry.metrics for entry in evaluation.entries for key, _, _ in columns):
            continue
        table = Table(title=title)
        table.add_column("router / baseline")
        for _, heading, _ in columns:
            table.add_column(heading, justify="right")
        for entry in evaluation.entries:
            if entry.kind != "model":
                table.add_row(entry.name, *(_cell(entry.metrics.get(key), pct) for key, _, pct in columns))
        console.print(table)
    models = Table(title="single models")
    models.add_column("model")
    models.add_column("mean quality", justify="right")
    models.add_column("mean cost (US$/query)", justify="right")
    for entry in evaluation.entries:
        if entry.kind == "model":
            models.add_row(entry.name, f"{entry.metrics['mean_quality']:.4f}", f"{entry.metrics['mean_cost_usd']:.6f}")
    console.print(models)


def _cell(value, percent: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.1f}%" if percent else f"{value:.3f}"
