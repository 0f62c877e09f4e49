"""Online learners: choose a model per request and learn from the rewards, by their names.

PickLLM's two learners (``automaton``, ``qlearning``; arXiv 2412.12170), the classic
bandits ``ucb`` and ``thompson``, and the contextual ``linucb`` and ``lints`` that
route each query on its prompt embedding.  :class:`KeyedLearners` keeps one learner
per session, topic or dataset category.
"""

from __future__ import annotations

import importlib
from typing import Any

from crossroads.errors import CrossroadsError
from crossroads.online.base import Decision, Learner
from crossroads.online.keyed import KeyedLearners

_LEARNERS = {
    "automaton": "crossroads.online.automaton:LearningAutomaton",
    "qlearning": "crossroads.online.qlearning:QLearning",
    "ucb": "crossroads.online.ucb:UCB",
    "thompson": "crossroads.online.thompson:ThompsonSampling",
    "linucb": "crossroads.online.linucb:LinUCB",
    "lints": "crossroads.online.lints:LinTS",
}

LEARNER_NAMES = tuple(_LEARNERS)


def learner_class(name: str) -> type[Learner]:
    """The Learner subclass registered as ``name``."""
    if name not in _LEARNERS:
        raise CrossroadsError(f"unknown online learner {name!r}; choose one of: {', '.join(_LEARNERS)}")
    module, attr = _LEARNERS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def make_learner(name: str, **params: Any) -> Learner:
    """A new learner: ``make_learner("thompson", window=500, seed=0)``."""
    try:
        return learner_class(name)(**params)
    except TypeError as exc:  # an argument the learner does not take
        raise CrossroadsError(f"bad arguments for the {name} learner: {exc}") from None


def learner_from_state(state: dict[str, Any], **kwargs: Any) -> Learner:
    """The learner that wrote ``state`` (see :meth:`Learner.state`)."""
    if not isinstance(state, dict) or "learner" not in state:
        raise CrossroadsError("not a learner state: expected the dict written by Learner.state()")
    return learner_class(state["learner"]).from_state(state, **kwargs)


__all__ = [
    "LEARNER_NAMES",
    "Decision",
    "KeyedLearners",
    "Learner",
    "learner_class",
    "learner_from_state",
    "make_learner",
]
