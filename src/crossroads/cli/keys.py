"""``crossroads keys``: create, list, change and revoke a running server's virtual keys (and declare teams)."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from crossroads.cli.common import AdminClient
from crossroads.errors import CrossroadsError

#: ``--expires-in`` units, in seconds.
SPANS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
TEAM_BUDGET_HELP = ("e.g. 500/month or 500/month:pace; PERIOD day, week or month; cap (the default): the requests "
                    "of all the team's keys are refused once it is spent; pace: the routes they use turn to cheaper "
                    "models as it runs short")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "keys", help="manage a running server's virtual keys and teams (through its admin endpoints)",
        description="Virtual keys are client API keys kept in the server's store (hashed): each with a name, a "
        "team, allowed routes and models, a rate limit, an optional budget and an expiry. See docs/keys.md.")
    parser.add_argument("--server", required=True, metavar="URL", help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--admin-key-env", default="CROSSROADS_ADMIN_KEY", metavar="VAR",
                        help="environment variable holding the server's admin key (default CROSSROADS_ADMIN_KEY)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    team = actions.add_parser("create-team", help="declare a team (keys belong to a declared team)")
    team.add_argument("team", metavar="NAME")
    team.add_argument("--budget", metavar="USD/PERIOD", help=TEAM_BUDGET_HELP)
    update_team = actions.add_parser("update-team", help="change a team's budget (`none` removes it)")
    update_team.add_argument("team", metavar="NAME")
    update_team.add_argument("--budget", metavar="USD/PERIOD", required=True, help=TEAM_BUDGET_HELP)
    actions.add_parser("teams", help="list the teams, with their budgets and spend")
    create = actions.add_parser("create", help="create a key; its secret is printed this once")
    create.add_argument("--name", required=True)
    create.add_argument("--team", required=True)
    _add_settings(create)
    listing = actions.add_parser("list", help="list the keys (never their secrets)")
    listing.add_argument("--team", help="only this team's keys")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    update = actions.add_parser("update", help="change a key's settings (`none` clears one)")
    update.add_argument("key_id", metavar="KEY_ID")
    update.add_argument("--name")
    update.add_argument("--team")
    _add_settings(update)
    revoke = actions.add_parser("revoke", help="revoke a key: every replica refuses it within a second")
    revoke.add_argument("key_id", metavar="KEY_ID")
    parser.set_defaults(func=run)


def _add_settings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--routes", metavar="A,B", help="routes (or models) it may name in `model` (default all)")
    parser.add_argument("--models", metavar="M1,M2", help="models that may answer it (default all)")
    parser.add_argument("--rate-limit-per-s", metavar="X", help="its own rate limit, requests per second")
    parser.add_argument("--rate-burst", metavar="N", help="burst of its rate limit (default the server's)")
    parser.add_argument("--budget", metavar="USD/PERIOD",
                        help="e.g. 50/month or 50/month:pace; PERIOD day, week or month; cap (the default): "
                        "requests are refused once it is spent; pace: the routes it uses turn to cheaper models as it "
                        "runs short")
    parser.add_argument("--expires-in", metavar="SPAN", help="expiry counted from now: 30m, 12h, 30d, 2w")


def run(args: argparse.Namespace) -> int:
    admin = AdminClient.from_env(args.server, args.admin_key_env)
    if args.action == "create-team":
        body = {"name": args.team} if args.budget is None else {"name": args.team, "budget": args.budget}
        team = admin.call("POST", "/admin/teams", body)
        print(f"team {args.team} declared ({_budget(team.get('budget'))})")
    elif args.action == "update-team":
        budget = None if args.budget.strip().lower() == "none" else args.budget
        team = admin.call("PATCH", f"/admin/teams/{args.team}", {"budget": budget})
        print(f"updated team {args.team} ({_budget(team['budget'])})")
    elif args.action == "teams":
        for team in admin.call("GET", "/admin/teams")["teams"]:
            print(f"{team['name']}\t{team['keys']} key(s)\t{_budget(team['budget'])}\t"
                  f"spent=US${team['spent_usd']:.4g} ({team['period']})")
    elif args.action == "create":
        body = {"name": args.name, "team": args.team, **_settings(args, clearing=False)}
        answer = admin.call("POST", "/admin/keys", body)
        print(f"created {answer['key']['key_id']} ({args.name}, team {args.team})")
        print(f"secret (shown this once; the server keeps only its digest): {answer['secret']}")
    elif args.action == "list":
        keys = admin.call("GET", "/admin/keys", params={"team": args.team} if args.team else None)["keys"]
        if args.json:
            print(json.dumps(keys, indent=1))
        for k in [] if args.json else keys:
            print("\t".join([k["key_id"], k["prefix"] + "...", k["name"], k["team"], k["state"],
                             "routes=" + (",".join(k["routes"]) if k["routes"] else "all"),
                             "models=" + (",".join(k["models"]) if k["models"] else "all"),
                             f"rate={k['rate_limit_per_s']:g}/s" if k["rate_limit_per_s"] else "rate=server's",
                             _budget(k["budget"])]))
    elif args.action == "update":
        changes = {**_settings(args, clearing=True),
                   **{name: getattr(args, name) for name in ("name", "team") if getattr(args, name) is not None}}
        if not changes:
            raise CrossroadsError("nothing to change: give at least one setting (see `crossroads keys update -h`)")
        answer = admin.call("PATCH", f"/admin/keys/{args.key_id}", changes)
        print(f"updated {answer['key_id']} ({answer['name']}, team {answer['team']})")
    elif args.action == "revoke":
        answer = admin.call("POST", f"/admin/keys/{args.key_id}/revoke")
        print(f"revoked {answer['key_id']} ({answer['name']}, team {answer['team']})")
    return 0


def _settings(args: argparse.Namespace, clearing: bool) -> dict[str, Any]:
    """The settings given on the command line, as the admin API takes them (``none`` clears one on update)."""
    settings: dict[str, Any] = {}
    for option, parse in (("routes", _names), ("models", _names), ("rate_limit_per_s", _number),
                          ("rate_burst", _whole), ("budget", _text), ("expires_in", _span)):
        text = getattr(args, option)
        if text is None:
            continue
        field = "expires_in_s" if option == "expires_in" else option
        if clearing and text.strip().lower() == "none":
            settings["expires_s" if option == "expires_in" else field] = None
        else:
            settings[field] = parse(text, "--" + option.replace("_", "-"))
    return settings


def _names(text: str, option: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise CrossroadsError(f"{option} {text!r}: give comma-separated names")
    return names


def _text(text: str, option: str) -> str:
    return text  # a budget is checked by the server, which names what is wrong


def _number(text: str, option: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise CrossroadsError(f"{option} {text!r} is not a number") from None


def _whole(text: str, option: str) -> int:
    if not text.strip().isdigit():
        raise CrossroadsError(f"{option} {text!r} is not a whole number")
    return int(text)


def _span(text: str, option: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([mhdw])", text.strip())
    if not match:
        raise CrossroadsError(f"{option} {text!r} is not a span: give a number and m, h, d or w (e.g. 30d)")
    return float(match.group(1)) * SPANS[match.group(2)]


def _budget(budget: dict | None) -> str:
    return "budget=none" if budget is None else f"budget=US${budget['usd']:g}/{budget['per']}:{budget['mode']}"
