"""One learner per key: a session id, a topic, a dataset category."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from crossroads.errors import CrossroadsError
from crossroads.online.base import Decision, Learner


class KeyedLearners:
    """Learners created on first use of their key, so each session or topic learns alone.

    PickLLM converges per session; keying by topic or dataset category gives each kind
    of query its own model instead.  ``learner`` is a registered learner name (then
    ``params`` are its arguments and the whole collection round-trips through JSON) or
    a function returning a new learner (then pass it again to :meth:`from_state`).
    Creating a key is thread-safe; each learner has its own lock, so requests for
    different keys do not wait for each other.

    >>> sessions = KeyedLearners("automaton", learning_rate=0.5, seed=0)
    >>> decision = sessions.select("session-1", ["small", "large"])
    >>> sessions.update("session-1", decision, reward=1.0)
    >>> list(sessions), sessions["session-1"].updates_
    (['session-1'], 1)
    """

    def __init__(self, learner: str | Callable[[], Learner], **params: Any):
        if isinstance(learner, str):
            from crossroads.online import make_learner

            make_learner(learner, **params)  # fail now on a bad name or argument, not at the first request
            self._factory: Callable[[], Learner] = lambda: make_learner(learner, **params)
            self.learner, self.params = learner, dict(params)
        elif callable(learner):
            if params:
                raise CrossroadsError("pass learner arguments to your factory function, not to KeyedLearners")
            self._factory, self.learner, self.params = learner, None, {}
        else:
            raise CrossroadsError(f"learner must be a learner name or a function returning a learner, got {learner!r}")
        self.learners_: dict[str, Learner] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Learner:
        """The learner of ``key``, created on first use."""
        learner = self.learners_.get(key)
        if learner is not None:
            return learner
        if not isinstance(key, str) or not key:
            raise CrossroadsError(f"keys must be non-empty strings (a session id, topic or category), got {key!r}")
        with self._lock:
            if key not in self.learners_:
                learner = self._factory()
                if not isinstance(learner, Learner):
                    raise CrossroadsError(f"the factory returned {type(learner).__name__}, not a Learner")
                self.learners_[key] = learner
            return self.learners_[key]

    __getitem__ = get

    def select(
        self,
        key: str,
        candidates: Sequence[str],
        context: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
    ) -> Decision:
        return self.get(key).select(candidates, context=context, rng=rng)

    def update(self, key: str, decision: Decision | str, reward: float, context: np.ndarray | None = None) -> None:
        if key not in self.learners_:
            raise CrossroadsError(f"no learner for key {key!r}: select() with this key before update()")
        self.learners_[key].update(decision, reward, context=context)

    def __contains__(self, key: object) -> bool:
        return key in self.learners_

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.learners_))

    def __len__(self) -> int:
        return len(self.learners_)

    def state(self) -> dict[str, Any]:
        """Every key's learner state, as plain JSON types."""
        with self._lock:
            learners = dict(self.learners_)
        return {"learner": self.learner, "params": self.params, "keys": {k: v.state() for k, v in learners.items()}}

    @classmethod
    def from_state(cls, state: dict[str, Any], factory: Callable[[], Learner] | None = None) -> KeyedLearners:
        """The collection that wrote ``state``; ``factory`` is needed if it was built from one."""
        if not isinstance(state, dict) or "keys" not in state:
            raise CrossroadsError("not a KeyedLearners state: expected the dict written by KeyedLearners.state()")
        if factory is not None:
            keyed = cls(factory)
        elif state.get("learner") is not None:
            keyed = cls(state["learner"], **state["params"])
        else:
            raise CrossroadsError("these learners were made by a factory function: pass it again with factory=")
        keyed.learners_ = {key: Learner.from_state(s) for key, s in state["keys"].items()}
        return keyed
