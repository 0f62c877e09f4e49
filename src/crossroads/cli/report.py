"""``crossroads report``: what a server's routing spent, saved and served, from its store."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import time

from crossroads.cli.candidate import add_decision_options
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
        "the propensities cannot support an estimate, the report says so instead of giving a number. With "
        "--candidate, also how each candidate router file, deciding as a route with --objective and --rule would, "
        "would have done on the same traffic (reward, quality, cost; IPS, SNIPS, doubly robust), from the "
        "decisions stored with their prompt (`store_prompts: true`).",
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
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    candidates = parser.add_argument_group("candidate routers, estimated off-policy on the same traffic")
    candidates.add_argument("--candidate", action="append", metavar="[NAME=]FILE.npz",
                            help="a router file to estimate (repeatable); NAME labels it (default: the file's stem)")
    add_decision_options(candidates)
    candidates.add_argument("--embedder", default="minilm-onnx",
                            help="embedder of a router file that names none (as the server's config `embedder:`)")
    candidates.add_argument("--quality-from", default="user", metavar="user|any|SOURCE",
                            help="the labels candidates are scored by: user (default; users' feedback, as the "
                            "report's quality section), any (users' first, else another source's) or one source, "
                            "e.g. judge:gpt-4o (`crossroads label`)")
    candidates.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from crossroads.cli.candidate import prepare
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
    candidates = {name: prepare(args, path) for name, path in parse_candidates(args.candidate or []).items()}
    window = {"route": args.route, "since_s": since_s, "until_s": until_s, "team": args.team}
    with open_store(args.store) as store:
        report = build_report(store, **window, replicates=args.replicates, seed=args.seed)
        if candidates:
            report["candidates"] = estimate_candidates(args, candidates, store, window)
    paths = write_report(report, args.out)
    savings = report["savings"]
    print(f"{report['window']['decisions']:,} decisions; spent US${savings['served_usd']:.4g}", end="")
    dearest = savings["dearest"]
    if dearest is not None and savings["models"][dearest]["savings"]["value"] is not None:
        entry = savings["models"][dearest]["savings"]
        print(f"; saved {100 * entry['value']:.1f}% [{100 * entry['low']:.1f}%, {100 * entry['high']:.1f}%] "
              f"against always {dearest}", end="")
    print()
    for name, entry in report.get("candidates", {}).get("routers", {}).items():
        print(f"candidate {name}: " + "; ".join(f"{metric} {_figure(entry['candidate'][metric]['dr'])} against "
                                               f"{_figure(entry['logged'][metric])} logged"
                                               for metric in ("reward", "quality")) + " (doubly robust)")
    if report.get("candidates", {}).get("note"):
        print(f"no candidate estimate: {report['candidates']['note']}")
    print(f"wrote {paths['html']} and {paths['json']}")
    return 0


def parse_candidates(texts: list[str]) -> dict[str, str]:
    """``[NAME=]FILE.npz`` options as router files by name (the file's stem when unnamed)."""
    from pathlib import Path

    named: dict[str, str] = {}
    for text in texts:
        unnamed = "=" not in text or Path(text).expanduser().is_file()
        name, _, path = (Path(text).stem, "", text) if unnamed else text.partition("=")
        if not name.strip() or not path.strip():
            raise CrossroadsError(f"--candidate {text!r}: give FILE.npz or NAME=FILE.npz")
        if name in named:
            raise CrossroadsError(f"--candidate {text!r}: the name {name!r} is given twice; name them NAME=FILE.npz")
        named[name] = path
    return named


def estimate_candidates(args: argparse.Namespace, candidates: dict, store, window: dict) -> dict:
    """Each prepared candidate's off-policy estimates on the window's decisions stored with their prompt; a note
    instead where the store holds none that a router could decide."""
    from crossroads.cli.candidate import estimate_on
    from crossroads.cli.common import embed
    from crossroads.store.export import read_logs

    try:
        export = read_logs(store, **window, quality_from=args.quality_from)
    except CrossroadsError as error:
        return {"decisions": 0, "note": str(error), "routers": {}}
    logs = export.dataset
    embedded = embed(logs.prompts, args.embedder, not args.no_cache)
    routers = {name: {"router_file": candidate.router_file, **estimate_on(args, candidate, logs, embedded).to_dict()}
               for name, candidate in candidates.items()}
    return {"decisions": logs.n_queries, "without_prompt": export.without_prompt, "failed": export.failed,
            "quality_from": args.quality_from, "note": None, "routers": routers}


def _figure(estimate: dict) -> str:
    if estimate["value"] is None:
        return "no estimate"
    interval = "" if estimate["low"] is None else f" [{estimate['low']:.4g}, {estimate['high']:.4g}]"
    return f"{estimate['value']:.4g}{interval}"


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
