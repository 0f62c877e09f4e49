"""PickLLM's gradient-ascent learner: a learning automaton with linear reward-inaction."""

from __future__ import annotations

from typing import Any

import numpy as np

from crossroads.checks import check_bool, check_fraction
from crossroads.online.base import Learner


class LearningAutomaton(Learner):
    """A probability per model, moved towards the models that earn rewards.

    After model ``i`` earns reward ``r`` in [0, 1], linear reward-inaction (L_R-I)
    updates every model's probability::

        p_i <- p_i + learning_rate * r * (1 - p_i)
        p_j <- p_j - learning_rate * r * p_j      for j != i

    so the vector stays a distribution, and a zero reward changes nothing (PickLLM,
    arXiv 2412.12170, Section 3).  A request restricted to some candidates draws from
    their probabilities renormalised to sum to one; the update still moves the whole
    vector.  A model joining a pool of ``k - 1`` gets probability ``1/k`` and the others
    are scaled by ``(k - 1)/k``, so models added one by one start uniform; removing a
    model renormalises the rest.

    The session has converged once one probability exceeds ``threshold``; with
    ``sticky`` (PickLLM's behaviour) it then sends every request to that model.

    >>> learner = LearningAutomaton(learning_rate=0.5, seed=0)
    >>> decision = learner.select(["small", "large"])
    >>> decision.probability, decision.probabilities
    (0.5, {'small': 0.5, 'large': 0.5})
    >>> learner.update("large", reward=1.0)
    >>> learner.arms_["large"]["p"], learner.arms_["small"]["p"]
    (0.75, 0.25)
    """

    name = "automaton"

    def __init__(
        self, learning_rate: float = 0.05, threshold: float = 0.95, sticky: bool = True, seed: int | None = None
    ):
        check_fraction(learning_rate, "learning_rate", low_open=True)
        check_fraction(threshold, "threshold", low_open=True)
        check_bool(sticky, "sticky")
        self.learning_rate = learning_rate
        self.threshold = threshold
        self.sticky = sticky
        super().__init__(seed=seed)

    def _new_arm(self, model: str) -> dict[str, Any]:
        k = len(self.arms_) + 1
        for arm in self.arms_.values():
            arm["p"] *= (k - 1) / k
        return {"p": 1.0 / k}

    def _select(self, candidates, context, rng):
        p = [self.arms_[m]["p"] for m in candidates]
        total = sum(p)
        if total <= 0.0:  # every candidate was driven to zero: fall back to uniform
            p, total = [1.0] * len(p), float(len(p))
        u = rng.random() * total
        chosen, acc = len(p) - 1, 0.0
        for i, pi in enumerate(p):
            acc += pi
            if u < acc:
                chosen = i
                break
        probabilities = {m: pi / total for m, pi in zip(candidates, p)}
        return candidates[chosen], probabilities, dict(probabilities)

    def _update(self, model: str, reward: float, context: np.ndarray | None) -> None:
        if reward == 0.0:
            return  # inaction
        step = self.learning_rate * reward
        for name, arm in self.arms_.items():
            if name == model:
                arm["p"] += step * (1.0 - arm["p"])
            else:
                arm["p"] -= step * arm["p"]

    def _on_remove(self, model: str) -> None:
        total = sum(arm["p"] for arm in self.arms_.values())
        for arm in self.arms_.values():
            arm["p"] = arm["p"] / total if total > 0.0 else 1.0 / len(self.arms_)

    def _converged(self) -> str | None:
        for name, arm in self.arms_.items():
            if arm["p"] > self.threshold:
                return name
        return None
