"""The learners of a server's learner routes, kept in step with the store's feedback log.

Feedback is written to the store first and applied to learners only from the store's
log, in sequence order, by :meth:`RouteLearners.sync`.  So a replica applies its own
feedback and every other replica's the same way, a restart resumes from the last
snapshot plus the feedback after it, and nothing acknowledged is lost: the log is the
truth, the learners are a cache of it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from crossroads.online import LEARNERS, KeyedLearners, Learner
from crossroads.online.base import Decision
from crossroads.serve.config import RouteConfig

log = logging.getLogger("crossroads.serve")

#: The key of a route's learner when the route keeps one learner for all requests.
SHARED_KEY = "*"


class RouteLearners:
    """One learner (or one per session) for each learner route."""

    def __init__(self, routes: Sequence[RouteConfig], pool: Sequence[str], snapshot_every: int = 50):
        self.snapshot_every = snapshot_every
        self._pools = {route.name: list(route.models or pool) for route in routes}
        self._keyed: dict[str, KeyedLearners] = {}
        self._types: dict[str, type[Learner]] = {}
        self._cursors: dict[str, int] = {}  # per route: the feedback seq applied up to
        self._since_snapshot = 0
        self._lock = threading.Lock()  # one sync at a time
        for route in routes:
            if route.learner is not None:
                spec = LEARNERS.spec(route.learner)
                self._keyed[route.name] = KeyedLearners(spec.name, **spec.params)
                self._types[route.name] = LEARNERS.load(spec.name)
                self._cursors[route.name] = 0

    @property
    def routes(self) -> list[str]:
        return list(self._keyed)

    def learner_type(self, route: str) -> type[Learner]:
        """The class of ``route``'s learners (what they read and which rewards they take)."""
        return self._types[route]

    def learner(self, route: str, key: str | None) -> Learner:
        return self._keyed[route].get(key or SHARED_KEY)

    def select(self, route: str, key: str | None, candidates: Sequence[str], context: np.ndarray | None,
               prior: dict[str, float] | None = None) -> Decision:
        return self.learner(route, key).select(candidates, context, prior=prior)

    def state(self, route: str) -> dict[str, Any]:
        return self._keyed[route].state()

    def restore(self, store: Any) -> None:
        """Load each route's last snapshot, then apply the feedback logged after it."""
        for route in self._keyed:
            saved = store.load_learner_state(f"route:{route}")
            if saved is None:
                continue
            state, cursor = saved
            current = self._keyed[route]
            if (state.get("learner"), state.get("params")) != (current.learner, current.params):
                log.warning("route %r: the saved learners were %s %s, the config now says %s %s; "
                            "relearning from the whole feedback log", route, state.get("learner"),
                            state.get("params"), current.learner, current.params)
                continue
            self._keyed[route], self._cursors[route] = KeyedLearners.from_state(state), cursor
        self.sync(store)

    def sync(self, store: Any, until: int | None = None) -> int:
        """Apply the feedback logged since the last sync; returns how many rows were applied.

        ``until``: only feedback up to this seq is needed; when a sync running in another thread
        (concurrent feedback) has already applied it, this one does not read the store again.
        """
        with self._lock:
            if not self._cursors or (until is not None and min(self._cursors.values()) >= until):
                return 0
            applied = 0
            cursor = min(self._cursors.values())
            while True:
                rows, new_cursor = store.feedback_since(cursor)
                for row in rows:
                    applied += self._apply(row)
                if new_cursor == cursor:
                    break
                cursor = new_cursor
                for route in self._cursors:
                    self._cursors[route] = max(self._cursors[route], cursor)
            self._since_snapshot += applied
            if applied and self._since_snapshot >= self.snapshot_every:
                self.snapshot(store)
            return applied

    def cursor(self, route: str) -> int:
        """The seq of the last feedback the learners of ``route`` include."""
        with self._lock:
            return self._cursors[route]

    def snapshot(self, store: Any) -> None:
        """Save every route's learners with the feedback seq they include."""
        for route, keyed in self._keyed.items():
            store.save_learner_state(f"route:{route}", keyed.state(), self._cursors[route])
        self._since_snapshot = 0

    def _apply(self, row: dict[str, Any]) -> int:
        route = row.get("route")
        if route not in self._keyed or row["seq"] <= self._cursors[route] or row.get("reward") is None:
            return 0
        learner = self.learner(route, row.get("learner_key"))
        model = row["model"]
        if model not in learner.models:
            if model not in self._pools[route]:
                log.warning("feedback %s names model %r, which route %r does not have; skipped", row["seq"], model, route)
                return 0
            learner.add_model(model)  # another replica's learner chose it first
        context = row.get("context") if learner.contextual else None
        if learner.contextual and context is None:
            log.warning("feedback %s has no stored context for contextual route %r; skipped", row["seq"], route)
            return 0
        learner.update(model, float(row["reward"]), context, prior=row.get("prior") if learner.takes_prior else None)
        return 1
