"""``crossroads replay``: stream a dataset's queries through a running server and send back each answer's worth."""

from __future__ import annotations

import argparse
import json

from crossroads.cli.common import DATASET_HELP, add_dataset_formats, at_least
from crossroads.errors import CrossroadsError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="replay a dataset's queries through a running `crossroads serve` and send feedback",
        description="Send --requests of the dataset's queries (drawn with --seed) to --route of the server at --url "
        "with the official openai SDK, --concurrency at a time, each with its category; then post each answer's "
        "worth to /v1/feedback: the recorded quality of the model that answered (--feedback quality), a "
        "scorer's verdict on the returned text (--feedback SCORER, one that needs no reference answer), or "
        "nothing (--feedback none). Made for a server whose models are answered by `crossroads twin` on the same "
        "dataset, where every counterfactual outcome is known: --out writes each request and that truth (what "
        "always sending the replayed queries to each model would have cost and scored) next to the summary.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", "-d", action="append", required=True, metavar="FORMAT:PATH", help=DATASET_HELP)
    parser.add_argument("--url", required=True, help="the server's OpenAI base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--route", required=True, metavar="NAME", help="the route (or model) to request")
    parser.add_argument("--requests", "-n", type=at_least(1), default=1000, help="requests to send (default 1000)")
    parser.add_argument("--concurrency", "-c", type=at_least(1), default=8,
                        help="requests in flight at once (default 8)")
    parser.add_argument("--feedback", default="quality", metavar="quality|none|SCORER",
                        help="what to send back per answer (default quality: the recorded quality)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw of queries (default 0)")
    parser.add_argument("--api-key-env", metavar="VAR", help="environment variable holding a client key, if the "
                        "server requires one")
    parser.add_argument("--out", metavar="FILE.json", help="write every request, the summary and the truth here")
    add_dataset_formats(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from rich.progress import Progress

    from crossroads.evaluate.replay import replay
    from crossroads.upstream.recorded import Recording

    if not args.url.startswith(("http://", "https://")):
        raise CrossroadsError(f"--url {args.url!r} must be the server's base URL, e.g. http://127.0.0.1:8000/v1")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise CrossroadsError(f"--api-key-env {args.api_key_env}: that variable is not set")
    recording = Recording.load(args.dataset)
    with Progress(transient=True) as progress:
        task = progress.add_task(f"replaying into {args.route}", total=args.requests)
        result = replay(recording, args.url, args.route, requests=args.requests, concurrency=args.concurrency,
                        feedback=args.feedback, seed=args.seed, api_key=api_key,
                        progress=lambda done: progress.update(task, completed=done))
    summary = result.summary()
    print(f"{summary['requests']:,} requests in {result.elapsed_s:.1f} s ({summary['requests_per_s']:.0f}/s): "
          f"{summary['answered']:,} answered, {summary['errors']:,} errors; spent US${summary['spend_usd']:.4g}; "
          f"feedback sent on {summary['feedback_sent']:,}"
          + (f" (mean quality {summary['mean_quality_sent']:.3f})" if summary["mean_quality_sent"] is not None
             else ""))
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.to_dict(), indent=1), encoding="utf-8")
        print(f"wrote {path}")
    return 0
