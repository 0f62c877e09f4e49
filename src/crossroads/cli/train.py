"""``crossroads train``: fit a router on recorded outcomes and save it, with its provenance beside it."""

from __future__ import annotations

import argparse

from crossroads.cli.common import DATASET_HELP, add_data_options, checked_specs, embed, load_data


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fit a router on recorded outcomes and save it to a file",
        description="Fit one router on every query of the datasets and save it (.npz: arrays and a JSON header, "
        "no pickle), with FILE.json beside it recording the data, the command and the counts. Load it with "
        "crossroads.routers.load_router or pass it to `crossroads calibrate --router-file` or `crossroads route`.",
    )
    add_data_options(parser)
    parser.add_argument("--router", "-r", required=True, metavar="NAME[:k=v,...]", help="router to fit, e.g. ensemble or knn:k=100")
    parser.add_argument("--exclude-questions", action="append", metavar="FORMAT:PATH",
                        help="drop training queries whose question appears in this dataset (normalised text; "
                        "repeatable), to keep a benchmark unseen. " + DATASET_HELP.split(",", 1)[0])
    parser.add_argument("--out", "-o", required=True, type=router_file, metavar="FILE.npz",
                        help="where to save the fitted router (FILE.json beside it records its provenance)")
    parser.add_argument("--verifier-out", type=router_file, metavar="FILE.npz",
                        help="also fit a learned verifier (for a route's `cascade: {verifier: FILE.npz}`) on the "
                        "datasets' recorded responses, reading this router's cross-validated predictions")
    parser.set_defaults(func=run)


def router_file(text: str) -> str:
    """An argparse type: a path ending in .npz (the format routers and verifiers are saved in)."""
    if not text.endswith(".npz"):
        raise argparse.ArgumentTypeError(f"{text!r}: routers and verifiers are saved as .npz files, e.g. "
                                         f"{text.rsplit('.', 1)[0]}.npz")
    return text


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from crossroads.routers import ROUTERS
    from crossroads.routers.provenance import write_provenance
    from crossroads.store.export import load_datasets  # every format, and store:URL

    (spec,) = checked_specs(ROUTERS, [args.router])
    router = ROUTERS.build(spec)
    dataset = load_data(args.dataset, args.models)
    removed = 0
    if args.exclude_questions:
        from crossroads.data.dedup import overlap

        excluded = load_datasets(args.exclude_questions)
        repeated = overlap(dataset.prompts, excluded.prompts)
        removed = int(repeated.sum())
        if removed == dataset.n_queries:
            from crossroads.errors import CrossroadsError

            raise CrossroadsError("every training query appears in --exclude-questions: nothing left to train on")
        dataset = dataset.subset(~repeated)
        Console(stderr=True).print(f"removed {removed} training queries whose question appears in "
                                   f"{', '.join(args.exclude_questions)}")
    embeddings, embedder_name = embed(dataset.prompts, args.embedder, not args.no_cache)
    console = Console(stderr=True)
    if dataset.logged:
        dataset = _debiased(dataset, embeddings, spec, console)
    with console.status(f"fitting {spec.label} on {dataset.n_queries} queries x {dataset.n_models} models"):
        router.fit(dataset, embeddings, embedder=embedder_name)
    path = router.save(args.out)
    record = write_provenance(path, router, dataset, command=["crossroads", *args.argv],
                              data=args.dataset or [], excluded=args.exclude_questions or [], removed=removed)
    Console(soft_wrap=True).print(f"saved {spec.label} ({dataset.n_models} models) to {path} "
                                  f"({path.stat().st_size / 1e6:.2f} MB); provenance in {record}")
    if args.verifier_out:
        from crossroads.evaluate.cascade_cv import fit_verifier

        with console.status(f"fitting a learned verifier on {spec.label}'s cross-validated predictions"):
            verifier = fit_verifier(dataset, embeddings, router=spec, embedder=embedder_name)
        Console(soft_wrap=True).print(f"saved {verifier!r} to {verifier.save(args.verifier_out)}")
    return 0


def _debiased(dataset, embeddings, spec, console):
    """A logged dataset (partial feedback) as full-information targets (:mod:`crossroads.routers.logged`)."""
    import numpy as np

    from crossroads.routers.logged import DEFAULT_MAX_WEIGHT, DEFAULT_METHOD, accepts_unbounded, debiased

    clip = not accepts_unbounded(spec.name, spec.params.get("members"))
    labelled = int(np.isfinite(dataset.quality).any(axis=1).sum())
    if labelled == 0:
        from crossroads.errors import CrossroadsError

        raise CrossroadsError("the logged dataset has no labelled decision (no quality on any served answer): "
                              "label them first (`crossroads label`) or send feedback")
    console.print(f"logged partial feedback ({labelled} of {dataset.n_queries} queries labelled): training on "
                  f"{DEFAULT_METHOD.upper()} debiased targets (1/propensity capped at {DEFAULT_MAX_WEIGHT:g})" + (f", clipped to [0, 1] for {spec.name} (biased "
                  "where corrections are large; knn, ridge or ensemble:members=knn+ridge need no clipping)"
                  if clip else ""), highlight=False)
    return debiased(dataset, embeddings, method=DEFAULT_METHOD, clip=clip, max_weight=DEFAULT_MAX_WEIGHT)
