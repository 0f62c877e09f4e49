"""``crossroads train``: fit a router on recorded outcomes and save it."""

from __future__ import annotations

import argparse

from crossroads.cli.common import add_data_options, embed, load_data


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fit a router on recorded outcomes and save it to a file",
        description="Fit one router on every query of the datasets and save it (.npz: arrays and a JSON header, "
        "no pickle). Load it with crossroads.routers.load_router or pass it to `crossroads calibrate --router-file`.",
    )
    add_data_options(parser)
    parser.add_argument("--router", "-r", required=True, metavar="NAME[:k=v,...]", help="router to fit, e.g. ensemble or knn:k=100")
    parser.add_argument("--out", "-o", required=True, metavar="FILE.npz", help="where to save the fitted router")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from crossroads.evaluate.replay import RouterSpec

    spec = RouterSpec.parse(args.router)
    router = spec.build()
    dataset = load_data(args.dataset, args.models)
    embeddings, embedder_name = embed(dataset.prompts, args.embedder, not args.no_cache)
    console = Console(stderr=True)
    with console.status(f"fitting {spec.label} on {dataset.n_queries} queries x {dataset.n_models} models"):
        router.fit(dataset, embeddings, embedder=embedder_name)
    path = router.save(args.out)
    Console(soft_wrap=True).print(f"saved {spec.label} ({', '.join(dataset.model_names)}) to {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0
