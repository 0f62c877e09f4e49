"""Virtual keys and teams in the store: who may call the server, on what, how often, for how much.

A virtual key is a secret handed to one client (``cr-`` and 43 random characters); the store
keeps only its sha256 hex digest (the same digest ``decisions.client`` holds, so a decision
can always be traced back to its key) and its first characters, to tell keys apart in
listings.  Each key belongs to a team, declared first (:meth:`Keys.create_team`), and carries
its allowed routes and models (None: all), a rate limit, an optional budget and an expiry.
A revoked key is kept, marked with when it was revoked, so that its decisions keep their name.

What each key spent is kept per UTC day, ISO week and month in ``key_spend``, and what each
team spent in ``team_spend``, both added to in one transaction per answer, so that every
replica reads the same figures (see :mod:`crossroads.serve.keys` for how the ``cap`` budgets
of keys and teams are enforced with them).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
import secrets
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from crossroads.errors import CrossroadsError
from crossroads.objective.budget import PERIODS, Budget, parse_budget, period_bounds
from crossroads.store.records import decision_window
from crossroads.store.sql import Database

SECRET_PREFIX = "cr-"
#: Characters of a secret shown in listings (the ``cr-`` and 7 random ones: enough to tell keys apart).
SHOWN_CHARS = 10
#: Names of keys and teams: what a person types, kept short and printable.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_COLUMNS = ("key_id, name, team, prefix, routes, models, rate_limit_per_s, rate_burst, budget, expires_s, revoked_s, "
            "created_s, updated_s")
#: What :meth:`Keys.update` may change.
CHANGEABLE = ("name", "team", "routes", "models", "rate_limit_per_s", "rate_burst", "budget", "expires_s")


class KeySettingsError(CrossroadsError):
    """A key or team setting that cannot be taken (negative budget, unknown period, expiry in the past...)."""

    def __init__(self, message: str, param: str | None = None):
        self.param = param
        super().__init__(message)


class UnknownTeamError(CrossroadsError):
    """No team has this name (a 404 where a team is named in the path; a key's unknown team is a bad setting)."""

    def __init__(self, team: str, known: list[str]):
        self.team = team
        super().__init__(f"no team {team!r}: declare it first (`crossroads keys create-team {team}`, or POST "
                         f"/admin/teams); teams: {', '.join(known) or 'none yet'}")


class UnknownKeyError(CrossroadsError):
    """No key has this id."""

    def __init__(self, key_id: str):
        self.key_id = key_id
        super().__init__(f"no key {key_id!r}: `crossroads keys list` shows the keys and their ids")


def key_budget(value: Any, param: str = "budget", owner: str = "key") -> Budget | None:
    """A key's (or team's) budget (:func:`crossroads.objective.budget.parse_budget`, ``cap`` unless it says
    otherwise), or None.

    A ``cap`` budget refuses requests once spent; a ``pace`` budget keeps serving them, and the routes they
    use pace by it (cheaper models as the money runs short; :mod:`crossroads.serve.budgets`).
    """
    if value is None:
        return None
    try:
        budget = parse_budget(value, default_mode="cap")
    except CrossroadsError as error:
        raise KeySettingsError(f"{param}: {error}", param) from None
    if budget.mode == "cap" and budget.floor_model is not None:
        raise KeySettingsError(f"{param}: a floor_model answers once a pace budget is gone; a {owner}'s cap budget "
                               "refuses instead: drop floor_model or use mode pace", param)
    return budget


def period(per: str, now_s: float) -> tuple[str, float, float]:
    """The UTC day, ISO week or month holding ``now_s``: its name in ``key_spend`` (e.g. ``week:2026-W05``), its
    start and end (seconds since the epoch; :func:`crossroads.objective.budget.period_bounds`)."""
    try:
        start_s, end_s = period_bounds(per, now_s)
    except CrossroadsError as error:
        raise KeySettingsError(str(error), "budget.per") from None
    start = dt.datetime.fromtimestamp(start_s, dt.timezone.utc)
    if per == "day":
        name = f"day:{start.date().isoformat()}"
    elif per == "week":
        year, week, _ = start.isocalendar()
        name = f"week:{year}-W{week:02d}"
    else:
        name = f"month:{start.year}-{start.month:02d}"
    return name, start_s, end_s


@dataclass(frozen=True)
class VirtualKey:
    """A key as the store holds it: everything but the secret."""

    key_id: str
    name: str
    team: str
    prefix: str
    routes: tuple[str, ...] | None
    models: tuple[str, ...] | None
    rate_limit_per_s: float | None
    rate_burst: int | None
    budget: Budget | None
    expires_s: float | None
    revoked_s: float | None
    created_s: float
    updated_s: float

    def refusal(self, now_s: float) -> str | None:
        """Why this key is no longer accepted (revoked, expired), or None while it is."""
        if self.revoked_s is not None:
            return f"the API key {self.prefix}... ({self.name!r}, team {self.team!r}) was revoked at {_utc(self.revoked_s)}"
        if self.expires_s is not None and self.expires_s <= now_s:
            return f"the API key {self.prefix}... ({self.name!r}, team {self.team!r}) expired at {_utc(self.expires_s)}"
        return None

    def to_dict(self, now_s: float | None = None) -> dict[str, Any]:
        """JSON values, with ``state`` (active, revoked or expired); never the secret, which the store lacks."""
        now_s = time.time() if now_s is None else now_s
        values = asdict(self)
        values["routes"] = None if self.routes is None else list(self.routes)
        values["models"] = None if self.models is None else list(self.models)
        values["budget"] = None if self.budget is None else _budget_dict(self.budget)
        refusal = self.refusal(now_s)
        values["state"] = "active" if refusal is None else ("revoked" if self.revoked_s is not None else "expired")
        return values


def hash_secret(secret: str) -> str:
    """The sha256 hex digest the store keeps of a secret (as ``decisions.client`` does of any client key)."""
    return hashlib.sha256(secret.encode("latin-1", "replace")).hexdigest()


class Keys:
    """The keys and teams of one store's database (the store's own connection: see ``Store.keys``)."""

    def __init__(self, db: Database):
        self._db = db

    # -- teams ----------------------------------------------------------------------------
    def create_team(self, name: str, budget: Any = None) -> dict[str, Any]:
        """Declare team ``name`` (keys can then be given to it), with an optional budget shared by its keys.

        Declaring it again changes nothing; declaring it again with another budget is refused (see
        :meth:`update_team`).
        """
        _check_name(name, "team")
        cap = key_budget(budget, owner="team")
        with self._db.transaction():
            self._db.execute("INSERT INTO teams (name, created_s, budget) VALUES (?, ?, ?) ON CONFLICT (name) "
                             "DO NOTHING", (name, time.time(), _budget_json(cap)))
            current = self.team_budget(name)
            if cap is not None and current != cap:
                raise KeySettingsError(f"team {name!r} exists already, with budget {current or 'none'}: change it "
                                       f"with PATCH /admin/teams/{name} (`crossroads keys update-team`)", "budget")
        return self.team(name)

    def teams(self, now_s: float | None = None) -> list[dict[str, Any]]:
        """Every team with its number of keys (revoked ones included), when it was declared, its budget and what
        it spent in the budget's current period (this month's without a budget)."""
        now_s = time.time() if now_s is None else now_s
        rows = self._db.execute(
            "SELECT t.name, t.created_s, t.budget, COUNT(k.key_id) FROM teams t LEFT JOIN keys k ON k.team = t.name "
            "GROUP BY t.name, t.created_s, t.budget ORDER BY t.name")
        names = [period(per, now_s)[0] for per in PERIODS]
        spend = {(team, name): float(usd) for team, name, usd in self._db.execute(
            f"SELECT team, period, spent_usd FROM team_spend WHERE period IN ({', '.join('?' * len(names))})",
            names)}
        teams = []
        for name, created_s, budget, n in rows:
            cap = _loads_budget(budget)
            current, _, end_s = period("month" if cap is None else cap.per, now_s)
            teams.append({"name": name, "created_s": float(created_s), "keys": int(n),
                          "budget": None if cap is None else _budget_dict(cap), "period": current,
                          "spent_usd": spend.get((name, current), 0.0), "resets_s": end_s})
        return teams

    def team(self, name: str, now_s: float | None = None) -> dict[str, Any]:
        """One team as :meth:`teams` lists it; :class:`UnknownTeamError` if it was never declared."""
        for team in self.teams(now_s):
            if team["name"] == name:
                return team
        raise UnknownTeamError(name, [team["name"] for team in self.teams(now_s)])

    def team_budget(self, name: str) -> Budget | None:
        """The budget of team ``name`` (None: none, or no such team)."""
        rows = self._db.execute("SELECT budget FROM teams WHERE name = ?", (name,))
        return _loads_budget(rows[0][0]) if rows else None

    def update_team(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change a team's budget (``{"budget": None}`` removes it); it counts what the team spent this period."""
        unknown = sorted(set(changes) - {"budget"})
        if unknown:
            raise KeySettingsError(f"cannot change {', '.join(unknown)} of a team; changeable: budget", unknown[0])
        if not changes:
            raise KeySettingsError("nothing to change: give the team's budget (null removes it)", "budget")
        cap = key_budget(changes["budget"], owner="team")
        with self._db.transaction():
            if not self._db.execute("SELECT 1 FROM teams WHERE name = ?", (name,)):
                raise UnknownTeamError(name, [team for (team,) in self._db.execute(
                    "SELECT name FROM teams ORDER BY name")])
            self._db.execute("UPDATE teams SET budget = ? WHERE name = ?", (_budget_json(cap), name))
        return self.team(name)

    # -- keys -----------------------------------------------------------------------------
    def create(self, name: str, team: str, *, routes: Any = None, models: Any = None, rate_limit_per_s: Any = None,
               rate_burst: Any = None, budget: Any = None, expires_s: Any = None) -> tuple[VirtualKey, str]:
        """A new key and its secret, which is returned this once and stored only as a digest.

        Every setting is checked before anything is written.
        """
        now = time.time()
        settings = _checked({"name": name, "team": team, "routes": routes, "models": models,
                             "rate_limit_per_s": rate_limit_per_s, "rate_burst": rate_burst, "budget": budget,
                             "expires_s": expires_s}, now)
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        key = VirtualKey(key_id="key_" + uuid.uuid4().hex[:16], prefix=secret[:SHOWN_CHARS], revoked_s=None,
                         created_s=now, updated_s=now, **settings)
        with self._db.transaction():
            self._require_team(key.team)
            self._db.execute(f"INSERT INTO keys ({_COLUMNS}, key_hash) VALUES ({', '.join('?' * 14)})",
                             (*_row(key), hash_secret(secret)))
        return key, secret

    def get(self, key_id: str) -> VirtualKey:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM keys WHERE key_id = ?", (key_id,))
        if not rows:
            raise UnknownKeyError(key_id)
        return _key(rows[0])

    def all(self, team: str | None = None) -> list[VirtualKey]:
        """Every key (of ``team``), oldest first; revoked and expired ones too (see ``VirtualKey.refusal``)."""
        if team is not None and not self._db.execute("SELECT 1 FROM teams WHERE name = ?", (team,)):
            raise KeySettingsError(self._unknown_team(team), "team")
        where, params = ("WHERE team = ?", (team,)) if team is not None else ("", ())
        return [_key(row) for row in self._db.execute(f"SELECT {_COLUMNS} FROM keys {where} ORDER BY created_s, "
                                                      "key_id", params)]

    def by_secret(self, secret: str) -> VirtualKey | None:
        """The key whose secret is ``secret`` (looked up by its digest), or None."""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM keys WHERE key_hash = ?", (hash_secret(secret),))
        return _key(rows[0]) if rows else None

    def any(self) -> bool:
        """Whether the store holds any key (revoked ones count: a server with keys asks every client for one)."""
        return bool(self._db.execute("SELECT 1 FROM keys LIMIT 1"))

    def update(self, key_id: str, changes: dict[str, Any]) -> VirtualKey:
        """Change some settings of a key (None clears routes, models, limits, budget or expiry)."""
        unknown = sorted(set(changes) - set(CHANGEABLE))
        if unknown:
            raise KeySettingsError(f"cannot change {', '.join(unknown)} of a key; changeable: {', '.join(CHANGEABLE)}",
                                   unknown[0])
        now = time.time()
        with self._db.transaction():
            key = self.get(key_id)
            if key.revoked_s is not None:
                raise KeySettingsError(f"key {key_id!r} was revoked at {_utc(key.revoked_s)}: a revoked key stays "
                                       "revoked; create a new one", "key_id")
            current = {name: getattr(key, name) for name in CHANGEABLE}
            settings = _checked({**current, **changes}, now, expiry_changed="expires_s" in changes)
            if "team" in changes:
                self._require_team(settings["team"])
            key = VirtualKey(key_id=key.key_id, prefix=key.prefix, revoked_s=None, created_s=key.created_s,
                             updated_s=now, **settings)
            self._db.execute(f"UPDATE keys SET {', '.join(f'{c} = ?' for c in _COLUMNS.split(', ')[1:])} "
                             "WHERE key_id = ?", (*_row(key)[1:], key_id))
        return key

    def revoke(self, key_id: str) -> VirtualKey:
        """Mark a key revoked from now on (a key revoked already keeps its first revocation time)."""
        now = time.time()
        with self._db.transaction():
            self.get(key_id)
            self._db.execute("UPDATE keys SET revoked_s = COALESCE(revoked_s, ?), updated_s = ? WHERE key_id = ?",
                             (now, now, key_id))
            return self.get(key_id)

    # -- spend ----------------------------------------------------------------------------
    def charge(self, key_id: str, cost_usd: float, now_s: float | None = None) -> None:
        """Add ``cost_usd`` to what the key, and its team, spent this day, week and month.

        One transaction of atomic additions: replicas add concurrently, and a team's spend stays the sum of what its
        keys spent while they were its own.  (Rows are always taken key first, then team, day to month: no deadlock.)
        """
        now_s = time.time() if now_s is None else now_s
        names = [period(per, now_s)[0] for per in PERIODS]
        with self._db.transaction():
            team = self._db.execute("SELECT team FROM keys WHERE key_id = ?", (key_id,))
            for table, column, who in (("key_spend", "key_id", key_id), ("team_spend", "team", team and team[0][0])):
                for name in names if who else ():
                    self._db.execute(
                        f"INSERT INTO {table} ({column}, period, spent_usd) VALUES (?, ?, ?) ON CONFLICT ({column}, "
                        f"period) DO UPDATE SET spent_usd = {table}.spent_usd + excluded.spent_usd",
                        (who, name, float(cost_usd)))

    def spent(self, key_id: str, per: str, now_s: float | None = None) -> float:
        """What the key spent in the current ``per`` (day, week or month), in US$."""
        name = period(per, time.time() if now_s is None else now_s)[0]
        rows = self._db.execute("SELECT spent_usd FROM key_spend WHERE key_id = ? AND period = ?", (key_id, name))
        return float(rows[0][0]) if rows else 0.0

    def team_spent(self, team: str, per: str, now_s: float | None = None) -> float:
        """What the keys of ``team`` spent in the current ``per`` (day, week or month), in US$."""
        name = period(per, time.time() if now_s is None else now_s)[0]
        rows = self._db.execute("SELECT spent_usd FROM team_spend WHERE team = ? AND period = ?", (team, name))
        return float(rows[0][0]) if rows else 0.0

    # -- attribution ------------------------------------------------------------------------
    def usage_by(self, by: str, *, route: str | None = None, since_s: float | None = None,
                 until_s: float | None = None, team: str | None = None) -> list[dict[str, Any]]:
        """Requests, errors, fallbacks, spend and tokens of the decisions in the window, per ``key`` or ``team``.

        Decisions made without a virtual key (config-file keys, or none) form the row named ``(no virtual key)``.
        """
        if by not in ("key", "team"):
            raise CrossroadsError(f"usage by {by!r}: by key or team")
        group = "d.key_id" if by == "key" else "d.team"
        where, params = decision_window(route, since_s, until_s, team)
        rows = self._db.execute(
            f"SELECT {group}, COUNT(*), SUM(CASE WHEN o.status IS NOT NULL AND o.status <> 'ok' THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN o.fallbacks > 0 THEN 1 ELSE 0 END), SUM(o.cost_usd), SUM(o.tokens_in), SUM(o.tokens_out) "
            "FROM decisions d LEFT JOIN outcomes o ON o.decision_id = d.decision_id "
            f"WHERE {where} GROUP BY {group}", params)
        names = {key_id: f"{name} ({key_id})" for key_id, name in self._db.execute("SELECT key_id, name FROM keys")}
        total = sum(int(row[1]) for row in rows)
        usage = []
        for who, requests, errors, fallbacks, spend, tokens_in, tokens_out in rows:
            name = "(no virtual key)" if who is None else names.get(who, who) if by == "key" else who
            usage.append({"name": name, "requests": int(requests), "share": int(requests) / max(total, 1),
                          "errors": int(errors or 0), "fallbacks": int(fallbacks or 0),
                          "spend_usd": float(spend or 0.0), "tokens_in": int(tokens_in or 0),
                          "tokens_out": int(tokens_out or 0), "latency_p50_s": None, "latency_p95_s": None,
                          "latency_p99_s": None})
        return sorted(usage, key=lambda row: (-row["requests"], row["name"]))

    # -- internals --------------------------------------------------------------------------
    def _require_team(self, team: str) -> None:
        if not self._db.execute("SELECT 1 FROM teams WHERE name = ?", (team,)):
            raise KeySettingsError(self._unknown_team(team), "team")

    def _unknown_team(self, team: str) -> str:
        known = [name for (name,) in self._db.execute("SELECT name FROM teams ORDER BY name")]
        return (f"unknown team {team!r}: declare it first (`crossroads keys create-team {team}`, or POST "
                f"/admin/teams); teams: {', '.join(known) or 'none yet'}")


def _checked(settings: dict[str, Any], now_s: float, expiry_changed: bool = True) -> dict[str, Any]:
    """``settings`` checked and in their stored types; a :class:`KeySettingsError` naming the first bad one."""
    _check_name(settings["name"], "name")
    _check_name(settings["team"], "team")
    out = {"name": settings["name"], "team": settings["team"]}
    for field in ("routes", "models"):
        names = settings[field]
        if names is not None and (isinstance(names, str) or not isinstance(names, list | tuple) or not names
                                  or not all(isinstance(n, str) and n for n in names)):
            raise KeySettingsError(f"{field} must be a non-empty list of names, or null for all; got {names!r}", field)
        out[field] = None if names is None else tuple(dict.fromkeys(names))
    rate, burst = settings["rate_limit_per_s"], settings["rate_burst"]
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)
                             or not 0 < rate < math.inf):
        raise KeySettingsError(f"rate_limit_per_s must be a number of requests per second > 0, or null for none; "
                               f"got {rate!r}", "rate_limit_per_s")
    if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int) or burst < 1):
        raise KeySettingsError(f"rate_burst must be a whole number >= 1, or null for the server's; got {burst!r}",
                               "rate_burst")
    out["rate_limit_per_s"] = None if rate is None else float(rate)
    out["rate_burst"] = burst
    out["budget"] = key_budget(settings["budget"])
    expires = settings["expires_s"]
    if expires is not None and (isinstance(expires, bool) or not isinstance(expires, int | float)
                                or not math.isfinite(expires)):
        raise KeySettingsError(f"expires_s must be a time in seconds since the epoch, or null for never; got "
                               f"{expires!r}", "expires_s")
    if expires is not None and expiry_changed and expires <= now_s:
        raise KeySettingsError(f"expires_s {_utc(expires)} is in the past: give a later time (or revoke the key)",
                               "expires_s")
    out["expires_s"] = None if expires is None else float(expires)
    return out


def _check_name(name: Any, what: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise KeySettingsError(f"{what} {name!r} is not a name: 1 to 64 letters, digits or _.@- (starting with a "
                               "letter or digit)", what)


def _row(key: VirtualKey) -> tuple:
    budget = None if key.budget is None else json.dumps(_budget_dict(key.budget))
    return (key.key_id, key.name, key.team, key.prefix, _names(key.routes), _names(key.models), key.rate_limit_per_s,
            key.rate_burst, budget, key.expires_s, key.revoked_s, key.created_s, key.updated_s)


def _key(row: tuple) -> VirtualKey:
    (key_id, name, team, prefix, routes, models, rate, burst, budget, expires_s, revoked_s, created_s,
     updated_s) = row
    return VirtualKey(key_id, name, team, prefix, _loads_names(routes), _loads_names(models),
                      None if rate is None else float(rate), None if burst is None else int(burst),
                      None if budget is None else Budget(**json.loads(budget)),
                      None if expires_s is None else float(expires_s), None if revoked_s is None else float(revoked_s),
                      float(created_s), float(updated_s))


def _budget_dict(budget: Budget) -> dict[str, Any]:
    return {"usd": budget.usd, "per": budget.per, "mode": budget.mode}


def _budget_json(budget: Budget | None) -> str | None:
    return None if budget is None else json.dumps(_budget_dict(budget))


def _loads_budget(text: str | None) -> Budget | None:
    return None if text is None else Budget(**json.loads(text))


def _names(names: tuple[str, ...] | None) -> str | None:
    return None if names is None else json.dumps(list(names))


def _loads_names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(json.loads(text))


def _utc(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def store_keys(store: Any) -> Keys:
    """The keys of ``store`` (a :class:`crossroads.store.records.Store`), on its own connection.

    Sharing the store's connection keeps an in-memory SQLite store's keys with its decisions.
    """
    return Keys(store._db)
