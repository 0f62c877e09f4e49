"""Online learners: choose a model per request and learn from the rewards, by their names.

PickLLM's two learners (``automaton``, ``qlearning``; arXiv 2412.12170), the classic
bandits ``ucb`` and ``thompson``, and the contextual ``linucb`` and ``lints`` that
route each query on its prompt embedding.  :class:`KeyedLearners` keeps one learner
per session, topic or dataset category.
"""

from __future__ import annotations

from typing import Any

from crossroads.online.base import Decision, Learner
from crossroads.online.keyed import KeyedLearners
from crossroads.registry import Registry

#: The learners by spec name, e.g. ``thompson:discount=0.99``.
LEARNERS = Registry("online learner", {
    "automaton": "crossroads.online.automaton:LearningAutomaton",
    "qlearning": "crossroads.online.qlearning:QLearning",
    "ucb": "crossroads.online.ucb:UCB",
    "thompson": "crossroads.online.thompson:ThompsonSampling",
    "linucb": "crossroads.online.linucb:LinUCB",
    "lints": "crossroads.online.lints:LinTS",
})


def make_learner(spec: str, **params: Any) -> Learner:
    """A new learner: ``make_learner("thompson", window=500, seed=0)`` or ``make_learner("thompson:window=500")``."""
    return LEARNERS.build(spec, **params)


__all__ = [
    "LEARNERS",
    "Decision",
    "KeyedLearners",
    "Learner",
    "make_learner",
]
