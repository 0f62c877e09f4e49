"""``crossroads report``: what a server's routing spent, saved and served, from its store."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import time

from crossroads.cli.common import at_least
from crossroads.errors import CrossroadsError

#: Relative times: a number and a unit, counted back from now.
RELATIVE = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
TIME_HELP = ("a UTC date or time (2026-12-01, 2026-12-01T14:30) or a span back from now (30m, 24h, 7d, 2w)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="report what routing spent, saved and served, from a server's store",
        description="Read the decisions, outcomes and feedback that `crossroads serve` stored and write "
        "OUT/report.json, OUT/report.html (one file, plots embedded, readable offline), OUT/traffic.png, "
        "OUT/spend.png and OUT/quality.png: requests, spend, tokens, latency p50/p95/p99, errors and fallbacks "
        "per model, route, category and day; the spend had every request gone to each single model of the pool "
        "(input tokens priced exactly, output tokens predicted per model and category from its logged answers) "
        "and the savings against it; the mean quality served and each single model's quality estimated "
        "off-policy (IPS, SNIPS, doubly robust) from the logged propensities. Every estimate carries a 95%% "
        "bootstrap interval and the number of decisions it rests on; where too few decisions are labelled or "
        "the propensities cannot support an estimate, the report says so instead of giving a number.",
    )
    parser.add_argument("--store", required=True, metavar="URL",
                        help="the server's store: sqlite://PATH.db (or a .db path) or postgresql://... "
                        "(the `store:` of its config; default of a config-less server: sqlite://crossroads.db)")
    parser.add_argument("--route", metavar="R", help="only decisions of this route")
    parser.add_argument("--team", metavar="T", help="only decisions made with the virtual keys of this team")
    parser.add_argument("--since", metavar="T", help=f"only decisions made at or after T: {TIME_HELP}")
    parser.add_argument("--until", metavar="T", help=f"only decisions made before T: {TIME_HELP}")
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="directory for the report's files")
    parser.add_argument("--replicates", type=at_least(20), default=200,
                        help="bootstrap replicates per interval, at least 20 (default 200)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from crossroads.evaluate.report import build_report, write_report
    from crossroads.store import open_store
    from crossroads.store.sql import parse_store_url

    since_s, until_s = parse_time(args.since, "--since"), parse_time(args.until, "--until")
    if since_s is not None and until_s is not None and since_s >= until_s:
        raise CrossroadsError(f"--since {args.since} is not before --until {args.until}: the window is empty")
    kind, where = parse_store_url(args.store)
    if kind == "sqlite" and where != ":memory:" and not Path(where).is_file():
        raise CrossroadsError(f"no store at {Path(where).resolve()}: give the `store:` URL the server was run "
                              "with (a config-less `crossroads serve` writes sqlite://crossroads.db in its working "
                              "directory)")
    with open_store(args.store) as store:
        report = build_report(store, route=args.route, since_s=since_s, until_s=until_s, team=args.team,
                              replicates=args.replicates)
    paths = write_report(report, args.out)
    savings = report["savings"]
    print(f"{report['window']['decisions']:,} decisions; spent US${savings['served_usd']:.4g}", end="")
    dearest = savings["dearest"]
    if dearest is not None and savings["models"][dearest]["savings"]["value"] is not None:
        entry = savings["models"][dearest]["savings"]
        print(f"; saved {100 * entry['value']:.1f}% [{100 * entry['low']:.1f}%, {100 * entry['high']:.1f}%] "
              f"against always {dearest}", end="")
    print(f"\nwrote {paths['html']} and {paths['json']}")
    return 0


def parse_time(text: str | None, option: str) -> float | None:
    """Seconds since the epoch of ``text`` (see :data:`TIME_HELP`); None for None."""
    if text is None:
        return None
    relative = re.fullmatch(r"(\d+(?:\.\d+)?)([mhdw])", text.strip())
    if relative:
        return time.time() - float(relative.group(1)) * RELATIVE[relative.group(2)]
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise CrossroadsError(f"{option} {text!r} is not a time: give {TIME_HELP}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.timestamp()
