"""``crossroads logs export``: a server's logged traffic as a dataset file, to train and evaluate on."""

from __future__ import annotations

import argparse

from crossroads.cli.report import TIME_HELP, parse_time
from crossroads.errors import CrossroadsError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("logs", help="export what a server logged as a dataset",
                                   description="Work with the decisions, outcomes and feedback a server stored.")
    commands = parser.add_subparsers(dest="logs_command", metavar="SUBCOMMAND", required=True)
    export = commands.add_parser(
        "export",
        help="write the logged traffic as a crossroads JSONL dataset (read it back with --dataset logs:FILE)",
        description="Write one query per answered decision whose prompt was stored (`store_prompts: true`): the "
        "served answer under the model that answered (a fallback's, when one answered instead of the chosen model) "
        "and every shadow answer under its model, each with its quality from feedback where there is one; and per "
        "query the model the route chose and the probability it gave that choice. Read it back anywhere a "
        "dataset goes with --dataset logs:FILE.jsonl, or read the store directly with --dataset store:URL.",
    )
    export.add_argument("--store", required=True, metavar="URL",
                        help="the server's store: sqlite://PATH.db (or a .db path) or postgresql://...")
    export.add_argument("--out", "-o", required=True, metavar="FILE.jsonl", help="the dataset file to write")
    export.add_argument("--route", metavar="R", help="only decisions of this route")
    export.add_argument("--team", metavar="T", help="only decisions made with the virtual keys of this team (its own "
                        "traffic, to train its own router)")
    export.add_argument("--since", metavar="T", help=f"only decisions made at or after T: {TIME_HELP}")
    export.add_argument("--until", metavar="T", help=f"only decisions made before T: {TIME_HELP}")
    export.add_argument("--quality-from", default="any", metavar="any|user|SOURCE",
                        help="which feedback labels an answer: any (default: users' first, else the first from "
                        "any other source such as a judge), user (users' only) or one source, e.g. judge:gpt-4o")
    export.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    import os
    import tempfile
    from pathlib import Path

    from crossroads.data.jsonl import write_jsonl
    from crossroads.store import open_store
    from crossroads.store.export import check_store_exists, read_logs

    since_s, until_s = parse_time(args.since, "--since"), parse_time(args.until, "--until")
    if since_s is not None and until_s is not None and since_s >= until_s:
        raise CrossroadsError(f"--since {args.since} is not before --until {args.until}: the window is empty")
    out = Path(args.out)
    if out.is_dir():
        raise CrossroadsError(f"--out {out} is a directory: give the file to write, e.g. {out / 'logs.jsonl'}")
    check_store_exists(args.store)
    with open_store(args.store) as store:
        logs = read_logs(store, route=args.route, since_s=since_s, until_s=until_s, quality_from=args.quality_from,
                         team=args.team)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(handle)
    try:
        write_jsonl(logs.dataset, temporary)
        os.replace(temporary, out)
    finally:
        Path(temporary).unlink(missing_ok=True)
    print(f"wrote {out}: {logs.summary}")
    return 0
