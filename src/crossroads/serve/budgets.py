"""Budgets in the server: the period's spend, shared through the store, and the pacing of each decision.

A route with ``budget: {usd: 50, per: day, mode: pace}`` (:class:`crossroads.objective.budget.Budget`)
has a :class:`~crossroads.objective.budget.PacingController`.  Each decision on it gives the
controller the candidates' predicted quality (a router route: the router's prediction; a
learner route: the learner's estimated reward of each candidate) and expected cost, and
ranks them by ``quality - lambda * cost`` with the controller's lambda.

The spend of the period is read from the store (the served outcomes' ``cost_usd`` of the
route's decisions since the period began; :class:`crossroads.store.spend.SpendLedger`) at
most every ``REFRESH_S``, plus the expected cost of this process's decisions whose outcome
the store does not hold yet, so replicas sharing PostgreSQL share the spend (each one's
in-flight calls are seen by the others once they finish).  Once a ``cap`` budget is spent,
or no candidate's expected cost fits in what is left, requests get :class:`BudgetExhausted`
(HTTP 429); once a ``pace`` budget is spent, its ``floor_model`` (or the cheapest candidate)
answers until the period ends.

Virtual keys and teams with a ``pace`` budget get controllers of their own (scopes ``key:ID`` and
``team:NAME``, registered per request by :meth:`Budgets.payer`) whose spend is what the store
keeps for the key or team (``key_spend``, ``team_spend``); a decision is paced by every scope it
has, the controller willing to pay least binding.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from crossroads.errors import CrossroadsError
from crossroads.objective.budget import Budget, PacingController, PacingState, TrafficProfile
from crossroads.store.spend import SpendLedger

log = logging.getLogger("crossroads.serve")

#: The store's spend of a route is read again after this many seconds.
REFRESH_S = 1.0
#: The traffic profile of a period is learned from the route's decisions of this many days before it ...
PROFILE_DAYS = 7
#: ... when there were at least this many; else the spend is paced evenly in time.
PROFILE_MIN_DECISIONS = 500
#: A decision whose outcome never reaches the store stops counting as in flight after this many seconds.
RESERVATION_S = 600.0


class BudgetExhausted(CrossroadsError):
    """A ``cap`` budget is spent (or too little is left for any candidate): the request is refused (429)."""

    def __init__(self, scope: str, budget: Budget, spent_usd: float, resets_s: float):
        self.scope, self.budget, self.spent_usd, self.resets_s = scope, budget, spent_usd, resets_s
        when = dt.datetime.fromtimestamp(resets_s, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        super().__init__(f"{scope} has spent {spent_usd:.4g} US$ of its budget of {budget.usd:g} US$ per "
                         f"{budget.per} (mode cap): no model fits in what is left; it resets at {when}")

    @property
    def retry_after_s(self) -> float:
        return max(0.0, self.resets_s - time.time())


class Budgets:
    """The budgets the server paces: its routes' (from the config) and, as requests bring them, the ``pace``
    budgets of virtual keys and teams (scopes ``key:ID`` and ``team:NAME``, see :meth:`payer`).

    ``store`` is the gateway's store; ``metrics`` gets the route controllers' gauges.
    """

    def __init__(self, routes: Sequence[Any], store_url: str, store: Any, metrics: Any = None,
                 clock: Callable[[], float] = time.time):
        self.budgets: dict[str, Budget] = {route.name: route.budget for route in routes
                                           if getattr(route, "budget", None) is not None}
        self.controllers = {name: PacingController(budget) for name, budget in self.budgets.items()}
        self.routes = set(self.budgets)
        self.store_url, self.store = store_url, store
        self.ledger = SpendLedger.for_store(store_url, store) if self.budgets else None
        self.metrics, self.clock = metrics, clock
        self._spend_of: dict[str, Callable[[float], float]] = {}  # payer scope -> its spend this period, read
        self._stored: dict[str, tuple[float, float, float]] = {}  # scope -> (read at, period start, spend)
        self._reserved: dict[str, dict[str, tuple[float, float]]] = {}  # scope -> id -> (expected US$, when)
        self._lock = threading.Lock()

    def __contains__(self, scope: str) -> bool:
        return scope in self.budgets

    def payer(self, scope: str, budget: Budget, spent_usd: Callable[[float], float]) -> None:
        """Pace the requests of a key or team (``scope``) under its ``pace`` budget; ``spent_usd(now_s)`` reads what
        it spent in the budget's current period (from the store, shared by replicas).  A changed budget starts a
        new controller."""
        with self._lock:
            if self.budgets.get(scope) != budget:
                self.budgets[scope] = budget
                self.controllers[scope] = PacingController(budget)
                self._stored.pop(scope, None)
            self._spend_of[scope] = spent_usd
            if self.ledger is None:
                self.ledger = SpendLedger.for_store(self.store_url, self.store)

    def spent_usd(self, scope: str, now_s: float | None = None) -> float:
        """The scope's spend this period: the store's figure (at most ``REFRESH_S`` old) plus this process's calls
        in flight."""
        now_s = self.clock() if now_s is None else now_s
        start, _ = self.budgets[scope].period(now_s)
        read_at, read_start, stored = self._stored.get(scope, (-1e18, None, 0.0))
        if now_s - read_at >= REFRESH_S or read_start != start:
            stored = self._read(scope, start, now_s)
        reserved = self._reserved.get(scope, {})
        return stored + sum(usd for usd, when in reserved.values() if when >= start)

    def pace(self, scopes: str | Sequence[str], models: Sequence[str], quality: Sequence[float],
             cost_usd: Sequence[float], decision_id: str, floor_model: str | None = None
             ) -> tuple[list[str], PacingState, str]:
        """``models`` ranked under the budgets of ``scopes`` (first answers), the binding controller's state and
        its scope.

        Every scope's controller sees the request; the one willing to pay least binds (an exhausted one first),
        among the candidates that fit what every ``cap`` budget has left.  Raises :class:`BudgetExhausted` for a
        cap budget with nothing left to serve.
        """
        scopes = [scopes] if isinstance(scopes, str) else list(scopes)
        q, c = np.asarray(quality, dtype=np.float64), np.asarray(cost_usd, dtype=np.float64)
        now_s = self.clock()
        with self._lock:
            states = {scope: self.controllers[scope].state(q, c, now_s, self.spent_usd(scope, now_s))
                      for scope in scopes}
            scope = max(scopes, key=lambda s: (states[s].exhausted, states[s].willingness_to_pay))
            budget, state = self.budgets[scope], states[scope]
            fits = np.ones(len(c), dtype=bool)
            for other in scopes:
                if self.budgets[other].mode == "cap" and other != scope:
                    fits &= c <= states[other].remaining_usd
            allowed = np.flatnonzero(fits)
            pick = self.controllers[scope].choose(q[allowed], c[allowed], state) if allowed.size else None
            pick = None if pick is None else int(allowed[pick])
            floor = floor_model or budget.floor_model
            if state.exhausted and budget.mode == "pace" and floor in models and fits[list(models).index(floor)]:
                pick = list(models).index(floor)
            if pick is None:
                refusing = scope if budget.mode == "cap" else next(s for s in scopes if self.budgets[s].mode == "cap")
                raise BudgetExhausted(scope_name(refusing), self.budgets[refusing], states[refusing].spent_usd,
                                      self.budgets[refusing].period(now_s)[1])
            for each in scopes:
                self._reserved.setdefault(each, {})[decision_id] = (float(c[pick]), now_s)
        for each in scopes:
            self._gauges(each, states[each])
        value = q - state.willingness_to_pay * c
        if budget.mode == "cap":
            fits &= c <= state.remaining_usd
        rest = [i for i in np.lexsort((c, -value)) if i != pick and fits[i]]
        return [models[pick], *(models[i] for i in rest)], state, scope

    def settled(self, decision_id: str, cost_usd: float | None) -> None:
        """A paced decision's call ended costing ``cost_usd`` (None: unknown): it counts that until the store has it."""
        with self._lock:
            for scope, reserved in self._reserved.items():
                if decision_id not in reserved:
                    continue
                expected_usd, when = reserved[decision_id]
                if cost_usd is not None:
                    reserved[decision_id] = (float(cost_usd), when)
                    self.controllers[scope].served(expected_usd, float(cost_usd))

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()

    # -- internals ---------------------------------------------------------------------------
    def _read(self, scope: str, start: float, now_s: float) -> float:
        reserved = self._reserved.setdefault(scope, {})
        stored = self._stored.get(scope, (0.0, None, 0.0))[2]
        if self.ledger is None:  # no store to read (a test double): count what this process reserved
            return stored
        if scope in self.routes and self._stored.get(scope, (0.0, None, 0.0))[1] != start:  # a new period
            self._learn_profile(scope, start)
        try:
            stored = self._spend_of[scope](now_s) if scope in self._spend_of else self.ledger.route_spend_usd(scope,
                                                                                                            start)
            for decision_id in self.ledger.settled(list(reserved)):
                reserved.pop(decision_id, None)
        except Exception as error:  # a store hiccup: keep the last figure rather than refuse or overspend blindly
            log.warning("budget of %s: could not read its spend (%s); using the last figure", scope_name(scope), error)
        for decision_id in [d for d, (_, when) in reserved.items() if when < now_s - RESERVATION_S or when < start]:
            reserved.pop(decision_id)
        self._stored[scope] = (now_s, start, stored)
        return stored

    def _learn_profile(self, route: str, start: float) -> None:
        """The controller's traffic profile for the period from ``start``: the hours of the day of the route's
        decisions in the ``PROFILE_DAYS`` before it, repeated over the period's days (uniform without enough)."""
        _, end = self.budgets[route].period(start)
        try:
            counts = np.asarray(self.ledger.hourly_arrivals(route, start - PROFILE_DAYS * 86400.0, start), float)
        except Exception as error:
            log.warning("budget of route %r: could not read its past traffic (%s); pacing evenly in time", route, error)
            return
        controller = self.controllers[route]
        if counts.sum() < PROFILE_MIN_DECISIONS:
            controller.profile = TrafficProfile()
            return
        days = max(1, int(round((end - start) / 86400.0)))
        controller.profile = TrafficProfile(np.tile(counts + 1.0, days))

    def _gauges(self, route: str, state: PacingState) -> None:
        gauges = getattr(self.metrics, "budget", None)
        if gauges is None or route not in self.routes:  # keys and teams are no metrics labels (unbounded)
            return
        gauges.labels(route, "lambda").set(state.willingness_to_pay)
        gauges.labels(route, "spent_usd").set(state.spent_usd)
        gauges.labels(route, "target_usd").set(state.target_usd)
        gauges.labels(route, "budget_usd").set(self.budgets[route].usd)


def scope_name(scope: str) -> str:
    """How a message names a scope: ``route 'auto'``, ``key 'key_1f...'``, ``team 'search'``."""
    kind, _, name = scope.partition(":")
    return f"{kind} {name!r}" if kind in ("key", "team") and name else f"route {scope!r}"
