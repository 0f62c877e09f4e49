"""The ``crossroads`` command-line program."""

from __future__ import annotations

import argparse
import sys

from crossroads import __version__
from crossroads.errors import CrossroadsError

COMMANDS = ("data", "train", "eval", "calibrate", "route", "simulate", "serve", "config", "report", "replay", "twin",
            "logs", "label", "promote", "keys")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="crossroads",
        description="Route each LLM request to the model that best serves your objective.",
    )
    parser.add_argument("--version", action="version", version=f"crossroads {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"crossroads.cli.{name}").register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = list(argv)
    try:
        return args.func(args) or 0
    except CrossroadsError as exc:
        print(f"crossroads: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
