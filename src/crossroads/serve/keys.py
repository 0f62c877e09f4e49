"""Virtual keys on the request path: whose a bearer token is, what it may ask for, whether it may spend more.

A token is looked up by its digest in the store (:mod:`crossroads.store.keys`) and the answer,
found or not, is kept for ``CACHE_TTL_S``: so a key revoked (or changed) on one replica is
refused by every other replica within that time plus one lookup, inside the second promised,
for one indexed read per key and replica every half second.  The replica that revokes a key
forgets its cache at once.

A ``cap`` budget is enforced with the spend every replica shares: before a chat goes upstream,
the key's spend in the current period is read from the store (never cached), and the request
is refused (429) once it has reached the budget; the answer's cost is added in one atomic
statement before the answer is returned.  So the spend passes the cap at most by the cost of
the requests let in while it was below the cap, the ones in flight when it was reached.  A
team's ``cap`` budget is enforced the same way on the spend of all its keys, which each charge
adds to in the same transaction; the team's budget itself is cached like a key (a change
reaches every replica within ``CACHE_TTL_S``), its spend never.  ``pace`` budgets of keys and
teams never refuse: the routes their requests use pace by them (:meth:`KeyRing.paced_by`,
:class:`crossroads.serve.budgets.Budgets`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from typing import Any

from crossroads.errors import CrossroadsError
from crossroads.objective.budget import Budget
from crossroads.serve.config import ServeConfig
from crossroads.serve.requests import ChatRequest
from crossroads.store.keys import SECRET_PREFIX, VirtualKey, store_keys

log = logging.getLogger("crossroads.serve")

#: How long a lookup is trusted: a revocation reaches every replica within this (plus one lookup).
CACHE_TTL_S = 0.5
#: Most tokens remembered; the cache is emptied when it holds more (a guesser cannot grow it without bound).
CACHE_ENTRIES = 10_000


class KeyRefused(CrossroadsError):
    """A virtual key may not make this request: revoked or expired (401), not allowed (403), over budget (429)."""

    def __init__(self, status: int, message: str, kind: str, code: str, param: str | None = None,
                 wait_s: float | None = None):
        self.status, self.kind, self.code, self.param, self.wait_s = status, kind, code, param, wait_s
        super().__init__(message)


class KeyRing:
    """The virtual keys of ``store`` as one replica sees them, with lookups cached for ``ttl_s``."""

    def __init__(self, store: Any, ttl_s: float = CACHE_TTL_S):
        self.keys = store_keys(store)
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, VirtualKey | None]] = {}
        self._team_budgets: dict[str, tuple[float, Budget | None]] = {}  # as few as the admin declared
        self._any = False  # keys are never deleted: once the store holds one, it always will
        self._any_checked_s = -float("inf")

    def cached(self, token: str | None) -> tuple[bool, VirtualKey | None]:
        """``(True, key or None)`` when :meth:`resolve` needs no lookup for ``token``, else ``(False, None)``."""
        if token is None or not token.startswith(SECRET_PREFIX):
            return True, None
        cached = self._cache.get(token)
        if cached is not None and time.monotonic() - cached[0] < self.ttl_s:
            return True, cached[1]
        return False, None

    def resolve(self, token: str | None) -> VirtualKey | None:
        """The key whose secret ``token`` is (revoked and expired ones too), or None.

        While the store cannot answer, the last lookup of the token stands (else the error goes up: 503).
        """
        hit, key = self.cached(token)
        if hit:
            return key
        assert token is not None
        try:
            key = self.keys.by_secret(token)
        except Exception as error:  # noqa: BLE001 (re-raised unless an earlier lookup can stand in)
            if token not in self._cache:
                raise
            log.warning("virtual keys: the store cannot answer (%s); using the last lookup meanwhile", error)
            return self._cache[token][1]
        if len(self._cache) >= CACHE_ENTRIES:
            self._cache.clear()
        self._cache[token] = (time.monotonic(), key)
        return key

    def any_cached(self) -> bool | None:
        """:meth:`any` when it needs no lookup, else None."""
        fresh = self._any or time.monotonic() - self._any_checked_s < self.ttl_s
        return self._any if fresh else None

    def any(self) -> bool:
        """Whether the store holds virtual keys: then every client request needs a key.

        While the store cannot answer, the last answer stands (a server without keys keeps serving on its spool).
        """
        known = self.any_cached()
        if known is not None:
            return known
        try:
            self._any = self.keys.any()
        except Exception as error:  # noqa: BLE001 (see the docstring)
            log.warning("virtual keys: the store cannot answer (%s); assuming it %s keys", error,
                        "holds" if self._any else "holds no")
        self._any_checked_s = time.monotonic()
        return self._any

    def forget(self) -> None:
        """Drop every cached lookup (after this replica created, changed or revoked a key, or changed a team)."""
        self._cache.clear()
        self._team_budgets.clear()
        self._any_checked_s = -float("inf")

    # -- what a key may do -------------------------------------------------------------------
    @staticmethod
    def check_alive(key: VirtualKey) -> None:
        refusal = key.refusal(time.time())
        if refusal is not None:
            raise KeyRefused(401, f"{refusal}: ask your admin for a new key", "authentication_error",
                             "revoked_api_key" if key.revoked_s is not None else "expired_api_key")

    @staticmethod
    def restrict(key: VirtualKey, chat: ChatRequest, config: ServeConfig) -> ChatRequest:
        """``chat`` limited to the key's routes and models (its candidates narrowed); 403 if nothing is left."""
        name = chat.model if chat.model is not None else config.default_route
        if name is None:
            return chat  # routing refuses it with its own message
        who = f"the API key {key.prefix}... ({key.name!r}, team {key.team!r})"
        if key.routes is not None and name not in key.routes:
            raise KeyRefused(403, f"{who} may not use {name!r}; it may use: {', '.join(key.routes)}",
                             "permission_error", "route_not_allowed", "model")
        if key.models is None:
            return chat
        allowed = set(key.models)
        routes = {route.name: route for route in config.routes}
        if name in config.model_names or name.startswith("router-"):
            wanted = [name]  # a model named directly; a RouteLLM name answers with its strong or weak model
            if name not in config.model_names:
                wanted = [config.routellm.strong, config.routellm.weak] if config.routellm is not None else []
            refused = [model for model in wanted if model not in allowed]
            if refused:
                raise KeyRefused(403, f"{who} may not use model(s) {', '.join(refused)}; its models: "
                                 f"{', '.join(key.models)}", "permission_error", "model_not_allowed", "model")
            return chat
        if name not in routes:
            return chat  # an unknown name: routing refuses it with its own message
        pool = list(routes[name].models) or config.model_names
        asked = chat.overrides.allowed_models
        refused = [model for model in asked or () if model not in allowed]
        if refused:
            raise KeyRefused(403, f"{who} may not use model(s) {', '.join(refused)} (crossroads.allowed_models); "
                             f"its models: {', '.join(key.models)}", "permission_error", "model_not_allowed",
                             "crossroads.allowed_models")
        candidates = tuple(model for model in pool if model in allowed and (asked is None or model in asked))
        if not candidates:
            raise KeyRefused(403, f"{who} may use none of route {name!r}'s models ({', '.join(pool)}); its models: "
                             f"{', '.join(key.models)}", "permission_error", "model_not_allowed", "model")
        overrides = dataclasses.replace(chat.overrides, allowed_models=candidates)
        return dataclasses.replace(chat, overrides=overrides)

    # -- spend -------------------------------------------------------------------------------
    def check_budget(self, key: VirtualKey) -> None:
        """429 once the ``cap`` budget of the key, or of its team, has been reached by the period's spend (read from
        the store, shared by replicas); ``pace`` budgets never refuse (see :meth:`paced_by`)."""
        now = time.time()
        budget = key.budget
        if budget is not None and budget.mode == "cap":
            _refuse_if_spent(budget, self.keys.spent(key.key_id, budget.per, now), now,
                             f"the API key {key.prefix}... ({key.name!r}, team {key.team!r})")
        budget = self.team_budget(key.team)
        if budget is not None and budget.mode == "cap":
            _refuse_if_spent(budget, self.keys.team_spent(key.team, budget.per, now), now,
                             f"team {key.team!r} (of the API key {key.prefix}... {key.name!r})")

    def paced_by(self, key: VirtualKey, budgets: Any) -> tuple[str, ...]:
        """The scopes of the ``pace`` budgets of ``key`` and its team, registered with ``budgets``
        (:class:`crossroads.serve.budgets.Budgets`) with their spend as the store keeps it (shared by replicas)."""
        scopes = []
        for scope, budget, spent in ((f"key:{key.key_id}", key.budget, lambda per, now: self.keys.spent(key.key_id,
                                                                                                        per, now)),
                                     (f"team:{key.team}", self.team_budget(key.team),
                                      lambda per, now: self.keys.team_spent(key.team, per, now))):
            if budget is not None and budget.mode == "pace":
                budgets.payer(scope, budget, lambda now, spent=spent, per=budget.per: spent(per, now))
                scopes.append(scope)
        return tuple(scopes)

    def team_budget(self, team: str) -> Budget | None:
        """The team's budget, looked up at most once per ``ttl_s`` (the last lookup stands while the store cannot
        answer)."""
        cached = self._team_budgets.get(team)
        if cached is not None and time.monotonic() - cached[0] < self.ttl_s:
            return cached[1]
        try:
            budget = self.keys.team_budget(team)
        except Exception as error:  # noqa: BLE001 (re-raised unless an earlier lookup can stand in)
            if cached is None:
                raise
            log.warning("virtual keys: the store cannot answer (%s); using the last lookup of team %r", error, team)
            return cached[1]
        self._team_budgets[team] = (time.monotonic(), budget)
        return budget

    def charge(self, key: VirtualKey, cost_usd: float | None) -> None:
        """Add an answer's cost to the key's spend (every period, whatever its budget, so that a new budget counts
        what was spent before it)."""
        if cost_usd:
            self.keys.charge(key.key_id, cost_usd)

    def charge_decision(self, key: VirtualKey, decision_id: str, store: Any) -> None:
        """Charge the cost recorded in ``decision_id``'s outcome (a stream's, known once it ended)."""
        decision = store.decision(decision_id)
        outcome = None if decision is None else decision["outcome"]
        self.charge(key, None if outcome is None else outcome["cost_usd"])


def _refuse_if_spent(budget: Budget, spent_usd: float, now_s: float, who: str) -> None:
    """429 (``budget_exceeded``, Retry-After until the period resets) once ``spent_usd`` has reached ``budget``."""
    if spent_usd < budget.usd:
        return
    _, end_s = budget.period(now_s)
    resets = dt.datetime.fromtimestamp(end_s, dt.timezone.utc).isoformat(timespec="seconds")
    raise KeyRefused(429, f"{who} has spent US${spent_usd:.4g} of its budget of {budget}: refused until the budget "
                     f"resets at {resets.replace('+00:00', 'Z')}", "rate_limit_error", "budget_exceeded",
                     wait_s=end_s - now_s)
