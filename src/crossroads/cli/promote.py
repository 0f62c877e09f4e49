"""``crossroads promote``: put a candidate router on a running server's route, only if the logs say it is better."""

from __future__ import annotations

import argparse
from pathlib import Path

from crossroads.cli.common import AdminClient

#: Exit codes: promoted, refused (the candidate is not shown better), and errors (2, as every command).
PROMOTED, REFUSED = 0, 1


def register(subparsers: argparse._SubParsersAction) -> None:
    from crossroads.cli.candidate import add_candidate_options

    parser = subparsers.add_parser(
        "promote",
        help="replace a route's router on a running server when its logged traffic shows the candidate is better",
        description="Estimate off-policy, on the route's logged decisions (--logs, from `crossroads logs export`), "
        "the mean reward the candidate router would have had under the route's objective and rule; when the lower "
        "end of its 95%% interval beats the logged policy's observed mean reward, replace the route's router file "
        "through the server's /admin/reload (the config file is not changed: the command prints the line to put "
        "there). Otherwise print both figures and change nothing. Exit code 0 promoted, 1 refused, 2 error.",
    )
    parser.add_argument("--server", required=True, metavar="URL", help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--route", required=True, metavar="ROUTE", help="the route whose router file to replace")
    parser.add_argument("--router-file", required=True, metavar="NEW.npz", help="the candidate router")
    parser.add_argument("--logs", required=True, metavar="FILE.jsonl",
                        help="the route's logged decisions (`crossroads logs export`, or store:URL to read the "
                        "server's store directly)")
    parser.add_argument("--admin-key-env", default="CROSSROADS_ADMIN_KEY", metavar="VAR",
                        help="environment variable holding the server's admin key (default CROSSROADS_ADMIN_KEY)")
    parser.add_argument("--estimator", choices=("dr", "snips", "ips"), default="dr",
                        help="the off-policy estimate whose lower bound must win (default dr, doubly robust)")
    parser.add_argument("--embedder", default="minilm-onnx", help="embedder for a router file that names none")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    add_candidate_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from crossroads.cli.candidate import estimate, print_estimate

    admin = AdminClient.from_env(args.server, args.admin_key_env, timeout_s=120)
    router_file = Path(args.router_file).expanduser().resolve()
    result, logs = estimate(args, args.logs, str(router_file), route=args.route)
    console = Console(soft_wrap=True)
    print_estimate(result, f"{router_file.name} on route {args.route}: {result.decisions} logged decisions "
                           f"({result.objective}, rule {result.rule}); 95% intervals")
    candidate, logged = result.candidate["reward"][args.estimator], result.logged["reward"]
    if candidate.value is None or logged.value is None:
        console.print(f"not promoted: no estimate to decide on ({candidate.note or logged.note})", highlight=False)
        return REFUSED
    figures = (f"candidate {args.estimator} reward {candidate.value:.4f}, 95% interval [{candidate.low:.4f}, "
               f"{candidate.high:.4f}]; logged policy's observed mean reward {logged.value:.4f}")
    if not candidate.low > logged.value:
        console.print(f"not promoted: the candidate's lower bound {candidate.low:.4f} does not beat the current "
                      f"policy's {logged.value:.4f} ({figures}); route {args.route} unchanged", highlight=False)
        return REFUSED
    answer = _reload(admin, args.route, str(router_file))
    console.print(f"promoted {router_file} on route {args.route} of {args.server} ({figures})", highlight=False)
    console.print(f"the server's config file {answer.get('reloaded')} is unchanged; to keep this after a restart, "
                  f"set under routes.{args.route}:  router_file: {router_file}", highlight=False)
    return PROMOTED


def _reload(admin: AdminClient, route: str, router_file: str) -> dict:
    """``/admin/reload`` with the route's new router file; a refusal says that nothing changed."""
    from crossroads.errors import CrossroadsError

    try:
        return admin.call("POST", "/admin/reload", {"routes": {route: {"router_file": router_file}}})
    except CrossroadsError as error:
        raise CrossroadsError(f"{error}; nothing changed") from None
