"""``crossroads config check``: validate a server configuration without starting a server."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    config = subparsers.add_parser("config", help="check a server configuration file",
                                   description="Work with `crossroads serve` configuration files (docs/serve.md).")
    commands = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    check = commands.add_parser(
        "check",
        help="validate a config and the environment variables it names, without starting a server",
        description="Read FILE as `crossroads serve --config FILE` would: every key, model, route, learner and rule "
        "is checked, router files are loaded, and the store URL is read (the store is not opened). Prints what "
        "the server would serve. Exits 0 when all is well, 1 when the config is valid but an environment "
        "variable it names is not set (an API key, the admin key), 2 when the config is wrong.",
    )
    check.add_argument("file", metavar="FILE.yaml", help="the configuration to check")
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from crossroads.cli.serve import summary
    from crossroads.serve.config import load_config
    from crossroads.serve.learning import RouteLearners
    from crossroads.serve.routing import Routes

    config = load_config(args.file)
    Routes(config, RouteLearners(config.routes, config.model_names)).load_routers()
    for line in summary(config, f"config {Path(args.file).resolve()}"):
        print(line)
    problems = config.unset_variables()
    print(f"{args.file}: {'valid, with the warnings above' if problems else 'valid'}", file=sys.stderr)
    return 1 if problems else 0
