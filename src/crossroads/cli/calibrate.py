"""``crossroads calibrate``: the win-probability threshold that gives a target share of strong-model calls."""

from __future__ import annotations

import argparse

from crossroads.cli.common import add_data_options, at_least, checked_specs, embed, load_data, step_progress


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="find the threshold that sends a target share of queries to the strong model",
        description="Compute P(strong beats weak) for every query of a calibration set and print the threshold "
        "at which --strong-share of them would go to the strong model, with the RouteLLM-style model name "
        "router-<router>-<threshold>. With --router-file the saved router scores the calibration set; "
        "with --router the router is cross-validated on the dataset so that no query is scored by a router "
        "that trained on it.",
    )
    add_data_options(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--router", "-r", metavar="NAME[:k=v,...]", help="router to cross-validate on the dataset")
    source.add_argument("--router-file", metavar="FILE.npz", help="a router saved by `crossroads train`")
    parser.add_argument("--strong-share", type=float, required=True, metavar="FRACTION",
                        help="target share of strong-model calls, e.g. 0.3 for 30%%")
    parser.add_argument("--strong", help="strong model (default for 2 models: the better one)")
    parser.add_argument("--weak", help="weak model")
    parser.add_argument("--cv", type=at_least(2), default=5, metavar="K",
                        help="folds when cross-validating --router, K >= 2 (default 5)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from rich.console import Console

    from crossroads.errors import CrossroadsError
    from crossroads.evaluate.harness import cross_validated_predictions, default_pair
    from crossroads.evaluate.splits import cross_validation_splits
    from crossroads.objective.rules import calibrate_threshold, route_strong_weak
    from crossroads.routers import ROUTERS, load_router

    if not 0.0 <= args.strong_share <= 1.0:
        raise CrossroadsError(f"--strong-share {args.strong_share}: give a fraction in [0, 1], e.g. 0.3 for 30%")
    spec = checked_specs(ROUTERS, [args.router])[0] if args.router else None
    dataset = load_data(args.dataset, args.models)
    pair = default_pair(dataset, args.strong, args.weak)
    if pair is None:
        raise CrossroadsError(f"the pool has {dataset.n_models} models: choose the pair with --strong and --weak")
    strong, weak = pair
    if args.router_file:
        router = load_router(args.router_file)
        embeddings, embedder_name = embed(dataset.prompts, args.embedder, not args.no_cache)
        if router.embedder_ and router.embedder_ != embedder_name:
            raise CrossroadsError(f"{args.router_file} was trained on {router.embedder_} embeddings; "
                                  f"pass --embedder to match (this run used {embedder_name})")
        win = router.win_probability(embeddings, strong, weak, prompts=dataset.prompts, categories=dataset.categories)
        name = router.name
    else:
        embeddings, embedder_name = embed(dataset.prompts, args.embedder, not args.no_cache)
        splits = list(cross_validation_splits(dataset.n_queries, args.cv))
        with step_progress("cross-validating", len(splits)) as on_step:
            _, win = cross_validated_predictions(spec, dataset, embeddings, splits, (strong, weak), embedder_name,
                                                 on_step=on_step)
        name = spec.name
    threshold = calibrate_threshold(win, args.strong_share)
    achieved = float(np.mean(route_strong_weak(win, threshold)))
    console = Console(soft_wrap=True)
    console.print(f"strong {strong}, weak {weak}, {len(win)} calibration queries")
    console.print(f"threshold for {100 * args.strong_share:.1f}% strong calls: {threshold:.5f} "
                  f"(achieved {100 * achieved:.1f}% on the calibration set)")
    console.print(f"RouteLLM model name: router-{name}-{threshold:.5f}")
    router_file = args.router_file or f"{name}.npz (train it with `crossroads train --router {args.router}`)"
    console.print("to serve it, put this in the server's config and request that model name:\n"
                  f"  routellm: {{strong: {strong}, weak: {weak}, routers: {{{name}: {router_file}}}}}\n"
                  "the threshold belongs to this router file and this calibration set: calibrate again after "
                  "retraining the router or when your traffic changes", highlight=False)
    return 0

